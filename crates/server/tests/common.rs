//! Router tests on the mock engine: no socket, no model.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use peregrine_engine::{ContextSettings, MockModel};
use peregrine_grammar::GrammarLimits;
use peregrine_runtime::{build, ModelSettings, RuntimeConfig, Speculation};
use peregrine_server::AppState;
use peregrine_service::{Completions, ModelMeta, ModelRegistry, ServedModel, Storage};
use peregrine_text::tools::ToolFormat;
use tower::ServiceExt;

pub const SCRIPT: &str = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10. Done!";

pub struct Setup {
    pub script: &'static str,
    pub parallel: u32,
    pub ctx: u32,
    pub delay: Duration,
    pub max_queue: usize,
    pub api_keys: Vec<String>,
    /// The mock's tool-call syntax (its ChatML template has none of its own).
    pub tool_format: ToolFormat,
    /// The engine thread dies (panics) after this many decodes.
    pub panic_after: Option<usize>,
    /// Rate limits (none by default).
    pub limits: peregrine_service::limits::LimitPolicy,
    /// Where the model's series and the services' counters go (`GET /metrics`).
    pub metrics: Arc<peregrine_service::Metrics>,
    /// How long a busy engine may not go round its loop before `/health` says stalled.
    pub stall_after: Duration,
    /// A vision mock: each image takes this many positions.
    pub image_tokens: Option<u32>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            script: SCRIPT,
            parallel: 2,
            ctx: 256,
            delay: Duration::ZERO,
            max_queue: 8,
            api_keys: vec![],
            tool_format: ToolFormat::Hermes,
            panic_after: None,
            limits: Default::default(),
            metrics: Default::default(),
            stall_after: RuntimeConfig::default().stall_after,
            image_tokens: None,
        }
    }
}

pub fn app(s: Setup) -> Router {
    peregrine_server::router(state(s, None))
}

/// [`app`] under an HTTP policy of its own.
pub fn app_with_policy(s: Setup, policy: peregrine_server::HttpPolicy) -> Router {
    peregrine_server::router(Arc::new(AppState {
        completions: Completions::new(registry(&s)),
        keys: peregrine_service::ApiKeys::new(&s.api_keys, None),
        limiter: limiter(&s),
        metrics: s.metrics.clone(),
        storage: None,
        fine_tunings: None,
        policy,
    }))
}

/// The mock model's settings: `Setup`'s sizes through the one model builder.
pub fn model_settings(s: &Setup) -> ModelSettings {
    ModelSettings {
        context: ContextSettings {
            n_ctx_seq: s.ctx,
            n_seq_max: s.parallel,
            n_batch: 64,
            n_threads: 1,
            n_gpu_layers: 0,
        },
        runtime: RuntimeConfig {
            max_queue: s.max_queue,
            busy_prefill: 16,
            // Exercise masks computed beside the forward pass (the real-model tests run
            // them inline).
            mask_threads: 1,
            background_rows: 0,
            jump_forward: true,
            // Router tests count decodes (a crash after N); the cost model's own tests are
            // in the runtime crate.
            cost_model: false,
            // Drafts need measured step costs: off with the cost model (router tests count
            // decodes).
            speculation: Speculation::Off,
            stall_after: s.stall_after,
        },
        grammar: GrammarLimits::default(),
        // The mock's ChatML template has no tool syntax of its own.
        tool_format: Some(s.tool_format),
        guard: false,
        metrics: s.metrics.engine.for_model("mock-model"),
    }
}

/// The mock model, built and served as `mock-model` (alias `llama-3.3-70b-versatile`).
pub fn registry(s: &Setup) -> ModelRegistry {
    let mut registry = ModelRegistry::default();
    registry.add(served_model(s), vec!["llama-3.3-70b-versatile".into()]);
    registry
}

/// The mock model, built, as `mock-model`.
pub fn served_model(s: &Setup) -> ServedModel {
    let source = MockModel {
        delay: s.delay,
        panic_after: s.panic_after,
        image_tokens: s.image_tokens,
        ..MockModel::new(s.script)
    };
    let built = build(&source, &model_settings(s)).expect("mock model builds");
    let meta = ModelMeta {
        id: "mock-model".into(),
        name: "Mock".into(),
        owned_by: "Peregrine".into(),
        created: 1_700_000_000,
        fingerprint: "fp_0123456789".into(),
    };
    ServedModel::new(meta, built)
}

/// The setup's rate limits, counted in memory.
pub fn limiter(s: &Setup) -> Arc<peregrine_service::RateLimiter> {
    Arc::new(
        peregrine_service::RateLimiter::new(
            s.limits.clone(),
            Arc::new(peregrine_store::MemoryCounters::new()),
        )
        .with_metrics(s.metrics.rejections.clone()),
    )
}

/// The state behind [`app`], with file and batch storage when `storage` is given.
pub fn state(s: Setup, storage: Option<Storage>) -> Arc<AppState> {
    Arc::new(AppState {
        completions: Completions::new(registry(&s)),
        keys: peregrine_service::ApiKeys::new(&s.api_keys, None),
        limiter: limiter(&s),
        metrics: s.metrics.clone(),
        storage: storage.map(Arc::new),
        fine_tunings: None,
        policy: Default::default(),
    })
}

pub fn post(path: &str, body: &str) -> Request<Body> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("valid request")
}

pub async fn send(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = app.clone().oneshot(req).await.expect("router answers");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (
        status,
        headers,
        String::from_utf8(bytes.to_vec()).expect("utf-8 body"),
    )
}

pub async fn chat(app: &Router, body: &str) -> (StatusCode, serde_json::Value) {
    let (status, _, text) = send(app, post("/openai/v1/chat/completions", body)).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_events(body: &str) -> Vec<String> {
    assert!(body.ends_with("\n\n"), "every event ends with a blank line");
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("event without data: {e:?}"))
                .to_string()
        })
        .collect()
}
