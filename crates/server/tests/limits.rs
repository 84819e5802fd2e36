//! Rate limits and service tiers through the router, on the mock engine: Groq's headers
//! on every chat answer, its 429 and 413 bodies with `retry-after`, the token reservation
//! corrected to what a request used, tiers an organization may not use, flex failing fast
//! on a full engine, and performance requests overtaking queued on_demand ones.

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use http_body_util::BodyExt;
use peregrine_service::limits::{LimitPolicy, Limits, OrgPolicy};
use serde_json::{json, Value};
use tower::ServiceExt;

fn policy(limits: Limits) -> LimitPolicy {
    LimitPolicy {
        models: HashMap::from([("mock-model".to_string(), limits)]),
        orgs: HashMap::new(),
    }
}

fn body(extra: Value) -> String {
    let mut v = json!({"model":"mock-model","messages":[{"role":"user","content":"Count"}],"temperature":0});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v.to_string()
}

fn header(h: &axum::http::HeaderMap, name: &str) -> String {
    h.get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
        .to_string()
}

fn num(h: &axum::http::HeaderMap, name: &str) -> u64 {
    header(h, name).parse().unwrap()
}

#[tokio::test]
async fn every_answer_carries_groqs_headers_and_rpm_trips_with_groqs_429() {
    let app = app(Setup {
        limits: policy(Limits {
            rpm: Some(2),
            rpd: Some(1000),
            tpm: Some(6000),
            ..Default::default()
        }),
        ..Setup::default()
    });
    let (status, h, text) = send(&app, post("/openai/v1/chat/completions", &body(json!({})))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(num(&h, "x-ratelimit-limit-requests"), 1000);
    assert_eq!(num(&h, "x-ratelimit-remaining-requests"), 999);
    // One request of 1000 per day comes back in 86.4 s, in Go's duration format.
    let reset = header(&h, "x-ratelimit-reset-requests");
    assert!(reset.starts_with("1m26."), "{reset}");
    assert_eq!(num(&h, "x-ratelimit-limit-tokens"), 6000);
    let v: Value = serde_json::from_str(&text).unwrap();
    let used = v["usage"]["prompt_tokens"].as_u64().unwrap()
        + v["usage"]["completion_tokens"].as_u64().unwrap();
    // The response's headers come after the correction: exactly what was used is gone
    // (a few tokens may have come back since).
    let remaining = num(&h, "x-ratelimit-remaining-tokens");
    assert!(
        (6000 - used..=6000 - used + 2).contains(&remaining),
        "{remaining} after using {used}"
    );
    assert!(h.get("retry-after").is_none());
    let (status, _, _) = send(&app, post("/openai/v1/chat/completions", &body(json!({})))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, h, text) = send(&app, post("/openai/v1/chat/completions", &body(json!({})))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    let e: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(e["error"]["type"], "requests");
    assert_eq!(e["error"]["code"], "rate_limit_exceeded");
    let msg = e["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Rate limit reached for model `mock-model` in organization `org_default` service tier `on_demand` on requests per minute (RPM): Limit 2, Used 2, Requested 1. Please try again in 29."),
        "{msg}"
    );
    assert_eq!(header(&h, "retry-after"), "30");
    assert_eq!(num(&h, "x-ratelimit-remaining-requests"), 998);
}

#[tokio::test]
async fn max_tokens_is_reserved_and_a_request_over_the_whole_budget_is_413() {
    let app = app(Setup {
        ctx: 2048,
        limits: policy(Limits {
            tpm: Some(1000),
            ..Default::default()
        }),
        ..Setup::default()
    });
    let ask = |max: u64, stream: bool| {
        post(
            "/openai/v1/chat/completions",
            &body(json!({"max_completion_tokens": max, "stream": stream})),
        )
    };
    // The prompt and the asked-for completion do not fit in 1000 tokens at all.
    let (status, h, text) = send(&app, ask(1200, false)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    let e: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(e["error"]["type"], "tokens");
    assert_eq!(e["error"]["code"], "rate_limit_exceeded");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("Request too large for model `mock-model` in organization `org_default` service tier `on_demand` on tokens per minute (TPM): Limit 1000, Requested "),
        "{e}"
    );
    assert!(h.get("retry-after").is_none());
    // A stream's headers go out at admission: its whole reservation (prompt + 900) is taken.
    let (status, h, text) = send(&app, ask(900, true)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let remaining = num(&h, "x-ratelimit-remaining-tokens");
    assert!(remaining < 100, "{remaining}");
    // Once the stream ended, the unused reservation came back: another 800 fits.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _, text) = send(&app, ask(800, false)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    // Both requests' real use is charged: 900 more no longer fits.
    let (status, h, text) = send(&app, ask(900, false)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    assert!(
        text.contains("on tokens per minute (TPM): Limit 1000, Used "),
        "{text}"
    );
    assert!(num(&h, "retry-after") >= 1);
}

#[tokio::test]
async fn organizations_may_be_kept_to_some_tiers_and_auto_falls_back_to_flex() {
    let mut limits = policy(Limits {
        rpm: Some(1),
        ..Default::default()
    });
    let app_all = app(Setup {
        limits: limits.clone(),
        ..Setup::default()
    });
    let (status, _, text) = send(
        &app_all,
        post(
            "/openai/v1/chat/completions",
            &body(json!({"service_tier": "auto"})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["service_tier"],
        "on_demand"
    );
    // on_demand's one request is spent: auto runs in flex, with its ten times larger limit.
    let (status, h, text) = send(
        &app_all,
        post(
            "/openai/v1/chat/completions",
            &body(json!({"service_tier": "auto"})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["service_tier"],
        "flex"
    );
    assert_eq!(num(&h, "x-ratelimit-limit-requests"), 10);
    limits.orgs.insert(
        "org_default".into(),
        OrgPolicy {
            service_tiers: Some(vec!["on_demand".into()]),
            ..Default::default()
        },
    );
    let app = app(Setup {
        limits,
        ..Setup::default()
    });
    let (status, _, text) = send(
        &app,
        post(
            "/openai/v1/chat/completions",
            &body(json!({"service_tier": "flex"})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let e: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(e["error"]["param"], "service_tier");
    assert_eq!(e["error"]["code"], "service_tier_not_available");
}

fn streaming(tier: &str) -> String {
    body(json!({"stream": true, "service_tier": tier}))
}

/// Starts a stream and waits for its first content chunk (it holds a slot then).
async fn running(app: &axum::Router, tier: &str) -> axum::body::Body {
    let resp = app
        .clone()
        .oneshot(post("/openai/v1/chat/completions", &streaming(tier)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut seen = String::new();
    while !seen.contains("\"content\":\"1\"") {
        let frame = body.frame().await.unwrap().unwrap();
        seen.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
    }
    body
}

#[tokio::test]
async fn flex_fails_fast_on_a_full_engine_while_on_demand_queues() {
    let app = app(Setup {
        parallel: 1,
        delay: Duration::from_millis(10),
        ..Setup::default()
    });
    let held = running(&app, "on_demand").await;
    let (status, _, text) = send(
        &app,
        post("/openai/v1/chat/completions", &streaming("flex")),
    )
    .await;
    assert_eq!(status.as_u16(), 498, "{text}");
    let e: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(e["error"]["code"], "capacity_exceeded");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`flex` tier capacity exceeded"));
    // on_demand waits for the slot and completes.
    let queued = tokio::spawn({
        let app = app.clone();
        async move { chat(&app, &body(json!({}))).await }
    });
    drop(held);
    let (status, v) = queued.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["service_tier"], "on_demand");
    // With the engine free again, flex runs.
    let (status, v) = chat(&app, &body(json!({"service_tier": "flex"}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["service_tier"], "flex");
}

#[tokio::test]
async fn performance_requests_overtake_queued_on_demand_ones() {
    let app = app(Setup {
        parallel: 1,
        delay: Duration::from_millis(10),
        ..Setup::default()
    });
    let held = running(&app, "on_demand").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for (i, tier) in ["on_demand", "on_demand", "performance"]
        .into_iter()
        .enumerate()
    {
        let (client, tx) = (app.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            let (status, v) = chat(&client, &body(json!({"service_tier": tier}))).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            tx.send(tier).unwrap();
        }));
        // Queued in this order.
        while app_queue(&app).await < i + 1 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    drop(held);
    assert_eq!(rx.recv().await, Some("performance"));
    assert_eq!(rx.recv().await, Some("on_demand"));
    for t in tasks {
        t.await.unwrap();
    }
}

/// The engine's queue depth, from `/health`.
async fn app_queue(app: &axum::Router) -> usize {
    let resp = app
        .clone()
        .oneshot(
            axum::http::Request::get("/health")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["models"][0]["queue_depth"].as_u64().unwrap() as usize
}
