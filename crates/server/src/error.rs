//! The one mapping from every error the server can return to (status, Groq envelope).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use peregrine_protocol::error::{ErrorEnvelope, ErrorObject};
use peregrine_runtime::{AdmissionError, ValidationError};

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body could not be parsed into the request type (malformed JSON, unknown field,
    /// wrong type); the message is already in Groq's wording.
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("The model `{0}` does not exist or you do not have access to it.")]
    ModelNotFound(String),
    /// A resource (file, batch) that does not exist.
    #[error("{0}")]
    NotFound(String),
    #[error("Invalid API Key")]
    InvalidApiKey,
    #[error("Request body is too large: the limit is {0} bytes.")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    Admission(AdmissionError, /* flex tier */ bool),
    #[error("Unknown request URL: {method} {path}. Please check the URL for typos, or see the docs at https://console.groq.com/docs/")]
    UnknownUrl { method: String, path: String },
    #[error("Method {0} is not allowed for this endpoint.")]
    MethodNotAllowed(String),
    /// The generated text is not valid for the requested JSON format.
    #[error("{message}")]
    JsonValidateFailed {
        message: String,
        failed_generation: String,
    },
    /// A tool call could not be parsed or does not fit its tool.
    #[error("{message}")]
    ToolUseFailed {
        message: String,
        failed_generation: String,
    },
    /// A request field with a bad value (`param` names it).
    #[error("{message}")]
    InvalidParam {
        message: String,
        param: &'static str,
    },
    /// Batch work that gave its slot to interactive work; the batch worker runs it again.
    /// Never sent to a client.
    #[error("preempted by interactive work")]
    Preempted,
    /// A failure of ours. The cause goes to the log, never to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Seconds a client should wait after a 429 (sent as `retry-after`).
const RETRY_AFTER_SECS: &str = "1";

impl ApiError {
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    fn parts(&self) -> (StatusCode, &'static str, Option<&'static str>) {
        use ValidationError as V;
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request_error", None),
            ApiError::Validation(V::ContextLengthExceeded { .. }) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("context_length_exceeded"),
            ),
            ApiError::Validation(V::Invalid(_) | V::Unsupported { .. } | V::Template(_)) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", None)
            }
            ApiError::ModelNotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
            ),
            ApiError::NotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("not_found"),
            ),
            ApiError::InvalidApiKey => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
            ApiError::PayloadTooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                Some("request_too_large"),
            ),
            ApiError::Admission(AdmissionError::QueueFull(_), true) => (
                StatusCode::from_u16(498).unwrap_or(StatusCode::TOO_MANY_REQUESTS),
                "capacity_exceeded",
                Some("capacity_exceeded"),
            ),
            ApiError::Admission(AdmissionError::QueueFull(_), false) => (
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                Some("rate_limit_exceeded"),
            ),
            ApiError::InvalidParam { .. } => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", None)
            }
            ApiError::Preempted => (
                StatusCode::SERVICE_UNAVAILABLE,
                "internal_server_error",
                None,
            ),
            ApiError::Admission(AdmissionError::Stopped, _) | ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_server_error",
                None,
            ),
            ApiError::UnknownUrl { .. } => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("unknown_url"),
            ),
            ApiError::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                Some("method_not_allowed"),
            ),
            ApiError::JsonValidateFailed { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("json_validate_failed"),
            ),
            ApiError::ToolUseFailed { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("tool_use_failed"),
            ),
        }
    }

    /// The client-facing message: 5xx bodies are generic.
    fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) | ApiError::Admission(AdmissionError::Stopped, _) => {
                "The server had an error while processing your request. Please try again.".into()
            }
            ApiError::Admission(AdmissionError::QueueFull(_), true) => {
                "The `flex` tier capacity exceeded. Please try again later with a backoff.".into()
            }
            ApiError::Admission(AdmissionError::QueueFull(n), false) => format!(
                "Rate limit reached: the server is at capacity with {n} requests waiting. Please try again in {RETRY_AFTER_SECS}s."
            ),
            other => other.to_string(),
        }
    }

    pub fn envelope(&self) -> ErrorEnvelope {
        let (_, kind, code) = self.parts();
        ErrorEnvelope {
            error: ErrorObject {
                message: self.public_message(),
                kind: kind.to_string(),
                code: code.map(str::to_string),
                param: match self {
                    ApiError::InvalidParam { param, .. } => Some(param.to_string()),
                    _ => None,
                },
                failed_generation: match self {
                    ApiError::JsonValidateFailed {
                        failed_generation, ..
                    }
                    | ApiError::ToolUseFailed {
                        failed_generation, ..
                    } => Some(failed_generation.clone()),
                    _ => None,
                },
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _, _) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut resp = (status, axum::Json(self.envelope())).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from_static(RETRY_AFTER_SECS));
        }
        resp
    }
}
