//! Built-in tools and compound models on the mock engine: the server runs the model's
//! `python` calls in the real sandbox (bubblewrap must be installed), feeds the output back,
//! and answers with `executed_tools`, the transcript as `reasoning`, and usage summed over
//! the turns. The mock answers a conversation's n-th assistant turn with the n-th reply of
//! its script.

use crate::common;

use axum::http::StatusCode;
use common::{app, chat, post, send, sse_events, Setup};
use serde_json::{json, Value};

/// Turn 1 calls Python, turn 2 answers.
const CALC: &str = "<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"print(6*7)\"}}\n</tool_call>\u{1e}The answer is 42.";
/// Turn 1 calls Python twice.
const TWO_CALLS: &str = "<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"x = 6\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"x * 7\"}}\n</tool_call>\u{1e}Done: 42.";
/// Turn 1 runs code that fails, turn 2 answers anyway.
const FAILS: &str = "<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"1/0\"}}\n</tool_call>\u{1e}It cannot be divided.";
/// Turn 1 calls Python, turn 2 calls the client's own function.
const THEN_USER: &str = "<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"print(1+1)\"}}\n</tool_call>\u{1e}<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";

fn mock(script: &'static str) -> axum::Router {
    app(Setup {
        script,
        ctx: 4096,
        ..Setup::default()
    })
}

fn body(model: &str, extra: Value) -> String {
    let mut r = json!({
        "model": model,
        "messages": [{"role": "user", "content": "What is 6 times 7?"}],
        "temperature": 0,
    });
    r.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    r.to_string()
}

fn code_interpreter(extra: Value) -> String {
    let mut e = json!({"tools": [{"type": "code_interpreter"}], "tool_choice": "required"});
    e.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body("mock-model", e)
}

