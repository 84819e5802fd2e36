//! Request ids (`x-request-id`, reused as `x_groq.id`), bearer-key authentication, and
//! Groq's envelope on every error answer.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use peregrine_service::ServiceError;

use crate::error::ApiError;
use crate::state::SharedState;

/// The `req_<ulid>` id of the request being served.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

pub use peregrine_service::new_request_id;

/// Gives every request an id and echoes it as `x-request-id`.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = new_request_id();
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Checks `Authorization: Bearer <key>` where keys are required, and hands the handlers the
/// [`Principal`] the request acts for.
pub async fn auth(State(state): State<SharedState>, mut req: Request, next: Next) -> Response {
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match state.keys.authenticate(key).await {
        Ok(principal) => {
            if let Some(line) = req.extensions().get::<crate::access_log::LogLine>() {
                line.key(principal.key_id.as_deref());
            }
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => ApiError(e).into_response(),
    }
}

/// Most bytes of a plain-text rejection read to wrap it [4 KiB]: axum's messages are short.
const MAX_REJECTION_BYTES: usize = 4096;

/// Puts every error answer that is not JSON already (axum's extractor rejections: a path id
/// that is not UTF-8, multipart without a boundary, ...) into Groq's envelope, keeping its
/// status, so clients parse every error the same way.
pub async fn envelope_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = (resp.headers().get(header::CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let body = axum::body::to_bytes(resp.into_body(), MAX_REJECTION_BYTES).await;
    let text = body.map_or_else(
        |_| String::new(),
        |b| String::from_utf8_lossy(&b).into_owned(),
    );
    let message = match text.trim() {
        "" => status
            .canonical_reason()
            .unwrap_or("Bad request")
            .to_string(),
        t => t.to_string(),
    };
    ApiError(ServiceError::HttpRejection {
        status: status.as_u16(),
        message,
    })
    .into_response()
}
