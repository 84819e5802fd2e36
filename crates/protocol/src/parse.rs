//! Request-body parsing with Groq-style error messages that name the offending field.
//!
//! [`parse_chat_request`] is the one entry point the server uses for chat bodies: it turns
//! bytes into a [`ChatCompletionRequest`] or a [`RequestParseError`] whose
//! [`message`](RequestParseError::message) is what goes into the 400 body:
//!
//! | Problem | Message |
//! |---|---|
//! | not JSON | ``request body is not valid JSON: expected value at line 1 column 2`` |
//! | unknown top-level field | ``property 'stream_option' is unsupported, did you mean 'stream_options'?`` |
//! | unknown nested field | ``property 'messages[0].foo' is unsupported`` |
//! | missing field | ``property 'model' is missing`` |
//! | wrong type / value | ``` `messages[0].content`: invalid type: integer `5`, expected a string or an array of content parts ``` |
//!
//! Only shapes are checked here; an empty `messages` array, out-of-range numbers and the like
//! are the validation layer's job.

use serde::de::{Deserialize, DeserializeOwned, Deserializer, IgnoredAny};
use serde_path_to_error::{Path, Segment};

use crate::chat::{ChatCompletionRequest, REQUEST_FIELDS};
use crate::error::ErrorObject;
use crate::wire;

/// Jaro-Winkler similarity (0..=1) a known field needs to be suggested for an unknown one.
/// Jaro-Winkler rather than edit distance because it favours a shared prefix, which is how
/// Groq's own example pairs `stream_options` with `stream` (0.886; edit distance would pick
/// `citation_options`). 0.85 also gives `max_tokens` for `max_token`, `temperature` for
/// `temp`, and nothing for unrelated names such as `verbosity`, `modalities` (0.813 to
/// `model`) or `prompt_cache_key`.
const SUGGEST_THRESHOLD: f64 = 0.85;

/// Why a request body could not be turned into a [`ChatCompletionRequest`].
///
/// `Display` (and [`message`](Self::message)) is the Groq-style text for the error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestParseError {
    /// The body is not JSON at all (or has trailing characters).
    #[error("request body is not valid JSON: {message} at line {line} column {column}")]
    InvalidJson {
        /// serde_json's description, without the position.
        message: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// A property the schema does not define.
    #[error("property '{path}' is unsupported{}", did_you_mean(.suggestion))]
    UnknownField {
        /// Full path of the property, e.g. `foo` or `messages[0].foo`.
        path: String,
        /// Closest known top-level field (only for top-level properties).
        suggestion: Option<&'static str>,
    },
    /// A required property is absent.
    #[error("property '{path}' is missing")]
    MissingField {
        /// Full path of the property, e.g. `model` or `messages[1].tool_call_id`.
        path: String,
    },
    /// A property has the wrong type or an unknown enumerated value.
    #[error("{}", with_path(.path, .message))]
    InvalidValue {
        /// Full path of the property (empty for the body itself).
        path: String,
        /// What is wrong, e.g. ``invalid type: integer `5`, expected a string``.
        message: String,
    },
}

fn did_you_mean(suggestion: &Option<&'static str>) -> String {
    suggestion
        .map(|s| format!(", did you mean '{s}'?"))
        .unwrap_or_default()
}

fn with_path(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_owned()
    } else {
        format!("`{path}`: {message}")
    }
}

impl RequestParseError {
    /// The Groq-style message for the error body (same as `Display`).
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The path of the offending property (`messages[0].content`), if the error has one.
    pub fn path(&self) -> Option<&str> {
        match self {
            Self::InvalidJson { .. } => None,
            Self::UnknownField { path, .. } | Self::MissingField { path } => Some(path),
            Self::InvalidValue { path, .. } => (!path.is_empty()).then_some(path.as_str()),
        }
    }

    /// The 400 error object: `invalid_request_error` with no `code` and no `param`, as Groq
    /// answers an unknown property.
    pub fn to_error_object(&self) -> ErrorObject {
        ErrorObject::invalid_request(self.message())
    }
}

