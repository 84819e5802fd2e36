//! The Responses API on the mock engine: the response object and the event transcript
//! pinned by snapshots, function calls as output items, input items (calls and their
//! outputs) read back as a conversation, and every unsupported or invalid field's 400.

use crate::common;

use axum::http::{Request, StatusCode};
use common::{app, post, send, Setup, SCRIPT};
use serde_json::{json, Value};

const CALL: &str =
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";

fn tools() -> Value {
    json!([{"type": "function", "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
            "required": ["city"], "additionalProperties": false}}])
}

fn body(extra: Value) -> String {
    let mut r = json!({"model": "mock-model", "input": "Count", "temperature": 0});
    r.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    r.to_string()
}

async fn respond(app: &axum::Router, body: &str) -> (StatusCode, Value) {
    let (status, _, text) = send(app, post("/openai/v1/responses", body)).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Ids and times vary: replaced, after checking their form.
fn redact(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match (k.as_str(), x.as_str()) {
                    ("id" | "item_id", Some(id)) => {
                        let (prefix, rest) = id.split_once('_').expect("prefixed id");
                        assert_eq!(rest.len(), 26, "{id}: a ULID");
                        *x = json!(format!("[{prefix}-id]"));
                    }
                    ("call_id", Some(_)) => *x = json!("[call-id]"),
                    ("created_at", _) => *x = json!("[created]"),
                    _ => redact(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

/// The events of a Responses stream: each `event:` line must name its data's `type`.
fn events(text: &str) -> Vec<Value> {
    assert!(text.ends_with("\n\n"), "{text}");
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (event, data) = e.split_once('\n').expect("two lines");
            let name = event.strip_prefix("event: ").expect("event line");
            let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(v["type"], name);
            v
        })
        .collect()
}

#[tokio::test]
async fn a_response_matches_its_snapshot() {
    let app = app(Setup::default());
    let (status, mut r) = respond(&app, &body(json!({"instructions": "Be brief."}))).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["output"][0]["content"][0]["text"], SCRIPT);
    let u = &r["usage"];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["input_tokens"].as_u64().unwrap() + u["output_tokens"].as_u64().unwrap()
    );
    redact(&mut r);
    insta::assert_json_snapshot!("response", r);
}

#[tokio::test]
async fn a_stream_matches_its_snapshot() {
    let app = app(Setup {
        script: "Hi, héllo!",
        ..Setup::default()
    });
    let (status, headers, text) = send(
        &app,
        post("/openai/v1/responses", &body(json!({"stream": true}))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/event-stream");
    let mut evs = events(&text);
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e["sequence_number"], i, "numbered in order");
    }
    let text: String = (evs.iter())
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hi, héllo!");
    let last = evs.last().unwrap();
    assert_eq!(last["type"], "response.completed");
    assert_eq!(
        last["response"]["output"][0]["content"][0]["text"],
        "Hi, héllo!"
    );
    let mut all = Value::Array(std::mem::take(&mut evs));
    redact(&mut all);
    insta::assert_json_snapshot!("stream", all);
}

#[tokio::test]
async fn a_call_is_a_function_call_item_and_streams_as_one() {
    let app = app(Setup {
        script: CALL,
        ctx: 2048,
        ..Setup::default()
    });
    let (status, r) = respond(&app, &body(json!({"tools": tools()}))).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let out = r["output"].as_array().unwrap();
    assert_eq!(out.len(), 1, "{r}");
    assert_eq!(out[0]["type"], "function_call");
    assert_eq!(out[0]["name"], "get_weather");
    assert_eq!(out[0]["arguments"], r#"{"city":"Paris"}"#);
    assert!(out[0]["call_id"].as_str().unwrap().starts_with("call_"));
    assert!(out[0]["id"].as_str().unwrap().starts_with("fc_"));

    let (_, _, text) = send(
        &app,
        post(
            "/openai/v1/responses",
            &body(json!({"tools": tools(), "stream": true})),
        ),
    )
    .await;
    let types: Vec<String> = (events(&text).iter())
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
}

#[tokio::test]
async fn calls_and_their_outputs_in_the_input_are_a_conversation() {
    let app = app(Setup {
        ctx: 2048,
        ..Setup::default()
    });
    let input = json!([
        {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Let me look.", "annotations": [], "logprobs": []}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
         "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
        {"type": "function_call_output", "call_id": "call_1", "output": "{\"temp_c\": 21}"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "ok"}]}
    ]);
    let (status, r) = respond(&app, &body(json!({"input": input, "tools": tools()}))).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["output"][0]["content"][0]["text"], SCRIPT);
    assert_eq!(r["service_tier"], "default");
}

#[tokio::test]
async fn the_token_limit_makes_an_incomplete_response() {
    let app = app(Setup::default());
    let (status, r) = respond(&app, &body(json!({"max_output_tokens": 3}))).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "incomplete");
    assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(r["output"][0]["status"], "incomplete");
    assert_eq!(r["max_output_tokens"], 3);
    let (_, _, text) = send(
        &app,
        post(
            "/openai/v1/responses",
            &body(json!({"max_output_tokens": 3, "stream": true})),
        ),
    )
    .await;
    let evs = events(&text);
    assert_eq!(evs.last().unwrap()["type"], "response.incomplete");
}

