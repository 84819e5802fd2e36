//! `POST /openai/v1/chat/completions` request body (docs/wire-contract.md, "Chat completions request").
//!
//! Shapes only: ranges, mutually exclusive fields and per-model support are checked by the
//! runtime's validation layer, which turns this into a typed request.

use std::collections::BTreeMap;

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

use super::message::ChatMessage;
use crate::wire::schema as s;
use crate::wire::{self, Other};

/// Every top-level field of [`ChatCompletionRequest`], in the order of Groq's API reference. Used to suggest a
/// field for an unknown property (`did you mean 'stream'?`).
pub const REQUEST_FIELDS: &[&str] = &[
    "messages",
    "model",
    "temperature",
    "top_p",
    "max_completion_tokens",
    "max_tokens",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "n",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "disable_tool_validation",
    "functions",
    "function_call",
    "reasoning_format",
    "include_reasoning",
    "reasoning_effort",
    "service_tier",
    "user",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "metadata",
    "store",
    "compound_custom",
    "search_settings",
    "include_domains",
    "exclude_domains",
    "documents",
    "citation_options",
];

/// The chat-completions request body, every field of Groq's API reference. Unknown top-level fields are
/// rejected (Groq does the same with a 400).
///
/// Every optional field accepts `null` as "not set". Enumerated strings (`reasoning_format`,
/// `service_tier`, ...) are kept as strings so validation can answer with Groq's wording.
/// Parse it with [`crate::parse::parse_chat_request`] to get errors that name the field.
///
/// The OpenAPI schema (`ToSchema`) adds the ranges and enumerations of Groq's reference that
/// the validation layer checks (`messages` non-empty, `temperature` 0..=2, `n` 1, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    description = "The chat-completions request body, every field of Groq's API. Unknown \
                        fields are refused; `null` means unset for every optional field."
)]
pub struct ChatCompletionRequest {
    /// The conversation (required; Groq needs at least one, checked by validation).
    #[schema(min_items = 1)]
    pub messages: Vec<ChatMessage>,
    /// Model id (required).
    #[schema(example = "llama-3.1-8b-instant")]
    pub model: String,
    /// 0..=2, default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    /// 0..=1, default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    /// Completion token limit (preferred over `max_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<i64>,
    /// Deprecated alias of `max_completion_tokens`, still widely sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, deprecated)]
    pub max_tokens: Option<i64>,
    /// One stop string or up to 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopSequences>,
    /// Sampling seed; the seed used is echoed in `x_groq.seed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Stream the answer as server-sent events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Streaming options (`include_usage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Number of choices; Groq only allows 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1)]
    pub n: Option<i64>,
    /// `text`, `json_object` or `json_schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Tools the model may call (at most 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 128)]
    pub tools: Option<Vec<Tool>>,
    /// `"none"`, `"auto"`, `"required"` or a named function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Allow several tool calls in one turn (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Groq-only: return tool calls without checking them against `tools`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_tool_validation: Option<bool>,
    /// Deprecated list of functions (`{name, description?, parameters?}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 128, deprecated)]
    pub functions: Option<Vec<FunctionDefinition>>,
    /// Deprecated: `"none"`, `"auto"`, `"required"` or `{"name": ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(deprecated)]
    pub function_call: Option<FunctionCallChoice>,
    /// `"hidden"`, `"raw"` or `"parsed"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = reasoning_format_schema)]
    pub reasoning_format: Option<String>,
    /// Whether `message.reasoning` is returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_reasoning: Option<bool>,
    /// `"none"`, `"default"`, `"low"`, `"medium"` or `"high"`, per model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = reasoning_effort_schema)]
    pub reasoning_effort: Option<String>,
    /// `"auto"`, `"on_demand"`, `"flex"` or `"performance"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = service_tier_schema)]
    pub service_tier: Option<String>,
    /// End-user id for abuse monitoring; no effect on output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// -2..=2 (accepted; Groq's models do not support it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -2, maximum = 2)]
    pub frequency_penalty: Option<f64>,
    /// -2..=2 (accepted; Groq's models do not support it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -2, maximum = 2)]
    pub presence_penalty: Option<f64>,
    /// Token id (as a string) to bias, by -100..=100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = logit_bias_schema)]
    pub logit_bias: Option<BTreeMap<String, f64>>,
    /// Return log-probabilities of the output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// 0..=20 alternatives per token; needs `logprobs: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 20)]
    pub top_logprobs: Option<i64>,
    /// Accepted and ignored (Groq: "not currently supported").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// Accepted and ignored (Groq: "not currently supported").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    /// Compound-system settings, kept as raw JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compound_custom: Option<Value>,
    /// Web-search settings, kept as raw JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_settings: Option<Value>,
    /// Deprecated top-level form of `search_settings.include_domains`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_domains: Option<Vec<String>>,
    /// Deprecated top-level form of `search_settings.exclude_domains`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_domains: Option<Vec<String>>,
    /// Context documents for citations, kept as raw JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<Vec<Value>>,
    /// `"enabled"` or `"disabled"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = citation_options_schema)]
    pub citation_options: Option<String>,
}

