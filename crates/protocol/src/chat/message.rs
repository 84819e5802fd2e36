//! Request messages (docs/wire-contract.md, "Chat completions request"): one variant per `role`, each rejecting unknown fields.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::wire::schema as s;
use crate::wire::{self, Other};

/// One entry of `messages`, discriminated by `role` (docs/wire-contract.md, "Chat completions request").
///
/// Every variant rejects fields it does not define, like Groq (`additionalProperties: false`).
/// serde's derived internally-tagged enums buffer the object first, which loses the error path
/// (`messages[0]` instead of `messages[0].content`), so deserialisation goes through a flat
/// private struct instead and then checks which fields the role allows. An error for a field
/// that is present but not allowed for the role reads like serde's own
/// ``unknown field `x`, expected one of ...``.
///
/// `Serialize` writes the OpenAI shape back (`{"role":"user","content":...}`), leaving out
/// absent optional fields; an assistant's `content` is always written (`null` when absent).
///
/// Its OpenAPI schema is a `oneOf` by `role`, each arm with the fields that role allows
/// (`crate::openapi` closes the arms with `additionalProperties: false`).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "role", rename_all = "lowercase")]
#[schema(
    description = "One message, by `role`. Fields a role does not define are refused; \
                        `null` counts as absent."
)]
pub enum ChatMessage {
    /// `{"role":"system","content":...,"name"?}`: instructions; text parts only (not enforced
    /// here: the validation layer decides what a role may contain).
    System {
        /// A string or an array of content parts.
        content: MessageContent,
        /// Optional participant name.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// `{"role":"developer",...}`: same shape as `system` (the newer OpenAI name for it).
    Developer {
        /// A string or an array of content parts.
        content: MessageContent,
        /// Optional participant name.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// `{"role":"user","content":...,"name"?}`; parts may be text, image_url or document.
    User {
        /// A string or an array of content parts.
        content: MessageContent,
        /// Optional participant name.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// A previous model turn, or a prefill when it is the last message.
    Assistant {
        /// `null`/absent is allowed (required unless `tool_calls`/`function_call`: checked by
        /// validation, not here).
        content: Option<MessageContent>,
        /// Optional participant name.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// Parsed reasoning echoed back by the client.
        #[serde(skip_serializing_if = "Option::is_none")]
        reasoning: Option<String>,
        /// Tool calls the model made in this turn.
        #[serde(skip_serializing_if = "Option::is_none")]
        tool_calls: Option<Vec<ToolCall>>,
        /// Deprecated single function call.
        #[serde(skip_serializing_if = "Option::is_none")]
        function_call: Option<FunctionCall>,
    },
    /// The result of a tool call.
    Tool {
        /// A string or an array of content parts.
        content: MessageContent,
        /// The `id` of the `ToolCall` this answers.
        tool_call_id: String,
        /// Not in Groq's schema, but its docs send it: accepted and kept.
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Deprecated result of a `function_call`.
    Function {
        /// The function's output; `null` allowed.
        content: Option<String>,
        /// The function's name (required).
        name: String,
    },
}

impl ChatMessage {
    /// The `role` string of this message (`"system"`, `"user"`, ...).
    pub fn role(&self) -> &'static str {
        match self {
            Self::System { .. } => "system",
            Self::Developer { .. } => "developer",
            Self::User { .. } => "user",
            Self::Assistant { .. } => "assistant",
            Self::Tool { .. } => "tool",
            Self::Function { .. } => "function",
        }
    }

    /// A `system` message with plain text content.
    pub fn system(text: impl Into<String>) -> Self {
        Self::System {
            content: MessageContent::Text(text.into()),
            name: None,
        }
    }

    /// A `user` message with plain text content.
    pub fn user(text: impl Into<String>) -> Self {
        Self::User {
            content: MessageContent::Text(text.into()),
            name: None,
        }
    }

    /// An `assistant` message with plain text content and nothing else.
    pub fn assistant(text: impl Into<String>) -> Self {
        Self::Assistant {
            content: Some(MessageContent::Text(text.into())),
            name: None,
            reasoning: None,
            tool_calls: None,
            function_call: None,
        }
    }
}

/// Message content: a plain string or an array of typed parts.
///
/// Deserialises without serde's untagged buffering, so a wrong type reads
/// ``invalid type: integer `5`, expected a string or an array of content parts`` at the exact
/// path.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// `"content": "hello"`.
    Text(String),
    /// `"content": [{"type":"text","text":"hello"}, ...]`.
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text of this content for templating: the string itself, or the text parts joined
    /// with `"\n"` (as vLLM does). Image and document parts are left out.
    pub fn as_text(&self) -> String {
        match self {
            Self::Text(text) => text.clone(),
            Self::Parts(parts) => {
                let texts: Vec<&str> = parts
                    .iter()
                    .filter_map(|part| match part {
                        ContentPart::Text { text } => Some(text.as_str()),
                        ContentPart::ImageUrl { .. } | ContentPart::Document { .. } => None,
                    })
                    .collect();
                texts.join("\n")
            }
        }
    }
}

impl PartialSchema for MessageContent {
    fn schema() -> RefOr<Schema> {
        let parts = s::array(Ref::from_schema_name(ContentPart::name())).min_items(Some(1));
        s::one_of([s::string().into(), parts.into()])
            .description(Some("A string or a non-empty array of content parts."))
            .into()
    }
}

impl ToSchema for MessageContent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((ContentPart::name().into(), ContentPart::schema()));
        <ContentPart as ToSchema>::schemas(schemas);
    }
}

