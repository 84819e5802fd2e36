//! `GET /health`: whether every model's engine thread is running, with its queue depth. 200
//! while all run; 503 once one has stopped or stalled (a load balancer then takes the
//! replica out). `GET /metrics`: the Prometheus series.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;

use crate::state::SharedState;

#[derive(Serialize)]
pub struct Health {
    /// `ok`, or `unavailable` when an engine thread has stopped.
    status: &'static str,
    models: Vec<ModelHealth>,
}

#[derive(Serialize)]
struct ModelHealth {
    id: String,
    /// `running`, `stalled` (it has work and its loop has not gone round for a while) or
    /// `stopped`.
    engine: &'static str,
    /// Requests waiting for a sequence slot.
    queue_depth: usize,
}

pub async fn health(State(state): State<SharedState>) -> (StatusCode, Json<Health>) {
    let models: Vec<ModelHealth> = state
        .registry()
        .models()
        .iter()
        .map(|m| ModelHealth {
            id: m.id.clone(),
            engine: m.runtime.state().as_str(),
            queue_depth: m.runtime.queue_depth(),
        })
        .collect();
    let ok = models.iter().all(|m| m.engine == "running");
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status: if ok { "ok" } else { "unavailable" },
        models,
    };
    (status, Json(body))
}

/// `GET /metrics`: every series, in the OpenMetrics text format Prometheus scrapes. Not
/// behind the API keys, like `/health`: it names models and counts, never keys or content.
pub async fn metrics(State(state): State<SharedState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, peregrine_service::metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
}

/// `GET /ready`: 200 while the server takes new requests. It listens only once its models are
/// loaded, and while it drains after SIGTERM every new connection, this one included, gets
/// 503 (`listen::serve`), so a load balancer stops sending it work.
pub async fn ready() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ready"}))
}