fn reasoning_format_schema() -> ObjectBuilder {
    s::nullable_string_enum(&["hidden", "raw", "parsed"])
        .description(Some("How reasoning is returned (reasoning models)."))
}

fn reasoning_effort_schema() -> ObjectBuilder {
    s::nullable_string_enum(&["none", "default", "low", "medium", "high"]).description(Some(
        "Reasoning effort; the values allowed depend on the model.",
    ))
}

fn service_tier_schema() -> ObjectBuilder {
    s::nullable_string_enum(&["auto", "on_demand", "flex", "performance"])
        .description(Some("Default `auto` (`on_demand`)."))
}

fn citation_options_schema() -> ObjectBuilder {
    s::nullable_string_enum(&["enabled", "disabled"])
        .description(Some("Citations from `documents`."))
}

/// `{"<token id>": bias}` with biases in -100..=100.
fn logit_bias_schema() -> ObjectBuilder {
    let bias = ObjectBuilder::new()
        .schema_type(Type::Number)
        .minimum(Some(-100))
        .maximum(Some(100));
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .description(Some("Bias (-100..=100) by token id (a decimal string)."))
        .property_names(Some(s::string().pattern(Some("^[0-9]+$"))))
        .additional_properties(Some(RefOr::from(Schema::from(bias))))
}

/// `stop`: one string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum StopSequences {
    /// `"stop": "\n"`.
    One(String),
    /// `"stop": ["\n", "END"]`.
    Many(Vec<String>),
}

/// Longest stop string in the schema, in characters: Peregrine's limit is 1024 bytes, and 256
/// characters fit in that whatever they are.
const STOP_SCHEMA_CHARS: usize = 256;

impl PartialSchema for StopSequences {
    fn schema() -> RefOr<Schema> {
        let one = || s::string().max_length(Some(STOP_SCHEMA_CHARS));
        s::one_of([one().into(), s::array(one()).max_items(Some(4)).into()])
            .description(Some("One stop string or an array of at most 4."))
            .into()
    }
}

impl ToSchema for StopSequences {}

impl StopSequences {
    /// The stop strings as a list, whichever form was sent.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for StopSequences {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        wire::string_or(
            d,
            Other::Seq,
            "a string or an array of strings",
            Self::One,
            Self::Many,
        )
    }
}

/// `stream_options` (live API; not in Groq's published spec).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    /// Send a usage-only chunk (`"choices":[]`) before `[DONE]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
}

/// `response_format`, tagged by `type` (docs/wire-contract.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// `{"type":"text"}`: no constraint.
    Text,
    /// `{"type":"json_object"}`: any JSON object.
    JsonObject,
    /// `{"type":"json_schema","json_schema":{...}}`.
    JsonSchema {
        /// The schema and its options.
        json_schema: JsonSchemaFormat,
    },
}

/// The `json_schema` object of `response_format`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JsonSchemaFormat {
    /// Required name, `[a-zA-Z0-9_-]{1,64}` (checked by validation).
    #[schema(pattern = "^[a-zA-Z0-9_-]{1,64}$")]
    pub name: String,
    /// What the format is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// Constrained decoding (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// An entry of `tools` (docs/wire-contract.md). `type` is an open string: `"function"` carries
/// `function`; built-in tools (`"browser_search"`, `"code_interpreter"`, `"mcp"`, ...) keep
/// their other keys in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Tool {
    /// `"function"`, `"browser_search"`, `"code_interpreter"`, `"mcp"`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The function definition when `type` is `"function"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDefinition>,
    /// Any other keys, as sent (`server_label`, `server_url`, ...).
    #[serde(flatten)]
    #[schema(ignore)]
    pub extra: Map<String, Value>,
}

impl Tool {
    /// A `{"type":"function","function":...}` tool.
    pub fn function(function: FunctionDefinition) -> Self {
        Self {
            kind: "function".to_owned(),
            function: Some(function),
            extra: Map::new(),
        }
    }
}

impl<'de> Deserialize<'de> for Tool {
    // Hand-written rather than `#[serde(flatten)]`, which buffers the object and loses the
    // path of an error inside `function`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, Visitor};

        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tool;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a tool object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tool, A::Error> {
                let mut kind: Option<String> = None;
                let mut function: Option<Option<FunctionDefinition>> = None;
                let mut extra = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "type" if kind.is_some() => return Err(A::Error::duplicate_field("type")),
                        "type" => kind = Some(map.next_value()?),
                        "function" if function.is_some() => {
                            return Err(A::Error::duplicate_field("function"))
                        }
                        "function" => function = Some(map.next_value()?),
                        _ => {
                            let value: Value = map.next_value()?;
                            extra.insert(key, value);
                        }
                    }
                }
                Ok(Tool {
                    kind: kind.ok_or_else(|| A::Error::missing_field("type"))?,
                    function: function.flatten(),
                    extra,
                })
            }
        }

        d.deserialize_map(V)
    }
}

