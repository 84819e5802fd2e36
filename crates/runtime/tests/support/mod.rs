//! What the runtime's integration tests share: a mock model built with a runtime
//! configuration, and one request run to its end.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use peregrine_engine::{ContextSettings, MockModel};
use peregrine_grammar::GrammarLimits;
use peregrine_protocol::parse::parse_chat_request;
use peregrine_runtime::{
    build, build_with_draft, prepare, BuiltModel, Event, ModelSettings, Rejection, RuntimeConfig,
    UsageStats,
};
use serde_json::Value;

/// `model` served with two slots of `n_ctx_seq` tokens under `runtime`.
pub fn start(model: &MockModel, n_ctx_seq: u32, runtime: RuntimeConfig) -> BuiltModel {
    build(model, &settings(n_ctx_seq, runtime)).expect("the mock builds")
}

/// The same, with `draft` as its draft model.
pub fn start_with_draft(
    model: &MockModel,
    draft: &MockModel,
    n_ctx_seq: u32,
    runtime: RuntimeConfig,
) -> BuiltModel {
    build_with_draft(model, Some(draft), &settings(n_ctx_seq, runtime)).expect("the mock builds")
}

fn settings(n_ctx_seq: u32, runtime: RuntimeConfig) -> ModelSettings {
    ModelSettings {
        context: ContextSettings {
            n_ctx_seq,
            n_seq_max: 2,
            n_batch: 64,
            n_threads: 1,
            n_gpu_layers: 0,
        },
        runtime,
        grammar: GrammarLimits::default(),
        tool_format: None,
        guard: false,
        metrics: Default::default(),
    }
}

/// The text of one request, and its completion token count (`None` when an unfinished value
/// was refused with json_validate_failed).
pub async fn complete(m: &BuiltModel, body: &Value) -> (String, Option<u32>) {
    let (text, usage) = complete_with_usage(m, body).await;
    (text, usage.map(|u| u.completion_tokens))
}

/// The text of one request and its usage (`None` when an unfinished value was refused with
/// json_validate_failed).
pub async fn complete_with_usage(m: &BuiltModel, body: &Value) -> (String, Option<UsageStats>) {
    let req = parse_chat_request(body.to_string().as_bytes()).unwrap();
    let valid = prepare(&req, &m.ctx, 1).expect("validates");
    let mut rx = m.runtime.submit(valid).expect("admitted");
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Delta { text: t, .. } => text.push_str(&t),
            Event::Finished(f) => return (text, Some(f.usage)),
            Event::Rejected(Rejection::Json(_)) => return (text, None),
            other => panic!("unexpected event: {other:?}"),
        }
    }
    panic!("no finish event");
}
