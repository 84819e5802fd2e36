//! Checking a request for the tool loop: which style, which tools, the request each turn
//! starts from, and the settings the tools take from it.

use peregrine_protocol::chat::{ChatCompletionRequest, ChatMessage, MessageContent};
use peregrine_tools::{RequestSettings, SearchSettings, ToolId, ToolKit};
use serde::Deserialize;

use super::compound::{self, SystemVersion};
use super::{AgentPlan, Style};
use crate::completions::Completions;
use crate::error::ServiceError;

pub(super) fn invalid(message: String, param: &'static str) -> ServiceError {
    ServiceError::InvalidParam { message, param }
}

/// The built-in tool a `tools[].type` names on a chat model.
fn builtin_kind(kind: &str) -> Option<ToolId> {
    match kind {
        "code_interpreter" => Some(ToolId::CodeInterpreter),
        "browser_search" => Some(ToolId::WebSearch),
        _ => None,
    }
}

/// `Some(plan)` when the request needs the tool loop; `None` for an ordinary completion.
pub fn plan(
    req: &ChatCompletionRequest,
    model_version: Option<&str>,
    svc: &Completions,
    org: &str,
) -> Result<Option<AgentPlan>, ServiceError> {
    if let Some(mini) = compound::compound_model(&req.model) {
        let version = SystemVersion::from_header(model_version)?;
        return compound_plan(req, mini, version, svc, org).map(Some);
    }
    let tools = builtin_tools(req, svc.tool_kit())?;
    if !tools.is_empty() {
        return builtin_plan(req, tools, svc, org).map(Some);
    }
    if req.compound_custom.is_some() {
        // Groq's wording for a parameter the model lacks.
        return Err(invalid(
            "`compound_custom` is not supported with this model".into(),
            "compound_custom",
        ));
    }
    Ok(None)
}

/// A compound model id: the served model as the agent over the version's tools.
fn compound_plan(
    req: &ChatCompletionRequest,
    mini: bool,
    version: SystemVersion,
    svc: &Completions,
    org: &str,
) -> Result<AgentPlan, ServiceError> {
    let kit = svc.tool_kit();
    let setup = compound::setup(req, version, svc.registry(), kit, org)?;
    let search = search_settings(req, &setup.tools, kit)?;
    let mut base = base_request(req, &setup.tools)?;
    add_system_prompt(
        &mut base.messages,
        &compound::system_prompt(&setup.tools, mini),
    );
    Ok(AgentPlan {
        style: Style::Compound { mini },
        tools: setup.tools,
        base,
        reasoning_model: setup.reasoning_model,
        answering_model: setup.answering_model,
        first_choice: None,
        max_calls: if mini { 1 } else { kit.max_calls },
        include_reasoning: req.include_reasoning != Some(false),
        settings: RequestSettings {
            search,
            wolfram_app_id: setup.wolfram_app_id,
        },
        org: org.to_string(),
    })
}

/// Built-in `tools` on a served model, beside the client's own functions.
fn builtin_plan(
    req: &ChatCompletionRequest,
    tools: Vec<ToolId>,
    svc: &Completions,
    org: &str,
) -> Result<AgentPlan, ServiceError> {
    let served = svc
        .registry()
        .resolve(&req.model, org)
        .ok_or_else(|| ServiceError::ModelNotFound(req.model.clone()))?
        .model
        .id
        .clone();
    let search = search_settings(req, &tools, svc.tool_kit())?;
    let mut base = base_request(req, &tools)?;
    base.tools = req.tools.as_ref().map(|t| {
        t.iter()
            .filter(|t| builtin_kind(&t.kind).is_none())
            .cloned()
            .collect()
    });
    Ok(AgentPlan {
        style: Style::Builtin,
        tools,
        base,
        reasoning_model: served.clone(),
        answering_model: served,
        first_choice: req.tool_choice.clone(),
        max_calls: svc.tool_kit().max_calls,
        include_reasoning: req.include_reasoning != Some(false),
        settings: RequestSettings {
            search,
            wolfram_app_id: None,
        },
        org: org.to_string(),
    })
}