impl From<String> for MessageContent {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for MessageContent {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        wire::string_or(
            d,
            Other::Seq,
            "a string or an array of content parts",
            Self::Text,
            Self::Parts,
        )
    }
}

/// One typed part of an array `content`, tagged by `type`.
///
/// Unknown keys inside a part are ignored (OpenAI clients add things like `cache_control`);
/// an unknown `type` is an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// `{"type":"text","text":"..."}`.
    Text {
        /// The text.
        text: String,
    },
    /// `{"type":"image_url","image_url":{"url":"...","detail":"auto"}}`.
    ImageUrl {
        /// Where the image is: an `https://` URL or a `data:image/...;base64,` URL.
        image_url: ImageUrl,
    },
    /// `{"type":"document","document":{"data":{...},"id":...}}`, kept as raw JSON.
    Document {
        /// The document object as sent.
        #[schema(value_type = Object)]
        document: Value,
    },
}

/// The `image_url` object of an image content part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageUrl {
    /// `https://...` or `data:image/jpeg;base64,...`.
    pub url: String,
    /// `"auto"` (default), `"low"` or `"high"`; not checked here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = image_detail_schema)]
    pub detail: Option<String>,
}

fn image_detail_schema() -> ObjectBuilder {
    s::nullable_string_enum(&["auto", "low", "high"]).description(Some("Default `auto`."))
}

/// A tool call made by the assistant: in a request's assistant message and in a response.
///
/// Serialises as `{"id":...,"type":"function","function":{"name":...,"arguments":...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ToolCall {
    /// Opaque call id (`call_...`, Groq uses short random strings); echoed in `tool_call_id`.
    pub id: String,
    /// Always `"function"` today; defaults to it when a client leaves it out.
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    /// The function and its arguments.
    pub function: FunctionCall,
}

fn function_kind() -> String {
    "function".to_owned()
}

/// A function name with its arguments as a JSON-encoded string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// The arguments, as JSON text (not a JSON object).
    pub arguments: String,
}

// --- Deserialisation through a flat struct ---------------------------------------------------

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

/// Every field any role may carry. Deserialised straight from the JSON map (no buffering), so
/// errors keep exact paths; then [`ChatMessage`] checks what the role allows.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    role: Role,
    #[serde(default, deserialize_with = "wire::present")]
    content: Option<Option<MessageContent>>,
    name: Option<String>,
    reasoning: Option<String>,
    tool_calls: Option<Vec<ToolCall>>,
    function_call: Option<FunctionCall>,
    tool_call_id: Option<String>,
}

const SYSTEM_FIELDS: &[&str] = &["role", "content", "name"];
const ASSISTANT_FIELDS: &[&str] = &[
    "role",
    "content",
    "name",
    "reasoning",
    "tool_calls",
    "function_call",
];
const TOOL_FIELDS: &[&str] = &["role", "content", "tool_call_id", "name"];
const FUNCTION_FIELDS: &[&str] = &["role", "content", "name"];

const CONTENT_EXPECTED: &str = "a string or an array of content parts";

