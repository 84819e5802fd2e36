//! The one boundary where a wire request becomes a [`ValidRequest`]: ranges checked, the
//! prompt rendered with the model's chat template and tokenized, the context checked, the
//! sampling parameters resolved. Downstream code never re-checks a field.

use std::sync::Arc;

use peregrine_engine::{ModelInfo, TokenId, Vocab};
use peregrine_grammar::{strict, CallSyntax, Constraint, GrammarSpec, Grammars};
use peregrine_protocol::chat::{
    ChatCompletionRequest, ChatMessage, ContentPart, MessageContent, ResponseFormat, StopSequences,
};
use peregrine_text::template::{ChatTemplate, TemplateMessage, TemplateToolCall};

use crate::sampling::{Sampling, SamplingParams};
use crate::tools::{self, ResolvedTools, ToolPlan};

/// The most stop sequences a request may carry (Groq's limit).
pub const MAX_STOP_SEQUENCES: usize = 4;
/// Longest stop sequence, in bytes (the matcher holds back up to this much text).
pub const MAX_STOP_BYTES: usize = 1024;
/// The most alternatives `top_logprobs` may ask for.
pub const MAX_TOP_LOGPROBS: i64 = 20;
/// Below this a temperature is treated as greedy decoding (Groq maps 0 to 1e-8).
const GREEDY_BELOW: f64 = 1e-5;

/// What validation needs to know about the model a request resolved to.
pub struct ModelContext {
    pub template: ChatTemplate,
    pub vocab: Arc<dyn Vocab>,
    pub info: ModelInfo,
    /// Most completion tokens one request may ask for.
    pub max_completion_tokens: u32,
    /// Grammar compiler for this model's tokenizer (`response_format`, tool calls).
    pub grammars: Arc<Grammars>,
    /// How this model writes tool calls.
    pub tool_syntax: CallSyntax,
}

/// Requested service tier, as echoed in responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceTier {
    OnDemand,
    Flex,
    Performance,
}

impl ServiceTier {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceTier::OnDemand => "on_demand",
            ServiceTier::Flex => "flex",
            ServiceTier::Performance => "performance",
        }
    }
}

/// A request that passed every check that can be made before generation.
#[derive(Debug)]
pub struct ValidRequest {
    pub prompt: Vec<TokenId>,
    /// Completion tokens allowed (already bounded by the context window).
    pub max_tokens: u32,
    pub sampling: SamplingParams,
    pub stops: Vec<String>,
    /// The grammar the output must follow (`response_format` json_object / json_schema, or
    /// a forced tool call).
    pub constraint: Option<Constraint>,
    /// Tool calls: parse the output for them (`None`: the output is all content).
    pub tools: Option<ToolPlan>,
    /// Tokens the answer may not begin with.
    pub first_banned: Option<Arc<[TokenId]>>,
    pub stream: bool,
    pub include_usage: bool,
    pub service_tier: ServiceTier,
}

/// Why a request was refused. Messages name the field.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ValidationError {
    #[error("{0}")]
    Invalid(String),
    #[error("`{param}` is not supported with this model")]
    Unsupported { param: &'static str },
    #[error("Please reduce the length of the messages or completion. The prompt has {prompt} tokens but the context window of this model is {context} tokens.")]
    ContextLengthExceeded { prompt: usize, context: u32 },
    #[error("failed to apply the chat template: {0}")]
    Template(String),
}

pub(crate) fn invalid(msg: impl Into<String>) -> ValidationError {
    ValidationError::Invalid(msg.into())
}

fn check_range(name: &str, v: Option<f64>, lo: f64, hi: f64) -> Result<(), ValidationError> {
    match v {
        Some(x) if !(lo..=hi).contains(&x) || x.is_nan() => Err(invalid(format!(
            "`{name}` must be between {lo} and {hi}, got {x}"
        ))),
        _ => Ok(()),
    }
}

