//! The prompt: wire messages become template messages, the format and tool instructions are
//! added where the template does not carry them, the chat template renders the text and the
//! vocabulary tokenizes it.
//!
//! Control tokens only where the template puts them: every client string is marked
//! (`peregrine_text::control`) before rendering, and its control-token text is tokenized as
//! plain text, so a message cannot open or close a turn.

use peregrine_engine::{PreparedImage, TokenId, Vocab};
use peregrine_protocol::chat::{ChatMessage, ContentPart, MessageContent, ToolCall};
use peregrine_text::control::{self, ControlTexts, Marker, Piece};
use peregrine_text::template::{TemplateMessage, TemplateToolCall, TemplateVars};

use super::format::OutputFormat;
use super::tools::{self, ResolvedTools};
use super::PrepareError;
use crate::model::ModelContext;
use crate::request::PromptImage;

/// A rendered and tokenized prompt.
pub(super) struct Prompt {
    pub tokens: Vec<TokenId>,
    /// Where each image's placeholders start in `tokens`, in order.
    pub images: Vec<PromptImage>,
    /// The text (with the client's strings marked): where reasoning starts is read off its
    /// end.
    pub text: String,
}

/// Renders the conversation with the model's template and tokenizes it.
pub(super) fn render_and_tokenize(
    messages: &[ChatMessage],
    model: &ModelContext,
    format: Option<&OutputFormat>,
    resolved: &mut ResolvedTools,
    vars: TemplateVars,
    images: &[PreparedImage],
) -> Result<Prompt, PrepareError> {
    check_prompt_bytes(messages, model)?;
    // Image parts render as this text, replaced by the images' placeholders when
    // tokenizing; random per request, so no client text can forge one.
    let image_marker =
        (!images.is_empty()).then(|| format!("<image-{:016x}>", rand::random::<u64>()));
    let mut msgs = messages
        .iter()
        .enumerate()
        .map(|(i, m)| template_message(i, m, image_marker.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(f) = format {
        add_format_instruction(&mut msgs, f);
    }
    if let Some(note) = resolved.note {
        add_system_text(&mut msgs, note);
    }
    let mut template_tools = if resolved.native {
        resolved.template_tools.take()
    } else {
        // The template knows nothing of tools: calls in the history become the JSON the
        // model is told to write, and the tools are described in the system prompt.
        tools::calls_as_text(&mut msgs);
        if let Some(plan) = &resolved.plan {
            let text = tools::instruction(&resolved.functions, plan.parallel);
            add_system_text(&mut msgs, &text);
        }
        None
    };
    // Everything in the messages now is the client's, or our instructions (which hold no
    // control-token text): mark it all.
    let marker = Marker::new(rand::random());
    let controls = &model.prompt_text.controls;
    mark_messages(&mut msgs, controls, &marker);
    for tool in template_tools.iter_mut().flatten() {
        controls.mark_json(tool, &marker);
    }
    let rendered = model
        .template
        .render_prompt_with(msgs, template_tools, vars)
        .map_err(|e| PrepareError::Template(control::unmark(&e.to_string(), &marker)))?;
    // Again on the whole prompt (tool definitions and instructions included), before the
    // tokenizer: the markers only add bytes, so the bound stays a lower bound.
    check_bytes(rendered.text.len(), model)?;
    let (tokens, images) = match &image_marker {
        None => (
            tokenize(model.vocab.as_ref(), &rendered.text, &marker),
            Vec::new(),
        ),
        Some(m) => tokenize_with_images(model.vocab.as_ref(), &rendered.text, &marker, m, images)?,
    };
    Ok(Prompt {
        tokens,
        images,
        text: rendered.text,
    })
}

/// Tokenizes a rendered prompt holding image markers: the text around them as
/// [`tokenize`] does, each marker as its image's placeholders. Every image must come out
/// where its part was: a template that drops content parts is refused.
fn tokenize_with_images(
    vocab: &dyn Vocab,
    rendered: &str,
    marker: &Marker,
    image_marker: &str,
    images: &[PreparedImage],
) -> Result<(Vec<TokenId>, Vec<PromptImage>), PrepareError> {
    let mut out: Vec<TokenId> = Vec::with_capacity(rendered.len() / 3);
    let mut placed = Vec::with_capacity(images.len());
    let mut next = images.iter();
    for piece in control::split(rendered, marker) {
        let (text, special) = match piece {
            Piece::Template(t) => (t, true),
            Piece::Text(t) => (t, false),
        };
        for (k, part) in text.split(image_marker).enumerate() {
            if k > 0 {
                let Some(image) = next.next() else {
                    return Err(PrepareError::ImagesDropped(0));
                };
                placed.push(PromptImage {
                    at: out.len(),
                    image: image.clone(),
                });
                out.extend(image.placeholders());
            }
            out.extend(vocab.tokenize_piece(part, special));
        }
    }
    let dropped = images.len() - placed.len();
    if dropped > 0 {
        return Err(PrepareError::ImagesDropped(dropped));
    }
    if let Some(bos) = vocab.leading_bos() {
        if out.first() != Some(&bos) {
            out.insert(0, bos);
            for p in &mut placed {
                p.at += 1;
            }
        }
    }
    // The last prompt token's logits choose the first completion token: it must be text.
    if placed.last().is_some_and(|p| p.end() == out.len()) {
        return Err(PrepareError::Template(
            "the prompt ends with an image; the template must end with text".into(),
        ));
    }
    Ok((out, placed))
}

/// Refuses, before any rendering or tokenizing, a conversation whose text cannot fit the
/// context. Why: tokenizing a multi-megabyte prompt takes seconds and a hundred times its
/// size in memory, all before the context check could refuse it.
fn check_prompt_bytes(messages: &[ChatMessage], model: &ModelContext) -> Result<(), PrepareError> {
    check_bytes(messages.iter().map(message_bytes).sum(), model)
}

/// `bytes` of prompt text are at least `bytes / longest token` tokens (a control token
/// counted at its text's length): refused when that fills the context.
fn check_bytes(bytes: usize, model: &ModelContext) -> Result<(), PrepareError> {
    let at_least = bytes / model.prompt_text.max_token_bytes;
    let context = model.info.n_ctx_seq;
    if at_least >= context as usize {
        return Err(PrepareError::PromptTooLong {
            bytes,
            at_least,
            context,
        });
    }
    Ok(())
}

/// The bytes of a message's text (content, reasoning, tool-call arguments).
fn message_bytes(m: &ChatMessage) -> usize {
    let content = |c: &MessageContent| match c {
        MessageContent::Text(t) => t.len(),
        MessageContent::Parts(parts) => parts
            .iter()
            .map(|p| match p {
                ContentPart::Text { text } => text.len(),
                _ => 0,
            })
            .sum(),
    };
    match m {
        ChatMessage::System { content: c, .. }
        | ChatMessage::Developer { content: c, .. }
        | ChatMessage::User { content: c, .. }
        | ChatMessage::Tool { content: c, .. } => content(c),
        ChatMessage::Assistant {
            content: c,
            reasoning,
            tool_calls,
            ..
        } => {
            c.as_ref().map_or(0, content)
                + reasoning.as_ref().map_or(0, String::len)
                + (tool_calls.iter().flatten())
                    .map(|t| t.function.arguments.len())
                    .sum::<usize>()
        }
        ChatMessage::Function { content, .. } => content.as_ref().map_or(0, String::len),
    }
}

/// Marks the control-token text in every client string of the conversation.
fn mark_messages(msgs: &mut [TemplateMessage], controls: &ControlTexts, marker: &Marker) {
    let mark = |s: &mut String| {
        if let std::borrow::Cow::Owned(m) = controls.mark(s, marker) {
            *s = m;
        }
    };
    for m in msgs {
        m.content.iter_mut().for_each(mark);
        m.name.iter_mut().for_each(mark);
        m.reasoning.iter_mut().for_each(mark);
        m.tool_call_id.iter_mut().for_each(mark);
        for call in m.tool_calls.iter_mut().flatten() {
            mark(&mut call.id);
            mark(&mut call.name);
            controls.mark_json(&mut call.arguments, marker);
        }
    }
}

/// Tokenizes a rendered prompt: the template's pieces with control tokens parsed, the
/// client's marked pieces as plain text. A prompt without marks is one piece, tokenized as
/// it always was.
fn tokenize(vocab: &dyn Vocab, rendered: &str, marker: &Marker) -> Vec<TokenId> {
    let pieces = control::split(rendered, marker);
    if let [Piece::Template(text)] = pieces.as_slice() {
        return vocab.tokenize(text);
    }
    let mut out: Vec<TokenId> = Vec::with_capacity(rendered.len() / 3);
    for piece in pieces {
        match piece {
            Piece::Template(t) => out.extend(vocab.tokenize_piece(t, true)),
            Piece::Text(t) => out.extend(vocab.tokenize_piece(t, false)),
        }
    }
    if let Some(bos) = vocab.leading_bos() {
        if out.first() != Some(&bos) {
            out.insert(0, bos);
        }
    }
    out
}

/// One wire message as the chat template sees it (message `i` of the request); its image
/// parts become `image_marker` (refused without one).
fn template_message(
    i: usize,
    m: &ChatMessage,
    image_marker: Option<&str>,
) -> Result<TemplateMessage, PrepareError> {
    Ok(match m {
        ChatMessage::System { content, name } => msg("system", Some(text_of(content, i)?), name),
        ChatMessage::Developer { content, name } => {
            msg("developer", Some(text_of(content, i)?), name)
        }
        ChatMessage::User { content, name } => match image_marker {
            Some(marker) => msg("user", Some(text_with_images(content, i, marker)?), name),
            None => msg("user", Some(text_of(content, i)?), name),
        },
        ChatMessage::Assistant {
            content,
            name,
            reasoning,
            tool_calls,
            ..
        } => {
            let content = content.as_ref().map(|c| text_of(c, i)).transpose()?;
            let mut t = msg("assistant", content, name);
            t.reasoning = reasoning.clone();
            t.tool_calls = tool_calls
                .as_deref()
                .map(|calls| history_calls(i, calls))
                .transpose()?;
            t
        }
        ChatMessage::Tool {
            content,
            tool_call_id,
            name,
        } => {
            let mut t = msg("tool", Some(text_of(content, i)?), name);
            t.tool_call_id = Some(tool_call_id.clone());
            t
        }
        ChatMessage::Function { content, name } => {
            msg("function", content.clone(), &Some(name.clone()))
        }
    })
}

/// An assistant turn's earlier calls, with their arguments parsed for the template.
fn history_calls(i: usize, calls: &[ToolCall]) -> Result<Vec<TemplateToolCall>, PrepareError> {
    calls
        .iter()
        .map(|c| {
            let arguments = serde_json::from_str(&c.function.arguments).map_err(|e| {
                PrepareError::HistoryArguments {
                    index: i,
                    name: c.function.name.clone(),
                    error: e.to_string(),
                }
            })?;
            Ok(TemplateToolCall {
                id: c.id.clone(),
                name: c.function.name.clone(),
                arguments,
            })
        })
        .collect()
}

/// The text of a message's content; parts other than text are refused.
pub(super) fn text_of(content: &MessageContent, idx: usize) -> Result<String, PrepareError> {
    if let MessageContent::Parts(parts) = content {
        if parts.is_empty() {
            return Err(PrepareError::EmptyContent(idx));
        }
        for p in parts {
            let feature = match p {
                ContentPart::Text { .. } => continue,
                ContentPart::ImageUrl { .. } => "image_url",
                ContentPart::Document { .. } => "document",
            };
            return Err(PrepareError::Unsupported {
                feature,
                at: Some(format!("messages[{idx}].content")),
            });
        }
    }
    Ok(content.as_text())
}

/// The text of a user message's content with each image part as `marker`, on a line of its
/// own between the text parts (as [`MessageContent::as_text`] joins them).
fn text_with_images(
    content: &MessageContent,
    idx: usize,
    marker: &str,
) -> Result<String, PrepareError> {
    let MessageContent::Parts(parts) = content else {
        return Ok(content.as_text());
    };
    if parts.is_empty() {
        return Err(PrepareError::EmptyContent(idx));
    }
    let mut texts = Vec::with_capacity(parts.len());
    for p in parts {
        texts.push(match p {
            ContentPart::Text { text } => text.as_str(),
            ContentPart::ImageUrl { .. } => marker,
            ContentPart::Document { .. } => {
                return Err(PrepareError::Unsupported {
                    feature: "document",
                    at: Some(format!("messages[{idx}].content")),
                })
            }
        });
    }
    Ok(texts.join("\n"))
}

/// Adds the format instruction to the system prompt (or a new system message first) unless
/// every marker already appears in the conversation.
fn add_format_instruction(msgs: &mut Vec<TemplateMessage>, format: &OutputFormat) {
    let all_text: String = msgs
        .iter()
        .filter_map(|m| m.content.as_deref())
        .collect::<Vec<_>>()
        .join("\n")
        .to_lowercase();
    if format
        .markers
        .iter()
        .all(|m| all_text.contains(&m.to_lowercase()))
    {
        return;
    }
    add_system_text(msgs, &format.instruction);
}

/// Appends `text` to the first system message, or adds one.
fn add_system_text(msgs: &mut Vec<TemplateMessage>, text: &str) {
    match msgs.first_mut() {
        Some(m) if m.role == "system" || m.role == "developer" => {
            let c = m.content.get_or_insert_with(String::new);
            if !c.is_empty() {
                c.push_str("\n\n");
            }
            c.push_str(text);
        }
        _ => msgs.insert(0, msg("system", Some(text.to_string()), &None)),
    }
}

fn msg(role: &str, content: Option<String>, name: &Option<String>) -> TemplateMessage {
    TemplateMessage {
        role: role.to_string(),
        content,
        name: name.clone(),
        tool_calls: None,
        tool_call_id: None,
        reasoning: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::output_format;
    use super::*;
    use peregrine_protocol::parse::parse_chat_request;

    fn format_of(body: serde_json::Value) -> OutputFormat {
        let req = parse_chat_request(body.to_string().as_bytes()).unwrap();
        output_format(req.response_format.as_ref())
            .unwrap()
            .unwrap()
    }

    fn user(text: &str) -> TemplateMessage {
        msg("user", Some(text.into()), &None)
    }

    #[test]
    fn the_schema_is_added_to_the_system_prompt_when_the_prompt_lacks_it() {
        let f = format_of(serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "review",
                "schema": {"type": "object", "properties": {"stars": {"type": "integer"}}}}}
        }));
        let mut msgs = vec![
            msg("system", Some("Be brief.".into()), &None),
            user("Rate it"),
        ];
        add_format_instruction(&mut msgs, &f);
        let sys = msgs[0].content.as_deref().unwrap();
        assert!(sys.starts_with("Be brief.\n\n"), "{sys}");
        assert!(
            sys.contains(r#""stars""#) && sys.contains("`review`"),
            "{sys}"
        );

        // No system message: one is added first.
        let mut msgs = vec![user("Rate it")];
        add_format_instruction(&mut msgs, &f);
        assert_eq!(msgs[0].role, "system");
        assert_eq!(msgs.len(), 2);

        // The prompt already names every property: left alone.
        let mut msgs = vec![user(r#"Answer as {"stars": n}"#)];
        add_format_instruction(&mut msgs, &f);
        assert_eq!(msgs.len(), 1);
    }

    #[test]
    fn json_mode_adds_an_instruction_only_when_json_is_not_mentioned() {
        let f = format_of(serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_object"}
        }));
        let mut msgs = vec![user("Reply in JSON please")];
        add_format_instruction(&mut msgs, &f);
        assert_eq!(msgs.len(), 1);
        let mut msgs = vec![user("List three colours")];
        add_format_instruction(&mut msgs, &f);
        assert_eq!(msgs.len(), 2);
        assert!(msgs[0].content.as_deref().unwrap().contains("JSON object"));
    }
}