impl RawMessage {
    /// Fails with serde's "unknown field" error for the first field set that `allowed` lacks.
    /// A field sent as `null` counts as absent.
    fn only<E: de::Error>(&self, allowed: &'static [&'static str]) -> Result<(), E> {
        let set = [
            ("content", self.content.is_some()),
            ("name", self.name.is_some()),
            ("reasoning", self.reasoning.is_some()),
            ("tool_calls", self.tool_calls.is_some()),
            ("function_call", self.function_call.is_some()),
            ("tool_call_id", self.tool_call_id.is_some()),
        ];
        match set
            .iter()
            .find(|(field, is_set)| *is_set && !allowed.contains(field))
        {
            Some((field, _)) => Err(E::unknown_field(field, allowed)),
            None => Ok(()),
        }
    }

    /// `content` for roles where it is required and may not be `null`.
    ///
    /// The error for `null` starts with ``"`content`: "`` so that
    /// [`crate::parse::parse_chat_request`] can report the exact path.
    fn required_content<E: de::Error>(&mut self) -> Result<MessageContent, E> {
        match self.content.take() {
            None => Err(E::missing_field("content")),
            Some(None) => Err(E::custom(format_args!(
                "`content`: invalid type: null, expected {CONTENT_EXPECTED}"
            ))),
            Some(Some(content)) => Ok(content),
        }
    }
}

