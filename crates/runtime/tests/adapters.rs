//! LoRA adapters on the engine loop, with the mock engine: an adapter is a file holding the
//! script its sequences answer, and the mock fails any pass that feeds a sequence whose
//! cache holds cells computed under another adapter. So these tests see that sequences of
//! different adapters never share a pass, that every one of them advances, and that the
//! prefix cache is never reused across adapters.

use crate::support;

use peregrine_engine::{AdapterId, MockModel};
use peregrine_protocol::parse::parse_chat_request;
use peregrine_runtime::{prepare, BuiltModel, Event, RuntimeConfig};
use serde_json::json;

async fn run(m: &BuiltModel, adapter: Option<AdapterId>, content: &str) -> String {
    let body =
        json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": content}]});
    let req = parse_chat_request(body.to_string().as_bytes()).unwrap();
    let mut valid = prepare(&req, &m.ctx, 1).expect("validates");
    valid.adapter = adapter;
    let mut rx = m.runtime.submit(valid).expect("admitted");
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Delta { text: t, .. } => text.push_str(&t),
            Event::Finished(_) => return text,
            other => panic!("unexpected event: {other:?}"),
        }
    }
    panic!("no finish event");
}

fn adapter_file(dir: &std::path::Path, name: &str, script: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, script).unwrap();
    p
}

#[tokio::test]
async fn base_and_adapters_run_together_each_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let m = support::start(
        &MockModel::new("base says hi"),
        256,
        RuntimeConfig::default(),
    );
    let a = m
        .runtime
        .load_adapter(&adapter_file(dir.path(), "a", "adapter a speaks"))
        .unwrap();
    let b = m
        .runtime
        .load_adapter(&adapter_file(dir.path(), "b", "b"))
        .unwrap();
    assert_ne!(a, b);
    // Two slots, three requests at once: the base and two adapters, all in flight
    // together; a pass mixing them would fail in the mock.
    let (x, y, z) = tokio::join!(
        run(&m, None, "one"),
        run(&m, Some(a), "two"),
        run(&m, Some(b), "three"),
    );
    assert_eq!(x, "base says hi");
    assert_eq!(y, "adapter a speaks");
    assert_eq!(z, "b");
}

#[tokio::test]
async fn the_prefix_cache_is_not_shared_across_adapters() {
    let dir = tempfile::tempdir().unwrap();
    let m = support::start(&MockModel::new("base"), 256, RuntimeConfig::default());
    let a = m
        .runtime
        .load_adapter(&adapter_file(dir.path(), "a", "tuned"))
        .unwrap();
    // The same prompt under the base, then the adapter, then the base again: each finds a
    // slot holding the prompt's cells, but only its own adapter's may be reused.
    for (adapter, want) in [
        (None, "base"),
        (Some(a), "tuned"),
        (None, "base"),
        (Some(a), "tuned"),
    ] {
        assert_eq!(run(&m, adapter, "same prompt").await, want);
    }
}

#[tokio::test]
async fn a_missing_adapter_file_is_an_error_and_the_engine_goes_on() {
    let m = support::start(&MockModel::new("fine"), 256, RuntimeConfig::default());
    let e = m
        .runtime
        .load_adapter(std::path::Path::new("/nonexistent/adapter.gguf"))
        .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/adapter.gguf"), "{e}");
    assert_eq!(run(&m, None, "hi").await, "fine");
}
