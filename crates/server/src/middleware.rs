//! Request ids (`x-request-id`, reused as `x_groq.id`) and bearer-key authentication.

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

/// Checks `Authorization: Bearer <key>` when keys are configured.
pub async fn auth(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    if state.api_keys.is_empty() {
        return next.run(req).await;
    }
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match key {
        Some(k) if state.api_keys.iter().any(|a| a == k) => next.run(req).await,
        _ => ApiError(ServiceError::InvalidApiKey).into_response(),
    }
}
