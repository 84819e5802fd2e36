//! Streaming chunks (docs/wire-contract.md, "Streaming"): the JSON after each `data: ` line of the SSE stream.
//!
//! Field order in these structs is the key order of Groq's live JSON; do not reorder.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::ObjectBuilder;
use utoipa::ToSchema;

use super::executed::ExecutedTool;
use super::response::{AssistantRole, ChoiceLogprobs, Usage, XGroq, FINISH_REASONS};
use crate::wire::const_str;
use crate::wire::schema as s;

const_str! {
    /// `"object":"chat.completion.chunk"`.
    ChatCompletionChunkObject = "chat.completion.chunk"
}

/// One streamed chunk.
///
/// Serialises as `id, object, created, model, system_fingerprint, choices`, then `x_groq`,
/// `usage` and `service_tier` only when set (Groq leaves the keys out rather than writing
/// `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChatCompletionChunk {
    /// Same on every chunk of a stream.
    pub id: String,
    /// Always `"chat.completion.chunk"`.
    pub object: ChatCompletionChunkObject,
    /// Unix time in seconds; same on every chunk.
    pub created: i64,
    /// The model id; same on every chunk.
    pub model: String,
    /// Same on every chunk.
    pub system_fingerprint: String,
    /// One entry, or none on the `include_usage` chunk.
    pub choices: Vec<ChunkChoice>,
    /// First chunk: `{id, seed}`; finish chunk: `{id, usage}`; failure: `{id, error}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_groq: Option<XGroq>,
    /// With `stream_options.include_usage`: on the finish chunk and the usage-only chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// On the usage-only chunk (`"on_demand"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
}

/// One entry of a chunk's `choices`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChunkChoice {
    /// Position in `choices` (always 0 on Groq).
    pub index: u32,
    /// What this chunk adds to the message.
    pub delta: Delta,
    /// Log-probabilities of this chunk's tokens; the key is always written.
    #[serde(default)]
    #[schema(required = true)]
    pub logprobs: Option<ChoiceLogprobs>,
    /// `null` (always written) until the last chunk of the choice.
    #[serde(default)]
    #[schema(required = true, schema_with = finish_reason_schema)]
    pub finish_reason: Option<String>,
}

fn finish_reason_schema() -> ObjectBuilder {
    s::nullable_string_enum(FINISH_REASONS)
        .description(Some("`null` until the last chunk of the choice."))
}

/// The increment of a streamed message. Every field is left out when `None`, so the finish
/// chunk's delta is `{}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delta {
    /// `"assistant"` on the first chunk only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<AssistantRole>,
    /// Answer text (the first chunk carries `""`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Reasoning text (`reasoning_format: "parsed"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// Tool-call fragments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    /// Server-side tools that just finished (built-in tools, compound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed_tools: Option<Vec<ExecutedTool>>,
}

/// A streamed tool call or a fragment of one.
///
/// Groq sends a whole call in one delta; older streams split `function.arguments` across
/// several deltas carrying only `index`. Keys are in Groq's live order, `index` last:
/// `{"id":...,"type":"function","function":{...},"index":0}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ToolCallDelta {
    /// The call id; on the first fragment of a call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `"function"`; on the first fragment of a call.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name and/or a piece of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
    /// Which call of this turn the fragment belongs to (0-based).
    pub index: u32,
}

/// The `function` part of a [`ToolCallDelta`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FunctionCallDelta {
    /// The function name; on the first fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A piece of the JSON-encoded arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}
