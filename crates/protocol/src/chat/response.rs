//! Non-streaming response , usage, `x_groq` and logprobs (docs/wire-contract.md, "Chat completion response").
//!
//! Field order in these structs is the key order of Groq's live JSON; do not reorder.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::ObjectBuilder;
use utoipa::ToSchema;

use super::executed::{ExecutedTool, UsageBreakdown};
use super::message::ToolCall;
use crate::wire::schema as s;
use crate::wire::{const_str, go_f64};

const_str! {
    /// `"object":"chat.completion"`.
    ChatCompletionObject = "chat.completion"
}

const_str! {
    /// `"role":"assistant"` in a response message or the first stream delta.
    AssistantRole = "assistant"
}

/// A complete (non-streaming) chat completion.
///
/// Serialises in the live key order: `id, object, created, model, choices, usage,
/// usage_breakdown, system_fingerprint, x_groq, service_tier`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletion {
    /// `chatcmpl-<uuid>`.
    pub id: String,
    /// Always `"chat.completion"`.
    pub object: ChatCompletionObject,
    /// Unix time in seconds.
    pub created: i64,
    /// The model id, as requested.
    pub model: String,
    /// Exactly one choice on Groq.
    pub choices: Vec<Choice>,
    /// Token counts and timings.
    pub usage: Usage,
    /// Per-model usage for compound systems; `null` otherwise (always written).
    #[serde(default)]
    #[schema(required = true)]
    pub usage_breakdown: Option<Value>,
    /// `fp_` + 10 hex digits.
    pub system_fingerprint: String,
    /// Groq extras: the request id and seed.
    pub x_groq: XGroq,
    /// The tier that served the request (`"on_demand"`); written as `null` when `None`.
    #[serde(default)]
    #[schema(required = true)]
    pub service_tier: Option<String>,
}

/// One entry of `choices`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Choice {
    /// Position in `choices` (always 0 on Groq).
    pub index: u32,
    /// The generated message.
    pub message: AssistantMessage,
    /// Log-probabilities when requested; the key is always written (`null` when `None`).
    #[serde(default)]
    #[schema(required = true)]
    pub logprobs: Option<ChoiceLogprobs>,
    /// `"stop"`, `"length"`, `"tool_calls"`, `"function_call"` or `"content_filter"`.
    #[schema(schema_with = finish_reason_schema)]
    pub finish_reason: String,
}

/// Every `finish_reason` of Groq's reference (Peregrine sends the first three).
pub(crate) const FINISH_REASONS: &[&str] = &[
    "stop",
    "length",
    "tool_calls",
    "function_call",
    "content_filter",
];

fn finish_reason_schema() -> ObjectBuilder {
    s::string_enum(FINISH_REASONS).description(Some("Why generation stopped."))
}

/// `choices[].message` of a response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AssistantMessage {
    /// Always `"assistant"`.
    pub role: AssistantRole,
    /// The answer; `null` (always written) when the model only called tools.
    #[serde(default)]
    #[schema(required = true)]
    pub content: Option<String>,
    /// Parsed reasoning (`reasoning_format: "parsed"`, gpt-oss by default); omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// Tool calls; omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Tools the server ran (built-in tools, compound); omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed_tools: Option<Vec<ExecutedTool>>,
}

/// Token counts and timings (docs/wire-contract.md). Times are seconds; `total_time` is
/// `prompt_time + completion_time` and excludes `queue_time`.
///
/// Integral times serialise without a fraction (`0`, like Groq's Go encoder).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// Seconds spent waiting for admission.
    #[serde(default, serialize_with = "go_f64")]
    #[schema(required = true)]
    pub queue_time: f64,
    /// Tokens in the rendered prompt.
    pub prompt_tokens: u64,
    /// Seconds spent on prompt processing.
    #[serde(default, serialize_with = "go_f64")]
    #[schema(required = true)]
    pub prompt_time: f64,
    /// Tokens generated (reasoning included).
    pub completion_tokens: u64,
    /// Seconds spent generating.
    #[serde(default, serialize_with = "go_f64")]
    #[schema(required = true)]
    pub completion_time: f64,
    /// `prompt_tokens + completion_tokens`.
    pub total_tokens: u64,
    /// `prompt_time + completion_time`.
    #[serde(default, serialize_with = "go_f64")]
    #[schema(required = true)]
    pub total_time: f64,
    /// Prompt-cache details; omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// Reasoning-token count for reasoning models; omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: u64,
}

