//! `image_url` content parts on the mock vision model (every image 16 positions): the
//! image reaches the engine (its positions in `prompt_tokens`, computed once, reused from
//! the prefix cache only for the same image), `data:` and fetched URLs, and every limit's
//! error. The real projector's path is in `crates/llama/tests/vision.rs` and the e2e suite.

use crate::common;

use std::sync::Arc;

use axum::Router;
use base64::Engine as _;
use common::{chat, Setup};
use peregrine_server::AppState;
use peregrine_service::images::MAX_URL_IMAGE_BYTES;
use peregrine_service::Completions;
use peregrine_tools::{FetchConfig, SandboxConfig, ToolKit};
use serde_json::{json, Value};

const IMAGE_TOKENS: u32 = 16;

/// The first 24 bytes of a PNG of `w` x `h` pixels: all the mock's projector reads.
fn png(w: u32, h: u32, salt: u8) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    out.extend_from_slice(&w.to_be_bytes());
    out.extend_from_slice(&h.to_be_bytes());
    out.extend_from_slice(&[8, 2, 0, 0, 0, salt]);
    out
}

fn data_url(bytes: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn setup(image_tokens: Option<u32>) -> Setup {
    Setup {
        image_tokens,
        parallel: 1,
        ..Setup::default()
    }
}

/// The vision mock's app, its image URLs fetched under `visit`'s guard settings.
fn app_with(s: Setup, visit: FetchConfig) -> Router {
    let mut kit = ToolKit::new(SandboxConfig::default());
    kit.visit = Ok(visit);
    let state = AppState {
        completions: Completions::new(common::registry(&s)).with_tools(kit),
        keys: peregrine_service::ApiKeys::new(&s.api_keys, None),
        limiter: common::limiter(&s),
        metrics: s.metrics.clone(),
        storage: None,
        fine_tunings: None,
        policy: Default::default(),
    };
    peregrine_server::router(Arc::new(state))
}

/// A greedy request: at the default temperature the mock's runner-up token (logit 6 against
/// 12) is drawn about once in 400 tokens, which made the content check flaky.
fn body(parts: Value) -> String {
    json!({"model": "mock-model", "max_tokens": 4, "temperature": 0,
           "messages": [{"role": "user", "content": parts}]})
    .to_string()
}

fn with_images(urls: &[String]) -> String {
    let mut parts = vec![json!({"type": "text", "text": "What is in these?"})];
    for u in urls {
        parts.push(json!({"type": "image_url", "image_url": {"url": u}}));
    }
    body(Value::Array(parts))
}

#[tokio::test]
async fn an_image_takes_its_positions_and_is_reused_only_for_the_same_image() {
    let app = common::app(setup(Some(IMAGE_TOKENS)));
    let (status, text_only) = chat(
        &app,
        &body(json!([
            {"type": "text", "text": "What is in these?"},
            {"type": "text", "text": ""},
        ])),
    )
    .await;
    assert_eq!(status, 200, "{text_only}");
    let one = with_images(&[data_url(&png(4, 3, 1))]);
    let (status, first) = chat(&app, &one).await;
    assert_eq!(status, 200, "{first}");
    // The marker line stands where the empty text part was: the difference is the image.
    let base = text_only["usage"]["prompt_tokens"].as_u64().unwrap();
    let with = first["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(with, base + u64::from(IMAGE_TOKENS), "{first}");
    // The same request again: its whole prompt but the last token comes from the cache,
    // the image included.
    let (_, again) = chat(&app, &one).await;
    let cached = again["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64();
    assert_eq!(cached, Some(with - 1), "{again}");
    // Another image at the same place: reused up to the image only.
    let (_, other) = chat(&app, &with_images(&[data_url(&png(4, 3, 2))])).await;
    let cached = other["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(cached < with - u64::from(IMAGE_TOKENS), "{other}");
    assert_eq!(other["choices"][0]["message"]["content"], "1, 2");
    // Streaming, two images and a second turn.
    let two = json!({"model": "mock-model", "max_tokens": 4, "stream": true, "messages": [
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url(&png(4, 3, 1))}},
            {"type": "text", "text": "and"},
            {"type": "image_url", "image_url": {"url": data_url(&png(5, 3, 3)), "detail": "low"}}]},
        {"role": "assistant", "content": "Two squares."},
        {"role": "user", "content": "Which is larger?"}]});
    let (status, _, sse) = common::send(
        &app,
        common::post("/openai/v1/chat/completions", &two.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{sse}");
    assert!(sse.contains("data: [DONE]"), "{sse}");
}

/// The error of `body` on `app`: (status, message, param).
async fn refusal(app: &Router, body: &str) -> (u16, String, Value) {
    let (status, v) = chat(app, body).await;
    let e = &v["error"];
    (
        status.as_u16(),
        e["message"].as_str().unwrap_or_default().to_string(),
        e["param"].clone(),
    )
}

#[tokio::test]
async fn every_image_limit_has_its_error() {
    let app = common::app(setup(Some(IMAGE_TOKENS)));
    let ok = data_url(&png(4, 3, 1));
    let six: Vec<String> = (0..6).map(|_| ok.clone()).collect();
    let huge = data_url(&png(10_000, 4_000, 1));
    let big_data = format!("data:image/png;base64,{}", "A".repeat(6 << 20));
    let cases: Vec<(String, u16, &str, Value)> = vec![
        (
            with_images(&six),
            400,
            "at most 5 images",
            json!("messages"),
        ),
        (
            with_images(&[huge]),
            400,
            "more than the 33000000 pixels",
            json!("messages[0].content[1]"),
        ),
        (
            with_images(&[data_url(b"GIF89a not really")]),
            400,
            "could not be decoded",
            json!("messages[0].content[1]"),
        ),
        (
            with_images(&[big_data]),
            413,
            "at most 4194304 bytes",
            json!("messages[0].content[1].image_url.url"),
        ),
        (
            with_images(&["data:image/png,abc".into()]),
            400,
            "must be base64",
            json!("messages[0].content[1].image_url.url"),
        ),
        (
            with_images(&["ftp://example.com/a.png".into()]),
            400,
            "http(s) URL",
            json!("messages[0].content[1].image_url.url"),
        ),
        // The guard: loopback is not fetched unless allow-listed.
        (
            with_images(&["http://127.0.0.1:9/a.png".into()]),
            400,
            "loopback",
            json!("messages[0].content[1].image_url.url"),
        ),
    ];
    for (body, status, words, param) in cases {
        let (got, message, got_param) = refusal(&app, &body).await;
        assert_eq!(got, status, "{message}");
        assert!(message.contains(words), "{message} lacks {words}");
        assert_eq!(got_param, param, "{message}");
    }
}

#[tokio::test]
async fn images_on_a_model_without_a_projector_are_refused_unfetched() {
    let app = common::app(setup(None));
    // Not fetched: the guard would refuse this URL, but the model's refusal comes first.
    let (status, message, param) =
        refusal(&app, &with_images(&["http://127.0.0.1:9/a.png".into()])).await;
    assert_eq!(status, 400);
    assert_eq!(message, "`image_url` is not supported with this model");
    assert_eq!(param, json!("messages[0].content"));
}

#[tokio::test]
async fn an_allow_listed_url_is_fetched() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = axum::Router::new()
        .route("/cat.png", axum::routing::get(|| async { png(8, 8, 9) }))
        .route(
            "/missing.png",
            axum::routing::get(|| async { (axum::http::StatusCode::NOT_FOUND, "no") }),
        )
        // Groq's 20 MB cap on a fetched image: at the cap it is read (and is no image), one
        // byte over it is refused.
        .route(
            "/at-cap.png",
            axum::routing::get(|| async { vec![0u8; MAX_URL_IMAGE_BYTES] }),
        )
        .route(
            "/over-cap.png",
            axum::routing::get(|| async { vec![0u8; MAX_URL_IMAGE_BYTES + 1] }),
        );
    tokio::spawn(async move { axum::serve(listener, server).await });
    let app = app_with(
        setup(Some(IMAGE_TOKENS)),
        FetchConfig {
            allow_hosts: vec![addr.to_string()],
            ..FetchConfig::default()
        },
    );
    let (status, v) = chat(&app, &with_images(&[format!("http://{addr}/cat.png")])).await;
    assert_eq!(status, 200, "{v}");
    let (status, message, _) =
        refusal(&app, &with_images(&[format!("http://{addr}/missing.png")])).await;
    assert_eq!(status, 400);
    assert!(message.contains("answered 404"), "{message}");
    let (status, message, _) =
        refusal(&app, &with_images(&[format!("http://{addr}/at-cap.png")])).await;
    assert_eq!(status, 400);
    assert!(message.contains("could not be decoded"), "{message}");
    let (status, message, param) =
        refusal(&app, &with_images(&[format!("http://{addr}/over-cap.png")])).await;
    assert_eq!(status, 400);
    assert!(message.contains("larger than 20971520 bytes"), "{message}");
    assert_eq!(param, json!("messages[0].content[1].image_url.url"));
}

#[tokio::test]
async fn a_vision_model_lists_image_input() {
    for (image_tokens, modalities) in [
        (Some(IMAGE_TOKENS), json!(["text", "image"])),
        (None, json!(["text"])),
    ] {
        let app = common::app(setup(image_tokens));
        let req = axum::http::Request::get("/openai/v1/models/mock-model")
            .body(axum::body::Body::empty())
            .unwrap();
        let (status, _, body) = common::send(&app, req).await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["input_modalities"], modalities, "{v}");
    }
}