/// Parses a chat-completions request body.
///
/// A body that is not JSON is reported as [`RequestParseError::InvalidJson`] even when a
/// shape error comes earlier in the text, so the answer does not depend on field order.
pub fn parse_chat_request(bytes: &[u8]) -> Result<ChatCompletionRequest, RequestParseError> {
    parse_request(bytes, REQUEST_FIELDS)
}

/// Parses a request body into `T`, with the errors of [`parse_chat_request`]; an unknown
/// top-level property is matched against `fields` for a suggestion.
pub fn parse_request<T: DeserializeOwned>(
    bytes: &[u8],
    fields: &[&'static str],
) -> Result<T, RequestParseError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, Body<T>>(&mut de) {
        Ok(Body(request)) => {
            de.end().map_err(|e| invalid_json(&e))?;
            Ok(request)
        }
        Err(err) => {
            let inner = err.inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(invalid_json(inner));
            }
            // Only on the error path: check the whole body is JSON before blaming a field.
            if let Err(e) = serde_json::from_slice::<IgnoredAny>(bytes) {
                if e.is_syntax() || e.is_eof() {
                    return Err(invalid_json(&e));
                }
            }
            Err(data_error(
                format_path(err.path()),
                bare_message(inner),
                fields,
            ))
        }
    }
}

/// The request, accepted only as a JSON object: serde's derived structs also accept an array
/// of field values in order, which no client means.
struct Body<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Body<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        wire::map_only(d, "a JSON object").map(Body)
    }
}

pub fn suggest_field(unknown: &str) -> Option<&'static str> {
    closest(unknown, REQUEST_FIELDS)
}

fn closest(unknown: &str, candidates: &[&'static str]) -> Option<&'static str> {
    let needle = unknown.to_ascii_lowercase();
    let mut best: Option<(&'static str, f64)> = None;
    for &candidate in candidates {
        let score = strsim::jaro_winkler(&needle, candidate);
        // Strictly greater: on a tie the earlier (more common, spec-order) field wins.
        if score >= SUGGEST_THRESHOLD && best.is_none_or(|(_, b)| score > b) {
            best = Some((candidate, score));
        }
    }
    best.map(|(candidate, _)| candidate)
}

fn invalid_json(e: &serde_json::Error) -> RequestParseError {
    RequestParseError::InvalidJson {
        message: bare_message(e),
        line: e.line(),
        column: e.column(),
    }
}

/// serde_json's message without the ` at line L column C` it appends.
fn bare_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    if e.line() == 0 {
        return full;
    }
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&suffix) {
        Some(bare) => bare.to_owned(),
        None => full,
    }
}

/// `messages[0].content`-style path; empty for the root.
fn format_path(path: &Path) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => push_field(&mut out, key),
            Segment::Enum { variant } => push_field(&mut out, variant),
            Segment::Unknown => {}
        }
    }
    out
}

fn push_field(path: &mut String, field: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(field);
}

fn ends_with_field(path: &str, field: &str) -> bool {
    path == field
        || path
            .strip_suffix(field)
            .is_some_and(|parent| parent.ends_with('.'))
}

fn join(path: &str, field: &str) -> String {
    let mut out = path.to_owned();
    push_field(&mut out, field);
    out
}

