use crate::common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::*;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const BASIC: &str =
    r#"{"model":"mock-model","messages":[{"role":"user","content":"Count"}],"temperature":0}"#;

fn redact(v: &mut Value) {
    for (path, with) in [
        ("/id", "[chatcmpl-id]"),
        ("/x_groq/id", "[req-id]"),
        ("/created", "[created]"),
    ] {
        if let Some(x) = v.pointer_mut(path) {
            *x = json!(with);
        }
    }
    for usage in ["/usage", "/x_groq/usage"] {
        if let Some(Value::Object(u)) = v.pointer_mut(usage) {
            for k in ["queue_time", "prompt_time", "completion_time", "total_time"] {
                if let Some(t) = u.get_mut(k) {
                    assert!(t.as_f64().is_some_and(|t| t >= 0.0), "{k} is a time");
                    *t = json!("[seconds]");
                }
            }
        }
    }
}

#[tokio::test]
async fn non_streaming_body_matches_snapshot() {
    let app = app(Setup::default());
    let (status, mut body) = chat(&app, BASIC).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["id"].as_str().unwrap().len(), "chatcmpl-".len() + 36);
    let req_id = body["x_groq"]["id"].as_str().unwrap();
    assert!(req_id.starts_with("req_") && req_id.len() == 30, "{req_id}");
    let u = &body["usage"];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(body["choices"][0]["message"]["content"], SCRIPT);
    body["x_groq"]["seed"] = json!("[seed]");
    redact(&mut body);
    insta::assert_json_snapshot!("non_streaming", body);
}

#[tokio::test]
async fn streaming_transcripts_match_snapshots() {
    let app = app(Setup {
        script: "Hi, héllo!",
        ..Setup::default()
    });
    for (name, extra) in [
        ("stream", json!({})),
        (
            "stream_include_usage",
            json!({"stream_options": {"include_usage": true}}),
        ),
    ] {
        let mut req = json!({"model":"mock-model","messages":[{"role":"user","content":"x"}],"temperature":0,"stream":true,"seed":42});
        req.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, headers, text) =
            send(&app, post("/openai/v1/chat/completions", &req.to_string())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "text/event-stream");
        let events = sse_events(&text);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let mut chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let ids: std::collections::HashSet<_> = chunks.iter().map(|c| c["id"].clone()).collect();
        assert_eq!(ids.len(), 1, "one id per stream");
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "Hi, héllo!");
        for c in &mut chunks {
            redact(c);
        }
        insta::assert_json_snapshot!(name, chunks);
    }
}

#[tokio::test]
async fn stop_sequences_never_reach_the_output() {
    let app = app(Setup::default());
    let (_, body) = chat(&app, r#"{"model":"llama-3.3-70b-versatile","messages":[{"role":"user","content":"Count"}],"temperature":0,"stop":", 6"}"#).await;
    assert_eq!(body["choices"][0]["message"]["content"], "1, 2, 3, 4, 5");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["model"], "llama-3.3-70b-versatile");

    let req = r#"{"model":"mock-model","messages":[{"role":"user","content":"Count"}],"temperature":0,"stop":["zzz", "4, 5"],"stream":true}"#;
    let (_, _, text) = send(&app, post("/v1/chat/completions", req)).await;
    let content: String = sse_events(&text)
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(content, "1, 2, 3, ");
}

