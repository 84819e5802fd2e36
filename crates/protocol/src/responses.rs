//! The Responses API's objects ([Groq's Responses API](https://console.groq.com/docs/responses-api),
//! beta): `POST /responses`. Shapes only; what each field means for generation is decided
//! where the request becomes a chat request (`peregrine_service::responses_wire`).
//!
//! Groq's request schema is closed (`additionalProperties: false`): unknown properties are
//! refused like chat's. Fields Groq names as unsupported (`previous_response_id`, `include`,
//! ...) parse, so the refusal can name them in Groq's words.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::wire::const_str;

/// Every top-level request property, for "did you mean" suggestions.
pub const REQUEST_FIELDS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "text",
    "reasoning",
    "metadata",
    "parallel_tool_calls",
    "store",
    "stream",
    "user",
    "service_tier",
    "truncation",
    "previous_response_id",
    "include",
    "safety_identifier",
    "prompt_cache_key",
];

/// `POST /responses`. Every optional field takes `null` as unset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponsesRequest {
    pub model: String,
    pub input: Input,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub max_output_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub tools: Option<Vec<ResponsesTool>>,
    /// `"auto"`, `"none"`, `"required"` or `{"type":"function","name":...}`.
    #[serde(default)]
    pub tool_choice: Option<ResponsesToolChoice>,
    #[serde(default)]
    pub text: Option<TextConfig>,
    #[serde(default)]
    pub reasoning: Option<ReasoningConfig>,
    /// At most 16 pairs (checked where the request is converted).
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// Only `false` (nothing is stored).
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub service_tier: Option<String>,
    /// Only `"disabled"`, the default.
    #[serde(default)]
    pub truncation: Option<String>,
    /// Unsupported (no server-side state): refused unless `null`.
    #[serde(default)]
    pub previous_response_id: Option<Value>,
    /// Unsupported: refused unless `null`.
    #[serde(default)]
    pub include: Option<Value>,
    /// Unsupported: refused unless `null`.
    #[serde(default)]
    pub safety_identifier: Option<Value>,
    /// Unsupported: refused unless `null`.
    #[serde(default)]
    pub prompt_cache_key: Option<Value>,
}

/// `input`: one user message as a string, or items.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<InputItem>),
}

impl Default for Input {
    fn default() -> Self {
        Input::Text(String::new())
    }
}

impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_or_seq(
            d,
            "a string or an array of input items",
            Input::Text,
            Input::Items,
        )
    }
}

/// A string as `text`, or an array as `items`. By hand rather than `untagged`, so an error
/// inside an item keeps its path (`input[0].role`) instead of a summary of the whole field.
fn string_or_seq<'de, D, T, R>(
    d: D,
    expecting: &'static str,
    text: fn(String) -> R,
    items: fn(Vec<T>) -> R,
) -> Result<R, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct V<T, R> {
        expecting: &'static str,
        text: fn(String) -> R,
        items: fn(Vec<T>) -> R,
    }

    impl<'de, T: Deserialize<'de>, R> Visitor<'de> for V<T, R> {
        type Value = R;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<R, E> {
            Ok((self.text)(v.to_string()))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<R, A::Error> {
            Vec::<T>::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(self.items)
        }
    }

    d.deserialize_any(V {
        expecting,
        text,
        items,
    })
}

/// One input item. Messages (`{"role","content"}`, with or without `"type":"message"`),
/// `function_call`, `function_call_output`, and `reasoning` (an earlier response's output,
/// passed back); which fields each needs is checked on conversion, so a missing one is
/// named with its item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputItem {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub content: Option<InputContent>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub call_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
    #[serde(default)]
    pub output: Option<String>,
    /// A reasoning item's summary, passed back (ignored).
    #[serde(default)]
    pub summary: Option<Value>,
    /// A reasoning item's opaque content, passed back (ignored).
    #[serde(default)]
    pub encrypted_content: Option<Value>,
}

/// A message's `content`: a string or parts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum InputContent {
    Text(String),
    Parts(Vec<InputPart>),
}

impl<'de> Deserialize<'de> for InputContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string_or_seq(
            d,
            "a string or an array of content parts",
            InputContent::Text,
            InputContent::Parts,
        )
    }
}

