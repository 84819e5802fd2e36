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
use crate::model::{ModelContext, ReasoningInfo};
use crate::request::{ReasoningMode, ReasoningPlan};

/// The resolved choice: how reasoning is returned (`None`: the model does not reason) and
/// the template variables that shape it.
pub(super) struct Choice {
    pub mode: Option<ReasoningMode>,
    pub vars: TemplateVars,
}

/// Checks the reasoning parameters against the model's reasoning family (`None`: it does
/// not reason). `json_or_tools`: the answer is constrained (JSON mode, a schema) or may call
/// tools.
pub(super) fn resolve(
    req: &ChatCompletionRequest,
    reasoning: Option<&ReasoningInfo>,
    json_or_tools: bool,
) -> Result<Choice, PrepareError> {
    let format = req.reasoning_format.as_deref();
    let include = req.include_reasoning;
    let effort = req.reasoning_effort.as_deref();
    let Some(info) = reasoning else {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn info(syntax: ReasoningSyntax, effort: EffortControl) -> ReasoningInfo {
        ReasoningInfo {
            syntax,
            effort,
            markers: Vec::new().into(),
        }
    }

    /// Qwen3: `<think>` with the `enable_thinking` switch.
    fn qwen3() -> ReasoningInfo {
        info(ReasoningSyntax::Think, EffortControl::EnableThinking)
    }

    /// DeepSeek-R1 / QwQ: `<think>`, no switch.
    fn r1() -> ReasoningInfo {
        info(ReasoningSyntax::Think, EffortControl::None)
    }

    /// gpt-oss: Harmony channels, effort levels.
    fn gpt_oss() -> ReasoningInfo {
        info(ReasoningSyntax::Harmony, EffortControl::Levels)
    }

    fn req(
        format: Option<&str>,
        include: Option<bool>,
        effort: Option<&str>,
    ) -> ChatCompletionRequest {
        ChatCompletionRequest {
            reasoning_format: format.map(String::from),
            include_reasoning: include,
            reasoning_effort: effort.map(String::from),
            ..Default::default()
        }
    }

    fn mode(
        info: Option<&ReasoningInfo>,
        r: ChatCompletionRequest,
        json_or_tools: bool,
    ) -> Result<Option<ReasoningMode>, String> {
        resolve(&r, info, json_or_tools)
            .map(|c| c.mode)
            .map_err(|e| e.to_string())
    }

    /// How each family returns reasoning for each choice of parameters.
    #[test]
    fn each_family_returns_reasoning_as_asked() {
        let (q, g) = (qwen3(), gpt_oss());
        use ReasoningMode::{Hidden, Parsed, Raw};
        let cases = [
            // `<think>` models: raw by default, parsed under JSON mode or tools.
            (&q, req(None, None, None), false, Raw),
            (&q, req(None, None, None), true, Parsed),
            (&q, req(None, Some(true), None), false, Parsed),
            (&q, req(None, Some(false), None), false, Hidden),
            (&q, req(Some("hidden"), None, None), true, Hidden),
            // Harmony: parsed unless reasoning is excluded.
            (&g, req(None, None, None), false, Parsed),
            (&g, req(None, Some(false), None), true, Hidden),
        ];
        for (info, r, json_or_tools, want) in cases {
            let what = format!("{r:?}");
            assert_eq!(mode(Some(info), r, json_or_tools), Ok(Some(want)), "{what}");
        }
    }

    /// The template variables `reasoning_effort` sets (an error as its message).
    fn vars(info: &ReasoningInfo, effort: &str) -> Result<TemplateVars, String> {
        resolve(&req(None, None, Some(effort)), Some(info), false)
            .map(|c| c.vars)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn effort_goes_to_the_template_as_the_family_reads_it() {
        let (q, g) = (qwen3(), gpt_oss());
        let high = vars(&g, "high").map(|v| v.reasoning_effort);
        assert_eq!(high, Ok(Some("high".to_string())));
        // Qwen3: `none` switches thinking off, `default` leaves the template as it is.
        assert_eq!(vars(&q, "none").map(|v| v.enable_thinking), Ok(Some(false)));
        assert_eq!(vars(&q, "default"), Ok(TemplateVars::default()));
    }

    /// Every refusal, on the family it belongs to.
    #[test]
    fn every_reasoning_refusal() {
        let (q, r, g) = (qwen3(), r1(), gpt_oss());
        let cases: [(Option<&ReasoningInfo>, ChatCompletionRequest, bool, &str); 11] = [
            (
                None,
                req(Some("parsed"), None, None),
                false,
                "`reasoning_format` is not supported",
            ),
            (
                None,
                req(None, Some(true), None),
                false,
                "`include_reasoning` is not supported",
            ),
            (
                None,
                req(None, None, Some("low")),
                false,
                "`reasoning_effort` is not supported",
            ),
            (
                Some(&q),
                req(Some("parsed"), Some(true), None),
                false,
                "cannot both be set",
            ),
            (
                Some(&q),
                req(Some("raw"), None, None),
                true,
                "'raw' is not supported with JSON mode",
            ),
            (
                Some(&q),
                req(Some("verbose"), None, None),
                false,
                "must be one of hidden, raw or parsed",
            ),
            (
                Some(&q),
                req(None, None, Some("high")),
                false,
                "supported values: `none`, `default`",
            ),
            // DeepSeek-R1: no switch for effort at all.
            (
                Some(&r),
                req(None, None, Some("none")),
                false,
                "`reasoning_effort` is not supported",
            ),
            // gpt-oss: no `reasoning_format`; effort in levels only.
            (
                Some(&g),
                req(Some("parsed"), None, None),
                false,
                "`reasoning_format` is not supported",
            ),
            (
                Some(&g),
                req(None, None, Some("none")),
                false,
                "supported values: `low`, `medium`, `high`",
            ),
            (
                Some(&g),
                req(Some("raw"), Some(false), None),
                false,
                "cannot both be set",
            ),
        ];
        for (info, r, json_or_tools, want) in cases {
            let got = mode(info, r, json_or_tools);
            assert!(
                got.as_ref().is_err_and(|e| e.contains(want)),
                "{want}: {got:?}"
            );
        }
        // `include_reasoning: false` on a model without reasoning asks for nothing.
        assert_eq!(mode(None, req(None, Some(false), None), false), Ok(None));
    }
}
