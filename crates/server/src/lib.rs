//! Peregrine's HTTP layer (axum): thin handlers over the services of `peregrine-service`
//! (completions, files, batches), HTTP answers for its errors ([`error::ApiError`]), SSE
//! framing, request ids, authentication and `/health`.
//!
//! [`router`] builds the whole app from a [`state::AppState`], so tests drive it with
//! `tower::ServiceExt::oneshot` and no socket. Routes are served under both `/openai/v1`
//! (Groq's OpenAI-compatible prefix) and `/v1`.

pub mod access_log;
pub mod batches;
pub mod chat;
pub mod error;
pub mod files;
pub mod fine_tunings;
mod health;
pub mod listen;
pub mod middleware;
pub mod models;
pub mod policy;
pub mod responses;
pub mod state;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use peregrine_service::ServiceError;

pub use policy::HttpPolicy;
pub use state::{AppState, SharedState};

pub use chat::BODY_LIMIT;

/// The routes under one prefix; `fine_tunings`: with Groq's fine-tuning API, which it serves
/// under `/v1` only.
fn api_routes(state: SharedState, fine_tunings: bool) -> Router<SharedState> {
    let json = || axum::middleware::from_fn(policy::require_json);
    let mut routes = Router::new();
    if fine_tunings {
        routes = routes
            .route(
                "/fine_tunings",
                post(fine_tunings::create)
                    .layer(json())
                    .get(fine_tunings::list),
            )
            .route(
                "/fine_tunings/{id}",
                get(fine_tunings::retrieve).delete(fine_tunings::delete),
            );
    }
    routes
        .route("/chat/completions", post(chat::create).layer(json()))
        .route("/responses", post(responses::create).layer(json()))
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
        .route(
            "/batches",
            post(batches::create).layer(json()).get(batches::list),
        )
        .route("/batches/{id}", get(batches::retrieve))
        .route("/batches/{id}/cancel", post(batches::cancel))
        .layer(axum::middleware::from_fn_with_state(
            state,
            middleware::auth,
        ))
}

/// The whole application. Outermost first: CORS answers (when origins are listed), request
/// id, the request's log line, Groq's envelope on every error, the policy guard (headers size, `Host`, `Origin`),
/// the body read timeout, then the routes.
pub fn router(state: SharedState) -> Router {
    let cors = state.policy.cors();
    let app = Router::new()
        .nest("/openai/v1", api_routes(state.clone(), false))
        .nest("/v1", api_routes(state.clone(), true))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(openapi))
        .fallback(unknown_url)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            policy::body_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            policy::guard,
        ))
        .layer(axum::middleware::from_fn(middleware::envelope_errors))
        .layer(axum::middleware::from_fn(access_log::access_log))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .with_state(state);
    match cors {
        Some(layer) => app.layer(layer),
        None => app,
    }
}

/// `GET /openapi.json`: the API's OpenAPI 3.1 document, generated from the wire types.
async fn openapi() -> impl IntoResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(peregrine_protocol::openapi::json);
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.as_str(),
    )
}

async fn method_not_allowed(method: Method) -> impl IntoResponse {
    error::ApiError(ServiceError::MethodNotAllowed(method.to_string()))
}

async fn unknown_url(method: Method, uri: Uri) -> impl IntoResponse {
    error::ApiError(ServiceError::UnknownUrl {
        method: method.to_string(),
        path: uri.path().to_string(),
    })
}