/// A function the model may call (in `tools[].function` and the legacy `functions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FunctionDefinition {
    /// `[a-zA-Z0-9_-]{1,64}` (checked by validation).
    #[schema(pattern = "^[a-zA-Z0-9_-]{1,64}$")]
    pub name: String,
    /// What the function does; shown to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// Strict schema adherence (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `tool_choice`: a mode string or a named function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `"none"`, `"auto"` or `"required"` (not checked here).
    Mode(String),
    /// `{"type":"function","function":{"name":"..."}}`.
    Named {
        /// `"function"`.
        #[serde(rename = "type")]
        kind: String,
        /// The function that must be called.
        function: FunctionName,
    },
}

const CHOICE_MODES: &[&str] = &["none", "auto", "required"];

impl PartialSchema for ToolChoice {
    fn schema() -> RefOr<Schema> {
        let named = ObjectBuilder::new()
            .property("type", s::string_enum(&["function"]))
            .required("type")
            .property("function", FunctionName::schema())
            .required("function");
        s::one_of([s::string_enum(CHOICE_MODES).into(), named.into()])
            .description(Some("`none`, `auto`, `required` or a named function."))
            .into()
    }
}

impl ToSchema for ToolChoice {}

/// `{"name": "..."}`: names a function in `tool_choice` and the legacy `function_call`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FunctionName {
    /// The function's name.
    pub name: String,
}

#[derive(Deserialize)]
struct NamedToolChoice {
    #[serde(rename = "type")]
    kind: String,
    function: FunctionName,
}

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        wire::string_or(
            d,
            Other::Map,
            "\"none\", \"auto\", \"required\" or a {\"type\":\"function\",\"function\":{\"name\":...}} object",
            Self::Mode,
            |n: NamedToolChoice| Self::Named {
                kind: n.kind,
                function: n.function,
            },
        )
    }
}

/// Legacy `function_call`: a mode string or `{"name": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum FunctionCallChoice {
    /// `"none"`, `"auto"` or `"required"` (not checked here).
    Mode(String),
    /// `{"name":"..."}`.
    Named(FunctionName),
}

impl PartialSchema for FunctionCallChoice {
    fn schema() -> RefOr<Schema> {
        s::one_of([s::string_enum(CHOICE_MODES).into(), FunctionName::schema()])
            .description(Some(
                "Deprecated: `none`, `auto`, `required` or `{\"name\": ...}`.",
            ))
            .into()
    }
}

impl ToSchema for FunctionCallChoice {}

