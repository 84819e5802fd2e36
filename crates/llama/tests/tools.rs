//! Tool use on the default model (Qwen2.5-Coder-0.5B-Instruct), named by
//! `PEREGRINE_DEFAULT_MODEL` (`scripts/test` sets it; without it this test says so and
//! passes), over the cases of tests/fixtures/tools/cases.json: single calls, a choice among
//! tools, parallel calls, no call needed, named and required choices, nested-object and enum
//! arguments, multi-turn conversations with tool results.
//!
//! - every `required` / named case yields schema-valid calls (the grammar forces them);
//! - no case ever has call syntax in its content;
//! - the `auto` cases' pass rate (the expected tools called, or text when none is needed) is
//!   printed for docs/benchmarks.md: a 0.5B model's judgement, not something to assert.
//!
//! The test suite runs every forced case and the first two `auto` cases of each kind (single,
//! choose, parallel, no call, nested, enum, multi-turn): each case costs ~5 s of prefill on a
//! slow 2-core CPU. `PEREGRINE_TOOL_CASES=all` runs all of them, for the pass rate in
//! docs/benchmarks.md.
//!
//! Requests run one at a time on a fresh runtime, as in structured.rs.

mod support;

use std::collections::HashMap;

use peregrine_protocol::parse::parse_chat_request;
use peregrine_runtime::{prepare, Event, Rejection};
use serde_json::{json, Value};
use support::{start, Fixture};

#[derive(Debug, Default)]
struct Answer {
    content: String,
    calls: Vec<(String, Value)>,
    finish: String,
    /// `tool_use_failed` / `json_validate_failed` message, if the output was refused.
    rejected: Option<String>,
}

async fn run(f: &Fixture, case: &Value) -> Answer {
    let mut body = json!({
        "model": "m",
        "messages": case["messages"],
        "tools": case["tools"],
        "tool_choice": case["tool_choice"],
        "temperature": 0,
        "max_tokens": 160,
    });
    if let Some(p) = case.get("parallel_tool_calls") {
        body["parallel_tool_calls"] = p.clone();
    }
    let req = parse_chat_request(body.to_string().as_bytes()).expect("parses");
    let ctx = f.ctx.clone();
    let valid = tokio::task::spawn_blocking(move || prepare(&req, &ctx, 1))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{}: refused: {e}", case["id"]));
    let mut rx = f.runtime.submit(valid).expect("admitted");
    let mut a = Answer::default();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Delta { text, .. } => a.content.push_str(&text),
            Event::ToolCall { name, arguments } => {
                let args: Value = serde_json::from_str(&arguments).expect("arguments are JSON");
                a.calls.push((name, args));
            }
            Event::Finished(done) => {
                a.finish = done.reason.as_str().to_string();
                return a;
            }
            Event::Rejected(Rejection::Tool { message, .. } | Rejection::Json(message)) => {
                a.rejected = Some(message);
                return a;
            }
            Event::Failed(e) => panic!("{}: generation failed: {e}", case["id"]),
            Event::Preempted => panic!("interactive work is never preempted"),
            Event::Reasoning { .. } => panic!("the test models do not reason"),
        }
    }
    panic!("no finish event");
}

fn schemas(case: &Value) -> HashMap<String, Value> {
    case["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let f = &t["function"];
            (
                f["name"].as_str().unwrap().to_string(),
                f.get("parameters")
                    .cloned()
                    .unwrap_or(json!({"type": "object"})),
            )
        })
        .collect()
}

/// Every call names an offered tool and its arguments validate.
fn calls_valid(case: &Value, a: &Answer) -> Result<(), String> {
    let schemas = schemas(case);
    for (name, args) in &a.calls {
        let schema = schemas
            .get(name)
            .ok_or_else(|| format!("called unknown tool {name}"))?;
        let v = jsonschema::validator_for(schema).map_err(|e| e.to_string())?;
        if let Err(e) = v.validate(args) {
            return Err(format!("{name} arguments {args} invalid: {e}"));
        }
    }
    Ok(())
}

