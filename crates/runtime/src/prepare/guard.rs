//! Guard models (content moderation, Groq's `meta-llama/llama-guard-4-12b` and kin): a
//! served model marked as a Llama Guard gets the conversation as the guard's task prompt
//! (`peregrine_text::guard`) unless its own template builds it, and its answer follows the
//! guard's format (`safe`, or `unsafe` and the violated categories) by grammar.

use peregrine_grammar::{Constraint, GrammarSpec};
use peregrine_protocol::chat::{ChatCompletionRequest, ChatMessage, MessageContent};
use peregrine_text::guard::{self, Turn};

use super::prompt::text_of;
use super::PrepareError;
use crate::model::ModelContext;

/// The request as the guard reads it: `None` when `model` is no guard or its template
/// builds the prompt itself. Tools and JSON formats are refused: a guard answers in its
/// own format.
pub(super) fn rewrite(
    req: &ChatCompletionRequest,
    model: &ModelContext,
) -> Result<Option<ChatCompletionRequest>, PrepareError> {
    if !model.guard {
        return Ok(None);
    }
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(PrepareError::Unsupported {
            feature: "tools",
            at: None,
        });
    }
    if req
        .response_format
        .as_ref()
        .is_some_and(|f| !matches!(f, peregrine_protocol::chat::ResponseFormat::Text))
    {
        return Err(PrepareError::Unsupported {
            feature: "response_format",
            at: None,
        });
    }
    let mut turns = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        match m {
            ChatMessage::User { content, .. } => turns.push(Turn::User(text_of(content, i)?)),
            ChatMessage::Assistant {
                content: Some(content),
                ..
            } => turns.push(Turn::Agent(text_of(content, i)?)),
            // Instructions and tool traffic are not part of the conversation assessed.
            _ => {}
        }
    }
    if turns.is_empty() {
        return Err(PrepareError::NoMessages);
    }
    if guard::template_builds_prompt(model.template.source()) {
        return Ok(None);
    }
    let mut guarded = req.clone();
    guarded.messages = vec![ChatMessage::User {
        content: MessageContent::Text(guard::task_prompt(&turns)),
        name: None,
    }];
    Ok(Some(guarded))
}

/// The guard's answer grammar (`safe`, or `unsafe` and categories), compiled (and cached)
/// for the model's tokenizer.
pub(super) fn grammar(model: &ModelContext) -> Result<Constraint, PrepareError> {
    let spec = GrammarSpec::Lark(guard::ANSWER_GRAMMAR.into());
    (model.grammars.compile(&spec)).map_err(PrepareError::SchemaGrammar)
}
