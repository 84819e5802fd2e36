//! Idle slots' cells move to host memory before a long prefill, and come back when a request
//! reuses them (mock engine: its answers depend on the cells a sequence holds, so a prefix
//! put back wrongly would change them).

use crate::support;

use std::sync::atomic::Ordering;

use peregrine_engine::MockModel;
use peregrine_runtime::{BuiltModel, RuntimeConfig};
use serde_json::{json, Value};

/// A system prompt of `n` bytes (the mock's tokens are bytes), unlike any other tag's.
fn system(tag: &str, n: usize) -> String {
    let mut s = format!("[{tag}] ");
    while s.len() < n {
        s.push_str(tag);
        s.push(' ');
    }
    s
}

fn body(system: &str, user: &str) -> Value {
    json!({
        "model": "m",
        "temperature": 0,
        "max_tokens": 12,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
    })
}

/// One request's text, prompt tokens and cached prompt tokens.
async fn run(m: &BuiltModel, body: &Value) -> (String, u32, u32) {
    let (text, usage) = support::complete_with_usage(m, body).await;
    let usage = usage.expect("finished");
    (text, usage.prompt_tokens, usage.cached_tokens)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_prompt_moves_out_for_a_long_prefill_and_comes_back_whole() {
    let model = MockModel::new("The answer.");
    let m = support::start(&model, 1024, RuntimeConfig::default());
    let (a, b) = (system("alpha", 400), system("bravo", 400));
    let first = run(&m, &body(&a, "Go.")).await;
    assert_eq!(first.2, 0);
    // Another long prompt takes the other slot (the first shares only the template's first
    // tokens with it) and moves the first one's cells out before its prefill.
    let other = run(&m, &body(&b, "Go.")).await;
    assert!(other.2 < 20, "{other:?}");
    assert_eq!(model.saves.load(Ordering::Relaxed), 1);
    let stats = m.runtime.mask_stats();
    assert!(stats.offloaded_cells >= 400, "{stats:?}");
    // The first prompt again: its cells come back and all but the last prompt token is
    // reused; the answer is the same.
    let again = run(&m, &body(&a, "Go.")).await;
    assert_eq!(model.restores.load(Ordering::Relaxed), 1);
    assert_eq!(again.2, again.1 - 1, "{again:?}");
    assert_eq!(again.0, first.0);
    // A new question under the first system prompt reuses the system prompt.
    let follow = run(&m, &body(&a, "And then?")).await;
    assert!(follow.2 as usize >= a.len(), "{follow:?}");
    assert_eq!(follow.0, first.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn short_prompts_leave_idle_cells_in_place() {
    let model = MockModel::new("Yes.");
    let m = support::start(&model, 1024, RuntimeConfig::default());
    run(&m, &body(&system("alpha", 400), "Go.")).await;
    run(&m, &body("Be brief.", "Go.")).await;
    assert_eq!(model.saves.load(Ordering::Relaxed), 0);
    assert_eq!(m.runtime.mask_stats().offloaded_cells, 0);
}
