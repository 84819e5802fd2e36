//! `GET /metrics` and `/health` through the router, on the mock engine: the series move with
//! the traffic sent (vLLM's names, the model label), rate-limit rejections are counted by
//! reason, and a busy engine thread that stops going round its loop makes `/health` 503.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use peregrine_service::limits::{LimitPolicy, Limits};
use serde_json::{json, Value};

fn body(extra: Value) -> String {
    let mut v = json!({"model":"mock-model","messages":[{"role":"user","content":"Count"}],"temperature":0});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v.to_string()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

/// The value of the series whose line starts with `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(app: &axum::Router) -> String {
    let (status, h, text) = send(app, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    text
}

#[tokio::test]
async fn series_move_with_the_traffic() {
    let app = app(Setup {
        limits: LimitPolicy {
            models: HashMap::from([(
                "mock-model".to_string(),
                Limits {
                    rpm: Some(3),
                    ..Default::default()
                },
            )]),
            orgs: HashMap::new(),
        },
        ..Setup::default()
    });
    let m = "{model_name=\"mock-model\"}";
    let before = scrape(&app).await;
    assert_eq!(
        value(&before, &format!("vllm:prompt_tokens_total{m}")),
        Some(0.0)
    );
    assert_eq!(
        value(&before, &format!("vllm:num_requests_running{m}")),
        Some(0.0)
    );
    let (status, v) = chat(&app, &body(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let prompt = v["usage"]["prompt_tokens"].as_f64().unwrap();
    let completion = v["usage"]["completion_tokens"].as_f64().unwrap();
    // The same prompt again: its prefix comes from the cache.
    let (status, v) = chat(&app, &body(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let cached = v["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_f64()
        .unwrap_or(0.0);
    let (status, v) = chat(&app, &body(json!({"stream": true}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // The fourth in a minute is over the limit.
    let (status, _) = chat(&app, &body(json!({}))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    let after = scrape(&app).await;
    let at = |s: &str| value(&after, s).unwrap_or_else(|| panic!("no {s} in\n{after}"));
    assert_eq!(at(&format!("vllm:prompt_tokens_total{m}")), 3.0 * prompt);
    assert_eq!(
        at(&format!("vllm:generation_tokens_total{m}")),
        3.0 * completion
    );
    assert_eq!(
        at("vllm:request_success_total{model_name=\"mock-model\",finished_reason=\"stop\"}"),
        3.0
    );
    assert_eq!(
        at(&format!("vllm:time_to_first_token_seconds_count{m}")),
        3.0
    );
    assert_eq!(
        at(&format!("vllm:e2e_request_latency_seconds_count{m}")),
        3.0
    );
    assert_eq!(
        at(&format!("vllm:prefix_cache_queries_total{m}")),
        3.0 * prompt
    );
    assert!(cached > 0.0);
    assert!(at(&format!("vllm:prefix_cache_hits_total{m}")) >= cached);
    assert_eq!(at(&format!("vllm:num_requests_running{m}")), 0.0);
    assert_eq!(
        at("peregrine_rate_limit_rejections_total{model_name=\"mock-model\",reason=\"rpm\"}"),
        1.0
    );
    // (Batch lines are counted by the batch worker: tests/e2e.)
    for name in [
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:time_per_output_token_seconds",
        "peregrine_queue_depth",
        "peregrine_grammar_mask_seconds",
    ] {
        assert!(
            after.contains(&format!("# TYPE {name} ")),
            "{name} missing in\n{after}"
        );
    }
}

#[tokio::test]
async fn a_busy_engine_that_stops_going_round_is_reported_stalled() {
    // Each decode takes 400 ms; a loop turn longer than 150 ms counts as a stall.
    let app = app(Setup {
        delay: Duration::from_millis(400),
        stall_after: Duration::from_millis(150),
        ..Setup::default()
    });
    let (status, _, text) = send(&app, get("/health")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let running = tokio::spawn({
        let app = app.clone();
        async move { chat(&app, &body(json!({"max_tokens": 3}))).await }
    });
    let mut seen = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (status, _, text) = send(&app, get("/health")).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            seen = Some(text);
            break;
        }
    }
    let text = seen.expect("/health never reported the stall");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["status"], "unavailable");
    assert_eq!(v["models"][0]["engine"], "stalled");
    let (status, v) = running.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    // Idle again: an engine with no work is never stalled.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, text) = send(&app, get("/health")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
}
