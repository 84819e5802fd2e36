//! The step cost model on the mock engine: a CPU on which a pass of two sequences costs more
//! than two passes of one gets two passes, and the answers do not change.

use std::sync::atomic::Ordering;
use std::time::Duration;

use peregrine_engine::{ContextSettings, MockModel};
use peregrine_grammar::GrammarLimits;
use peregrine_protocol::parse::parse_chat_request;
use peregrine_runtime::{build, prepare, BuiltModel, Event, ModelSettings, RuntimeConfig};
use serde_json::json;

const SCRIPT: &str = "one two three four five six seven eight nine ten";

fn start(model: &MockModel, cost_model: bool) -> BuiltModel {
    let settings = ModelSettings {
        context: ContextSettings {
            n_ctx_seq: 256,
            n_seq_max: 2,
            n_batch: 64,
            n_threads: 1,
            n_gpu_layers: 0,
        },
        runtime: RuntimeConfig {
            cost_model,
            ..RuntimeConfig::default()
        },
        grammar: GrammarLimits::default(),
        tool_format: None,
    };
    build(model, &settings).expect("the mock builds")
}

async fn answer(m: &BuiltModel, user: &str) -> String {
    let body =
        json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": user}]});
    let req = parse_chat_request(body.to_string().as_bytes()).unwrap();
    let valid = prepare(&req, &m.ctx, 1).expect("validates");
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

/// Two concurrent requests; returns their answers and the passes run after calibration.
async fn two_streams(row_delays: Vec<Duration>, cost_model: bool) -> (String, String, usize) {
    let model = MockModel {
        row_delays,
        ..MockModel::new(SCRIPT)
    };
    let m = start(&model, cost_model);
    // The first request waits for the engine thread, so calibration is over when it runs.
    let warm = answer(&m, "warm up").await;
    assert_eq!(warm, SCRIPT);
    let before = model.decodes.load(Ordering::Relaxed);
    let (a, b) = tokio::join!(answer(&m, "first"), answer(&m, "second"));
    (a, b, model.decodes.load(Ordering::Relaxed) - before)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pair_that_costs_more_than_two_singles_runs_as_two_passes() {
    let pricey_pairs = vec![Duration::from_millis(2), Duration::from_millis(12)];
    let (a, b, split) = two_streams(pricey_pairs.clone(), true).await;
    assert_eq!((a.as_str(), b.as_str()), (SCRIPT, SCRIPT));
    let (c, d, joint) = two_streams(pricey_pairs, false).await;
    assert_eq!((c.as_str(), d.as_str()), (SCRIPT, SCRIPT));
    // Both decode ~50 tokens each: one pass per token for the pair without the cost model,
    // about two with it.
    assert!(
        split as f64 > 1.6 * joint as f64,
        "{split} passes with the cost model, {joint} without"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn batching_that_pays_is_kept() {
    let cheap_pairs = vec![Duration::from_millis(6), Duration::from_millis(7)];
    let (a, b, with) = two_streams(cheap_pairs.clone(), true).await;
    assert_eq!((a.as_str(), b.as_str()), (SCRIPT, SCRIPT));
    let (_, _, without) = two_streams(cheap_pairs, false).await;
    assert!(
        (with as f64) < 1.2 * without as f64,
        "{with} passes with the cost model, {without} without"
    );
}