/// Checks and resolves a chat request for `model`. `random_seed` is used when the request
/// carries no seed.
pub fn validate(
    req: &ChatCompletionRequest,
    model: &ModelContext,
    random_seed: u64,
) -> Result<ValidRequest, ValidationError> {
    if req.messages.is_empty() {
        return Err(invalid("`messages` must contain at least one message"));
    }
    if let Some(n) = req.n {
        if n != 1 {
            return Err(invalid(format!("`n` must be 1, got {n}")));
        }
    }
    check_range("temperature", req.temperature, 0.0, 2.0)?;
    check_range("top_p", req.top_p, 0.0, 1.0)?;
    check_range("frequency_penalty", req.frequency_penalty, -2.0, 2.0)?;
    check_range("presence_penalty", req.presence_penalty, -2.0, 2.0)?;
    reject_unsupported(req)?;

    let stops: Vec<String> = match &req.stop {
        None => Vec::new(),
        Some(StopSequences::One(s)) => vec![s.clone()],
        Some(StopSequences::Many(v)) => {
            if v.len() > MAX_STOP_SEQUENCES {
                return Err(invalid(format!(
                    "`stop` may contain at most {MAX_STOP_SEQUENCES} sequences, got {}",
                    v.len()
                )));
            }
            v.clone()
        }
    };
    if let Some(long) = stops.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(invalid(format!(
            "`stop` sequences may be at most {MAX_STOP_BYTES} bytes long, got {}",
            long.len()
        )));
    }
    let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();

    let logprobs = match (req.logprobs, req.top_logprobs) {
        (Some(true), n) => {
            let n = n.unwrap_or(0);
            if !(0..=MAX_TOP_LOGPROBS).contains(&n) {
                return Err(invalid(format!(
                    "`top_logprobs` must be between 0 and {MAX_TOP_LOGPROBS}, got {n}"
                )));
            }
            Some(n as u8)
        }
        (_, Some(_)) => return Err(invalid("`top_logprobs` requires `logprobs` to be true")),
        _ => None,
    };

    let mut logit_bias = match &req.logit_bias {
        None => Vec::new(),
        Some(map) => {
            let mut out = Vec::with_capacity(map.len());
            for (k, &v) in map {
                let tok: TokenId = k
                    .parse()
                    .ok()
                    .filter(|&t: &TokenId| (t as usize) < model.info.n_vocab)
                    .ok_or_else(|| {
                        invalid(format!(
                            "`logit_bias` key `{k}` is not a token id of this model"
                        ))
                    })?;
                if !(-100.0..=100.0).contains(&v) {
                    return Err(invalid(format!(
                        "`logit_bias` values must be between -100 and 100, got {v} for token {k}"
                    )));
                }
                out.push((tok, v as f32));
            }
            out
        }
    };

    let temperature = req.temperature.unwrap_or(1.0);
    let top_p = req.top_p.unwrap_or(1.0);
    let mode = if temperature < GREEDY_BELOW || top_p == 0.0 {
        Sampling::Greedy
    } else {
        Sampling::Random {
            temperature: temperature as f32,
            top_p: top_p as f32,
        }
    };
    let seed = req.seed.map_or(random_seed, |s| s as u64);

    let service_tier = match req.service_tier.as_deref() {
        None | Some("auto") | Some("on_demand") => ServiceTier::OnDemand,
        Some("flex") => ServiceTier::Flex,
        Some("performance") => ServiceTier::Performance,
        Some(other) => {
            return Err(invalid(format!(
                "`service_tier` must be one of auto, on_demand, flex, performance, got '{other}'"
            )))
        }
    };

    let format = output_format(req)?;
    let mut resolved = tools::resolve(req, model)?;
    logit_bias.extend(resolved.banned.iter().map(|&t| (t, f32::NEG_INFINITY)));
    let prompt = render_and_tokenize(req, model, format.as_ref(), &mut resolved)?;
    if prompt.is_empty() {
        return Err(invalid("the rendered prompt is empty"));
    }
    let context = model.info.n_ctx_seq;
    if prompt.len() >= context as usize {
        return Err(ValidationError::ContextLengthExceeded {
            prompt: prompt.len(),
            context,
        });
    }
    let requested = match (req.max_completion_tokens, req.max_tokens) {
        (Some(n), _) => Some(("max_completion_tokens", n)),
        (None, Some(n)) => Some(("max_tokens", n)),
        (None, None) => None,
    };
    let room = context - prompt.len() as u32;
    let max_tokens = match requested {
        Some((name, n)) if n < 1 => {
            return Err(invalid(format!("`{name}` must be at least 1, got {n}")))
        }
        Some((name, n)) if n > i64::from(model.max_completion_tokens) => {
            return Err(invalid(format!(
                "`{name}` must be less than or equal to `{}`, the maximum value for `{name}` is less than the `context_window` for this model",
                model.max_completion_tokens
            )))
        }
        Some((_, n)) => (n as u32).min(room),
        None => model.max_completion_tokens.min(room),
    };

    // Compiled last: it is the most expensive check, and cached for repeated schemas.
    let constraint = match &format {
        None => resolved.forced_grammar.take(),
        Some(f) => Some(
            model
                .grammars
                .compile(&f.spec)
                .map_err(|e| invalid(format!("`response_format`: {e}")))?,
        ),
    };

    Ok(ValidRequest {
        prompt,
        constraint,
        tools: resolved.plan.take(),
        first_banned: resolved.first_banned.take(),
        max_tokens,
        sampling: SamplingParams {
            mode,
            seed,
            frequency_penalty: req.frequency_penalty.unwrap_or(0.0) as f32,
            presence_penalty: req.presence_penalty.unwrap_or(0.0) as f32,
            logit_bias,
            logprobs,
        },
        stops,
        stream: req.stream.unwrap_or(false),
        include_usage: req
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        service_tier,
    })
}

