//! The browser and slow-client policy through the router: JSON-only chat bodies, foreign
//! origins and `Host` names refused, the CORS answer for listed origins, oversized header
//! blocks and stalled bodies, each in Groq's envelope.

use crate::common;

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use common::{app, app_with_policy, send, Setup};
use peregrine_server::policy::LOOPBACK_HOSTS;
use peregrine_server::HttpPolicy;
use serde_json::Value;

const CHAT: &str = "/openai/v1/chat/completions";
const BODY: &str =
    r#"{"model":"mock-model","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;

fn chat_with(headers: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::post(CHAT);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Body::from(BODY)).unwrap()
}

/// Status and the error's `code` (asserting Groq's envelope).
async fn refusal(app: &axum::Router, req: Request<Body>) -> (u16, String) {
    let (status, headers, text) = send(app, req).await;
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{headers:?}"
    );
    assert!(body["error"]["message"].is_string(), "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    (
        status.as_u16(),
        body["error"]["code"].as_str().unwrap_or("").to_string(),
    )
}

fn loopback() -> HttpPolicy {
    HttpPolicy {
        allowed_hosts: Some(LOOPBACK_HOSTS.iter().map(|h| h.to_string()).collect()),
        ..HttpPolicy::default()
    }
}

#[tokio::test]
async fn chat_bodies_must_be_json() {
    let app = app(Setup::default());
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let headers: Vec<(&str, &str)> = ct.map(|c| ("content-type", c)).into_iter().collect();
        let (status, code) = refusal(&app, chat_with(&headers)).await;
        assert_eq!(
            (status, code.as_str()),
            (415, "unsupported_media_type"),
            "{ct:?}"
        );
    }
    for ct in ["application/json; charset=utf-8", "Application/JSON"] {
        let (status, _, text) = send(&app, chat_with(&[("content-type", ct)])).await;
        assert_eq!(status, 200, "{ct}: {text}");
    }
    let batch = Request::post("/openai/v1/batches")
        .header("content-type", "text/plain")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(
        refusal(&app, batch).await,
        (415, "unsupported_media_type".into())
    );
}

#[tokio::test]
async fn foreign_origins_are_refused_and_the_own_origin_is_served() {
    let app = app_with_policy(Setup::default(), loopback());
    let json = ("content-type", "application/json");
    for origin in ["https://evil.example", "null", "http://127.0.0.1:9"] {
        let req = chat_with(&[json, ("host", "127.0.0.1:8000"), ("origin", origin)]);
        assert_eq!(
            refusal(&app, req).await,
            (403, "origin_not_allowed".into()),
            "{origin}"
        );
    }
    let own = chat_with(&[
        json,
        ("host", "127.0.0.1:8000"),
        ("origin", "http://127.0.0.1:8000"),
    ]);
    assert_eq!(send(&app, own).await.0, 200);
    // An upload is refused before its body is read.
    let upload = Request::post("/openai/v1/files")
        .header("host", "127.0.0.1:8000")
        .header("origin", "https://evil.example")
        .header("content-type", "multipart/form-data; boundary=x")
        .body(Body::from("--x--"))
        .unwrap();
    assert_eq!(
        refusal(&app, upload).await,
        (403, "origin_not_allowed".into())
    );
}

#[tokio::test]
async fn listed_origins_get_cors_answers() {
    let policy = HttpPolicy {
        cors_origins: vec!["https://app.example".into()],
        ..HttpPolicy::default()
    };
    let app = app_with_policy(Setup::default(), policy);
    let preflight = |origin: &str| {
        Request::options(CHAT)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .body(Body::empty())
            .unwrap()
    };
    let (_, headers, _) = send(&app, preflight("https://app.example")).await;
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    let (_, headers, _) = send(&app, preflight("https://evil.example")).await;
    assert!(
        headers.get("access-control-allow-origin").is_none(),
        "{headers:?}"
    );
    let listed = chat_with(&[
        ("content-type", "application/json"),
        ("origin", "https://app.example"),
    ]);
    let (status, headers, _) = send(&app, listed).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
}

#[tokio::test]
async fn foreign_host_names_are_refused_on_loopback() {
    let guarded = app_with_policy(Setup::default(), loopback());
    let json = ("content-type", "application/json");
    for host in ["evil.example", "evil.example:8000", "127.0.0.1.nip.io:8000"] {
        let req = chat_with(&[json, ("host", host)]);
        assert_eq!(
            refusal(&guarded, req).await,
            (403, "host_not_allowed".into()),
            "{host}"
        );
    }
    for host in ["localhost:8000", "127.0.0.1:8000", "[::1]:8000"] {
        assert_eq!(
            send(&guarded, chat_with(&[json, ("host", host)])).await.0,
            200,
            "{host}"
        );
    }
    // With a list, a request without a `Host` is refused: fail closed.
    let no_host = chat_with(&[json]);
    assert_eq!(
        refusal(&guarded, no_host).await,
        (403, "host_not_allowed".into())
    );
    // Without a loopback bind (no list), any name is served.
    let open = app(Setup::default());
    assert_eq!(
        send(&open, chat_with(&[json, ("host", "evil.example")]))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn oversized_header_blocks_are_431_in_the_envelope() {
    let app = app(Setup::default());
    let big = "a".repeat(40 * 1024);
    let req = chat_with(&[("content-type", "application/json"), ("x-padding", &big)]);
    assert_eq!(
        refusal(&app, req).await,
        (431, "request_header_fields_too_large".into())
    );
}

#[tokio::test]
async fn a_stalled_body_is_408() {
    let policy = HttpPolicy {
        body_timeout: Duration::from_millis(200),
        ..HttpPolicy::default()
    };
    let app = app_with_policy(Setup::default(), policy);
    // Ten bytes, then nothing: the stream never ends.
    let head = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(
        b"{\"model\":",
    ))]);
    let stalled = futures::StreamExt::chain(head, futures::stream::pending());
    let req = Request::post(CHAT)
        .header("content-type", "application/json")
        .body(Body::from_stream(stalled))
        .unwrap();
    assert_eq!(refusal(&app, req).await, (408, "request_timeout".into()));
}
