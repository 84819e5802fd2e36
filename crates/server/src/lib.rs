//! Peregrine's HTTP layer (axum): thin handlers over the runtime, the one error -> HTTP
//! mapping ([`error::ApiError`]), SSE encoding, request ids and authentication.
//!
//! [`router`] builds the whole app from a [`state::AppState`], so tests drive it with
//! `tower::ServiceExt::oneshot` and no socket. Routes are served under both `/openai/v1`
//! (Groq's OpenAI-compatible prefix) and `/v1`.

pub mod batch_worker;
pub mod batches;
pub mod chat;
pub mod error;
pub mod files;
pub mod middleware;
pub mod models;
pub mod state;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

pub use state::{AppState, ModelRegistry, ServedModel, SharedState};

/// Largest request body accepted, in bytes [20 MiB] (Groq allows 20 MB image URLs).
pub const BODY_LIMIT: usize = 20 * 1024 * 1024;

fn api_routes(state: SharedState) -> Router<SharedState> {
    Router::new()
        .route("/chat/completions", post(chat::create))
        .route("/models", get(models::list))
        .route("/models/{*id}", get(models::get))
        .route(
            "/files",
            // Uploads are streamed with their own limits (files::MAX_FILE_BYTES).
            post(files::upload)
                .layer(DefaultBodyLimit::disable())
                .get(files::list),
        )
        .route("/files/{id}", get(files::retrieve).delete(files::delete))
        .route("/files/{id}/content", get(files::content))
        .route("/batches", post(batches::create).get(batches::list))
        .route("/batches/{id}", get(batches::retrieve))
        .route("/batches/{id}/cancel", post(batches::cancel))
        .layer(axum::middleware::from_fn_with_state(
            state,
            middleware::auth,
        ))
}

/// The whole application.
pub fn router(state: SharedState) -> Router {
    Router::new()
        .nest("/openai/v1", api_routes(state.clone()))
        .nest("/v1", api_routes(state.clone()))
        .route("/health", get(health))
        .fallback(unknown_url)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .with_state(state)
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn method_not_allowed(method: Method) -> impl IntoResponse {
    error::ApiError::MethodNotAllowed(method.to_string())
}

async fn unknown_url(method: Method, uri: Uri) -> impl IntoResponse {
    error::ApiError::UnknownUrl {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
}