/// A content part: `input_text`, `input_image`, an earlier answer's `output_text`, or a
/// reasoning item's `reasoning_text`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    /// Of an `output_text` passed back (ignored).
    #[serde(default)]
    pub annotations: Option<Value>,
    /// Of an `output_text` passed back (ignored).
    #[serde(default)]
    pub logprobs: Option<Value>,
}

/// A tool: `{"type":"function","name",...}` (flattened, unlike chat's), or a built-in tool
/// (`code_interpreter`, `browser_search`, `mcp`) with its own keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponsesTool {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    /// A built-in tool's other keys (`container`, `server_label`, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "\"none\", \"auto\", \"required\" or a function to call"
)]
pub enum ResponsesToolChoice {
    Mode(String),
    Function {
        #[serde(rename = "type")]
        kind: String,
        name: String,
    },
}

/// `text`: the answer's format.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextConfig {
    #[serde(default)]
    pub format: Option<TextFormat>,
}

/// `text.format`; `json_schema` is flattened (its `name` and `schema` beside `type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TextFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        schema: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
}

/// `reasoning`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasoningConfig {
    /// `low`, `medium` or `high` (per model, checked as chat's `reasoning_effort`).
    #[serde(default)]
    pub effort: Option<String>,
}

const_str! {
    /// `"object":"response"`.
    ResponseObjectKind = "response"
}

/// A response, Groq's keys in Groq's order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponseObject {
    /// `resp_` + a lower-case ULID.
    pub id: String,
    pub object: ResponseObjectKind,
    /// `completed`, `incomplete`, `failed` or (streaming) `in_progress`.
    pub status: String,
    pub created_at: i64,
    pub output: Vec<OutputItem>,
    /// Always `null`: no server-side state.
    pub previous_response_id: Option<String>,
    pub model: String,
    pub reasoning: Option<ReasoningConfig>,
    pub max_output_tokens: Option<i64>,
    pub text: TextConfigOut,
    pub tools: Vec<ResponsesTool>,
    pub tool_choice: Value,
    pub truncation: String,
    pub metadata: BTreeMap<String, String>,
    pub temperature: f64,
    pub top_p: f64,
    pub user: Option<String>,
    pub service_tier: String,
    pub background: bool,
    pub error: Option<ResponseError>,
    pub incomplete_details: Option<IncompleteDetails>,
    /// Absent until the response is over (streaming).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<ResponseUsage>,
    pub parallel_tool_calls: bool,
    pub store: bool,
    pub top_logprobs: u32,
    pub max_tool_calls: Option<u32>,
}

/// `text` as a response repeats it: the format always present.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextConfigOut {
    pub format: TextFormat,
}

/// `error` of a failed response.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponseError {
    pub code: String,
    pub message: String,
}

/// Why a response is `incomplete`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncompleteDetails {
    /// `max_output_tokens`.
    pub reason: String,
}

/// An output item.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Reasoning {
        id: String,
        status: String,
        content: Vec<ReasoningText>,
        summary: Vec<Value>,
    },
    Message {
        id: String,
        status: String,
        role: AssistantRoleOut,
        content: Vec<OutputText>,
    },
    FunctionCall {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
        status: String,
    },
}

const_str! {
    /// `"role":"assistant"`.
    AssistantRoleOut = "assistant"
}

const_str! {
    /// `"type":"reasoning_text"`.
    ReasoningTextKind = "reasoning_text"
}

const_str! {
    /// `"type":"output_text"`.
    OutputTextKind = "output_text"
}

/// A reasoning item's text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReasoningText {
    #[serde(rename = "type")]
    pub kind: ReasoningTextKind,
    pub text: String,
}

/// A message's text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputText {
    #[serde(rename = "type")]
    pub kind: OutputTextKind,
    pub text: String,
    pub annotations: Vec<Value>,
    pub logprobs: Option<Vec<Value>>,
}

/// `usage`, as Groq gives it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ResponseUsage {
    pub input_tokens: u64,
    pub input_tokens_details: TokenDetails,
    pub output_tokens: u64,
    pub output_tokens_details: TokenDetails,
    pub total_tokens: u64,
}

/// Groq fills both counts on both sides.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TokenDetails {
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
}

/// One event of a streamed response: `type` and `sequence_number` first, then the event's
/// own fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamEvent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub sequence_number: u64,
    #[serde(flatten)]
    pub fields: serde_json::Map<String, Value>,
}
