//! [`ServiceError`]: every way a request can fail, and the one map from each to Groq's status,
//! `type`, `code` and `param`. The HTTP layer sends it; the batch worker writes it into error
//! files with the same status and body.

use peregrine_protocol::error::{ErrorEnvelope, ErrorObject};
use peregrine_runtime::{AdmissionError, PrepareError};

use crate::limits::{RateHeaders, Refusal};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The body could not be parsed into the request type (malformed JSON, unknown field,
    /// wrong type); the message is already in Groq's wording.
    #[error("{0}")]
    BadRequest(String),
    /// A chat request refused by preparation; the error names the field.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error("The model `{}` does not exist or you do not have access to it.", shown(.0))]
    ModelNotFound(String),
    /// A resource (file, batch) that does not exist.
    #[error("{0}")]
    NotFound(String),
    #[error("Invalid API Key")]
    InvalidApiKey,
    /// The server is shutting down: requests in flight finish, new ones go elsewhere.
    #[error("The server is shutting down and accepts no new requests. Please try again.")]
    ShuttingDown,
    /// The server is still loading its models.
    #[error("The server is starting up and loading its models. Please try again shortly.")]
    Loading,
    #[error("Request body is too large: the limit is {0} bytes.")]
    PayloadTooLarge(usize),
    /// An `image_url` that could not be had (fetch refused or failed, bad `data:` URL).
    #[error("`{param}`: {message}")]
    BadImage { param: String, message: String },
    /// A base64 (`data:`) image over Groq's 4 MB (413).
    #[error("`{param}`: a base64 image may be at most {limit} bytes")]
    ImageTooLarge { param: String, limit: usize },
    #[error("{0}")]
    Admission(AdmissionError, /* flex tier */ bool),
    /// Over a rate limit of the organization (429), or larger than a whole budget (413).
    #[error("{}", .0.message)]
    RateLimited(Box<Refusal>),
    /// The organization may not use this service tier.
    #[error("The service tier `{tier}` is not available for organization `{org}`.")]
    TierNotAvailable { tier: &'static str, org: String },
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
    /// A 400 whose field is named as another wire format names it (a Responses request's
    /// `max_output_tokens` where chat preparation said `max_completion_tokens`).
    #[error("{message}")]
    Field {
        message: String,
        param: String,
        code: Option<&'static str>,
    },
    /// The HTTP layer refused the request before a handler ran (a path that is not UTF-8,
    /// multipart without a boundary, ...), with this status and message.
    #[error("{message}")]
    HttpRejection { status: u16, message: String },
    /// A body that is not JSON on a JSON route (the browser policy).
    #[error("Content-Type must be `application/json`, got `{}`.", shown(.0))]
    UnsupportedMediaType(String),
    /// A request from a web page whose origin is not allowed (no CORS allow-list entry and
    /// not the server's own origin).
    #[error("Origin `{}` is not allowed: add it to the server's CORS allow-list (`--cors-origin`).", shown(.0))]
    OriginNotAllowed(String),
    /// A `Host` this server does not answer to (DNS rebinding guard on loopback).
    #[error("Host `{}` is not allowed: this server answers to its loopback names (see `--allowed-host`).", shown(.0))]
    HostNotAllowed(String),
    /// The request body stopped arriving for this many seconds.
    #[error("The request body was not received in time: no data for {0} s.")]
    RequestTimeout(u64),
    /// The request's headers are over this many bytes.
    #[error("Request headers are too large: the limit is {0} bytes.")]
    HeadersTooLarge(usize),
    /// A failure of ours. The cause goes to the log, never to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Most bytes of a client's own text (a model id) echoed in an error message [256]: the
/// rest is cut, so a huge id does not come back whole.
pub const MAX_ECHO_BYTES: usize = 256;

/// `text` as echoed: whole, or its first [`MAX_ECHO_BYTES`] (on a character boundary) and
/// an ellipsis.
fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_ECHO_BYTES {
        return text.into();
    }
    let mut end = MAX_ECHO_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

/// Seconds a client should wait after a 429 of a full queue (sent as `retry-after`).
pub const RETRY_AFTER_SECS: &str = "1";

/// Groq's flex-tier status when its capacity is exceeded.
const CAPACITY_EXCEEDED: u16 = 498;

const INVALID: &str = "invalid_request_error";

impl ServiceError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        self.parts().0
    }

    /// Whether the client is told when to come back (`retry-after`, whole seconds): on a
    /// 429 only, as Groq sends it.
    pub fn retry_after(&self) -> Option<String> {
        match self {
            ServiceError::RateLimited(r) => r.wait.map(|w| (w.ceil().max(1.0) as u64).to_string()),
            e if e.status() == 429 => Some(RETRY_AFTER_SECS.to_string()),
            _ => None,
        }
    }

    /// The `x-ratelimit-*` headers an error answer carries (a rate-limit refusal's).
    pub fn rate_headers(&self) -> Option<&RateHeaders> {
        match self {
            ServiceError::RateLimited(r) => Some(&r.headers),
            _ => None,
        }
    }

    fn parts(&self) -> (u16, &'static str, Option<&'static str>) {
        use ServiceError as E;
        match self {
            E::BadRequest(_) | E::InvalidParam { .. } => (400, INVALID, None),
            E::Prepare(e) => (400, INVALID, e.code()),
            E::Field { code, .. } => (400, INVALID, *code),
            E::ModelNotFound(_) => (404, INVALID, Some("model_not_found")),
            E::NotFound(_) => (404, INVALID, Some("not_found")),
            E::InvalidApiKey => (401, INVALID, Some("invalid_api_key")),
            E::ShuttingDown | E::Loading => {
                (503, "internal_server_error", Some("service_unavailable"))
            }
            E::PayloadTooLarge(_) | E::ImageTooLarge { .. } => {
                (413, INVALID, Some("request_too_large"))
            }
            E::BadImage { .. } => (400, INVALID, Some("invalid_image_url")),
            E::Admission(AdmissionError::QueueFull(_), true)
            | E::Admission(AdmissionError::NoCapacity, _) => (
                CAPACITY_EXCEEDED,
                "capacity_exceeded",
                Some("capacity_exceeded"),
            ),
            E::Admission(AdmissionError::QueueFull(_), false) => {
                (429, "requests", Some("rate_limit_exceeded"))
            }
            E::Admission(AdmissionError::Stopped, _) | E::Internal(_) => {
                (500, "internal_server_error", None)
            }
            E::RateLimited(r) => (r.status, r.kind, Some("rate_limit_exceeded")),
            E::TierNotAvailable { .. } => (400, INVALID, Some("service_tier_not_available")),
            E::UnknownUrl { .. } => (404, INVALID, Some("unknown_url")),
            E::UnsupportedMediaType(_) => (415, INVALID, Some("unsupported_media_type")),
            E::OriginNotAllowed(_) => (403, INVALID, Some("origin_not_allowed")),
            E::HostNotAllowed(_) => (403, INVALID, Some("host_not_allowed")),
            E::RequestTimeout(_) => (408, INVALID, Some("request_timeout")),
            E::HeadersTooLarge(_) => (431, INVALID, Some("request_header_fields_too_large")),
            E::HttpRejection { status: 413, .. } => (413, INVALID, Some("request_too_large")),
            E::HttpRejection { status, .. } if *status >= 500 => {
                (*status, "internal_server_error", None)
            }
            E::HttpRejection { status, .. } => (*status, INVALID, None),
            E::MethodNotAllowed(_) => (405, INVALID, Some("method_not_allowed")),
            E::JsonValidateFailed { .. } => (400, INVALID, Some("json_validate_failed")),
            E::ToolUseFailed { .. } => (400, INVALID, Some("tool_use_failed")),
        }
    }

    /// The client-facing message: 5xx bodies are generic.
    fn public_message(&self) -> String {
        use ServiceError as E;
        match self {
            E::HttpRejection { status, .. } if *status >= 500 => {
                "The server had an error while processing your request. Please try again.".into()
            }
            E::Internal(_) | E::Admission(AdmissionError::Stopped, _) => {
                "The server had an error while processing your request. Please try again.".into()
            }
            E::Admission(AdmissionError::QueueFull(_), true)
            | E::Admission(AdmissionError::NoCapacity, _) => {
                "The `flex` tier capacity exceeded. Please try again later with a backoff.".into()
            }
            E::Admission(AdmissionError::QueueFull(n), false) => format!(
                "Rate limit reached: the server is at capacity with {n} requests waiting. Please try again in {RETRY_AFTER_SECS}s."
            ),
            other => other.to_string(),
        }
    }

    fn param(&self) -> Option<String> {
        match self {
            ServiceError::InvalidParam { param, .. } => Some((*param).to_string()),
            ServiceError::Prepare(e) => Some(e.param()),
            ServiceError::BadImage { param, .. } | ServiceError::ImageTooLarge { param, .. } => {
                Some(param.clone())
            }
            ServiceError::TierNotAvailable { .. } => Some("service_tier".into()),
            ServiceError::Field { param, .. } => Some(param.clone()),
            _ => None,
        }
    }

    fn failed_generation(&self) -> Option<String> {
        match self {
            ServiceError::JsonValidateFailed {
                failed_generation, ..
            }
            | ServiceError::ToolUseFailed {
                failed_generation, ..
            } => Some(failed_generation.clone()),
            _ => None,
        }
    }

    /// A client's 400 with its field named by `rename` (a chat path in, another wire
    /// format's path out), in `param` and in each back-quoted path of the message. Any
    /// other error is returned as it is.
    pub fn rename_fields(self, rename: impl Fn(&str) -> String) -> ServiceError {
        let (status, _, code) = self.parts();
        let Some(param) = self.param().filter(|_| status == 400) else {
            return self;
        };
        let message = (self.public_message().split('`').enumerate())
            .map(|(i, s)| if i % 2 == 1 { rename(s) } else { s.to_string() })
            .collect::<Vec<_>>()
            .join("`");
        ServiceError::Field {
            message,
            param: rename(&param),
            code,
        }
    }

    /// The body: Groq's error envelope.
    pub fn envelope(&self) -> ErrorEnvelope {
        let (_, kind, code) = self.parts();
        ErrorEnvelope {
            error: ErrorObject {
                message: self.public_message(),
                kind: kind.to_string(),
                code: code.map(str::to_string),
                param: self.param(),
                failed_generation: self.failed_generation(),
            },
        }
    }
}
