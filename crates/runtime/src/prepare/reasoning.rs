//! The reasoning parameters (`reasoning_format`, `include_reasoning`, `reasoning_effort`):
//! Groq's rules, resolved against what the model's family offers, into how the output is
//! shaped ([`ReasoningMode`]) and what the template is told ([`TemplateVars`]).
//!
//! Rules (Groq's reasoning docs; the wording of the messages is ours, decision 0017):
//! - a model that does not reason refuses `reasoning_format`, `include_reasoning: true` and
//!   `reasoning_effort`;
//! - `reasoning_format` and `include_reasoning` are exclusive;
//! - `<think>` models (Qwen3, QwQ, DeepSeek-R1): `raw` is the default, `parsed` with JSON
//!   mode or tools, where `raw` is refused; `include_reasoning` true/false is
//!   `parsed`/`hidden`; `reasoning_effort` is `none` or `default` where the template has
//!   Qwen3's `enable_thinking` switch, refused otherwise;
//! - Harmony models (gpt-oss): no `reasoning_format`; reasoning is parsed unless
//!   `include_reasoning` is false; `reasoning_effort` is `low`, `medium` or `high`.

use peregrine_protocol::chat::ChatCompletionRequest;
use peregrine_text::reasoning::{EffortControl, ReasoningSyntax};
use peregrine_text::TemplateVars;

use super::PrepareError;
use crate::model::ModelContext;
use crate::request::{ReasoningMode, ReasoningPlan};

/// The resolved choice: how reasoning is returned (`None`: the model does not reason) and
/// the template variables that shape it.
pub(super) struct Choice {
    pub mode: Option<ReasoningMode>,
    pub vars: TemplateVars,
}

/// Checks the reasoning parameters against the model. `json_or_tools`: the answer is
/// constrained (JSON mode, a schema) or may call tools.
pub(super) fn resolve(
    req: &ChatCompletionRequest,
    model: &ModelContext,
    json_or_tools: bool,
) -> Result<Choice, PrepareError> {
    let format = req.reasoning_format.as_deref();
    let include = req.include_reasoning;
    let effort = req.reasoning_effort.as_deref();
    let Some(info) = &model.reasoning else {
        return not_a_reasoning_model(format, include, effort);
    };
    if format.is_some() && include.is_some() {
        return Err(PrepareError::FormatWithInclude);
    }
    let vars = effort_vars(info.effort, effort)?;
    let mode = match info.syntax {
        ReasoningSyntax::Harmony => {
            if format.is_some() {
                return Err(unsupported("reasoning_format"));
            }
            match include {
                Some(false) => ReasoningMode::Hidden,
                _ => ReasoningMode::Parsed,
            }
        }
        ReasoningSyntax::Think => match (format, include) {
            (Some("raw"), _) if json_or_tools => return Err(PrepareError::RawWithJsonOrTools),
            (Some(f), _) => ReasoningMode::from_name(f)
                .ok_or_else(|| PrepareError::ReasoningFormat(f.to_string()))?,
            (None, Some(true)) => ReasoningMode::Parsed,
            (None, Some(false)) => ReasoningMode::Hidden,
            (None, None) if json_or_tools => ReasoningMode::Parsed,
            (None, None) => ReasoningMode::Raw,
        },
    };
    Ok(Choice {
        mode: Some(mode),
        vars,
    })
}

fn unsupported(feature: &'static str) -> PrepareError {
    PrepareError::Unsupported { feature, at: None }
}

/// A model without reasoning: asking for any is refused; `include_reasoning: false` asks
/// for nothing and passes.
fn not_a_reasoning_model(
    format: Option<&str>,
    include: Option<bool>,
    effort: Option<&str>,
) -> Result<Choice, PrepareError> {
    if format.is_some() {
        return Err(unsupported("reasoning_format"));
    }
    if include == Some(true) {
        return Err(unsupported("include_reasoning"));
    }
    if effort.is_some() {
        return Err(unsupported("reasoning_effort"));
    }
    Ok(Choice {
        mode: None,
        vars: TemplateVars::default(),
    })
}

/// `reasoning_effort` as the family's template reads it.
fn effort_vars(control: EffortControl, effort: Option<&str>) -> Result<TemplateVars, PrepareError> {
    let Some(effort) = effort else {
        return Ok(TemplateVars::default());
    };
    let wrong = |allowed: &'static str| PrepareError::ReasoningEffort {
        got: effort.to_string(),
        allowed,
    };
    match (control, effort) {
        (EffortControl::None, _) => Err(unsupported("reasoning_effort")),
        (EffortControl::EnableThinking, "none") => Ok(TemplateVars {
            enable_thinking: Some(false),
            ..TemplateVars::default()
        }),
        (EffortControl::EnableThinking, "default") => Ok(TemplateVars::default()),
        (EffortControl::EnableThinking, _) => Err(wrong("`none`, `default`")),
        (EffortControl::Levels, "low" | "medium" | "high") => Ok(TemplateVars {
            reasoning_effort: Some(effort.to_string()),
            ..TemplateVars::default()
        }),
        (EffortControl::Levels, _) => Err(wrong("`low`, `medium`, `high`")),
    }
}

/// The engine's plan for a reasoning request: where its output starts is read off the end
/// of the rendered `prompt`. `None` when the model does not reason.
pub(super) fn plan(
    mode: Option<ReasoningMode>,
    model: &ModelContext,
    prompt: &str,
) -> Option<ReasoningPlan> {
    let info = model.reasoning.as_ref()?;
    Some(ReasoningPlan {
        syntax: info.syntax,
        mode: mode?,
        start: info.syntax.start(prompt),
        markers: info.markers.clone(),
    })
}
