//! Chat templates: the GGUF's `tokenizer.chat_template` (HuggingFace Jinja) rendered with
//! minijinja the way transformers' `apply_chat_template` renders it with Jinja2.
//!
//! ```
//! use peregrine_text::template::{ChatTemplate, TemplateMessage};
//!
//! let source = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}\
//!               {% if add_generation_prompt %}<assistant>{% endif %}";
//! let template = ChatTemplate::new(source, "<s>", "</s>").unwrap();
//! let prompt = template
//!     .render_prompt(vec![TemplateMessage::text("user", "Hi")], None)
//!     .unwrap();
//! assert_eq!(prompt.text, "<user>Hi\n<assistant>");
//! assert_eq!(prompt.prefill, None);
//! ```
//!
//! Fidelity to transformers, which the templates are written for:
//! - the environment is transformers' `ImmutableSandboxedEnvironment(trim_blocks=True,
//!   lstrip_blocks=True)`, trailing newline of the source dropped (Jinja2's default);
//! - Python string/dict methods (`.strip()`, `.split()`, `.startswith()`, `.items()` ...)
//!   through minijinja-contrib's pycompat;
//! - `tojson` is `json.dumps(x, ensure_ascii=False, indent=..)`: `{"a": 1}` with spaces, no
//!   HTML escaping; `{{ x }}` prints Python's `str(x)` (`None`, `True`, `['a']`);
//! - `raise_exception(msg)` and `strftime_now(fmt)` (local time) as transformers defines them;
//! - the context holds `messages`, `tools` (`none` when absent), `add_generation_prompt`,
//!   `bos_token` and `eos_token`.

mod python;

use minijinja::{Environment, Error, ErrorKind, Value};
use serde::Serialize;

/// The name the template is registered under. No extension, so no auto-escaping.
const TEMPLATE_NAME: &str = "chat_template";

/// Marks where the prefilled assistant text ends in a rendered prompt: private-use code
/// points (case and whitespace filters such as `upper` and `trim` leave them alone) around a
/// random nonce, fresh for each render, so a client who writes a sentinel into a message
/// cannot cut the prompt at it.
fn prefill_sentinel() -> String {
    use std::hash::{BuildHasher, Hasher};
    // std's RandomState is seeded from the OS; its hash of nothing is unpredictable.
    let nonce = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("\u{F0000}\u{E05A}peregrine-prefill-{nonce:016x}\u{E05A}\u{F0000}")
}

/// A compiled chat template. `Send + Sync`: share it behind an `Arc`; rendering takes `&self`.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    handles_tools: bool,
    bos_token: String,
    eos_token: String,
}

/// Everything a template renders from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateInput {
    pub messages: Vec<TemplateMessage>,
    /// Tool definitions as the client sent them (OpenAI form:
    /// `{"type": "function", "function": {"name", "description", "parameters"}}`).
    /// `None` and an empty list both render as `tools = none`.
    pub tools: Option<Vec<serde_json::Value>>,
    /// Append the header that opens the assistant's turn.
    pub add_generation_prompt: bool,
    /// Keyword arguments beyond the conversation (transformers' `**kwargs`).
    pub vars: TemplateVars,
}

/// The extra variables some templates read, as `apply_chat_template(..., **kwargs)` passes
/// them; unset ones are left undefined (templates test `is defined`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateVars {
    /// Qwen3: `false` renders an empty reasoning block, so the model answers at once.
    pub enable_thinking: Option<bool>,
    /// gpt-oss: `low`, `medium` or `high`, written into its system message.
    pub reasoning_effort: Option<String>,
}

/// One chat message, in the shape templates read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateMessage {
    /// `system`, `user`, `assistant`, `tool`; `developer` is rendered as `system`.
    pub role: String,
    /// Text content. `None` renders as `content: none` (an assistant turn with only tool calls).
    pub content: Option<String>,
    pub name: Option<String>,
    /// Tool calls made by an assistant turn. `None` and empty both leave the key out, so
    /// `'tool_calls' in message` is false.
    pub tool_calls: Option<Vec<TemplateToolCall>>,
    /// For `tool` messages: the id of the call this result answers.
    pub tool_call_id: Option<String>,
    /// An assistant turn's reasoning, given to templates as both `reasoning_content` (Qwen3,
    /// DeepSeek, GLM) and `thinking` (gpt-oss).
    pub reasoning: Option<String>,
}