/// Parameters whose feature has not landed yet are refused rather than silently ignored.
fn reject_unsupported(req: &ChatCompletionRequest) -> Result<(), ValidationError> {
    let unsupported = |param| Err(ValidationError::Unsupported { param });
    if req.functions.as_ref().is_some_and(|f| !f.is_empty()) {
        return unsupported("functions");
    }
    if req.reasoning_format.is_some() {
        return unsupported("reasoning_format");
    }
    if req.include_reasoning == Some(true) {
        return unsupported("include_reasoning");
    }
    if req.reasoning_effort.is_some() {
        return unsupported("reasoning_effort");
    }
    if req.documents.as_ref().is_some_and(|d| !d.is_empty()) {
        return unsupported("documents");
    }
    if req.compound_custom.is_some() {
        return unsupported("compound_custom");
    }
    if req.search_settings.is_some()
        || req.include_domains.is_some()
        || req.exclude_domains.is_some()
    {
        return unsupported("search_settings");
    }
    Ok(())
}

fn text_of(content: &MessageContent, idx: usize) -> Result<String, ValidationError> {
    if let MessageContent::Parts(parts) = content {
        if parts.is_empty() {
            return Err(invalid(format!(
                "`messages[{idx}].content` must contain at least one part"
            )));
        }
        for p in parts {
            match p {
                ContentPart::Text { .. } => {}
                ContentPart::ImageUrl { .. } => {
                    return Err(ValidationError::Unsupported { param: "image_url" })
                }
                ContentPart::Document { .. } => {
                    return Err(ValidationError::Unsupported { param: "document" })
                }
            }
        }
    }
    Ok(content.as_text())
}

/// A `response_format` that constrains the output, resolved.
struct OutputFormat {
    spec: GrammarSpec,
    /// What the model is told when the prompt does not already say it.
    instruction: String,
    /// Text whose presence in the prompt means the model was already told.
    markers: Vec<String>,
}

