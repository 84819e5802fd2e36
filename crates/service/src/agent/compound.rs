//! Compound systems as model ids (`groq/compound`, `groq/compound-mini` and the legacy
//! `compound-beta`, `compound-beta-mini`): the system versions of `Groq-Model-Version`, the
//! tools each enables by default, and `compound_custom` (docs/decisions/0011-builtin-tools.md).

use peregrine_protocol::chat::ChatCompletionRequest;
use peregrine_tools::{ToolId, ToolKit};
use serde::Deserialize;

use crate::error::ServiceError;
use crate::registry::ModelRegistry;

/// The compound ids, and whether each is a "mini" system (at most one tool call).
pub const COMPOUND_MODELS: &[(&str, bool)] = &[
    ("groq/compound", false),
    ("groq/compound-mini", true),
    ("compound-beta", false),
    ("compound-beta-mini", true),
];

/// `Some(mini)` when `id` names a compound system (ASCII case ignored, as for models).
pub fn compound_model(id: &str) -> Option<bool> {
    COMPOUND_MODELS
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(id))
        .map(|&(_, mini)| mini)
}

/// A system version of `Groq-Model-Version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SystemVersion {
    /// `2025-07-23`: web search and code execution.
    V20250723,
    /// `2025-08-16`, the stable default and `latest`: adds website visits and the tools
    /// that need the newer system.
    V20250816,
}

/// The versions a client may name, oldest first.
pub const VERSIONS: &[(&str, SystemVersion)] = &[
    ("2025-07-23", SystemVersion::V20250723),
    ("2025-08-16", SystemVersion::V20250816),
];

impl SystemVersion {
    /// The version `Groq-Model-Version` selects: absent is the stable default, `latest` the
    /// newest; anything else must be one of [`VERSIONS`].
    pub fn from_header(header: Option<&str>) -> Result<Self, ServiceError> {
        match header.map(str::trim) {
            None | Some("") | Some("latest") => Ok(SystemVersion::V20250816),
            Some(v) => VERSIONS
                .iter()
                .find(|(name, _)| *name == v)
                .map(|&(_, ver)| ver)
                .ok_or_else(|| ServiceError::InvalidParam {
                    message: format!(
                        "Invalid `Groq-Model-Version` `{}`: use `latest` or one of {}.",
                        shown(v),
                        VERSIONS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    param: "Groq-Model-Version",
                }),
        }
    }

    /// The tools this version enables when `enabled_tools` is not given.
    pub fn default_tools(self) -> &'static [ToolId] {
        match self {
            SystemVersion::V20250723 => &[ToolId::WebSearch, ToolId::CodeInterpreter],
            SystemVersion::V20250816 => &[
                ToolId::WebSearch,
                ToolId::CodeInterpreter,
                ToolId::VisitWebsite,
            ],
        }
    }

    /// Whether `tool` exists in this version (the newer tools need more than 2025-07-23).
    pub fn has(self, tool: ToolId) -> bool {
        match tool {
            ToolId::WebSearch | ToolId::CodeInterpreter => true,
            _ => self > SystemVersion::V20250723,
        }
    }
}

fn shown(v: &str) -> String {
    v.chars().take(64).collect()
}