impl<'de> Deserialize<'de> for ChatMessage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut raw: RawMessage = wire::map_only(d, "a message object")?;
        let message = match raw.role {
            Role::System | Role::Developer | Role::User => {
                raw.only(SYSTEM_FIELDS)?;
                let content = raw.required_content()?;
                let name = raw.name;
                match raw.role {
                    Role::System => Self::System { content, name },
                    Role::Developer => Self::Developer { content, name },
                    _ => Self::User { content, name },
                }
            }
            Role::Assistant => {
                raw.only(ASSISTANT_FIELDS)?;
                Self::Assistant {
                    content: raw.content.flatten(),
                    name: raw.name,
                    reasoning: raw.reasoning,
                    tool_calls: raw.tool_calls,
                    function_call: raw.function_call,
                }
            }
            Role::Tool => {
                raw.only(TOOL_FIELDS)?;
                let content = raw.required_content()?;
                Self::Tool {
                    content,
                    tool_call_id: raw
                        .tool_call_id
                        .ok_or_else(|| de::Error::missing_field("tool_call_id"))?,
                    name: raw.name,
                }
            }
            Role::Function => {
                raw.only(FUNCTION_FIELDS)?;
                let content = match raw.content.flatten() {
                    None => None,
                    Some(MessageContent::Text(text)) => Some(text),
                    Some(MessageContent::Parts(_)) => {
                        return Err(de::Error::custom(
                            "`content`: invalid type: sequence, expected a string or null",
                        ))
                    }
                };
                Self::Function {
                    content,
                    name: raw.name.ok_or_else(|| de::Error::missing_field("name"))?,
                }
            }
        };
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ChatMessage, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn every_role_parses() {
        let cases = [
            (json!({"role":"system","content":"s"}), "system"),
            (
                json!({"role":"developer","content":"d","name":"n"}),
                "developer",
            ),
            (json!({"role":"user","content":"u"}), "user"),
            (json!({"role":"assistant","content":null}), "assistant"),
            (json!({"role":"assistant"}), "assistant"),
            (
                json!({"role":"tool","content":"r","tool_call_id":"c1","name":"f"}),
                "tool",
            ),
            (
                json!({"role":"function","content":null,"name":"f"}),
                "function",
            ),
        ];
        for (value, role) in cases {
            let message = parse(value.clone()).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(message.role(), role);
        }
    }

    #[test]
    fn developer_is_its_own_variant() {
        let m = parse(json!({"role":"developer","content":"be brief"})).unwrap();
        assert_eq!(
            m,
            ChatMessage::Developer {
                content: "be brief".into(),
                name: None
            }
        );
    }

    #[test]
    fn unknown_field_is_rejected_with_a_usable_message() {
        let err = parse(json!({"role":"user","content":"hi","foo":1})).unwrap_err();
        assert!(
            err.starts_with("unknown field `foo`, expected one of"),
            "{err}"
        );
    }

    #[test]
    fn field_of_another_role_is_rejected() {
        let err = parse(json!({"role":"user","content":"hi","tool_call_id":"x"})).unwrap_err();
        assert_eq!(
            err,
            "unknown field `tool_call_id`, expected one of `role`, `content`, `name`"
        );
        let err = parse(json!({"role":"system","content":"hi","reasoning":"x"})).unwrap_err();
        assert!(err.starts_with("unknown field `reasoning`"), "{err}");
        let err = parse(json!({"role":"tool","content":"r","tool_call_id":"c","tool_calls":[]}))
            .unwrap_err();
        assert!(err.starts_with("unknown field `tool_calls`"), "{err}");
    }

    #[test]
    fn required_fields() {
        assert_eq!(
            parse(json!({"role":"user"})).unwrap_err(),
            "missing field `content`"
        );
        assert_eq!(
            parse(json!({"content":"x"})).unwrap_err(),
            "missing field `role`"
        );
        assert_eq!(
            parse(json!({"role":"tool","content":"x"})).unwrap_err(),
            "missing field `tool_call_id`"
        );
        assert_eq!(
            parse(json!({"role":"function","content":"x"})).unwrap_err(),
            "missing field `name`"
        );
        assert_eq!(
            parse(json!({"role":"user","content":null})).unwrap_err(),
            "`content`: invalid type: null, expected a string or an array of content parts"
        );
    }

    #[test]
    fn unknown_role() {
        let err = parse(json!({"role":"bot","content":"x"})).unwrap_err();
        assert!(
            err.starts_with("unknown variant `bot`, expected one of"),
            "{err}"
        );
    }

    #[test]
    fn assistant_with_tool_calls_and_null_content() {
        let v = json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{"id":"call_1","type":"function",
                            "function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]
        });
        let m = parse(v.clone()).unwrap();
        let ChatMessage::Assistant {
            content,
            tool_calls,
            ..
        } = &m
        else {
            panic!("not assistant: {m:?}")
        };
        assert!(content.is_none());
        let calls = tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].id, "call_1");
        assert_eq!(calls[0].kind, "function");
        assert_eq!(calls[0].function.name, "get_weather");
        // Serialising gives the same object back.
        assert_eq!(serde_json::to_value(&m).unwrap(), v);
    }

    #[test]
    fn content_parts() {
        let m = parse(json!({"role":"user","content":[
            {"type":"text","text":"What's in"},
            {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA","detail":"low"}},
            {"type":"text","text":"this image?"},
            {"type":"document","document":{"data":{"a":1},"id":null}}
        ]}))
        .unwrap();
        let ChatMessage::User { content, .. } = m else {
            panic!()
        };
        assert_eq!(content.as_text(), "What's in\nthis image?");
        let MessageContent::Parts(parts) = &content else {
            panic!()
        };
        assert_eq!(
            parts[1],
            ContentPart::ImageUrl {
                image_url: ImageUrl {
                    url: "data:image/png;base64,AAAA".into(),
                    detail: Some("low".into())
                }
            }
        );
        assert_eq!(MessageContent::from("plain").as_text(), "plain");
    }

    #[test]
    fn content_wrong_type() {
        let err = parse(json!({"role":"user","content":5})).unwrap_err();
        assert_eq!(
            err,
            "invalid type: integer `5`, expected a string or an array of content parts"
        );
        let err = parse(json!({"role":"user","content":{"type":"text"}})).unwrap_err();
        assert_eq!(
            err,
            "invalid type: map, expected a string or an array of content parts"
        );
        let err = parse(json!({"role":"user","content":[{"type":"audio"}]})).unwrap_err();
        assert!(err.starts_with("unknown variant `audio`"), "{err}");
        let err = parse(json!({"role":"function","name":"f","content":[]})).unwrap_err();
        assert_eq!(
            err,
            "`content`: invalid type: sequence, expected a string or null"
        );
    }

    #[test]
    fn tool_call_type_defaults_to_function() {
        let call: ToolCall =
            serde_json::from_value(json!({"id":"a","function":{"name":"f","arguments":"{}"}}))
                .unwrap();
        assert_eq!(call.kind, "function");
    }

    #[test]
    fn serialises_back_without_absent_fields() {
        let m = ChatMessage::user("hi");
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"role":"user","content":"hi"}"#
        );
        let m = ChatMessage::Tool {
            content: "22C".into(),
            tool_call_id: "c1".into(),
            name: Some("weather".into()),
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"role":"tool","content":"22C","tool_call_id":"c1","name":"weather"}"#
        );
    }
}