fn valid_schema_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn output_format(req: &ChatCompletionRequest) -> Result<Option<OutputFormat>, ValidationError> {
    match &req.response_format {
        None | Some(ResponseFormat::Text) => Ok(None),
        Some(ResponseFormat::JsonObject) => Ok(Some(OutputFormat {
            spec: GrammarSpec::JsonObject,
            instruction: "Respond with a single JSON object and nothing else.".into(),
            markers: vec!["json".into()],
        })),
        Some(ResponseFormat::JsonSchema { json_schema: f }) => {
            if !valid_schema_name(&f.name) {
                return Err(invalid(format!(
                    "`response_format.json_schema.name` must match [a-zA-Z0-9_-]{{1,64}}, got '{}'",
                    f.name
                )));
            }
            let schema = match &f.schema {
                Some(s @ serde_json::Value::Object(_)) => s.clone(),
                Some(_) => {
                    return Err(invalid(
                        "`response_format.json_schema.schema` must be a JSON Schema object",
                    ))
                }
                None => return Err(invalid("`response_format.json_schema.schema` is required")),
            };
            if f.strict == Some(true) {
                strict::check(&schema)
                    .map_err(|e| invalid(format!("`response_format.json_schema.schema`: {e}")))?;
            }
            // The schema counts as mentioned when every top-level property name appears
            // quoted in the prompt (a pasted schema or example); otherwise the model is shown
            // the schema, as Groq's docs advise.
            let markers: Vec<String> = schema
                .get("properties")
                .and_then(|p| p.as_object())
                .map(|p| p.keys().map(|k| format!("\"{k}\"")).collect())
                .filter(|m: &Vec<String>| !m.is_empty())
                .unwrap_or_else(|| vec![schema.to_string()]);
            let about = match &f.description {
                Some(d) if !d.is_empty() => format!(" ({d})"),
                _ => String::new(),
            };
            let instruction = format!(
                "Respond with a single JSON value and nothing else. It must match the JSON Schema `{}`{about}:\n{}",
                f.name, schema
            );
            Ok(Some(OutputFormat {
                spec: GrammarSpec::JsonSchema(schema),
                instruction,
                markers,
            }))
        }
    }
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

fn render_and_tokenize(
    req: &ChatCompletionRequest,
    model: &ModelContext,
    format: Option<&OutputFormat>,
    tools: &mut ResolvedTools,
) -> Result<Vec<TokenId>, ValidationError> {
    let mut msgs = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let tm = match m {
            ChatMessage::System { content, name } => {
                msg("system", Some(text_of(content, i)?), name)
            }
            ChatMessage::Developer { content, name } => {
                msg("developer", Some(text_of(content, i)?), name)
            }
            ChatMessage::User { content, name } => msg("user", Some(text_of(content, i)?), name),
            ChatMessage::Assistant {
                content,
                name,
                reasoning,
                tool_calls,
                ..
            } => {
                let mut t = msg(
                    "assistant",
                    content.as_ref().map(|c| text_of(c, i)).transpose()?,
                    name,
                );
                t.reasoning = reasoning.clone();
                if let Some(calls) = tool_calls {
                    let mut out = Vec::with_capacity(calls.len());
                    for c in calls {
                        let arguments = serde_json::from_str(&c.function.arguments).map_err(|e| {
                            invalid(format!(
                                "`messages[{i}].tool_calls`: arguments of `{}` are not valid JSON: {e}",
                                c.function.name
                            ))
                        })?;
                        out.push(TemplateToolCall {
                            id: c.id.clone(),
                            name: c.function.name.clone(),
                            arguments,
                        });
                    }
                    t.tool_calls = Some(out);
                }
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
        };
        msgs.push(tm);
    }
    if let Some(f) = format {
        add_format_instruction(&mut msgs, f);
    }
    if let Some(note) = tools.note {
        add_system_text(&mut msgs, note);
    }
    let template_tools = if tools.native {
        tools.template_tools.take()
    } else {
        // The template knows nothing of tools: calls in the history become the JSON the
        // model is told to write, and the tools are described in the system prompt.
        tools::calls_as_text(&mut msgs);
        if let Some(plan) = &tools.plan {
            let text = tools::instruction(&tools.functions, plan.parallel);
            add_system_text(&mut msgs, &text);
        }
        None
    };
    let rendered = model
        .template
        .render_prompt(msgs, template_tools)
        .map_err(|e| ValidationError::Template(e.to_string()))?;
    Ok(model.vocab.tokenize(&rendered.text))
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
    use super::*;
    use peregrine_protocol::parse::parse_chat_request;

    fn format_of(body: serde_json::Value) -> OutputFormat {
        let req = parse_chat_request(body.to_string().as_bytes()).unwrap();
        output_format(&req).unwrap().unwrap()
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

    #[test]
    fn schema_names_are_checked() {
        assert!(valid_schema_name("product_review-2"));
        assert!(!valid_schema_name(""));
        assert!(!valid_schema_name("has space"));
        assert!(!valid_schema_name(&"x".repeat(65)));
    }
}
