//! `/health` follows the engine threads: 200 with each model running, 503 once one has died.

use crate::common;

use axum::http::{Request, StatusCode};
use common::{app, chat, send, Setup};
use serde_json::Value;

async fn health(app: &axum::Router) -> (StatusCode, Value) {
    let req = Request::get("/health")
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, _, text) = send(app, req).await;
    (status, serde_json::from_str(&text).unwrap())
}

const BODY: &str = r#"{"model":"mock-model","messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn health_reports_each_running_engine() {
    let app = app(Setup::default());
    let (status, body) = health(&app).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["models"][0]["id"], "mock-model");
    assert_eq!(body["models"][0]["engine"], "running");
    assert_eq!(body["models"][0]["queue_depth"], 0);
}

#[tokio::test]
async fn a_dead_engine_thread_makes_health_fail_and_requests_get_500() {
    let app = app(Setup {
        panic_after: Some(0),
        ..Setup::default()
    });
    let (status, body) = chat(&app, BODY).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["error"]["type"], "internal_server_error");
    // The thread has unwound by the time its channel closed; the inbox closes with it.
    let mut tries = 0;
    let (status, body) = loop {
        let (status, body) = health(&app).await;
        if status != StatusCode::OK || tries == 50 {
            break (status, body);
        }
        tries += 1;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["models"][0]["engine"], "stopped");
    // Later requests are refused at admission, in Groq's envelope.
    let (status, body) = chat(&app, BODY).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
}

#[tokio::test]
async fn the_openapi_document_is_served_without_a_key() {
    let app = app(Setup {
        api_keys: vec!["k".into()],
        ..Setup::default()
    });
    let req = Request::get("/openapi.json")
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, _, text) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/openai/v1/chat/completions"]["post"].is_object());
}
