//! Tool use: checking `tools` / `tool_choice` (validation time), and following a sequence's
//! output for calls (engine thread).
//!
//! - `tool_choice: "required"` or a named function: a grammar of the family's call syntax,
//!   arguments constrained to each tool's schema, applies from the first token.
//! - `"auto"`: the output is free until the parser sees a call open; then the same grammar,
//!   fed what the model already wrote of the call, constrains the rest ("lazy" grammar).
//! - `"none"`: tools are shown to the template, the family's call tag is banned.
//!
//! Every parsed call is checked against its tool (unless `disable_tool_validation`).

use std::collections::HashMap;
use std::sync::Arc;

use peregrine_engine::TokenId;
use peregrine_grammar::{strict, CallGrammar, Constraint, GrammarSpec, Marker, ToolDef};
use peregrine_protocol::chat::{
    ChatCompletionRequest, ChatMessage, FunctionDefinition, ResponseFormat, ToolChoice,
};
use peregrine_text::template::TemplateMessage;
use peregrine_text::tools::{ParseError, ParsedCall, Piece, ToolFormat, ToolParser};
use serde_json::Value;

use crate::validate::{invalid, ModelContext, ValidationError};

/// What a model that sees tools is told under `tool_choice: none`.
const NO_CALLS: &str = "Do not call any function in this reply: answer the user directly.";

/// Groq's limit on `tools`.
pub const MAX_TOOLS: usize = 128;

/// Groq's message for a call that cannot be parsed.
pub const FAILED_CALL: &str =
    "Failed to call a function. Please adjust your prompt. See 'failed_generation' for more details.";

/// How a request may call tools, resolved at validation.
#[derive(Debug)]
pub struct ToolPlan {
    pub format: ToolFormat,
    /// Control tokens of the call syntax, shown to the parser as their text.
    pub markers: Vec<(TokenId, String)>,
    /// A call must come (`required` / named); its grammar is the request's constraint.
    pub forced: bool,
    /// `auto`: the grammar started when a call opens.
    pub lazy: Option<Constraint>,
    /// Checks calls against `tools`; `None` with `disable_tool_validation`.
    pub check: Option<ToolCheck>,
    pub parallel: bool,
}

/// The tools a call may name, with their argument validators.
pub struct ToolCheck {
    tools: HashMap<String, Option<Arc<jsonschema::Validator>>>,
}

