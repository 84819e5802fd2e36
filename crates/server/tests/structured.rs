//! `response_format` on the mock engine: JSON mode and JSON-schema outputs are constrained,
//! bad schemas fail closed with a 400, and an unfinished value is Groq's
//! `json_validate_failed` (a 400 with `failed_generation`, or a terminal error on a stream).

use crate::common;

use axum::http::StatusCode;
use common::{app, chat, post, send, sse_events, Setup};
use serde_json::{json, Value};

/// The concatenated `delta.content` of the chunk events in `events`.
fn streamed_content(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

fn req(script_fmt: Value, extra: Value) -> String {
    let mut r = json!({
        "model": "mock-model",
        "messages": [{"role": "user", "content": "Give me JSON"}],
        "temperature": 0,
        "response_format": script_fmt,
    });
    r.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    r.to_string()
}

#[tokio::test]
async fn json_object_passes_a_model_that_writes_json() {
    let app = app(Setup {
        script: r#"{"a": 1, "b": [true]}"#,
        ..Setup::default()
    });
    let (status, body) = chat(&app, &req(json!({"type": "json_object"}), json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        r#"{"a": 1, "b": [true]}"#
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn the_grammar_overrides_a_model_that_does_not() {
    // The mock wants to write prose; the grammar only lets JSON through. A model that never
    // closes the value hits max_tokens: Groq's json_validate_failed with the partial text.
    let app = app(Setup {
        script: "Sure! Here you go.",
        ..Setup::default()
    });
    let (status, body) = chat(
        &app,
        &req(json!({"type": "json_object"}), json!({"max_tokens": 8})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "json_validate_failed");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let failed = body["error"]["failed_generation"].as_str().unwrap();
    assert!(
        failed.starts_with('{'),
        "constrained from the first token: {failed:?}"
    );
    assert!(!failed.contains("Sure"), "{failed:?}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("Failed to generate JSON"));
}

#[tokio::test]
async fn a_stream_that_cannot_finish_its_value_ends_in_an_error() {
    let app = app(Setup {
        script: "Sure! Here you go.",
        ..Setup::default()
    });
    let (status, _, text) = send(
        &app,
        post(
            "/openai/v1/chat/completions",
            &req(
                json!({"type": "json_object"}),
                json!({"max_tokens": 8, "stream": true}),
            ),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let events = sse_events(&text);
    assert_ne!(events.last().map(String::as_str), Some("[DONE]"));
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "json_validate_failed");
    let before: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(before["x_groq"]["error"]
        .as_str()
        .unwrap()
        .starts_with("Failed to generate JSON"));
    let content = streamed_content(&events[..events.len() - 2]);
    assert_eq!(last["error"]["failed_generation"], content.as_str());
    assert!(content.starts_with('{'));
}

#[tokio::test]
async fn json_schema_streams_a_valid_value() {
    let app = app(Setup {
        script: r#"{"name": "Ada", "age": 36}"#,
        // Byte tokens: room for the schema the prompt is given.
        ctx: 2048,
        ..Setup::default()
    });
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": false
    });
    let fmt = json!({"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": true}});
    let (status, _, text) = send(
        &app,
        post(
            "/openai/v1/chat/completions",
            &req(fmt.clone(), json!({"stream": true})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let events = sse_events(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let content = streamed_content(&events[..events.len() - 1]);
    assert_eq!(content, r#"{"name": "Ada", "age": 36}"#);

    let (status, body) = chat(&app, &req(fmt, json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        r#"{"name": "Ada", "age": 36}"#
    );
}

#[tokio::test]
async fn the_schema_decides_over_the_model() {
    // The model wants `"age": 36`; the schema caps the age at 9, so only a one-digit age can
    // be written, and the model's next wish (`6`) is refused.
    let app = app(Setup {
        script: r#"{"age": 36}"#,
        ctx: 2048,
        ..Setup::default()
    });
    let schema = json!({
        "type": "object",
        "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["age"],
        "additionalProperties": false
    });
    let fmt = json!({"type": "json_schema", "json_schema": {"name": "a", "schema": schema}});
    let (status, body) = chat(&app, &req(fmt, json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    let v: Value = serde_json::from_str(content).unwrap();
    assert!(v["age"].as_i64().unwrap() <= 9, "{content}");
}

async fn rejected(body: String) -> String {
    let app = app(Setup::default());
    let (status, v) = chat(&app, &body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    v["error"]["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn bad_schemas_fail_closed() {
    let fmt = |schema: Value, strict: bool| json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": strict}});
    let m = rejected(req(
        fmt(
            json!({"type": "array", "items": {"type": "string"}, "uniqueItems": true}),
            false,
        ),
        json!({}),
    ))
    .await;
    assert!(m.contains("uniqueItems"), "{m}");

    let m = rejected(req(
        fmt(
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}),
            true,
        ),
        json!({}),
    ))
    .await;
    assert!(
        m.contains("additionalProperties") && m.contains("`#`"),
        "{m}"
    );

    let m = rejected(req(
        fmt(
            json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                   "required": ["a"], "additionalProperties": false}),
            true,
        ),
        json!({}),
    ))
    .await;
    assert!(m.contains("missing: b"), "{m}");

    let m = rejected(req(fmt(json!({"type": "strng"}), false), json!({}))).await;
    assert!(m.contains("response_format"), "{m}");

    let m = rejected(req(
        fmt(json!({"$ref": "#/$defs/missing"}), false),
        json!({}),
    ))
    .await;
    assert!(m.contains("response_format"), "{m}");

    let m = rejected(req(
        json!({"type": "json_schema", "json_schema": {"name": "has space", "schema": {}}}),
        json!({}),
    ))
    .await;
    assert!(m.contains("name"), "{m}");

    let m = rejected(req(
        json!({"type": "json_schema", "json_schema": {"name": "x"}}),
        json!({}),
    ))
    .await;
    assert!(m.contains("schema"), "{m}");
}