/// `usage.completion_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CompletionTokensDetails {
    /// Completion tokens spent on reasoning.
    pub reasoning_tokens: u64,
}

/// Groq's `x_groq` extension object.
///
/// On a non-streaming response: `{"id","seed"}`. In a stream: `{"id","seed"}` on the first
/// chunk, `{"id","usage"}` on the finish chunk, `{"id","error"}` when generation fails midway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct XGroq {
    /// `req_` + ULID; also the `x-request-id` header.
    pub id: String,
    /// The seed actually used; omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Token usage on a stream's finish chunk; omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Why a stream ended early (e.g. `"over_capacity"`); omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Compound's per-model usage on a stream's finish chunk; omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_breakdown: Option<UsageBreakdown>,
}

impl XGroq {
    /// `{"id": id}` with nothing else set.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            ..Self::default()
        }
    }
}

/// `choices[].logprobs` (docs/wire-contract.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChoiceLogprobs {
    /// One entry per generated token.
    pub content: Vec<TokenLogprob>,
}

/// The log-probability of one generated token and its top alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Natural-log probability; `-9999.0` means outside the top 20. `null` for minus
    /// infinity (a token the grammar or `logit_bias` ruled out), which JSON cannot write.
    #[serde(serialize_with = "go_f64")]
    #[schema(nullable)]
    pub logprob: f64,
    /// The token's UTF-8 bytes; `null` (always written) when it has none.
    #[schema(required = true)]
    pub bytes: Option<Vec<u8>>,
    /// The most likely tokens at this position, best first.
    pub top_logprobs: Vec<TopLogprob>,
}

/// One alternative in [`TokenLogprob::top_logprobs`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Natural-log probability; `null` for minus infinity.
    #[serde(serialize_with = "go_f64")]
    #[schema(nullable)]
    pub logprob: f64,
    /// The token's UTF-8 bytes; `null` (always written) when it has none.
    #[schema(required = true)]
    pub bytes: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_match_live_capture() {
        // Spec §3.5, live qwen3-32b delta (the first entry's top_logprobs bytes were elided
        // in the spec with `…`; filled in with the token's bytes).
        let lp = ChoiceLogprobs {
            content: vec![TokenLogprob {
                token: "<think>".into(),
                logprob: 0.0,
                bytes: Some(b"<think>".to_vec()),
                top_logprobs: vec![
                    TopLogprob {
                        token: "<think>".into(),
                        logprob: 0.0,
                        bytes: Some(b"<think>".to_vec()),
                    },
                    TopLogprob {
                        token: String::new(),
                        logprob: -16.635532,
                        bytes: None,
                    },
                ],
            }],
        };
        assert_eq!(
            serde_json::to_string(&lp).unwrap(),
            r#"{"content":[{"token":"<think>","logprob":0,"bytes":[60,116,104,105,110,107,62],"top_logprobs":[{"token":"<think>","logprob":0,"bytes":[60,116,104,105,110,107,62]},{"token":"","logprob":-16.635532,"bytes":null}]}]}"#
        );
    }

    #[test]
    fn usage_details_and_zero_times() {
        let usage = Usage {
            prompt_tokens: 3,
            completion_tokens: 20,
            total_tokens: 23,
            prompt_tokens_details: Some(PromptTokensDetails { cached_tokens: 2 }),
            completion_tokens_details: Some(CompletionTokensDetails {
                reasoning_tokens: 14,
            }),
            ..Usage::default()
        };
        assert_eq!(
            serde_json::to_string(&usage).unwrap(),
            r#"{"queue_time":0,"prompt_tokens":3,"prompt_time":0,"completion_tokens":20,"completion_time":0,"total_tokens":23,"total_time":0,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":14}}"#
        );
    }

    #[test]
    fn object_marker_rejects_other_strings() {
        let err = serde_json::from_str::<ChatCompletionObject>(r#""chat.completion.chunk""#)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "invalid value: string \"chat.completion.chunk\", expected the string \"chat.completion\""
            ),
            "{err}"
        );
    }
}
