//! The error envelope every failed request answers with (docs/wire-contract.md, "Errors"):
//! `{"error":{"message":...,"type":...,"code"?,"param"?,"failed_generation"?}}`.
//!
//! The same envelope is the payload of a `data: {"error":...}` event when a stream fails
//! after its headers went out.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `type` of errors caused by the request (400, 401, 404, ...).
pub const INVALID_REQUEST_ERROR: &str = "invalid_request_error";

/// `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorObject,
}

impl ErrorEnvelope {
    /// Wraps an [`ErrorObject`].
    pub fn new(error: ErrorObject) -> Self {
        Self { error }
    }
}

impl From<ErrorObject> for ErrorEnvelope {
    fn from(error: ErrorObject) -> Self {
        Self { error }
    }
}

/// The error object. Optional fields are left out when `None` (never written as `null`; the
/// schema allows `null` as Groq's own clients do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorObject {
    /// Human-readable description.
    pub message: String,
    /// `"invalid_request_error"`, or `"tokens"`/`"requests"` for rate limits.
    #[serde(rename = "type")]
    pub kind: String,
    /// Machine-readable code (`model_not_found`, `rate_limit_exceeded`, `tool_use_failed`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The offending parameter; Groq rarely sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// Raw model output for `json_validate_failed` / `tool_use_failed` (may be `""`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_generation: Option<String>,
}

impl ErrorObject {
    /// An error of the given `type` with no code.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind: kind.into(),
            code: None,
            param: None,
            failed_generation: None,
        }
    }

    /// An `invalid_request_error` with no code.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(INVALID_REQUEST_ERROR, message)
    }

    /// Sets `code`.
    #[must_use]
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Sets `param`.
    #[must_use]
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Sets `failed_generation`.
    #[must_use]
    pub fn with_failed_generation(mut self, text: impl Into<String>) -> Self {
        self.failed_generation = Some(text.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(e: ErrorObject) -> String {
        serde_json::to_string(&ErrorEnvelope::from(e)).unwrap()
    }

    #[test]
    fn live_bodies() {
        // Spec §4.3, verbatim.
        assert_eq!(
            json(ErrorObject::invalid_request("Invalid API Key").with_code("invalid_api_key")),
            r#"{"error":{"message":"Invalid API Key","type":"invalid_request_error","code":"invalid_api_key"}}"#
        );
        assert_eq!(
            json(ErrorObject::invalid_request(
                "property 'stream_options' is unsupported, did you mean 'stream'?"
            )),
            r#"{"error":{"message":"property 'stream_options' is unsupported, did you mean 'stream'?","type":"invalid_request_error"}}"#
        );
        assert_eq!(
            json(
                ErrorObject::invalid_request(
                    "Tool choice is required, but model did not call a tool"
                )
                .with_code("tool_use_failed")
                .with_failed_generation("")
            ),
            r#"{"error":{"message":"Tool choice is required, but model did not call a tool","type":"invalid_request_error","code":"tool_use_failed","failed_generation":""}}"#
        );
    }

    #[test]
    fn round_trip() {
        let e = ErrorObject::new("tokens", "Rate limit reached")
            .with_code("rate_limit_exceeded")
            .with_param("messages");
        let s = json(e.clone());
        let back: ErrorEnvelope = serde_json::from_str(&s).unwrap();
        assert_eq!(back.error, e);
    }
}
