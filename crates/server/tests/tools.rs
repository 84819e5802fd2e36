//! Tool use on the mock engine: calls parsed out of the output (never left in `content`),
//! forced by the grammar for `required` / named choices, checked against their tools, and
//! streamed Groq's way (each call whole in one delta, then `finish_reason: "tool_calls"`).

use crate::common;

use std::collections::HashSet;

use axum::http::StatusCode;
use common::{app, chat, post, send, sse_events, Setup};
use peregrine_text::tools::ToolFormat;
use serde_json::{json, Value};

const CALL: &str = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>";
const TWO_CALLS: &str = "Checking.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "unit"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}, "additionalProperties": false}}}
    ])
}

fn req(extra: Value) -> String {
    let mut r = json!({
        "model": "mock-model",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "temperature": 0,
        "tools": tools(),
    });
    r.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    r.to_string()
}

fn mock(script: &'static str) -> axum::Router {
    app(Setup {
        script,
        ctx: 2048,
        ..Setup::default()
    })
}

fn chunks(text: &str) -> Vec<Value> {
    let events = sse_events(text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{text}");
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

fn streamed_content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[tokio::test]
async fn a_call_comes_back_as_tool_calls_with_null_content() {
    let app = mock(CALL);
    let (status, body) = chat(&app, &req(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    let id = calls[0]["id"].as_str().unwrap();
    assert!(id.starts_with("call_") && id.len() == 29, "{id}");
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris", "unit": "celsius"}));
    // Wire order of the message keys: role, content, tool_calls.
    let text = serde_json::to_string(&choice["message"]).unwrap();
    assert!(text.starts_with(r#"{"role":"assistant","content":null,"tool_calls":"#));
}

#[tokio::test]
async fn parallel_calls_keep_text_before_them_and_get_unique_ids() {
    let app = mock(TWO_CALLS);
    let (status, body) = chat(&app, &req(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let msg = &body["choices"][0]["message"];
    assert_eq!(msg["content"], "Checking.\n");
    let calls = msg["tool_calls"].as_array().unwrap();
    let names: Vec<&str> = calls
        .iter()
        .map(|c| c["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["get_weather", "get_time"]);
    let ids: HashSet<&str> = calls.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2);
}

#[tokio::test]
async fn streamed_calls_arrive_whole_one_delta_each() {
    let app = mock(TWO_CALLS);
    let (status, _, text) = send(
        &app,
        post(
            "/openai/v1/chat/completions",
            &req(json!({"stream": true, "stream_options": {"include_usage": true}})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let chunks = chunks(&text);
    assert_eq!(streamed_content(&chunks), "Checking.\n");
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(deltas.len(), 2, "{text}");
    for (i, d) in deltas.iter().enumerate() {
        assert_eq!(d["index"], i);
        assert!(d["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(d["type"], "function");
        let args = d["function"]["arguments"].as_str().unwrap();
        assert!(serde_json::from_str::<Value>(args).unwrap().is_object());
        // Groq's key order: id, type, function, index.
        let s = serde_json::to_string(d).unwrap();
        assert!(s.starts_with(r#"{"id":"call_"#) && s.ends_with(&format!(r#""index":{i}}}"#)));
    }
    let finish: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(finish[0]["choices"][0]["finish_reason"], "tool_calls");
    assert!(
        finish[0]["x_groq"]["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[tokio::test]
async fn required_forces_a_call_from_a_model_that_would_not() {
    // The mock wants to write prose; the grammar lets only a call through. Named choice
    // picks the function; its arguments must fit the schema (here: none), and with
    // parallel calls off the output ends after it.
    let app = mock("Sure thing!");
    let (status, body) = chat(
        &app,
        &req(
            json!({"tool_choice": {"type": "function", "function": {"name": "get_time"}},
            "parallel_tool_calls": false}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let calls = body["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["function"]["name"], "get_time");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["choices"][0]["message"]["content"], Value::Null);
}

#[tokio::test]
async fn required_takes_the_models_call_when_it_makes_one() {
    let app = mock(CALL);
    for choice in [
        json!("required"),
        json!({"type": "function", "function": {"name": "get_weather"}}),
    ] {
        let (status, body) = chat(&app, &req(json!({"tool_choice": choice}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let call = &body["choices"][0]["message"]["tool_calls"][0]["function"];
        assert_eq!(call["name"], "get_weather");
        assert_eq!(
            call["arguments"].as_str().unwrap(),
            r#"{"city":"Paris","unit":"celsius"}"#
        );
    }
}

#[tokio::test]
async fn parallel_tool_calls_false_allows_one_call() {
    // The grammar ends the output after the first call.
    let app = mock(TWO_CALLS);
    let (status, body) = chat(
        &app,
        &req(json!({"tool_choice": "required", "parallel_tool_calls": false})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_truncated_call_is_tool_use_failed_with_the_generation() {
    let app = mock(CALL);
    let (status, body) = chat(&app, &req(json!({"max_tokens": 30}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "tool_use_failed");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(
        body["error"]["message"],
        "Failed to call a function. Please adjust your prompt. See 'failed_generation' for more details."
    );
    let failed = body["error"]["failed_generation"].as_str().unwrap();
    assert_eq!(failed, &CALL[..30]);

    // On a stream: the error chunk, then the error event; no [DONE].
    let (status, _, text) = send(
        &app,
        post(
            "/openai/v1/chat/completions",
            &req(json!({"max_tokens": 30, "stream": true})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let events = sse_events(&text);
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "tool_use_failed");
    assert!(!text.contains("[DONE]"));
    assert!(!text.contains("\"content\":\"<tool_call>"));
}

#[tokio::test]
async fn calls_are_checked_against_their_tools() {
    // `not` is beyond the grammar engine: the tool keeps a plain-object grammar for its
    // arguments and validation catches what the schema forbids.
    let app = mock(CALL);
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "not": {"const": "Paris"}},
            "unit": {"type": "string"}}}}}]);
    let (status, body) = chat(&app, &req(json!({"tools": tools}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "tool_use_failed");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Tool call validation failed: tool call validation failed: parameters for tool get_weather did not match schema"),
        "{msg}"
    );
    assert_eq!(body["error"]["failed_generation"], CALL);
}

#[tokio::test]
async fn disable_tool_validation_returns_calls_to_unknown_tools() {
    let app = mock("<tool_call>\n{\"name\": \"launch\", \"arguments\": {\"x\": 1}}\n</tool_call>");
    let (status, body) = chat(&app, &req(json!({"disable_tool_validation": true}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "launch"
    );
}

#[tokio::test]
async fn tool_choice_none_gives_text() {
    // The mock wants to open with a bare JSON call; under `none` a call's opening cannot be
    // the first token, so what comes out is text.
    let app = mock("{\"name\": \"get_time\", \"arguments\": {}}");
    let (status, body) = chat(&app, &req(json!({"tool_choice": "none", "max_tokens": 20}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let msg = &body["choices"][0]["message"];
    assert!(msg.get("tool_calls").is_none(), "{body}");
    let content = msg["content"].as_str().unwrap();
    assert!(!content.starts_with('{'), "{content:?}");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn json_calls_are_parsed_for_models_without_tags() {
    let free = app(Setup {
        script: "{\"name\": \"get_time\", \"arguments\": {}}",
        tool_format: ToolFormat::Json,
        ctx: 2048,
        ..Setup::default()
    });
    let (status, body) = chat(&free, &req(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_time"
    );
    // Required: the grammar forces the bare JSON form.
    let forced = app(Setup {
        script: "no",
        tool_format: ToolFormat::Json,
        ctx: 2048,
        ..Setup::default()
    });
    let (status, body) = chat(
        &forced,
        &req(
            json!({"tool_choice": {"type": "function", "function": {"name": "get_time"}},
            "parallel_tool_calls": false}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{}"
    );
}

#[tokio::test]
async fn text_answers_stay_text() {
    let app = mock("It is sunny in Paris.");
    let (status, body) = chat(&app, &req(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "It is sunny in Paris."
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());
}

#[tokio::test]
async fn a_conversation_with_tool_results_renders() {
    let app = mock("It is 18 degrees.");
    let body = json!({
        "model": "mock-model", "temperature": 0,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temp\": 18}"}
        ]
    });
    let (status, body) = chat(&app, &body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "It is 18 degrees."
    );
}

#[tokio::test]
async fn bad_tool_requests_are_400s_naming_the_field() {
    let app = mock(CALL);
    let cases = [
        (
            json!({"tools": [], "tool_choice": "required"}),
            "tool_choice",
        ),
        (
            json!({"tool_choice": {"type": "function", "function": {"name": "nope"}}}),
            "tool_choice",
        ),
        (json!({"tool_choice": "sometimes"}), "tool_choice"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}),
            "tools[0].function.name",
        ),
        (
            json!({"tools": [{"type": "mcp", "server_label": "x"}]}),
            "tools[0].type",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "a"}}]}),
            "tools[1].function.name",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "a", "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}, "strict": true}}]}),
            "tools[0].function.parameters",
        ),
        (
            json!({"tools": [{"type": "function", "function": {"name": "a", "parameters": {"type": 5}}}]}),
            "tools[0].function.parameters",
        ),
        (
            json!({"tool_choice": "required", "response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (
            json!({"disable_tool_validation": true, "tool_choice": {"type": "function", "function": {"name": "get_time"}}}),
            "tool_choice",
        ),
    ];
    for (extra, field) in cases {
        let (status, body) = chat(&app, &req(extra.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{extra}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&format!("`{field}")), "{extra}: {msg}");
    }
    // 129 tools.
    let many: Vec<Value> = (0..129)
        .map(|i| json!({"type": "function", "function": {"name": format!("f{i}")}}))
        .collect();
    let (status, body) = chat(&app, &req(json!({"tools": many}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn calls_and_batching_mix() {
    // Several tool requests and plain ones at once: every one gets its own answer.
    let app = app(Setup {
        script: CALL,
        parallel: 3,
        ctx: 2048,
        ..Setup::default()
    });
    let mut tasks = Vec::new();
    for i in 0..6 {
        let app = app.clone();
        let body = if i % 2 == 0 {
            req(json!({"tool_choice": "required"}))
        } else {
            json!({"model": "mock-model", "temperature": 0,
                "messages": [{"role": "user", "content": "x"}]})
            .to_string()
        };
        tasks.push(tokio::spawn(async move { (i, chat(&app, &body).await) }));
    }
    for t in tasks {
        let (i, (status, body)) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        let msg = &body["choices"][0]["message"];
        if i % 2 == 0 {
            assert_eq!(msg["tool_calls"][0]["function"]["name"], "get_weather");
        } else {
            // No tools: the call syntax is just text.
            assert_eq!(msg["content"], CALL);
        }
    }
}

#[tokio::test]
async fn a_call_repeated_word_for_word_ends_the_turn() {
    // A small model's loop: the same call again. The repeat is dropped and the turn ends.
    const LOOP: &str = "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
    let app = mock(LOOP);
    let (status, body) = chat(&app, &req(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() < LOOP.len() as u64);
}

#[tokio::test]
async fn a_call_cut_by_max_tokens_after_complete_ones_is_dropped_with_length() {
    let app = mock(TWO_CALLS);
    let cut = TWO_CALLS.find("get_time").unwrap();
    let (status, body) = chat(&app, &req(json!({"max_tokens": cut}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    let calls = body["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
}

/// Replaces what changes from run to run (ids, times, seeds) with placeholders.
fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                match k.as_str() {
                    "id" if x.is_string() => {
                        let s = x.as_str().unwrap();
                        let kind = s.split(['-', '_']).next().unwrap_or("id").to_string();
                        *x = json!(format!("[{kind}]"));
                    }
                    "created" | "seed" | "queue_time" | "prompt_time" | "completion_time"
                    | "total_time" => *x = json!("[varies]"),
                    _ => redact(x),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[tokio::test]
async fn tool_call_wire_output_matches_snapshots() {
    let app = mock(TWO_CALLS);
    let (status, mut body) = chat(&app, &req(json!({"seed": 7}))).await;
    assert_eq!(status, StatusCode::OK);
    redact(&mut body);
    insta::assert_json_snapshot!("tool_calls_non_streaming", body);
    let (status, _, text) = send(
        &app,
        post(
            "/openai/v1/chat/completions",
            &req(json!({"seed": 7, "stream": true})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut chunks = chunks(&text);
    for c in &mut chunks {
        redact(c);
    }
    insta::assert_json_snapshot!("tool_calls_stream", chunks);
}

#[tokio::test]
async fn structured_outputs_apply_beside_visible_tools_under_none() {
    let app = mock(r#"{"city": "Paris"}"#);
    let (status, body) = chat(
        &app,
        &req(json!({"tool_choice": "none", "response_format": {"type": "json_object"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        r#"{"city": "Paris"}"#
    );
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());
}

#[tokio::test]
async fn markdown_that_starts_like_json_stays_content_under_auto() {
    // A `[` (a Markdown link) or a code fence is not a call's opening: no grammar starts.
    for script in [
        "[the docs](https://example.com) say so.",
        "```\nls -la\n```",
    ] {
        let app = mock(script);
        let (status, body) = chat(&app, &req(json!({}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], script);
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
    }
}