impl std::fmt::Debug for ToolCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolCheck")
            .field("tools", &self.tools.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ToolCheck {
    /// Groq's `tool_use_failed` message when `call` does not fit its tool.
    pub fn check(&self, call: &ParsedCall) -> Result<(), String> {
        let Some(validator) = self.tools.get(&call.name) else {
            return Err(format!(
                "Tool call validation failed: attempted to call tool '{}' which was not in request.tools",
                call.name
            ));
        };
        if let Some(v) = validator {
            let errors: Vec<String> = v
                .iter_errors(&call.arguments)
                .map(|e| e.to_string())
                .collect();
            if !errors.is_empty() {
                return Err(format!(
                    "Tool call validation failed: tool call validation failed: parameters for tool {} did not match schema: errors: [{}]",
                    call.name,
                    errors.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// What validation resolved about tools.
pub(crate) struct ResolvedTools {
    /// Tool definitions for the chat template (as the client sent them).
    pub template_tools: Option<Vec<Value>>,
    /// `None` when calls are off (`tool_choice: none` or no tools).
    pub plan: Option<ToolPlan>,
    /// The grammar of a forced call.
    pub forced_grammar: Option<Constraint>,
    /// Tokens never to sample (the call tag under `tool_choice: none`).
    pub banned: Vec<TokenId>,
    /// Tokens not to begin the answer with (a call's opening under `tool_choice: none`).
    pub first_banned: Option<Arc<[TokenId]>>,
    /// Added to the system prompt (`tool_choice: none` with tools: answer in text).
    pub note: Option<&'static str>,
    /// Whether the model's template shows tools itself; otherwise they go in the system
    /// prompt.
    pub native: bool,
    /// The function definitions, in order.
    pub functions: Vec<FunctionDefinition>,
}

enum Choice {
    None,
    Auto,
    Required,
    Named(String),
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks `tools`, `tool_choice`, `parallel_tool_calls` and `disable_tool_validation`, and
/// builds the request's grammars.
pub(crate) fn resolve(
    req: &ChatCompletionRequest,
    model: &ModelContext,
) -> Result<ResolvedTools, ValidationError> {
    let tools = req.tools.as_deref().unwrap_or_default();
    let functions = check_functions(tools)?;
    let skip_check = req.disable_tool_validation == Some(true);
    let choice = choice_of(req, &functions, skip_check)?;
    let calls_on = !matches!(choice, Choice::None) && (!functions.is_empty() || skip_check);
    let json_format = matches!(
        req.response_format,
        Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. })
    );
    if calls_on && json_format {
        return Err(invalid(
            "`response_format` json_object / json_schema cannot be combined with tool calls; set `tool_choice` to 'none' or drop `response_format`",
        ));
    }
    let template_tools = (!functions.is_empty()).then(|| {
        tools
            .iter()
            .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
            .collect()
    });
    let syntax = &model.tool_syntax;
    let mut out = ResolvedTools {
        template_tools,
        plan: None,
        forced_grammar: None,
        banned: Vec::new(),
        first_banned: None,
        note: None,
        native: model.template.handles_tools() && syntax.format != ToolFormat::Json,
        functions,
    };
    if !calls_on {
        // No call can be made. With tools visible to the template (as on Groq) or calls
        // earlier in the conversation, the call tag is never sampled and the answer may not
        // open like a call.
        let tool_history = req.messages.iter().any(|m| {
            matches!(
                m,
                ChatMessage::Tool { .. }
                    | ChatMessage::Assistant {
                        tool_calls: Some(_),
                        ..
                    }
            )
        });
        if !out.functions.is_empty() || tool_history {
            out.banned = tag_tokens(model);
            out.first_banned = Some(syntax.openers.clone());
        }
        if !out.functions.is_empty() {
            out.note = Some(NO_CALLS);
        }
        return Ok(out);
    }
    let parallel = req.parallel_tool_calls.unwrap_or(true);
    let check = if skip_check {
        None
    } else {
        Some(validators(&out.functions)?)
    };
    let allowed: Vec<&FunctionDefinition> = match &choice {
        Choice::Named(n) => out.functions.iter().filter(|f| &f.name == n).collect(),
        _ => out.functions.iter().collect(),
    };
    let forced = matches!(choice, Choice::Required | Choice::Named(_));
    let grammar = compile_calls(model, &allowed, skip_check, parallel, !forced)?;
    let lazy = if forced {
        out.forced_grammar = Some(grammar);
        None
    } else {
        Some(grammar)
    };
    out.plan = Some(ToolPlan {
        format: syntax.format,
        markers: syntax.marker_tokens(),
        forced,
        lazy,
        check,
        parallel,
    });
    Ok(out)
}

/// Checks each entry of `tools`; returns the function definitions in order.
fn check_functions(
    tools: &[peregrine_protocol::chat::Tool],
) -> Result<Vec<FunctionDefinition>, ValidationError> {
    if tools.len() > MAX_TOOLS {
        return Err(invalid(format!(
            "`tools` may contain at most {MAX_TOOLS} tools, got {}",
            tools.len()
        )));
    }
    let mut functions: Vec<FunctionDefinition> = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        if t.kind != "function" {
            return Err(invalid(format!(
                "`tools[{i}].type`: tool type '{}' is not supported with this model; only 'function' tools are",
                t.kind
            )));
        }
        let Some(f) = &t.function else {
            return Err(invalid(format!("`tools[{i}].function` is required")));
        };
        if !valid_name(&f.name) {
            return Err(invalid(format!(
                "`tools[{i}].function.name` must match [a-zA-Z0-9_-]{{1,64}}, got '{}'",
                f.name
            )));
        }
        if functions.iter().any(|g| g.name == f.name) {
            return Err(invalid(format!(
                "`tools[{i}].function.name`: duplicate tool name '{}'",
                f.name
            )));
        }
        let object_schema = |p: &Value| {
            p.as_object()
                .is_some_and(|o| o.get("type").is_none_or(|t| t == "object"))
        };
        if f.parameters.as_ref().is_some_and(|p| !object_schema(p)) {
            return Err(invalid(format!(
                "`tools[{i}].function.parameters` must be a JSON Schema of an object (`\"type\": \"object\"`)"
            )));
        }
        if f.strict == Some(true) {
            let params = f.parameters.clone().unwrap_or_else(|| {
                serde_json::json!({"type": "object", "properties": {}, "required": [], "additionalProperties": false})
            });
            strict::check(&params)
                .map_err(|e| invalid(format!("`tools[{i}].function.parameters`: {e}")))?;
        }
        functions.push(f.clone());
    }
    Ok(functions)
}

/// `tool_choice`, with its default (`auto` with tools, else `none`).
fn choice_of(
    req: &ChatCompletionRequest,
    functions: &[FunctionDefinition],
    skip_check: bool,
) -> Result<Choice, ValidationError> {
    let choice = match &req.tool_choice {
        None if functions.is_empty() => Choice::None,
        None => Choice::Auto,
        Some(ToolChoice::Mode(m)) => match m.as_str() {
            "none" => Choice::None,
            "auto" => Choice::Auto,
            "required" => Choice::Required,
            other => {
                return Err(invalid(format!(
                    "`tool_choice` must be one of none, auto, required or a named function, got '{other}'"
                )))
            }
        },
        Some(ToolChoice::Named { kind, function }) => {
            if kind != "function" {
                return Err(invalid(format!(
                    "`tool_choice.type` must be 'function', got '{kind}'"
                )));
            }
            if skip_check {
                return Err(invalid(
                    "`tool_choice` cannot name a function when `disable_tool_validation` is set",
                ));
            }
            if !functions.iter().any(|f| f.name == function.name) {
                return Err(invalid(format!(
                    "`tool_choice` names the function '{}', which is not in `tools`",
                    function.name
                )));
            }
            Choice::Named(function.name.clone())
        }
    };
    if functions.is_empty() && matches!(choice, Choice::Required) {
        return Err(invalid(
            "`tool_choice` is 'required' but the request has no `tools`",
        ));
    }
    Ok(choice)
}

/// An argument validator per tool.
fn validators(functions: &[FunctionDefinition]) -> Result<ToolCheck, ValidationError> {
    let mut tools = HashMap::new();
    for (i, f) in functions.iter().enumerate() {
        let v = match &f.parameters {
            None => None,
            Some(p) => Some(Arc::new(jsonschema::validator_for(p).map_err(|e| {
                invalid(format!(
                    "`tools[{i}].function.parameters` is not a valid JSON Schema: {e}"
                ))
            })?)),
        };
        tools.insert(f.name.clone(), v);
    }
    Ok(ToolCheck { tools })
}

/// Compiles the call grammar. A non-strict tool whose schema the grammar engine cannot
/// handle keeps a plain-object grammar for its arguments (validation still checks them); a
/// strict one is a 400.
fn compile_calls(
    model: &ModelContext,
    allowed: &[&FunctionDefinition],
    any_name: bool,
    parallel: bool,
    lazy: bool,
) -> Result<Constraint, ValidationError> {
    let build = |relax: bool| {
        let defs: Vec<ToolDef> = allowed
            .iter()
            .map(|f| ToolDef {
                name: &f.name,
                parameters: if relax && f.strict != Some(true) {
                    None
                } else {
                    f.parameters.as_ref()
                },
            })
            .collect();
        let g = CallGrammar {
            syntax: &model.tool_syntax,
            tools: &defs,
            any_name,
            parallel,
            lazy,
        };
        model.grammars.compile(&GrammarSpec::Lark(g.lark()))
    };
    match build(false) {
        Ok(c) => Ok(c),
        Err(first) => {
            tracing::debug!(error = %first, "tool grammar failed; relaxing non-strict schemas");
            build(true).map_err(|_| invalid(format!("`tools`: {first}")))
        }
    }
}

/// The call tag's token, when the tag is one token.
fn tag_tokens(model: &ModelContext) -> Vec<TokenId> {
    match &model.tool_syntax.open {
        Some(Marker::Token { id, .. }) => vec![*id],
        Some(Marker::Text(t)) => match model.vocab.tokenize(t).as_slice() {
            [id] => vec![*id],
            _ => Vec::new(),
        },
        None => Vec::new(),
    }
}

/// The instruction that describes tools to a model whose template does not.
pub(crate) fn instruction(functions: &[FunctionDefinition], parallel: bool) -> String {
    let mut s = String::from(
        "You can call functions. To call one, reply with only a JSON object of the form {\"name\": <function name>, \"arguments\": <arguments object>}",
    );
    s.push_str(if parallel {
        ", one per line, and nothing else."
    } else {
        " and nothing else."
    });
    s.push_str(" If no function is needed, answer normally.\nFunctions:");
    for f in functions {
        let mut v = serde_json::json!({"name": f.name});
        if let Some(d) = &f.description {
            v["description"] = Value::String(d.clone());
        }
        if let Some(p) = &f.parameters {
            v["parameters"] = p.clone();
        }
        s.push('\n');
        s.push_str(&v.to_string());
    }
    s
}

/// For templates that do not render tool calls: each assistant turn's calls become the
/// bare JSON the model is told to write, appended to its content.
pub(crate) fn calls_as_text(msgs: &mut [TemplateMessage]) {
    for m in msgs {
        if let Some(calls) = m.tool_calls.take() {
            let text: Vec<String> = calls
                .iter()
                .map(|c| serde_json::json!({"name": c.name, "arguments": c.arguments}).to_string())
                .collect();
            let content = m.content.get_or_insert_with(String::new);
            if !content.is_empty() {
                content.push('\n');
            }
            content.push_str(&text.join("\n"));
        }
    }
}

/// A sequence's view of its own calls (engine thread).
pub(crate) struct ToolState {
    pub plan: ToolPlan,
    parser: ToolParser,
    /// Every generated token with the byte offset where its text begins.
    tokens: Vec<(TokenId, usize)>,
    bytes: Vec<u8>,
    /// The text the parser saw: the `failed_generation` of a rejection.
    pub text: String,
    pub calls: usize,
    /// Calls made so far, as (name, arguments).
    seen: Vec<(String, String)>,
    /// The model repeated a call of this turn word for word: a small model's loop. The
    /// repeat is dropped and the turn ends there.
    pub repeated: bool,
}

/// What one step of the parser yields.
pub(crate) enum ToolOutput {
    Content(String),
    Call { name: String, arguments: String },
}

impl ToolState {
    pub fn new(plan: ToolPlan) -> Self {
        Self {
            parser: ToolParser::new(plan.format),
            plan,
            tokens: Vec::new(),
            bytes: Vec::new(),
            text: String::new(),
            calls: 0,
            seen: Vec::new(),
            repeated: false,
        }
    }

    /// The text of a control token that is part of the call syntax.
    pub fn marker_text(&self, tok: TokenId) -> Option<&str> {
        self.plan
            .markers
            .iter()
            .find(|(id, _)| *id == tok)
            .map(|(_, t)| t.as_str())
    }

    /// Records a generated token and its bytes (before detokenization and stop matching).
    pub fn record(&mut self, tok: TokenId, bytes: &[u8]) {
        self.tokens.push((tok, self.bytes.len()));
        self.bytes.extend_from_slice(bytes);
    }

    /// Feeds text released by the stop matcher. Returns the pieces, or Groq's message when a
    /// call is refused. When a call has just opened and `constraint` is empty, the lazy
    /// grammar is started there.
    pub fn push(
        &mut self,
        text: &str,
        constraint: &mut Option<Constraint>,
    ) -> Result<Vec<ToolOutput>, String> {
        self.text.push_str(text);
        let pieces = self.parser.push(text);
        if self.parser.failed() {
            // A tagged call that is not a call: no point generating further.
            return Err(FAILED_CALL.to_string());
        }
        if constraint.is_none() && self.plan.lazy.is_some() && self.parser.call_opened() {
            if let Some(start) = self.parser.call_start() {
                if let Some(c) = self.start_lazy(start) {
                    *constraint = Some(c);
                }
            }
        }
        self.convert(pieces)
    }

    /// Ends the output: what the parser held back, and the final checks. `length`: the
    /// output was cut by `max_tokens` or the context; a call it cut short after complete ones
    /// is dropped (the finish reason says `length`), a first call cut short is a failure.
    pub fn finish(&mut self, length: bool) -> Result<Vec<ToolOutput>, String> {
        let parser = std::mem::replace(&mut self.parser, ToolParser::new(self.plan.format));
        let pieces = match parser.finish() {
            Ok(p) => p,
            Err(ParseError::Truncated) if length && self.calls > 0 => Vec::new(),
            Err(ParseError::Truncated | ParseError::Malformed(_)) => {
                return Err(FAILED_CALL.to_string())
            }
        };
        let out = self.convert(pieces)?;
        if self.plan.forced && self.calls == 0 {
            return Err("Tool choice is required, but model did not call a tool".into());
        }
        Ok(out)
    }

    fn convert(&mut self, pieces: Vec<Piece>) -> Result<Vec<ToolOutput>, String> {
        let mut out = Vec::with_capacity(pieces.len());
        if self.repeated {
            return Ok(out);
        }
        for p in pieces {
            match p {
                Piece::Content(c) => out.push(ToolOutput::Content(c)),
                Piece::Call(call) => {
                    let arguments = call.arguments.to_string();
                    if self
                        .seen
                        .iter()
                        .any(|(n, a)| *n == call.name && *a == arguments)
                    {
                        self.repeated = true;
                        break;
                    }
                    if !self.plan.parallel && self.calls >= 1 {
                        return Err("Tool call validation failed: the model called more than one tool, but parallel_tool_calls is false".into());
                    }
                    if let Some(check) = &self.plan.check {
                        check.check(&call)?;
                    }
                    self.calls += 1;
                    self.seen.push((call.name.clone(), arguments.clone()));
                    out.push(ToolOutput::Call {
                        name: call.name,
                        arguments,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Starts the lazy grammar at byte `start` of the output: the part of the token that
    /// straddles `start`, then every later token. `None` when what was written is not the
    /// opening of a call the grammar knows (the parser then decides alone).
    fn start_lazy(&mut self, start: usize) -> Option<Constraint> {
        // Offsets into the text the parser saw are offsets into the token bytes only while
        // that text is the bytes verbatim (invalid UTF-8 is replaced in the text).
        if self.bytes.get(..start)? != self.text.as_bytes().get(..start)? {
            self.plan.lazy = None;
            return None;
        }
        let mut c = self.plan.lazy.take()?;
        let i = self
            .tokens
            .iter()
            .rposition(|&(_, at)| at <= start)
            .unwrap_or(0);
        let (first_tok, first_at) = self.tokens.get(i).copied()?;
        let first_end = self.tokens.get(i + 1).map_or(self.bytes.len(), |t| t.1);
        let rest: Vec<TokenId> = self.tokens[i + 1..].iter().map(|t| t.0).collect();
        let result = if first_at == start {
            let mut all = vec![first_tok];
            all.extend(rest);
            c.feed(&[], &all)
        } else {
            c.feed(self.bytes.get(start..first_end)?, &rest)
        };
        match result {
            Ok(()) => Some(c),
            Err(e) => {
                tracing::debug!(error = %e, "a call opened that the grammar does not accept");
                None
            }
        }
    }
}