impl TemplateMessage {
    /// A message with a role and text content and nothing else.
    pub fn text(role: impl Into<String>, content: impl Into<String>) -> Self {
        TemplateMessage {
            role: role.into(),
            content: Some(content.into()),
            ..TemplateMessage::default()
        }
    }
}

/// A tool call of an assistant turn.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateToolCall {
    pub id: String,
    pub name: String,
    /// The parsed arguments object (not the JSON string of the wire format), so
    /// `tool_call.arguments | tojson` prints it as transformers does.
    pub arguments: serde_json::Value,
}

/// A prompt ready to tokenize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedPrompt {
    pub text: String,
    /// When the conversation ended with an assistant message, its content: the prompt ends
    /// inside that turn, right after this text, and the model continues it.
    pub prefill: Option<String>,
}

/// Why a template could not be compiled or rendered. The message is meant for the client
/// (a 400): it comes from the template, never from the server's internals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The template source is not valid Jinja (a broken GGUF).
    #[error("chat template does not compile: {0}")]
    Compile(String),
    /// The template called `raise_exception(message)`: it does not accept this conversation
    /// (e.g. "Conversation roles must alternate user/assistant/user/assistant/...").
    #[error("{0}")]
    Raised(String),
    /// Rendering failed otherwise (e.g. concatenating a missing `content`).
    #[error("chat template failed to render: {0}")]
    Render(String),
}

/// Carried as the source of the minijinja error `raise_exception` returns, so the message
/// can be told apart from other render failures.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RaisedException(String);

impl ChatTemplate {
    /// Compiles `source`. `bos_token` / `eos_token` are the tokenizer's special-token texts,
    /// which some templates print (`{{ bos_token }}`).
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        // transformers compiles templates with `trim_blocks=True, lstrip_blocks=True` and
        // Jinja2's default `keep_trailing_newline=False`; templates are written (and their
        // whitespace tuned) for exactly that, e.g. Qwen2.5's source ends in a newline that
        // must not reach the prompt. Checked against Jinja2 by tests/hf_golden.rs.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python::py_formatter);
        env.add_filter("tojson", python::tojson_filter);
        env.add_test("iterable", python::is_iterable);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| TemplateError::Compile(describe(&e)))?;
        Ok(ChatTemplate {
            source: source.to_owned(),
            handles_tools: source.contains("tools"),
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template renders tool definitions (`tools`) itself.
    pub fn handles_tools(&self) -> bool {
        self.handles_tools
    }

    /// Renders the conversation exactly as given.
    pub fn render(&self, input: &TemplateInput) -> Result<String, TemplateError> {
        let ctx = Context {
            messages: input.messages.iter().map(MessageView::from).collect(),
            tools: input.tools.as_deref().filter(|tools| !tools.is_empty()),
            add_generation_prompt: input.add_generation_prompt,
            bos_token: &self.bos_token,
            eos_token: &self.eos_token,
            enable_thinking: input.vars.enable_thinking,
            reasoning_effort: input.vars.reasoning_effort.as_deref(),
        };
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| TemplateError::Render(describe(&e)))?;
        template.render(ctx).map_err(|e| match raised_message(&e) {
            Some(message) => TemplateError::Raised(message),
            None => TemplateError::Render(describe(&e)),
        })
    }

    /// Renders the prompt for a chat completion.
    ///
    /// If the last message is an assistant message without tool calls, the model continues it
    /// (assistant prefill): the conversation is rendered without a generation prompt and the
    /// text is cut right after that message's content, before the template's end-of-turn
    /// marker. Otherwise the generation prompt opens a new assistant turn.
    pub fn render_prompt(
        &self,
        messages: Vec<TemplateMessage>,
        tools: Option<Vec<serde_json::Value>>,
    ) -> Result<RenderedPrompt, TemplateError> {
        self.render_prompt_with(messages, tools, TemplateVars::default())
    }

    /// [`Self::render_prompt`] with extra template variables.
    pub fn render_prompt_with(
        &self,
        mut messages: Vec<TemplateMessage>,
        tools: Option<Vec<serde_json::Value>>,
        vars: TemplateVars,
    ) -> Result<RenderedPrompt, TemplateError> {
        let sentinel = prefill_sentinel();
        let prefill = match messages.last_mut() {
            Some(last)
                if last.role == "assistant"
                    && last.tool_calls.as_ref().is_none_or(Vec::is_empty) =>
            {
                let content = last.content.take().unwrap_or_default();
                last.content = Some(format!("{content}{sentinel}"));
                Some(content)
            }
            _ => None,
        };
        let Some(prefill) = prefill else {
            let input = TemplateInput {
                messages,
                tools,
                add_generation_prompt: true,
                vars,
            };
            return Ok(RenderedPrompt {
                text: self.render(&input)?,
                prefill: None,
            });
        };
        let mut input = TemplateInput {
            messages,
            tools,
            add_generation_prompt: false,
            vars,
        };
        let rendered = self.render(&input)?;
        let text = match rendered.find(&sentinel) {
            Some(end) => rendered[..end].to_owned(),
            None => {
                // The template dropped the last assistant message (some skip assistant turns
                // they cannot place). Open a fresh assistant turn and put the text in it.
                input.messages.pop();
                input.add_generation_prompt = true;
                let mut text = self.render(&input)?;
                text.push_str(&prefill);
                text
            }
        };
        Ok(RenderedPrompt {
            text,
            prefill: (!prefill.is_empty()).then_some(prefill),
        })
    }
}