/// `compound_custom`, typed; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompoundCustom {
    #[serde(default)]
    pub models: Option<CompoundModels>,
    #[serde(default)]
    pub tools: Option<CompoundTools>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompoundModels {
    #[serde(default)]
    pub reasoning_model: Option<String>,
    #[serde(default)]
    pub answering_model: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompoundTools {
    #[serde(default)]
    pub enabled_tools: Option<Vec<String>>,
    #[serde(default)]
    pub wolfram_settings: Option<WolframSettings>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WolframSettings {
    #[serde(default)]
    pub authorization: Option<String>,
}

fn invalid(message: String, param: &'static str) -> ServiceError {
    ServiceError::InvalidParam { message, param }
}

/// What a compound request resolved to.
#[derive(Debug)]
pub struct CompoundSetup {
    pub tools: Vec<ToolId>,
    /// Served model ids (canonical) for the tool-calling turns and the answer.
    pub reasoning_model: String,
    pub answering_model: String,
    /// `wolfram_settings.authorization`.
    pub wolfram_app_id: Option<String>,
}

/// Checks a compound request: no user tools, a known version, `compound_custom` well formed
/// with tools this version and this server have, models that are served.
pub fn setup(
    req: &ChatCompletionRequest,
    version: SystemVersion,
    registry: &ModelRegistry,
    kit: &ToolKit,
    org: &str,
) -> Result<CompoundSetup, ServiceError> {
    if req.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(invalid(
            "`tools` is not supported with compound models: they run their own built-in \
             tools (see `compound_custom.tools.enabled_tools`)"
                .into(),
            "tools",
        ));
    }
    if req.tool_choice.is_some() {
        return Err(invalid(
            "`tool_choice` is not supported with compound models".into(),
            "tool_choice",
        ));
    }
    let custom: CompoundCustom = match &req.compound_custom {
        None => CompoundCustom::default(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| invalid(format!("`compound_custom`: {e}"), "compound_custom"))?,
    };
    let tools = enabled_tools(&custom, version, kit)?;
    let wolfram_app_id = custom
        .tools
        .as_ref()
        .and_then(|t| t.wolfram_settings.as_ref())
        .and_then(|w| w.authorization.clone())
        .filter(|k| !k.trim().is_empty());
    if tools.contains(&ToolId::WolframAlpha) && wolfram_app_id.is_none() {
        return Err(invalid(
            "`wolfram_alpha` needs `compound_custom.tools.wolfram_settings.authorization` \
             (your Wolfram|Alpha AppID)"
                .into(),
            "compound_custom.tools.wolfram_settings",
        ));
    }
    let default = registry
        .models()
        .first()
        .map(|m| m.id.clone())
        .ok_or_else(|| ServiceError::ModelNotFound(req.model.clone()))?;
    let models = custom.models.unwrap_or_default();
    let pick = |id: Option<String>| -> Result<String, ServiceError> {
        match id {
            None => Ok(default.clone()),
            Some(id) => registry
                .resolve(&id, org)
                .map(|r| r.model.id.clone())
                .ok_or(ServiceError::ModelNotFound(id)),
        }
    };
    Ok(CompoundSetup {
        tools,
        reasoning_model: pick(models.reasoning_model)?,
        answering_model: pick(models.answering_model)?,
        wolfram_app_id,
    })
}

/// The tools of a compound request: `enabled_tools` (each known, in this version, and
/// available here), or the version's defaults that this server has.
fn enabled_tools(
    custom: &CompoundCustom,
    version: SystemVersion,
    kit: &ToolKit,
) -> Result<Vec<ToolId>, ServiceError> {
    let param = "compound_custom.tools.enabled_tools";
    let listed = custom.tools.as_ref().and_then(|t| t.enabled_tools.as_ref());
    let Some(listed) = listed else {
        let defaults = version.default_tools().iter().copied();
        return Ok(defaults.filter(|&t| kit.check(t).is_ok()).collect());
    };
    let mut tools = Vec::new();
    for name in listed {
        let id = ToolId::parse(name).ok_or_else(|| {
            let known: Vec<&str> = ToolId::ALL.iter().map(|t| t.as_str()).collect();
            invalid(
                format!(
                    "unknown tool `{}` in `enabled_tools`: use {}",
                    shown(name),
                    known.join(", ")
                ),
                param,
            )
        })?;
        if !version.has(id) {
            return Err(invalid(
                format!(
                    "`{}` needs a newer system version: send `Groq-Model-Version: latest`",
                    id.as_str()
                ),
                param,
            ));
        }
        kit.check(id).map_err(|e| invalid(e.to_string(), param))?;
        if !tools.contains(&id) {
            tools.push(id);
        }
    }
    Ok(tools)
}

/// The system prompt that makes the served model the agent over `tools`.
pub fn system_prompt(tools: &[ToolId], mini: bool) -> String {
    let mut s = String::from(
        "You are Compound, an assistant that can use tools which the server runs for you.",
    );
    if tools.contains(&ToolId::CodeInterpreter) {
        s.push_str(
            " To calculate anything or run code, call the `python` tool with Python code that \
             prints the result; you see what it prints.",
        );
    }
    if tools.contains(&ToolId::WebSearch) {
        s.push_str(" For current facts, call the `search` tool.");
    }
    if tools.contains(&ToolId::VisitWebsite) {
        s.push_str(" To read a web page, call the `visit` tool with its URL.");
    }
    if tools.contains(&ToolId::WolframAlpha) {
        s.push_str(" For math, units and scientific data, call the `wolfram` tool.");
    }
    if mini {
        s.push_str(" You may call at most one tool.");
    }
    s.push_str(
        " When you have what you need, answer the user directly and concisely, using the \
         tool results.",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_gate_tools() {
        assert_eq!(
            SystemVersion::from_header(None).unwrap(),
            SystemVersion::V20250816
        );
        assert_eq!(
            SystemVersion::from_header(Some("latest")).unwrap(),
            SystemVersion::V20250816
        );
        let old = SystemVersion::from_header(Some("2025-07-23")).unwrap();
        assert!(!old.has(ToolId::VisitWebsite));
        assert!(old.has(ToolId::CodeInterpreter));
        let e = SystemVersion::from_header(Some("2024-01-01")).unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("2025-07-23, 2025-08-16"), "{e}");
    }

    #[test]
    fn compound_ids_ignore_case() {
        assert_eq!(compound_model("groq/Compound"), Some(false));
        assert_eq!(compound_model("compound-beta-mini"), Some(true));
        assert_eq!(compound_model("groq/compound-max"), None);
    }
}
