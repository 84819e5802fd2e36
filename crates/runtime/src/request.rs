//! [`PreparedRequest`]: what preparation hands the engine thread. Plain data, checked once;
//! the engine loop trusts every field.

use std::collections::HashMap;
use std::sync::Arc;

use peregrine_engine::{AdapterId, TokenId};
use peregrine_grammar::Constraint;
use peregrine_text::reasoning::{ReasoningSyntax, Start};
use peregrine_text::tools::{ParsedCall, ToolFormat};

use crate::sampling::SamplingParams;

/// Requested service tier, as echoed in responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceTier {
    OnDemand,
    /// On-demand limits first, then flex's: resolved by the rate limiter before the
    /// request runs (without limits, on_demand).
    Auto,
    Flex,
    Performance,
}

impl ServiceTier {
    /// The tier a request names (`service_tier`), if it is one.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "on_demand" => Some(ServiceTier::OnDemand),
            "auto" => Some(ServiceTier::Auto),
            "flex" => Some(ServiceTier::Flex),
            "performance" => Some(ServiceTier::Performance),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceTier::OnDemand => "on_demand",
            ServiceTier::Auto => "auto",
            ServiceTier::Flex => "flex",
            ServiceTier::Performance => "performance",
        }
    }
}

/// A request that passed every check that can be made before generation.
#[derive(Debug)]
pub struct PreparedRequest {
    /// The prompt's tokens; an image stands as its placeholder tokens
    /// ([`peregrine_engine::PreparedImage::placeholders`]), listed in `images`.
    pub prompt: Vec<TokenId>,
    /// The prompt's images, in prompt order, each where its placeholders start.
    pub images: Vec<PromptImage>,
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
    /// How a reasoning model's reasoning is split from its answer (`None`: it does not
    /// reason). The constraint and tool calls then apply to the answer only.
    pub reasoning: Option<ReasoningPlan>,
    /// The LoRA adapter the request runs with (`None`: the base model); set by the service
    /// from the model id it asked for.
    pub adapter: Option<AdapterId>,
    pub stream: bool,
    pub include_usage: bool,
    pub service_tier: ServiceTier,
    /// The request's span (its request id): the engine thread's events about this
    /// sequence are logged inside it. `Span::none()` until the service sets it.
    pub span: tracing::Span,
}

/// An image of a prompt: computed by the projector at positions `at..at + image.n_tokens`.
#[derive(Clone, Debug)]
pub struct PromptImage {
    pub at: usize,
    pub image: peregrine_engine::PreparedImage,
}

impl PromptImage {
    /// Just past the image's positions.
    pub fn end(&self) -> usize {
        self.at + self.image.n_tokens as usize
    }
}

/// How reasoning is returned (`reasoning_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReasoningMode {
    /// In `message.reasoning` / `delta.reasoning`; `content` is the answer.
    Parsed,
    /// Inline in `content`, in its tags.
    Raw,
    /// Dropped (still counted as completion tokens).
    Hidden,
}

impl ReasoningMode {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "parsed" => Some(ReasoningMode::Parsed),
            "raw" => Some(ReasoningMode::Raw),
            "hidden" => Some(ReasoningMode::Hidden),
            _ => None,
        }
    }
}

/// A reasoning model's request, resolved at preparation.
#[derive(Debug, Clone)]
pub struct ReasoningPlan {
    pub syntax: ReasoningSyntax,
    pub mode: ReasoningMode,
    /// Where the output starts (from the end of the rendered prompt).
    pub start: Start,
    /// Control tokens of the syntax, shown to the parser as their text.
    pub markers: Arc<[(TokenId, String)]>,
}

/// Groq's message for a call that cannot be parsed.
pub const FAILED_CALL: &str =
    "Failed to call a function. Please adjust your prompt. See 'failed_generation' for more details.";

/// How a request may call tools, resolved at preparation.
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
    pub(crate) tools: HashMap<String, Option<Arc<jsonschema::Validator>>>,
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