/// The render context, with the names transformers passes.
#[derive(Serialize)]
struct Context<'a> {
    messages: Vec<MessageView<'a>>,
    tools: Option<&'a [serde_json::Value]>,
    add_generation_prompt: bool,
    bos_token: &'a str,
    eos_token: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    enable_thinking: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'a str>,
}

/// A message as a Python dict in transformers: optional keys are absent, not `None`, so
/// `'tool_calls' in message` and `message.name is defined` work as templates expect.
#[derive(Serialize)]
struct MessageView<'a> {
    role: &'a str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<ToolCallView<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a str>,
}

impl<'a> From<&'a TemplateMessage> for MessageView<'a> {
    fn from(m: &'a TemplateMessage) -> Self {
        MessageView {
            // Most templates only know `system`; OpenAI's `developer` means the same.
            role: if m.role == "developer" {
                "system"
            } else {
                &m.role
            },
            content: m.content.as_deref(),
            name: m.name.as_deref(),
            tool_calls: m
                .tool_calls
                .as_ref()
                .filter(|calls| !calls.is_empty())
                .map(|calls| calls.iter().map(ToolCallView::from).collect()),
            tool_call_id: m.tool_call_id.as_deref(),
            reasoning_content: m.reasoning.as_deref(),
            thinking: m.reasoning.as_deref(),
        }
    }
}

/// `{"id", "type": "function", "function": {"name", "arguments": {..}}}`.
#[derive(Serialize)]
struct ToolCallView<'a> {
    id: &'a str,
    r#type: &'static str,
    function: FunctionView<'a>,
}

#[derive(Serialize)]
struct FunctionView<'a> {
    name: &'a str,
    arguments: &'a serde_json::Value,
}

impl<'a> From<&'a TemplateToolCall> for ToolCallView<'a> {
    fn from(call: &'a TemplateToolCall) -> Self {
        ToolCallView {
            id: &call.id,
            r#type: "function",
            function: FunctionView {
                name: &call.name,
                arguments: &call.arguments,
            },
        }
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(RaisedException(message)))
}

/// `datetime.now().strftime(fmt)`, local time. An unknown `%` directive is a render error
/// (chrono would otherwise panic while formatting).
fn strftime_now(format: String) -> Result<String, Error> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item<'_>> = StrftimeItems::new(&format).collect();
    if items.iter().any(|item| matches!(item, Item::Error)) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format string {format:?}"),
        ));
    }
    Ok(chrono::Local::now()
        .format_with_items(items.into_iter())
        .to_string())
}

/// The message of a `raise_exception` call somewhere in `err`'s chain (macros and includes
/// wrap errors).
fn raised_message(err: &Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(raised) = e.downcast_ref::<RaisedException>() {
            return Some(raised.0.clone());
        }
        source = e.source();
    }
    None
}

/// minijinja's message with the template line, e.g.
/// "invalid operation: ... (in chat_template:12)".
fn describe(err: &Error) -> String {
    err.to_string()
}