fn chunks(text: &str) -> Vec<Value> {
    let events = sse_events(text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{text}");
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

async fn stream(app: &axum::Router, body: String) -> Vec<Value> {
    let (status, _, text) = send(app, post("/openai/v1/chat/completions", &body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    chunks(&text)
}

async fn error(app: &axum::Router, body: String) -> (StatusCode, Value) {
    let (status, v) = chat(app, &body).await;
    assert_ne!(status, StatusCode::OK, "{v}");
    (status, v["error"].clone())
}

#[tokio::test]
async fn code_interpreter_runs_the_code_and_answers_with_its_output() {
    let app = mock(CALC);
    let (status, v) = chat(&app, &code_interpreter(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let msg = &v["choices"][0]["message"];
    assert_eq!(msg["content"], "The answer is 42.");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // The gpt-oss shape of Groq's docs.
    assert_eq!(
        msg["executed_tools"],
        json!([{"name": "python", "index": 0, "type": "function", "arguments": "print(6*7)",
                "search_results": {"results": null}, "code_results": [{"text": "42\n"}]}])
    );
    let reasoning = msg["reasoning"].as_str().unwrap();
    assert!(
        reasoning.contains("<tool>python(print(6*7))</tool>\n<output>42</output>"),
        "{reasoning}"
    );
    assert!(msg.get("tool_calls").is_none(), "{msg}");
    // Usage covers both turns: the second prompt holds the first, the call and its output.
    let u = &v["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 2 * 40, "{u}");
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(v["usage_breakdown"], Value::Null);
}

#[tokio::test]
async fn code_interpreter_keeps_state_between_calls_of_a_request() {
    let app = mock(TWO_CALLS);
    let (status, v) = chat(&app, &code_interpreter(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let tools = v["choices"][0]["message"]["executed_tools"]
        .as_array()
        .unwrap();
    assert_eq!(tools.len(), 2, "{tools:?}");
    assert_eq!(tools[1]["index"], 1);
    // `x` from the first call; a bare last expression prints its value.
    assert_eq!(tools[1]["code_results"], json!([{"text": "42\n"}]));
}

#[tokio::test]
async fn a_failing_tool_is_reported_and_the_loop_goes_on() {
    let app = mock(FAILS);
    let (status, v) = chat(&app, &code_interpreter(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let msg = &v["choices"][0]["message"];
    let text = msg["executed_tools"][0]["code_results"][0]["text"]
        .as_str()
        .unwrap();
    assert!(text.contains("ZeroDivisionError"), "{text}");
    assert_eq!(msg["content"], "It cannot be divided.");
}

#[tokio::test]
async fn the_clients_own_function_ends_the_loop_as_tool_calls() {
    let app = mock(THEN_USER);
    let tools = json!([{"type": "code_interpreter"},
        {"type": "function", "function": {"name": "get_time",
            "parameters": {"type": "object", "properties": {}}}}]);
    let (status, v) = chat(
        &app,
        &body(
            "mock-model",
            json!({"tools": tools, "tool_choice": "required"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(
        choice["message"]["executed_tools"][0]["code_results"][0]["text"],
        "2\n"
    );
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["name"],
        "get_time"
    );
    assert_eq!(choice["message"]["content"], Value::Null);
}

#[tokio::test]
async fn code_interpreter_streams_reasoning_tools_then_the_answer() {
    let app = mock(CALC);
    let chunks = stream(&app, code_interpreter(json!({"stream": true}))).await;
    let deltas: Vec<&Value> = chunks.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert_eq!(deltas[0]["role"], "assistant");
    let reasoning: String = deltas
        .iter()
        .filter_map(|d| d["reasoning"].as_str())
        .collect();
    assert!(reasoning.contains("<output>42</output>"), "{reasoning}");
    let executed: Vec<&Value> = deltas
        .iter()
        .filter_map(|d| d.get("executed_tools"))
        .collect();
    assert_eq!(executed.len(), 1);
    assert_eq!(executed[0][0]["code_results"][0]["text"], "42\n");
    let content: String = deltas
        .iter()
        .filter_map(|d| d["content"].as_str())
        .collect();
    assert_eq!(content, "The answer is 42.");
    // The tool comes before the answer.
    let at = |f: &dyn Fn(&Value) -> bool| deltas.iter().position(|d| f(d)).unwrap();
    assert!(
        at(&|d| d.get("executed_tools").is_some()) < at(&|d| d["content"] == "The answer is 42.")
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(last["x_groq"]["usage"]["prompt_tokens"].as_u64().unwrap() > 80);
    assert!(last["x_groq"].get("usage_breakdown").is_none(), "{last}");
}

#[tokio::test]
async fn compound_answers_with_compound_shapes_and_a_usage_breakdown() {
    let app = mock(CALC);
    let (status, v) = chat(&app, &body("groq/compound", json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["model"], "groq/compound");
    let msg = &v["choices"][0]["message"];
    assert_eq!(msg["content"], "The answer is 42.");
    assert_eq!(
        msg["executed_tools"],
        json!([{"index": 0, "type": "python", "arguments": "{\"code\":\"print(6*7)\"}",
                "output": "42\n", "search_results": {"results": []}}])
    );
    let models = v["usage_breakdown"]["models"].as_array().unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0]["model"], "mock-model");
    assert_eq!(
        models[0]["usage"]["total_tokens"],
        v["usage"]["total_tokens"]
    );
}

#[tokio::test]
async fn compound_streams_usage_breakdown_in_the_finish_chunk() {
    let app = mock(CALC);
    let chunks = stream(
        &app,
        body(
            "groq/compound",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
    )
    .await;
    let finish = chunks
        .iter()
        .find(|c| c["choices"][0]["finish_reason"] == "stop")
        .unwrap();
    let breakdown = &finish["x_groq"]["usage_breakdown"]["models"];
    assert_eq!(breakdown[0]["model"], "mock-model");
    assert_eq!(
        breakdown[0]["usage"]["total_tokens"],
        finish["x_groq"]["usage"]["total_tokens"]
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"], finish["x_groq"]["usage"]);
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["delta"]["executed_tools"][0]["type"] == "python"));
}

#[tokio::test]
async fn compound_mini_makes_at_most_one_call() {
    let app = mock(TWO_CALLS);
    let (_, full) = chat(&app, &body("groq/compound", json!({}))).await;
    assert_eq!(
        full["choices"][0]["message"]["executed_tools"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{full}"
    );
    let (status, mini) = chat(&app, &body("groq/compound-mini", json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{mini}");
    let tools = mini["choices"][0]["message"]["executed_tools"]
        .as_array()
        .unwrap();
    assert_eq!(tools.len(), 1, "{tools:?}");
}

#[tokio::test]
async fn enabled_tools_narrow_compound() {
    // No tools: the model's first reply is its answer, and nothing runs.
    let app = mock("Forty-two.");
    let (status, v) = chat(
        &app,
        &body(
            "groq/compound",
            json!({"compound_custom": {"tools": {"enabled_tools": []}}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Forty-two.");
    assert_eq!(v["choices"][0]["message"]["executed_tools"], json!([]));
}

#[tokio::test]
async fn compound_refusals_name_their_parameter() {
    let app = mock(CALC);
    let user_tools = json!({"tools": [{"type": "function", "function": {"name": "f"}}]});
    let (status, e) = error(&app, body("groq/compound", user_tools)).await;
    assert_eq!(
        (status, e["param"].as_str()),
        (StatusCode::BAD_REQUEST, Some("tools"))
    );

    let cases = [
        (
            json!({"tools": {"enabled_tools": ["teleport"]}}),
            "unknown tool `teleport`",
        ),
        (
            json!({"tools": {"enabled_tools": ["browser_automation"]}}),
            "not supported by this server",
        ),
        (
            json!({"tools": {"enabled_tools": ["code_interpreter"]}, "extra": 1}),
            "unknown field `extra`",
        ),
        (
            json!({"models": {"answering_model": "nope"}}),
            "does not exist",
        ),
    ];
    for (custom, says) in cases {
        let (status, e) = error(
            &app,
            body("groq/compound", json!({"compound_custom": custom})),
        )
        .await;
        assert!(status.is_client_error(), "{custom}: {e}");
        assert!(
            e["message"].as_str().unwrap().contains(says),
            "{custom}: {e}"
        );
    }
    let (_, e) = error(
        &app,
        body(
            "mock-model",
            json!({"compound_custom": {"tools": {"enabled_tools": []}}}),
        ),
    )
    .await;
    assert_eq!(e["param"], "compound_custom");
    let (_, e) = error(
        &app,
        body(
            "mock-model",
            json!({"tools": [{"type": "code_interpreter", "container": {}}]}),
        ),
    )
    .await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("take no `container`"),
        "{e}"
    );
    let (_, e) = error(
        &app,
        code_interpreter(json!({"search_settings": {"include_domains": ["a.com"]}})),
    )
    .await;
    assert_eq!(e["param"], "search_settings");
}

async fn with_version(app: &axum::Router, version: &str, custom: Value) -> (StatusCode, Value) {
    let mut req = post(
        "/openai/v1/chat/completions",
        &body("groq/compound", json!({"compound_custom": custom})),
    );
    req.headers_mut()
        .insert("groq-model-version", version.parse().unwrap());
    let (status, _, text) = send(app, req).await;
    (status, serde_json::from_str(&text).unwrap())
}

#[tokio::test]
async fn groq_model_version_gates_the_tools() {
    let app = mock(CALC);
    let (status, v) = with_version(&app, "1999-01-01", json!(null)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["param"], "Groq-Model-Version");
    let visit = json!({"tools": {"enabled_tools": ["visit_website"]}});
    let (status, v) = with_version(&app, "2025-07-23", visit).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("newer system version"),
        "{v}"
    );
    let code = json!({"tools": {"enabled_tools": ["code_interpreter"]}});
    for version in ["2025-07-23", "2025-08-16", "latest"] {
        let (status, v) = with_version(&app, version, code.clone()).await;
        assert_eq!(status, StatusCode::OK, "{version}: {v}");
        assert_eq!(
            v["choices"][0]["message"]["executed_tools"][0]["type"],
            "python"
        );
    }
}

#[tokio::test]
async fn models_lists_the_compound_systems() {
    let app = mock(CALC);
    let req = axum::http::Request::get("/openai/v1/models")
        .body(axum::body::Body::empty())
        .unwrap();
    let (_, _, text) = send(&app, req).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for id in ["groq/compound", "groq/compound-mini"] {
        assert!(ids.contains(&id), "{ids:?}");
    }
    let req = axum::http::Request::get("/openai/v1/models/groq/compound-mini")
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, _, text) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK, "{text}");
}

/// A loopback page for `visit`; its address.
async fn page_server() -> String {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/falcon",
        get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "text/html")],
                "<html><head><title>Falcons</title></head><body><p>Peregrines dive at 390 km/h.</p></body></html>",
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr.to_string()
}

/// The mock app with `kit` as its built-in tools.
fn mock_with_tools(script: String, kit: peregrine_tools::ToolKit) -> axum::Router {
    let setup = Setup {
        script: Box::leak(script.into_boxed_str()),
        ctx: 4096,
        ..Setup::default()
    };
    peregrine_server::router(std::sync::Arc::new(peregrine_server::AppState {
        completions: peregrine_service::Completions::new(common::registry(&setup)).with_tools(kit),
        keys: peregrine_service::ApiKeys::new(&[], None),
        limiter: std::sync::Arc::new(peregrine_service::RateLimiter::unlimited()),
        metrics: Default::default(),
        storage: None,
        fine_tunings: None,
        policy: Default::default(),
    }))
}

fn visit_script(url: &str, answer: &str) -> String {
    format!(
        "<tool_call>\n{{\"name\": \"visit\", \"arguments\": {{\"url\": \"{url}\"}}}}\n</tool_call>\u{1e}{answer}"
    )
}

#[tokio::test]
async fn compound_visits_an_allow_listed_page() {
    let host = page_server().await;
    let mut kit = peregrine_tools::ToolKit::new(Default::default());
    kit.visit = Ok(peregrine_tools::FetchConfig {
        allow_hosts: vec![host.clone()],
        ..Default::default()
    });
    let url = format!("http://{host}/falcon");
    let app = mock_with_tools(visit_script(&url, "They dive at 390 km/h."), kit);
    let (status, v) = chat(
        &app,
        &body(
            "groq/compound",
            json!({"compound_custom": {"tools": {"enabled_tools": ["visit_website"]}}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let tool = &v["choices"][0]["message"]["executed_tools"][0];
    assert_eq!(tool["type"], "visit");
    let output = tool["output"].as_str().unwrap();
    assert!(output.starts_with("Title: Falcons\nURL: "), "{output}");
    assert!(output.contains("Peregrines dive at 390 km/h."), "{output}");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "They dive at 390 km/h."
    );
}

#[tokio::test]
async fn a_refused_visit_is_reported_and_the_answer_still_comes() {
    let host = page_server().await;
    // Not allow-listed: the page is on loopback.
    let app = mock_with_tools(
        visit_script(&format!("http://{host}/falcon"), "I could not read it."),
        peregrine_tools::ToolKit::new(Default::default()),
    );
    let (status, v) = chat(&app, &body("groq/compound", json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let output = v["choices"][0]["message"]["executed_tools"][0]["output"]
        .as_str()
        .unwrap();
    assert!(
        output.starts_with("Error: `127.0.0.1` is 127.0.0.1, a loopback address"),
        "{output}"
    );
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "I could not read it."
    );
}

/// A kit whose web search is a local index over two small sites.
fn search_kit() -> (tempfile::TempDir, peregrine_tools::ToolKit) {
    let dir = tempfile::tempdir().unwrap();
    for (rel, text) in [
        (
            "groq.com/news.md",
            "# Groq news\n\nGroq released Compound, a system that searches the web.",
        ),
        (
            "blog.example.org/groq.md",
            "# A blog on Groq\n\nSomeone wrote about Groq and its chips.",
        ),
    ] {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let index = peregrine_tools::search::LocalIndex::build(dir.path()).unwrap();
    let mut kit = peregrine_tools::ToolKit::new(Default::default());
    kit.search = Ok(std::sync::Arc::new(index));
    (dir, kit)
}

const SEARCH: &str = "<tool_call>\n{\"name\": \"search\", \"arguments\": {\"query\": \"Groq release\"}}\n</tool_call>\u{1e}Groq released Compound.";

#[tokio::test]
async fn compound_searches_the_local_index_with_search_settings() {
    let (_dir, kit) = search_kit();
    let app = mock_with_tools(SEARCH.to_string(), kit);
    let (status, v) = chat(
        &app,
        &body(
            "groq/compound",
            json!({"search_settings": {"include_domains": ["groq.com"]}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let tool = &v["choices"][0]["message"]["executed_tools"][0];
    assert_eq!(tool["type"], "search");
    assert_eq!(tool["arguments"], "{\"query\":\"Groq release\"}");
    let results = tool["search_results"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["url"], "https://groq.com/news.md");
    assert_eq!(results[0]["title"], "Groq news");
    assert!(results[0]["score"].as_f64().unwrap() > 0.0);
    assert!(tool["output"]
        .as_str()
        .unwrap()
        .starts_with("Title: Groq news\nURL: https://groq.com/news.md\nContent: "));
    let reasoning = v["choices"][0]["message"]["reasoning"].as_str().unwrap();
    assert!(
        reasoning.starts_with("<tool>search(Groq release)</tool>\n<output>Title: Groq news"),
        "{reasoning}"
    );

    // Without the filter both sites come back; excluding one leaves the other.
    let (_, v) = chat(
        &app,
        &body("groq/compound", json!({"exclude_domains": ["groq.com"]})),
    )
    .await;
    let results = v["choices"][0]["message"]["executed_tools"][0]["search_results"]["results"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["url"], "https://blog.example.org/groq.md");

    // A setting the local index cannot honour is a 400 before anything runs.
    let (status, e) = error(
        &app,
        body(
            "groq/compound",
            json!({"search_settings": {"country": "germany"}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["param"], "search_settings");
}

#[tokio::test]
async fn browser_search_on_a_chat_model_uses_the_search_backend() {
    let (_dir, kit) = search_kit();
    let app = mock_with_tools(SEARCH.to_string(), kit);
    let (status, v) = chat(
        &app,
        &body(
            "mock-model",
            json!({"tools": [{"type": "browser_search"}], "tool_choice": "required"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let tool = &v["choices"][0]["message"]["executed_tools"][0];
    assert_eq!(
        (tool["type"].as_str(), tool["name"].as_str()),
        (Some("function"), Some("search"))
    );
    assert_eq!(
        tool["search_results"]["results"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test]
async fn a_call_cut_off_by_the_token_limit_goes_on_to_the_answer() {
    let app = mock(CALC);
    let (status, v) = chat(
        &app,
        &body("groq/compound", json!({"max_completion_tokens": 12})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let msg = &v["choices"][0]["message"];
    assert_eq!(msg["executed_tools"], json!([]));
    assert!(
        msg["reasoning"]
            .as_str()
            .unwrap()
            .starts_with("[a tool call could not be run: "),
        "{msg}"
    );
    // The answer turn (the mock, asked afresh, replays its first reply), under the same
    // per-turn limit.
    assert_eq!(msg["content"], "<tool_call>\n");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
}

/// A script whose first turn runs `code` in Python.
fn python_script(code: &str) -> String {
    // Spaced like the call grammar writes JSON, so the byte-level mock stays on its script.
    let args = format!("{{\"code\": {}}}", serde_json::to_string(code).unwrap());
    format!("<tool_call>\n{{\"name\": \"python\", \"arguments\": {args}}}\n</tool_call>\u{1e}Done.")
}

#[tokio::test]
async fn hostile_code_through_the_api_leaves_the_server_healthy() {
    // A port this test process listens on, as the server's would be.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let attacks = [
        ("print(open('/etc/shadow').read())", "FileNotFoundError"),
        (
            "import os; print(sorted(os.environ))",
            "['HOME', 'LC_CTYPE', 'MPLBACKEND', 'PATH', 'PWD']",
        ),
        (
            &*format!("import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"),
            "Connection refused",
        ),
        (
            "import os\nwhile True:\n    os.fork()",
            "Resource temporarily unavailable",
        ),
        ("x = bytearray(8 << 30)", "MemoryError"),
        ("while True: pass", "Execution stopped"),
        (
            "import os, signal; os.kill(os.getppid(), signal.SIGKILL); print('sent')",
            "sent",
        ),
    ];
    for (code, expected) in attacks {
        let mut kit = peregrine_tools::ToolKit::new(Default::default());
        if let Ok(cfg) = kit.python.as_mut() {
            cfg.limits.wall = std::time::Duration::from_secs(3);
            // The byte-level mock reads the output back as one token a byte: a fork bomb's
            // tracebacks (one per process that hit the limit, as many as the timing gives)
            // could pass its 4,096-token context.
            cfg.limits.output_bytes = 2048;
        }
        let app = mock_with_tools(python_script(code), kit);
        let (status, v) = chat(&app, &body("groq/compound", json!({}))).await;
        assert_eq!(status, StatusCode::OK, "{code}: {v}");
        let output = v["choices"][0]["message"]["executed_tools"][0]["output"]
            .as_str()
            .unwrap_or_default();
        assert!(output.contains(expected), "{code}: {output}");
        let health = axum::http::Request::get("/health")
            .body(axum::body::Body::empty())
            .unwrap();
        let (status, _, text) = send(&app, health).await;
        assert_eq!(status, StatusCode::OK, "{code}: {text}");
    }
}

#[tokio::test]
async fn wolfram_alpha_is_asked_with_the_clients_app_id() {
    use axum::extract::Query;
    use axum::routing::get;
    use std::collections::HashMap;
    // Wolfram|Alpha's LLM API: plain text for an understood input, 403 for a bad AppID.
    let api = axum::Router::new().route(
        "/api/v1/llm-api",
        get(|Query(q): Query<HashMap<String, String>>| async move {
            match q.get("appid").map(String::as_str) {
                Some("APP-123") => (
                    StatusCode::OK,
                    format!("Query: {}\nResult: 111.108", q["input"]),
                ),
                _ => (StatusCode::FORBIDDEN, "Invalid appid".to_string()),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, api).await.unwrap() });
    let mut kit = peregrine_tools::ToolKit::new(Default::default());
    kit.wolfram_endpoint = format!("http://{addr}/api/v1/llm-api");
    let script = "<tool_call>\n{\"name\": \"wolfram\", \"arguments\": {\"query\": \"sqrt(12345)\"}}\n</tool_call>\u{1e}About 111.108.";
    let app = mock_with_tools(script.to_string(), kit);
    let custom = |key: Value| {
        json!({"compound_custom": {"tools": {"enabled_tools": ["wolfram_alpha"],
            "wolfram_settings": {"authorization": key}}}})
    };
    let (status, v) = chat(&app, &body("groq/compound", custom(json!("APP-123")))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let tool = &v["choices"][0]["message"]["executed_tools"][0];
    assert_eq!(tool["type"], "wolfram");
    assert_eq!(tool["output"], "Query: sqrt(12345)\nResult: 111.108");
    // A wrong AppID is the tool's error, not the request's.
    let (status, v) = chat(&app, &body("groq/compound", custom(json!("nope")))).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let output = v["choices"][0]["message"]["executed_tools"][0]["output"]
        .as_str()
        .unwrap();
    assert!(
        output.starts_with("Error: Wolfram|Alpha refused the AppID"),
        "{output}"
    );
    // No AppID at all: refused before anything runs.
    let (status, e) = error(&app, body("groq/compound", custom(Value::Null))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(e["param"], "compound_custom.tools.wolfram_settings");
}

#[tokio::test]
async fn figures_come_back_as_code_results_png() {
    let code = "import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [3, 5])\nprint('chart')";
    let app = mock_with_tools(
        python_script(code),
        peregrine_tools::ToolKit::new(Default::default()),
    );
    let (status, v) = chat(
        &app,
        &body(
            "mock-model",
            json!({"tools": [{"type": "code_interpreter"}], "tool_choice": "required"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let results = v["choices"][0]["message"]["executed_tools"][0]["code_results"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0], json!({"text": "chart\n"}));
    assert!(results[1]["png"]
        .as_str()
        .unwrap()
        .starts_with("iVBORw0KGgo"));
}