#[tokio::test]
async fn max_tokens_finishes_with_length() {
    let app = app(Setup::default());
    let (_, body) = chat(&app, r#"{"model":"mock-model","messages":[{"role":"user","content":"Count"}],"temperature":0,"max_tokens":4}"#).await;
    assert_eq!(body["choices"][0]["message"]["content"], "1, 2");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 4);
    // max_completion_tokens wins over max_tokens.
    let (_, body) = chat(&app, r#"{"model":"mock-model","messages":[{"role":"user","content":"Count"}],"temperature":0,"max_tokens":4,"max_completion_tokens":2}"#).await;
    assert_eq!(body["choices"][0]["message"]["content"], "1,");
}

#[tokio::test]
async fn same_seed_same_output() {
    let app = app(Setup::default());
    let req = r#"{"model":"mock-model","messages":[{"role":"user","content":"Count"}],"temperature":2,"seed":7}"#;
    let (_, a) = chat(&app, req).await;
    let (_, b) = chat(&app, req).await;
    assert_eq!(a["choices"][0]["message"], b["choices"][0]["message"]);
    assert_eq!(a["x_groq"]["seed"], 7);
}

#[tokio::test]
async fn logprobs_are_real() {
    let app = app(Setup::default());
    let (_, body) = chat(&app, r#"{"model":"mock-model","messages":[{"role":"user","content":"Count"}],"temperature":0,"logprobs":true,"top_logprobs":2,"max_tokens":3}"#).await;
    let lp = body["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(lp.len(), 3);
    assert_eq!(lp[0]["token"], "1");
    assert_eq!(lp[0]["bytes"], json!([49]));
    let l = lp[0]["logprob"].as_f64().unwrap();
    assert!(l < 0.0 && l > -0.01, "{l}");
    assert_eq!(lp[0]["top_logprobs"].as_array().unwrap().len(), 2);
    assert_eq!(lp[0]["top_logprobs"][1]["token"], "2");
}

#[tokio::test]
async fn prefill_continues_the_assistant_message() {
    let app = app(Setup::default());
    // The mock continues its script from what the assistant already "said".
    let (_, body) = chat(&app, r#"{"model":"mock-model","messages":[{"role":"user","content":"Count"},{"role":"assistant","content":"1, 2, 3"}],"temperature":0,"max_tokens":3}"#).await;
    assert_eq!(body["choices"][0]["message"]["content"], ", 4");
}

async fn error_case(app: &axum::Router, body: &str) -> (StatusCode, Value) {
    let (status, v) = chat(app, body).await;
    let err = &v["error"];
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert!(err["type"].is_string(), "{v}");
    (status, v)
}

#[tokio::test]
async fn errors_have_groq_status_and_envelope() {
    let app = app(Setup::default());
    let m = r#""messages":[{"role":"user","content":"hi"}]"#;
    let cases: Vec<(String, StatusCode, Option<&str>, &str)> = vec![
        ("{\"model\": ".into(), StatusCode::BAD_REQUEST, None, "JSON"),
        (
            format!(r#"{{"model":"mock-model",{m},"foo":1}}"#),
            StatusCode::BAD_REQUEST,
            None,
            "property 'foo' is unsupported",
        ),
        (
            format!(r#"{{"model":"mock-model",{m},"stream_option":{{}}}}"#),
            StatusCode::BAD_REQUEST,
            None,
            "did you mean 'stream_options'?",
        ),
        (
            format!(r#"{{"model":"mock-model",{m},"temperature":"hot"}}"#),
            StatusCode::BAD_REQUEST,
            None,
            "temperature",
        ),
        (
            r#"{"model":"mock-model","messages":"hi"}"#.to_string(),
            StatusCode::BAD_REQUEST,
            None,
            "messages",
        ),
        (
            format!(r#"{{{m}}}"#),
            StatusCode::BAD_REQUEST,
            None,
            "model",
        ),
        (
            r#"{"model":"mock-model"}"#.into(),
            StatusCode::BAD_REQUEST,
            None,
            "messages",
        ),
        (
            format!(r#"{{"model":"no-such-model",{m}}}"#),
            StatusCode::NOT_FOUND,
            Some("model_not_found"),
            "The model `no-such-model` does not exist",
        ),
        (
            format!(r#"{{"model":"mock-model",{m},"n":2}}"#),
            StatusCode::BAD_REQUEST,
            None,
            "`n`",
        ),
        (
            format!(r#"{{"model":"mock-model",{m},"stop":["a","b","c","d","e"]}}"#),
            StatusCode::BAD_REQUEST,
            None,
            "`stop`",
        ),
        (
            format!(r#"{{"model":"mock-model",{m},"temperature":2.5}}"#),
            StatusCode::BAD_REQUEST,
            None,
            "`temperature`",
        ),
        (
            format!(r#"{{"model":"mock-model",{m},"temperature":-1}}"#),
            StatusCode::BAD_REQUEST,
            None,
            "`temperature`",
        ),
        (
            format!(r#"{{"model":"mock-model",{m},"top_p":1.5}}"#),
            StatusCode::BAD_REQUEST,
            None,
            "`top_p`",
        ),
        (
            r#"{"model":"mock-model","messages":[]}"#.into(),
            StatusCode::BAD_REQUEST,
            None,
            "`messages`",
        ),
        (
            format!(
                r#"{{"model":"mock-model","messages":[{{"role":"user","content":"{}"}}]}}"#,
                "x".repeat(300)
            ),
            StatusCode::BAD_REQUEST,
            Some("context_length_exceeded"),
            "reduce the length",
        ),
        (
            format!(r#"{{"model":"mock-model",{m},"top_logprobs":2}}"#),
            StatusCode::BAD_REQUEST,
            None,
            "`top_logprobs`",
        ),
        (
            format!(r#"{{"model":"mock-model",{m},"max_tokens":0}}"#),
            StatusCode::BAD_REQUEST,
            None,
            "`max_tokens`",
        ),
        (
            format!(r#"{{"model":"mock-model",{m},"functions":[{{"name":"f"}}]}}"#),
            StatusCode::BAD_REQUEST,
            None,
            "`functions` is not supported",
        ),
        (
            format!(r#"{{"model":"mock-model",{m},"reasoning_effort":"low"}}"#),
            StatusCode::BAD_REQUEST,
            None,
            "`reasoning_effort` is not supported with this model",
        ),
    ];
    for (body, status, code, needle) in cases {
        let (got, v) = error_case(&app, &body).await;
        assert_eq!(got, status, "{body} -> {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{body} -> {v}");
        assert_eq!(v["error"]["code"].as_str(), code, "{body} -> {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains(needle),
            "{body}: message {msg:?} lacks {needle:?}"
        );
    }
}

#[tokio::test]
async fn auth_and_unknown_routes() {
    let app = app(Setup {
        api_keys: vec!["gsk_test".into()],
        ..Setup::default()
    });
    let (status, v) = chat(&app, BASIC).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let mut req = post("/openai/v1/chat/completions", BASIC);
    req.headers_mut()
        .insert("authorization", "Bearer gsk_test".parse().unwrap());
    let (status, headers, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["x-request-id"]
        .to_str()
        .unwrap()
        .starts_with("req_"));

    let (status, _, body) = send(&app, post("/openai/v1/nope", "{}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("unknown_url"));
    let get = axum::http::Request::get("/openai/v1/chat/completions")
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, _, body) = send(&app, get).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body.contains("method_not_allowed"), "{body}");
}

#[tokio::test]
async fn models_list_shows_aliases() {
    let app = app(Setup::default());
    let req = axum::http::Request::get("/openai/v1/models")
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, _, text) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    // The served model, its alias, then the compound systems (the served model as agent).
    assert_eq!(
        ids,
        [
            "mock-model",
            "llama-3.3-70b-versatile",
            "groq/compound",
            "groq/compound-mini",
            "compound-beta",
            "compound-beta-mini"
        ]
    );
    assert_eq!(v["data"][1]["alias_of"], "mock-model");
    assert_eq!(v["data"][2]["owned_by"], "Groq");
    assert_eq!(v["data"][0]["context_window"], 256);

    let req = axum::http::Request::get("/openai/v1/models/LLAMA-3.3-70b-versatile")
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, _, text) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let req = axum::http::Request::get("/openai/v1/models/nope")
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, _, text) = send(&app, req).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(text.contains("model_not_found"));
}

fn long_stream() -> String {
    json!({"model":"mock-model","messages":[{"role":"user","content":"go"}],"temperature":0,"stream":true}).to_string()
}

#[tokio::test]
async fn disconnected_stream_frees_its_slot_for_the_next_request() {
    // One slot, 20 ms per step: a full answer takes ~0.7 s.
    let app = app(Setup {
        parallel: 1,
        delay: Duration::from_millis(20),
        ..Setup::default()
    });
    let resp = app
        .clone()
        .oneshot(post("/openai/v1/chat/completions", &long_stream()))
        .await
        .unwrap();
    let mut body = resp.into_body();
    // Read until the first content delta: the request holds the only slot now.
    let mut seen = String::new();
    while !seen.contains("\"content\":\"1\"") {
        let frame = body.frame().await.unwrap().unwrap();
        seen.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
    }
    // A second request queues behind it.
    let app2 = app.clone();
    let started = Instant::now();
    let next = tokio::spawn(async move { chat(&app2, BASIC).await });
    tokio::time::sleep(Duration::from_millis(60)).await;
    // The client goes away.
    drop(body);
    let (status, v) = tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["choices"][0]["message"]["content"], SCRIPT);
    // It waited for the slot only until the disconnect, not for the first stream to finish.
    let queue = v["usage"]["queue_time"].as_f64().unwrap();
    assert!(
        queue < 0.4,
        "queued {queue}s: the slot was not freed on disconnect"
    );
    assert!(started.elapsed() < Duration::from_millis(1400));
}

#[tokio::test]
async fn a_running_sequences_prompt_is_shared_with_a_new_slot() {
    // Two slots, 20 ms per step: the first request still decodes when the second arrives.
    let app = app(Setup {
        parallel: 2,
        delay: Duration::from_millis(20),
        ..Setup::default()
    });
    let system = "You are a helpful assistant. ".repeat(6);
    let body = |stream: bool| {
        json!({"model":"mock-model","temperature":0,"stream":stream,"messages":[
            {"role":"system","content":system},{"role":"user","content":"go"}]})
        .to_string()
    };
    let resp = app
        .clone()
        .oneshot(post("/openai/v1/chat/completions", &body(true)))
        .await
        .unwrap();
    let mut first = resp.into_body();
    let mut seen = String::new();
    while !seen.contains("\"content\":\"1\"") {
        let frame = first.frame().await.unwrap().unwrap();
        seen.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
    }
    // The first request holds slot 0; the second starts in the empty slot 1 and takes the
    // prompt from slot 0's cells instead of computing it again.
    let (status, v) = chat(&app, &body(false)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    // The mock answers from the tokens in its cache: the shared cells are the real prompt.
    assert_eq!(v["choices"][0]["message"]["content"], SCRIPT);
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    let cached = v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64();
    assert_eq!(
        cached,
        Some(prompt - 1),
        "all but the last prompt token: {v}"
    );
    drop(first);
}

#[tokio::test]
async fn full_queue_answers_429_with_retry_after() {
    let app = app(Setup {
        parallel: 1,
        max_queue: 1,
        delay: Duration::from_millis(20),
        ..Setup::default()
    });
    let a = app
        .clone()
        .oneshot(post("/openai/v1/chat/completions", &long_stream()))
        .await
        .unwrap();
    let mut a_body = a.into_body();
    // The role chunk goes out at admission to the queue; a content chunk proves `a` holds
    // the only slot and left the queue.
    let _ = a_body.frame().await;
    let _ = a_body.frame().await;
    let b = app
        .clone()
        .oneshot(post("/openai/v1/chat/completions", &long_stream()))
        .await
        .unwrap();
    assert_eq!(b.status(), StatusCode::OK);
    let (status, headers, text) =
        send(&app, post("/openai/v1/chat/completions", &long_stream())).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    assert_eq!(headers["retry-after"], "1");
    assert!(text.contains("rate_limit_exceeded"));
    // Flex requests fail fast with Groq's 498 instead.
    let flex = json!({"model":"mock-model","messages":[{"role":"user","content":"go"}],"service_tier":"flex"}).to_string();
    let (status, _, text) = send(&app, post("/openai/v1/chat/completions", &flex)).await;
    assert_eq!(status.as_u16(), 498, "{text}");
    assert!(text.contains("capacity_exceeded"));
}

#[tokio::test]
async fn concurrent_requests_all_complete() {
    let app = app(Setup {
        parallel: 2,
        delay: Duration::from_millis(2),
        ..Setup::default()
    });
    let futs = (0..6).map(|_| chat(&app, BASIC));
    for (status, v) in futures::future::join_all(futs).await {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["choices"][0]["message"]["content"], SCRIPT);
    }
}

#[tokio::test]
async fn the_http_layers_own_rejections_come_in_groqs_envelope() {
    let app = app(Setup::default());
    let raw = |method: &str, uri: &str, content_type: &str, body: Vec<u8>| {
        axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", content_type)
            .body(axum::body::Body::from(body))
            .unwrap()
    };
    let cases = [
        // A path id that is not UTF-8.
        (
            raw(
                "GET",
                "/openai/v1/models/%FF%FE",
                "application/json",
                vec![],
            ),
            StatusCode::BAD_REQUEST,
            None,
        ),
        // Multipart without a boundary.
        (
            raw(
                "POST",
                "/openai/v1/files",
                "multipart/form-data",
                b"x".to_vec(),
            ),
            StatusCode::BAD_REQUEST,
            None,
        ),
        // A batch body over the 20 MiB limit.
        (
            raw(
                "POST",
                "/openai/v1/batches",
                "application/json",
                vec![b' '; 21 * 1024 * 1024],
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("request_too_large"),
        ),
    ];
    for (req, status, code) in cases {
        let uri = req.uri().to_string();
        let (got, headers, text) = send(&app, req).await;
        assert_eq!(got, status, "{uri}: {text}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{uri}"
        );
        assert!(headers.contains_key("x-request-id"), "{uri}");
        let body: Value = serde_json::from_str(&text).expect("a JSON envelope");
        let err = &body["error"];
        assert_eq!(err["type"], "invalid_request_error", "{uri}: {text}");
        assert!(!err["message"].as_str().unwrap().is_empty(), "{uri}");
        assert_eq!(err["code"].as_str(), code, "{uri}: {text}");
    }
}
