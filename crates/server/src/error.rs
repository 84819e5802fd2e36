//! HTTP answers for [`ServiceError`]: its status, Groq's envelope as the JSON body, and
//! `retry-after` on a 429 (with the `x-ratelimit-*` headers of a rate-limit refusal). The map itself lives with the error (`peregrine_service::error`),
//! so batch error files carry the same status and body.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use peregrine_service::{CompletionError, ServiceError};

/// A [`ServiceError`] on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub ServiceError);

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        Self(e)
    }
}

impl From<CompletionError> for ApiError {
    fn from(e: CompletionError) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        let mut resp = (status, axum::Json(e.envelope())).into_response();
        if let Some(headers) = e.rate_headers() {
            crate::chat::put_rate_headers(&mut resp, headers);
        }
        if let Some(v) = e.retry_after().and_then(|s| HeaderValue::from_str(&s).ok()) {
            resp.headers_mut().insert("retry-after", v);
        }
        resp
    }
}
