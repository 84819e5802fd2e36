//! The step cost model on the mock engine: a CPU on which a pass of two sequences costs more
//! than two passes of one gets two passes, and the answers do not change.

use crate::support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use peregrine_engine::MockModel;
use peregrine_runtime::{BuiltModel, RuntimeConfig, Speculation};
use serde_json::json;

const SCRIPT: &str = "one two three four five six seven eight nine ten";

async fn answer(m: &BuiltModel, user: &str) -> String {
    let body =
        json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": user}]});
    let (text, tokens) = support::complete(m, &body).await;
    assert!(tokens.is_some(), "finished: {text}");
    text
}

/// Two concurrent requests; returns their answers and the passes run after calibration.
async fn two_streams(row_delays: Vec<Duration>, cost_model: bool) -> (String, String, usize) {
    let model = MockModel {
        row_delays,
        ..MockModel::new(SCRIPT)
    };
    let runtime = RuntimeConfig {
        cost_model,
        // The passes counted here are the cost model's alone.
        speculation: Speculation::Off,
        ..RuntimeConfig::default()
    };
    let m = support::start(&model, 256, runtime);
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