impl<'de> Deserialize<'de> for FunctionCallChoice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        wire::string_or(
            d,
            Other::Map,
            "\"none\", \"auto\", \"required\" or a {\"name\":...} object",
            Self::Mode,
            Self::Named,
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    fn from(v: Value) -> Result<ChatCompletionRequest, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    /// A request with every field of Groq's API reference set to a non-null value.
    pub(crate) fn full_request() -> Value {
        json!({
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
                {"role": "user", "content": "Weather in Paris?", "name": "alice"},
                {"role": "assistant", "content": null,
                 "tool_calls": [{"id": "call_1", "type": "function",
                                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "content": "22C", "tool_call_id": "call_1", "name": "get_weather"},
                {"role": "function", "content": "22C", "name": "get_weather"}
            ],
            "model": "llama-3.1-8b-instant",
            "temperature": 0.7,
            "top_p": 0.9,
            "max_completion_tokens": 256,
            "max_tokens": 128,
            "stop": ["\n\n", "END"],
            "seed": 42,
            "stream": true,
            "stream_options": {"include_usage": true},
            "n": 1,
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "weather", "description": "a forecast", "strict": true,
                "schema": {"type": "object", "properties": {"t": {"type": "number"}},
                           "required": ["t"], "additionalProperties": false}}},
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Get weather",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                 "strict": false}},
                {"type": "browser_search"},
                {"type": "mcp", "server_label": "deepwiki", "server_url": "https://mcp.deepwiki.com/mcp"}
            ],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": false,
            "disable_tool_validation": false,
            "functions": [{"name": "legacy", "description": "old style", "parameters": {"type": "object"}}],
            "function_call": {"name": "legacy"},
            "reasoning_format": "parsed",
            "include_reasoning": true,
            "reasoning_effort": "medium",
            "service_tier": "on_demand",
            "user": "user-1234",
            "frequency_penalty": 0.5,
            "presence_penalty": -0.5,
            "logit_bias": {"50256": -100},
            "logprobs": true,
            "top_logprobs": 5,
            "metadata": {"k": "v"},
            "store": false,
            "compound_custom": {"models": {"reasoning_model": null, "answering_model": "x"},
                                "tools": {"enabled_tools": ["web_search"], "wolfram_settings": null}},
            "search_settings": {"include_domains": ["*.edu"], "exclude_domains": null,
                                "include_images": true, "country": "germany"},
            "include_domains": ["example.com"],
            "exclude_domains": ["spam.com"],
            "documents": [{"id": "doc1", "source": {"type": "text", "text": "Paris is in France."}}],
            "citation_options": "enabled"
        })
    }

    #[test]
    fn every_field_is_accepted() {
        let v = full_request();
        let req = from(v.clone()).unwrap();
        assert_eq!(req.messages.len(), 6);
        assert_eq!(req.messages[1].role(), "developer");
        assert_eq!(req.seed, Some(42));
        assert_eq!(
            req.stop,
            Some(StopSequences::Many(vec!["\n\n".into(), "END".into()]))
        );
        assert_eq!(req.logit_bias.as_ref().unwrap()["50256"], -100.0);
        let tools = req.tools.as_ref().unwrap();
        assert_eq!(tools[1].kind, "browser_search");
        assert!(tools[1].function.is_none());
        assert_eq!(tools[2].extra["server_label"], "deepwiki");
        assert_eq!(
            req.tool_choice,
            Some(ToolChoice::Named {
                kind: "function".into(),
                function: FunctionName {
                    name: "get_weather".into()
                }
            })
        );
        assert!(matches!(
            req.response_format,
            Some(ResponseFormat::JsonSchema { .. })
        ));

        // Round trip: serialising gives back every key we were sent (numbers aside, which
        // come back as floats where the field is f64).
        let back = serde_json::to_value(&req).unwrap();
        let sent: Vec<&String> = v.as_object().unwrap().keys().collect();
        let got: Vec<&String> = back.as_object().unwrap().keys().collect();
        assert_eq!(sent, got);
        assert_eq!(back["messages"], v["messages"]);
        assert_eq!(back["tools"], v["tools"]);
        assert_eq!(back["response_format"], v["response_format"]);
        assert_eq!(from(back).unwrap(), req);
    }

    #[test]
    fn request_fields_list_matches_the_struct() {
        let req = from(full_request()).unwrap();
        let back = serde_json::to_value(&req).unwrap();
        let keys: Vec<&str> = back
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, REQUEST_FIELDS);
    }

    #[test]
    fn nulls_mean_unset() {
        let mut v = json!({"model": "m", "messages": []});
        for field in &REQUEST_FIELDS[2..] {
            v[*field] = Value::Null;
        }
        let req = from(v).unwrap();
        assert_eq!(
            req,
            ChatCompletionRequest {
                model: "m".into(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn stop_and_choices_forms() {
        let req = from(
            json!({"model":"m","messages":[],"stop":"\n","tool_choice":"auto",
                              "function_call":"none","response_format":{"type":"json_object"}}),
        )
        .unwrap();
        assert_eq!(req.stop, Some(StopSequences::One("\n".into())));
        assert_eq!(req.stop.unwrap().to_vec(), vec!["\n".to_owned()]);
        assert_eq!(req.tool_choice, Some(ToolChoice::Mode("auto".into())));
        assert_eq!(
            req.function_call,
            Some(FunctionCallChoice::Mode("none".into()))
        );
        assert_eq!(req.response_format, Some(ResponseFormat::JsonObject));
    }

    #[test]
    fn wrong_shapes() {
        let err = from(json!({"model":"m","messages":[],"stop":5})).unwrap_err();
        assert_eq!(
            err,
            "invalid type: integer `5`, expected a string or an array of strings"
        );
        let err = from(json!({"model":"m","messages":[],"tool_choice":["auto"]})).unwrap_err();
        assert!(
            err.starts_with("invalid type: sequence, expected \"none\""),
            "{err}"
        );
        let err =
            from(json!({"model":"m","messages":[],"stream_options":{"include_usage":true,"x":1}}))
                .unwrap_err();
        assert!(err.starts_with("unknown field `x`"), "{err}");
        let err =
            from(json!({"model":"m","messages":[],"response_format":{"type":"yaml"}})).unwrap_err();
        assert!(err.starts_with("unknown variant `yaml`"), "{err}");
        let err = from(json!({"model":"m","messages":[],"tools":[{"function":{"name":"f"}}]}))
            .unwrap_err();
        assert_eq!(err, "missing field `type`");
        let err = from(json!({"model":"m","messages":[],"seed":1.5})).unwrap_err();
        assert!(
            err.starts_with("invalid type: floating point `1.5`, expected i64"),
            "{err}"
        );
    }
}