#[tokio::test]
async fn inference_metrics_go_into_metadata_as_strings() {
    let app = app(Setup::default());
    let req = Request::post("/openai/v1/responses")
        .header("content-type", "application/json")
        .header("groq-beta", "inference-metrics")
        .body(axum::body::Body::from(body(
            json!({"metadata": {"run": "7"}}),
        )))
        .unwrap();
    let (status, _, text) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let r: Value = serde_json::from_str(&text).unwrap();
    let m = r["metadata"].as_object().unwrap();
    assert_eq!(m["run"], "7");
    for k in ["completion_time", "prompt_time", "queue_time", "total_time"] {
        let t: f64 = m[k].as_str().unwrap().parse().unwrap();
        assert!(t >= 0.0, "{k}");
    }
    // Without the header, only the client's pairs.
    let (_, r) = respond(&app, &body(json!({"metadata": {"run": "7"}}))).await;
    assert_eq!(r["metadata"], json!({"run": "7"}));
}

#[tokio::test]
async fn every_unsupported_or_invalid_field_gets_its_400() {
    let app = app(Setup::default());
    let many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases = [
        (
            json!({"previous_response_id": "resp_1"}),
            "`previous_response_id` is not supported",
        ),
        (
            json!({"include": ["reasoning.encrypted_content"]}),
            "`include` is not supported",
        ),
        (json!({"store": true}), "`store` is not supported"),
        (
            json!({"truncation": "auto"}),
            "`truncation` is not supported",
        ),
        (
            json!({"safety_identifier": "u1"}),
            "`safety_identifier` is not supported",
        ),
        (
            json!({"prompt_cache_key": "k"}),
            "`prompt_cache_key` is not supported",
        ),
        (
            json!({"instruction": "x"}),
            "property 'instruction' is unsupported, did you mean 'instructions'?",
        ),
        (
            json!({"input": 5}),
            "`input`: invalid type: integer `5`, expected a string or an array of input items",
        ),
        (
            json!({"input": [{"type": "item_reference", "id": "x"}]}),
            "'item_reference' is not supported",
        ),
        (
            json!({"input": [{"role": "tool", "content": "x"}]}),
            "`input[0].role`: 'tool' is not one of",
        ),
        (
            json!({"input": [{"role": "user"}]}),
            "property 'input[0].content' is missing",
        ),
        (
            json!({"input": [{"role": "user", "content": "x", "colour": 1}]}),
            "property 'input[0].colour' is unsupported",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            "'input_audio' is not supported",
        ),
        (
            json!({"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]}),
            "images are only supported in user messages",
        ),
        (
            json!({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}),
            "property 'input[0].call_id' is missing",
        ),
        (
            json!({"input": [{"type": "function_call_output", "call_id": "c"}]}),
            "property 'input[0].output' is missing",
        ),
        (
            json!({"tools": [{"type": "function", "parameters": {}}]}),
            "property 'tools[0].name' is missing",
        ),
        (
            json!({"tools": [{"type": "function", "name": "f", "function": {}}]}),
            "property 'tools[0].function' is unsupported",
        ),
        (
            json!({"tool_choice": {"type": "file_search", "name": "f"}}),
            "'file_search' is not supported",
        ),
        (
            json!({"metadata": Value::Object(many)}),
            "`metadata` may have at most 16 pairs",
        ),
        (
            json!({"text": {"format": {"type": "xml"}}}),
            "`text.format.type`: unknown variant `xml`",
        ),
        (
            json!({"text": {"format": {"type": "json_schema", "schema": {}}}}),
            "name",
        ),
        (
            json!({"reasoning": {"effort": "low"}}),
            "`reasoning.effort` is not supported with this model",
        ),
        // Chat preparation's errors name the Responses fields.
        (
            json!({"max_output_tokens": 100_000_000}),
            "`max_output_tokens` must be less than or equal to",
        ),
        (
            json!({"tools": [{"type": "function", "name": "no spaces", "parameters": {"type": "object"}}]}),
            "`tools[0].name` must match",
        ),
        (
            json!({"instructions": "Be brief.", "input": [{"role": "user", "content": []}]}),
            "`input[0].content` must contain at least one part",
        ),
        (
            json!({"temperature": 3}),
            "`temperature` must be between 0 and 2",
        ),
        (
            json!({"service_tier": "on_demand"}),
            "`service_tier`: 'on_demand' is not one of",
        ),
        (json!({"model": "nope"}), "does not exist"),
    ];
    for (extra, want) in cases {
        let (status, r) = respond(&app, &body(extra.clone())).await;
        let code = if want == "does not exist" {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(status, code, "{extra}: {r}");
        let msg = r["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{extra}: {msg}");
        assert_eq!(r["error"]["type"], "invalid_request_error", "{extra}");
        // `param` is the message's first path, where it names one.
        if let (Some(param), Some(path)) = (r["error"]["param"].as_str(), msg.split('`').nth(1)) {
            if want.starts_with('`') && !param.starts_with("property") {
                assert_eq!(param, path, "{extra}: {msg}");
            }
        }
    }
    // `null`, `store: false`, `truncation: disabled` and an empty `include` ask for nothing.
    let fine = json!({"previous_response_id": null, "store": false, "truncation": "disabled",
        "include": [], "safety_identifier": null});
    let (status, r) = respond(&app, &body(fine)).await;
    assert_eq!(status, StatusCode::OK, "{r}");
}