/// `search_settings` on the wire; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSearchSettings {
    #[serde(default)]
    include_domains: Option<Vec<String>>,
    #[serde(default)]
    exclude_domains: Option<Vec<String>>,
    #[serde(default)]
    include_images: Option<bool>,
    #[serde(default)]
    country: Option<String>,
}

/// The request's search settings (with the deprecated top-level domain lists), checked
/// against the server's search backend when the request searches.
fn search_settings(
    req: &ChatCompletionRequest,
    tools: &[ToolId],
    kit: &ToolKit,
) -> Result<SearchSettings, ServiceError> {
    let param = "search_settings";
    let wire: WireSearchSettings = match &req.search_settings {
        None => WireSearchSettings::default(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| invalid(format!("`search_settings`: {e}"), param))?,
    };
    let mut s = SearchSettings {
        include_domains: wire.include_domains.unwrap_or_default(),
        exclude_domains: wire.exclude_domains.unwrap_or_default(),
        country: wire.country,
        include_images: wire.include_images.unwrap_or(false),
    };
    s.include_domains
        .extend(req.include_domains.iter().flatten().cloned());
    s.exclude_domains
        .extend(req.exclude_domains.iter().flatten().cloned());
    if let (true, Ok(backend)) = (tools.contains(&ToolId::WebSearch), &kit.search) {
        backend
            .check(&s)
            .map_err(|e| invalid(e.to_string(), param))?;
    }
    Ok(s)
}

/// The built-in entries of a chat request's `tools`, each available here and without keys
/// this server does not know.
fn builtin_tools(req: &ChatCompletionRequest, kit: &ToolKit) -> Result<Vec<ToolId>, ServiceError> {
    let mut out = Vec::new();
    for t in req.tools.iter().flatten() {
        let Some(id) = builtin_kind(&t.kind) else {
            continue;
        };
        if let Some(key) = t.extra.keys().next() {
            return Err(invalid(
                format!("`{}` tools take no `{}`", t.kind, shown(key)),
                "tools",
            ));
        }
        kit.check(id).map_err(|e| invalid(e.to_string(), "tools"))?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The request every turn starts from: the compound and search fields are the loop's, a
/// client function may not take a built-in tool's name, and `search_settings` needs search.
fn base_request(
    req: &ChatCompletionRequest,
    tools: &[ToolId],
) -> Result<ChatCompletionRequest, ServiceError> {
    let searches = tools.contains(&ToolId::WebSearch);
    if !searches
        && (req.search_settings.is_some()
            || req.include_domains.is_some()
            || req.exclude_domains.is_some())
    {
        return Err(invalid(
            "`search_settings` needs the web search tool, which this request does not use".into(),
            "search_settings",
        ));
    }
    let names: Vec<&str> = tools.iter().map(|&t| function_name(t)).collect();
    for f in req
        .tools
        .iter()
        .flatten()
        .filter_map(|t| t.function.as_ref())
    {
        if names.contains(&f.name.as_str()) {
            return Err(invalid(
                format!(
                    "function name `{}` is taken by a built-in tool of this request",
                    f.name
                ),
                "tools",
            ));
        }
    }
    let mut base = req.clone();
    base.compound_custom = None;
    base.search_settings = None;
    base.include_domains = None;
    base.exclude_domains = None;
    base.include_reasoning = None;
    base.stream = Some(false);
    base.stream_options = None;
    Ok(base)
}

/// The function name the model calls for `tool`.
pub fn function_name(tool: ToolId) -> &'static str {
    match tool {
        ToolId::WebSearch => "search",
        ToolId::CodeInterpreter => "python",
        ToolId::VisitWebsite => "visit",
        ToolId::BrowserAutomation => "browser",
        ToolId::WolframAlpha => "wolfram",
    }
}

/// Puts `prompt` first: before the client's own system text when it has one.
fn add_system_prompt(messages: &mut Vec<ChatMessage>, prompt: &str) {
    if let Some(ChatMessage::System {
        content: MessageContent::Text(text),
        ..
    }) = messages.first_mut()
    {
        *text = format!("{prompt}\n\n{text}");
        return;
    }
    messages.insert(
        0,
        ChatMessage::System {
            content: MessageContent::Text(prompt.to_string()),
            name: None,
        },
    );
}