/// Turns serde's data-error text into a [`RequestParseError`], completing the path with the
/// field the message names.
fn data_error(mut path: String, mut message: String, fields: &[&'static str]) -> RequestParseError {
    // Our own Deserialize impls check some fields after reading the whole object; they name the
    // field as a "`field`: " prefix (see chat::message), which belongs in the path.
    while let Some((field, rest)) = field_prefix(&message) {
        path = join(&path, field);
        message = rest.to_owned();
    }
    if let Some(field) = unknown_field(&message) {
        // serde_path_to_error has already pushed the unknown key when serde rejected it while
        // reading the key; our own role checks raise it after the object, at the parent path.
        let path = if ends_with_field(&path, field) {
            path
        } else {
            join(&path, field)
        };
        let suggestion = if path == field {
            closest(field, fields)
        } else {
            None
        };
        return RequestParseError::UnknownField { path, suggestion };
    }
    if let Some(field) = between(&message, "missing field `", "`") {
        return RequestParseError::MissingField {
            path: join(&path, field),
        };
    }
    RequestParseError::InvalidValue {
        path,
        message: readable(&message),
    }
}

/// Splits "`field`: rest" into ("field", "rest").
fn field_prefix(message: &str) -> Option<(&str, &str)> {
    let rest = message.strip_prefix('`')?;
    let (field, rest) = rest.split_once("`: ")?;
    let simple = !field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    simple.then_some((field, rest))
}

/// The field in serde's "unknown field `x`, expected ..." / "..., there are no fields".
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    let end = rest
        .rfind("`, expected")
        .or_else(|| rest.rfind("`, there are no fields"))
        .or_else(|| rest.rfind('`'))?;
    Some(&rest[..end])
}

/// The text strictly between `prefix` at the start and the last `suffix`.
fn between<'a>(message: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    message.strip_prefix(prefix)?.strip_suffix(suffix)
}