fn no_syntax_in_content(a: &Answer) -> Result<(), String> {
    let c = a.content.trim_start();
    let looks_like_call = c.contains("<tool_call>")
        || c.contains("</tool_call>")
        || ((c.starts_with('{') || c.starts_with("```json") || c.starts_with('['))
            && c.contains("\"name\""));
    if looks_like_call {
        return Err(format!("call syntax in content: {:?}", a.content));
    }
    Ok(())
}

/// Every case when `all`; otherwise every forced case and the first two `auto` cases of each
/// kind (the id's first word: single, choose, parallel, no, nested, enum, multi).
fn chosen(cases: &[Value], all: bool) -> Vec<&Value> {
    let mut per_kind: HashMap<&str, usize> = HashMap::new();
    cases
        .iter()
        .filter(|case| {
            if all || case["tool_choice"] != "auto" {
                return true;
            }
            let id = case["id"].as_str().unwrap();
            let seen = per_kind.entry(id.split('_').next().unwrap()).or_default();
            *seen += 1;
            *seen <= 2
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_cases_on_the_default_model() {
    let Some(path) = support::model_path("the tool-use test") else {
        return;
    };
    let all = support::fixture("tools", "cases.json");
    let all = all.as_array().expect("an array of cases");
    assert!(all.len() >= 40, "at least 40 cases");
    let cases = chosen(
        all,
        std::env::var("PEREGRINE_TOOL_CASES").as_deref() == Ok("all"),
    );
    let f = start(&path);
    let mut failures = Vec::new();
    let (mut auto_total, mut auto_pass) = (0, 0);
    let mut auto_misses = Vec::new();
    for &case in &cases {
        let id = case["id"].as_str().unwrap();
        let a = run(&f, case).await;
        let forced = case["tool_choice"] != "auto";
        let mut expected: Vec<String> = case["expect"]["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_string())
            .collect();
        expected.sort();
        let mut got: Vec<String> = a.calls.iter().map(|c| c.0.clone()).collect();
        got.sort();
        if let Err(e) = no_syntax_in_content(&a) {
            failures.push(format!("{id}: {e}"));
        }
        if forced {
            // Forced: always well-formed, schema-valid calls, the named one when named.
            let ok = a.rejected.is_none()
                && !a.calls.is_empty()
                && a.finish == "tool_calls"
                && calls_valid(case, &a).is_ok();
            if !ok {
                failures.push(format!(
                    "{id}: forced call failed: {a:?} {:?}",
                    calls_valid(case, &a)
                ));
            }
            if let Some(name) = case["tool_choice"]["function"]["name"].as_str() {
                if got.iter().any(|g| g != name) {
                    failures.push(format!("{id}: named {name}, got {got:?}"));
                }
            }
            if case.get("parallel_tool_calls") == Some(&json!(false)) && a.calls.len() != 1 {
                failures.push(format!("{id}: parallel_tool_calls false, got {got:?}"));
            }
        } else {
            auto_total += 1;
            // A started call is always well-formed: no parse failures under auto either.
            if let Some(r) = &a.rejected {
                failures.push(format!("{id}: auto call refused: {r}"));
            }
            if !a.calls.is_empty() && calls_valid(case, &a).is_err() {
                failures.push(format!("{id}: {:?}", calls_valid(case, &a)));
            }
            let pass = a.rejected.is_none()
                && if expected.is_empty() {
                    a.calls.is_empty() && !a.content.trim().is_empty()
                } else {
                    got == expected
                };
            if pass {
                auto_pass += 1;
            } else {
                auto_misses.push(format!(
                    "{id}: expected {expected:?}, got {got:?} content {:?}",
                    a.content.chars().take(80).collect::<String>()
                ));
            }
        }
        eprintln!(
            "{id}: calls {:?} content {:?} finish {} {}",
            a.calls,
            a.content.chars().take(60).collect::<String>(),
            a.finish,
            a.rejected.as_deref().unwrap_or("")
        );
    }
    eprintln!("auto misses:\n  {}", auto_misses.join("\n  "));
    eprintln!(
        "tool cases: {} total; auto pass rate {auto_pass}/{auto_total} ({:.0}%)",
        cases.len(),
        100.0 * auto_pass as f64 / auto_total.max(1) as f64
    );
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
}
