//! `tools`, `tool_choice`, `parallel_tool_calls` and `disable_tool_validation`: checked, and
//! turned into a [`ToolPlan`] with its grammars.
//!
//! - `tool_choice: "required"` or a named function: a grammar of the family's call syntax,
//!   arguments constrained to each tool's schema, applies from the first token.
//! - `"auto"`: the output is free until the parser sees a call open; then the same grammar,
//!   fed what the model already wrote of the call, constrains the rest ("lazy" grammar).
//! - `"none"`: tools are shown to the template, the family's call tag is banned.

use std::collections::HashMap;
use std::sync::Arc;

use peregrine_engine::TokenId;
use peregrine_grammar::{strict, CallGrammar, Constraint, GrammarSpec, Marker, ToolDef};
use peregrine_protocol::chat::{
    ChatCompletionRequest, ChatMessage, FunctionDefinition, ResponseFormat, Tool, ToolChoice,
};
use peregrine_text::template::TemplateMessage;
use peregrine_text::tools::ToolFormat;
use serde_json::Value;

use super::{valid_name, PrepareError, MAX_TOOLS};
use crate::model::ModelContext;
use crate::request::{ToolCheck, ToolPlan};

/// What a model that sees tools is told under `tool_choice: none`.
const NO_CALLS: &str = "Do not call any function in this reply: answer the user directly.";

/// What preparation resolved about tools.
pub(super) struct ResolvedTools {
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

/// Checks the tool parameters and builds the request's grammars.
pub(super) fn resolve(
    req: &ChatCompletionRequest,
    model: &ModelContext,
) -> Result<ResolvedTools, PrepareError> {
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
        return Err(PrepareError::FormatWithTools);
    }
    let mut out = ResolvedTools {
        template_tools: (!functions.is_empty()).then(|| {
            tools
                .iter()
                .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
                .collect()
        }),
        plan: None,
        forced_grammar: None,
        banned: Vec::new(),
        first_banned: None,
        note: None,
        native: model.template.handles_tools() && model.tool_syntax.format != ToolFormat::Json,
        functions,
    };
    if calls_on {
        plan_calls(req, model, &choice, skip_check, &mut out)?;
    } else {
        ban_calls(req, model, &mut out);
    }
    Ok(out)
}

/// No call can be made. With tools visible to the template (as on Groq) or calls earlier in
/// the conversation, the call tag is never sampled and the answer may not open like a call.
fn ban_calls(req: &ChatCompletionRequest, model: &ModelContext, out: &mut ResolvedTools) {
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
        out.first_banned = Some(model.tool_syntax.openers.clone());
    }
    if !out.functions.is_empty() {
        out.note = Some(NO_CALLS);
    }
}

/// Calls may (or must) be made: the call grammar, forced or lazy, and the call checks.
fn plan_calls(
    req: &ChatCompletionRequest,
    model: &ModelContext,
    choice: &Choice,
    skip_check: bool,
    out: &mut ResolvedTools,
) -> Result<(), PrepareError> {
    let parallel = req.parallel_tool_calls.unwrap_or(true);
    let check = if skip_check {
        None
    } else {
        Some(validators(&out.functions)?)
    };
    let allowed: Vec<&FunctionDefinition> = match choice {
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
        format: model.tool_syntax.format,
        markers: model.tool_syntax.marker_tokens(),
        forced,
        lazy,
        check,
        parallel,
    });
    Ok(())
}

/// Checks each entry of `tools`; returns the function definitions in order.
fn check_functions(tools: &[Tool]) -> Result<Vec<FunctionDefinition>, PrepareError> {
    if tools.len() > MAX_TOOLS {
        return Err(PrepareError::TooManyTools(tools.len()));
    }
    let mut functions: Vec<FunctionDefinition> = Vec::with_capacity(tools.len());
    for (index, t) in tools.iter().enumerate() {
        let f = check_function(index, t, &functions)?;
        functions.push(f.clone());
    }
    Ok(functions)
}

/// One entry of `tools`: a function tool with a new, valid name and an object schema (strict
/// mode's rules when `strict`).
fn check_function<'a>(
    index: usize,
    t: &'a Tool,
    before: &[FunctionDefinition],
) -> Result<&'a FunctionDefinition, PrepareError> {
    if t.kind != "function" {
        return Err(PrepareError::ToolType {
            index,
            kind: t.kind.clone(),
        });
    }
    let Some(f) = &t.function else {
        return Err(PrepareError::ToolFunctionMissing(index));
    };
    if !valid_name(&f.name) {
        return Err(PrepareError::ToolName {
            index,
            name: f.name.clone(),
        });
    }
    if before.iter().any(|g| g.name == f.name) {
        return Err(PrepareError::DuplicateTool {
            index,
            name: f.name.clone(),
        });
    }
    let object_schema = |p: &Value| {
        p.as_object()
            .is_some_and(|o| o.get("type").is_none_or(|t| t == "object"))
    };
    if f.parameters.as_ref().is_some_and(|p| !object_schema(p)) {
        return Err(PrepareError::ToolParametersNotObject(index));
    }
    if f.strict == Some(true) {
        let params = f.parameters.clone().unwrap_or_else(|| {
            serde_json::json!({"type": "object", "properties": {}, "required": [], "additionalProperties": false})
        });
        strict::check(&params).map_err(|error| PrepareError::ToolStrict { index, error })?;
    }
    Ok(f)
}

/// `tool_choice`, with its default (`auto` with tools, else `none`).
fn choice_of(
    req: &ChatCompletionRequest,
    functions: &[FunctionDefinition],
    skip_check: bool,
) -> Result<Choice, PrepareError> {
    let choice = match &req.tool_choice {
        None if functions.is_empty() => Choice::None,
        None => Choice::Auto,
        Some(ToolChoice::Mode(m)) => match m.as_str() {
            "none" => Choice::None,
            "auto" => Choice::Auto,
            "required" => Choice::Required,
            other => return Err(PrepareError::ToolChoiceMode(other.to_string())),
        },
        Some(ToolChoice::Named { kind, function }) => {
            if kind != "function" {
                return Err(PrepareError::ToolChoiceType(kind.clone()));
            }
            if skip_check {
                return Err(PrepareError::ToolChoiceUnchecked);
            }
            if !functions.iter().any(|f| f.name == function.name) {
                return Err(PrepareError::ToolChoiceUnknown(function.name.clone()));
            }
            Choice::Named(function.name.clone())
        }
    };
    if functions.is_empty() && matches!(choice, Choice::Required) {
        return Err(PrepareError::ToolChoiceRequiredWithoutTools);
    }
    Ok(choice)
}

/// An argument validator per tool.
fn validators(functions: &[FunctionDefinition]) -> Result<ToolCheck, PrepareError> {
    let mut tools = HashMap::new();
    for (index, f) in functions.iter().enumerate() {
        let v = match &f.parameters {
            None => None,
            Some(p) => Some(Arc::new(jsonschema::validator_for(p).map_err(|e| {
                PrepareError::ToolSchema {
                    index,
                    error: e.to_string(),
                }
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
) -> Result<Constraint, PrepareError> {
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
            build(true).map_err(|_| PrepareError::ToolGrammar(first))
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
pub(super) fn instruction(functions: &[FunctionDefinition], parallel: bool) -> String {
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
pub(super) fn calls_as_text(msgs: &mut [TemplateMessage]) {
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