/// Replaces Rust type names in serde's "expected ..." with JSON terms.
fn readable(message: &str) -> String {
    let message = message
        .replacen("invalid type: map,", "invalid type: object,", 1)
        .replacen("invalid type: sequence,", "invalid type: array,", 1);
    let Some((head, expected)) = message.rsplit_once(", expected ") else {
        return message;
    };
    let expected = match expected {
        e if e.starts_with("struct ") => "an object",
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" => "an integer",
        "f32" | "f64" => "a number",
        "a sequence" => "an array",
        "a map" => "an object",
        e => e,
    };
    format!("{head}, expected {expected}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn err(body: &str) -> RequestParseError {
        parse_chat_request(body.as_bytes()).expect_err(body)
    }

    fn err_v(v: Value) -> RequestParseError {
        err(&v.to_string())
    }

    fn msg(v: Value) -> String {
        err_v(v).message()
    }

    #[test]
    fn full_request_parses() {
        let body = crate::chat::full_request().to_string();
        let req = parse_chat_request(body.as_bytes()).unwrap();
        assert_eq!(req.model, "llama-3.1-8b-instant");
        assert_eq!(req.messages.len(), 6);
    }

    #[test]
    fn malformed_json() {
        let e = err(r#"{"model": "m", "messages": [}"#);
        assert_eq!(
            e,
            RequestParseError::InvalidJson {
                message: "expected value".into(),
                line: 1,
                column: 29
            }
        );
        assert_eq!(
            e.message(),
            "request body is not valid JSON: expected value at line 1 column 29"
        );
        assert_eq!(
            err("").message(),
            "request body is not valid JSON: EOF while parsing a value at line 1 column 0"
        );
        let e = err("{\"model\":\"m\",\n\"messages\":[]\n");
        assert!(
            matches!(e, RequestParseError::InvalidJson { line: 3, .. }),
            "{e:?}"
        );
        let e = err(r#"{"model":"m","messages":[]} x"#);
        assert_eq!(
            e.message(),
            "request body is not valid JSON: trailing characters at line 1 column 29"
        );
    }

    #[test]
    fn malformed_json_wins_over_an_earlier_shape_error() {
        let e = err(r#"{"model": 5, "messages": [,]}"#);
        assert!(matches!(e, RequestParseError::InvalidJson { .. }), "{e:?}");
    }

    #[test]
    fn unknown_top_level_field() {
        let e = err_v(json!({"model":"m","messages":[],"stream_option":{}}));
        assert_eq!(
            e,
            RequestParseError::UnknownField {
                path: "stream_option".into(),
                suggestion: Some("stream_options")
            }
        );
        assert_eq!(
            e.message(),
            "property 'stream_option' is unsupported, did you mean 'stream_options'?"
        );
        assert_eq!(
            msg(json!({"model":"m","messages":[],"verbosity":"low"})),
            "property 'verbosity' is unsupported"
        );
        assert_eq!(
            msg(json!({"model":"m","messages":[],"foo":1})),
            "property 'foo' is unsupported"
        );
        let body = err_v(json!({"model":"m","messages":[],"foo":1})).to_error_object();
        assert_eq!(
            serde_json::to_string(&crate::error::ErrorEnvelope::from(body)).unwrap(),
            r#"{"error":{"message":"property 'foo' is unsupported","type":"invalid_request_error"}}"#
        );
    }

    #[test]
    fn groq_example_suggestion() {
        // Groq 2024: "property 'stream_options' is unsupported, did you mean 'stream'?"
        let without: Vec<&'static str> = REQUEST_FIELDS
            .iter()
            .copied()
            .filter(|f| *f != "stream_options")
            .collect();
        assert_eq!(closest("stream_options", &without), Some("stream"));
    }

    #[test]
    fn suggestions() {
        let cases = [
            ("max_token", Some("max_tokens")),
            ("temprature", Some("temperature")),
            ("Temperature", Some("temperature")),
            ("top-p", Some("top_p")),
            ("response_fromat", Some("response_format")),
            ("toolchoice", Some("tool_choice")),
            ("streaming", Some("stream")),
            ("max_completion_token", Some("max_completion_tokens")),
            ("parallel_tool_call", Some("parallel_tool_calls")),
            ("reasoning", Some("reasoning_format")),
            ("foo", None),
            ("verbosity", None),
            ("prompt_cache_key", None),
            ("safety_identifier", None),
            ("modalities", None),
            ("tool_calls", None),
            ("message", Some("messages")),
            ("temp", Some("temperature")),
            ("stop_sequences", Some("stop")),
            ("max_new_tokens", Some("max_tokens")),
            ("top_k", Some("top_p")),
            ("audio", None),
            ("prediction", None),
            ("web_search_options", None),
        ];
        for (unknown, want) in cases {
            assert_eq!(suggest_field(unknown), want, "{unknown}");
        }
    }

    #[test]
    fn unknown_field_in_a_message() {
        let e = err_v(json!({"model":"m","messages":[{"role":"user","content":"hi","foo":1}]}));
        assert_eq!(
            e,
            RequestParseError::UnknownField {
                path: "messages[0].foo".into(),
                suggestion: None
            }
        );
        assert_eq!(e.message(), "property 'messages[0].foo' is unsupported");
        assert_eq!(e.path(), Some("messages[0].foo"));

        // A field that exists, but not for this role.
        assert_eq!(
            msg(json!({"model":"m","messages":[
                {"role":"user","content":"hi"},
                {"role":"user","content":"hi","tool_call_id":"c"}]})),
            "property 'messages[1].tool_call_id' is unsupported"
        );
        // Deeper.
        assert_eq!(
            msg(json!({"model":"m","messages":[],"stream_options":{"include_usage":true,"x":1}})),
            "property 'stream_options.x' is unsupported"
        );
    }

    #[test]
    fn missing_fields() {
        let e = err_v(json!({"messages":[{"role":"user","content":"hi"}]}));
        assert_eq!(
            e,
            RequestParseError::MissingField {
                path: "model".into()
            }
        );
        assert_eq!(e.message(), "property 'model' is missing");
        assert_eq!(msg(json!({"model":"m"})), "property 'messages' is missing");
        assert_eq!(
            msg(json!({"model":"m","messages":[{"role":"tool","content":"x"}]})),
            "property 'messages[0].tool_call_id' is missing"
        );
        assert_eq!(
            msg(json!({"model":"m","messages":[{"content":"x"}]})),
            "property 'messages[0].role' is missing"
        );
        assert_eq!(
            msg(json!({"model":"m","messages":[{"role":"user"}]})),
            "property 'messages[0].content' is missing"
        );
    }

    #[test]
    fn empty_messages_is_not_a_parse_error() {
        let req = parse_chat_request(br#"{"model":"m","messages":[]}"#).unwrap();
        assert!(req.messages.is_empty());
    }

    #[test]
    fn wrong_types() {
        assert_eq!(
            msg(json!({"model":"m","messages":[{"role":"user","content":5}]})),
            "`messages[0].content`: invalid type: integer `5`, expected a string or an array of content parts"
        );
        assert_eq!(
            msg(json!({"model":"m","messages":[{"role":"user","content":null}]})),
            "`messages[0].content`: invalid type: null, expected a string or an array of content parts"
        );
        assert_eq!(
            msg(json!({"model":5,"messages":[]})),
            "`model`: invalid type: integer `5`, expected a string"
        );
        assert_eq!(
            msg(json!({"model":"m","messages":{}})),
            "`messages`: invalid type: object, expected an array"
        );
        assert_eq!(
            msg(json!({"model":"m","messages":[],"temperature":"hot"})),
            "`temperature`: invalid type: string \"hot\", expected a number"
        );
        assert_eq!(
            msg(json!({"model":"m","messages":[],"max_tokens":1.5})),
            "`max_tokens`: invalid type: floating point `1.5`, expected an integer"
        );
        assert_eq!(
            msg(json!({"model":"m","messages":[],"stream":"yes"})),
            "`stream`: invalid type: string \"yes\", expected a boolean"
        );
        assert_eq!(
            msg(json!({"model":"m","messages":[],"tool_choice":{"type":"function","function":5}})),
            "`tool_choice.function`: invalid type: integer `5`, expected an object"
        );
        assert_eq!(
            msg(
                json!({"model":"m","messages":[],"tools":[{"type":"function","function":{"name":1}}]})
            ),
            "`tools[0].function.name`: invalid type: integer `1`, expected a string"
        );
        assert_eq!(
            msg(json!({"model":"m","messages":[{"role":"assistant","tool_calls":[
                {"id":"c","type":"function","function":{"name":"f","arguments":{}}}]}]})),
            "`messages[0].tool_calls[0].function.arguments`: invalid type: object, expected a string"
        );
        assert_eq!(
            msg(json!({"model":"m","messages":[{"role":"robot","content":"x"}]})),
            "`messages[0].role`: unknown variant `robot`, expected one of `system`, `developer`, `user`, `assistant`, `tool`, `function`"
        );
        assert_eq!(
            msg(
                json!({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":5}]}]})
            ),
            "`messages[0].content[0]`: invalid type: integer `5`, expected a string"
        );
        assert_eq!(
            msg(json!({"model":"m","messages":[{"role":"function","name":"f","content":[]}]})),
            "`messages[0].content`: invalid type: array, expected a string or null"
        );
        assert_eq!(
            err("[[], \"m\"]").message(),
            "invalid type: array, expected a JSON object"
        );
        assert_eq!(
            err("\"hi\"").message(),
            "invalid type: string \"hi\", expected a JSON object"
        );
        assert_eq!(
            msg(json!({"model":"m","messages":[["user","hi"]]})),
            "`messages[0]`: invalid type: array, expected a message object"
        );
    }

    #[test]
    fn message_variants_through_the_parser() {
        let req = parse_chat_request(
            json!({"model":"m","messages":[
                {"role":"developer","content":"rules"},
                {"role":"user","content":"weather?"},
                {"role":"assistant","content":null,"tool_calls":[
                    {"id":"call_1","type":"function","function":{"name":"w","arguments":"{}"}}]},
                {"role":"tool","content":"sunny","tool_call_id":"call_1","name":"w"}
            ]})
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            req.messages.iter().map(|m| m.role()).collect::<Vec<_>>(),
            ["developer", "user", "assistant", "tool"]
        );
    }
}
