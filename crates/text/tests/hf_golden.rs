//! Differential test against Jinja2: `fixtures/hf_golden.json` holds random conversations
//! (unicode, quotes, `<>&`, nested tool arguments with floats and nulls, parallel tool calls)
//! rendered by Jinja2 with transformers' environment, filters and globals, for each fixture
//! template. Regenerate with `python3 crates/text/tests/fixtures/hf_golden.py`.

use peregrine_text::{ChatTemplate, TemplateInput, TemplateMessage, TemplateToolCall};
use serde::Deserialize;

/// What `hf_golden.py`'s `strftime_now` returned in place of today's date.
const DATE_PLACEHOLDER: &str = "@@DATE@@";

#[derive(Deserialize)]
struct Case {
    template: String,
    bos_token: String,
    eos_token: String,
    messages: Vec<Message>,
    tools: Option<Vec<serde_json::Value>>,
    add_generation_prompt: bool,
    rendered: String,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: Option<String>,
    tool_calls: Option<Vec<ToolCall>>,
    tool_call_id: Option<String>,
}

#[derive(Deserialize)]
struct ToolCall {
    id: String,
    function: Function,
}

#[derive(Deserialize)]
struct Function {
    name: String,
    arguments: serde_json::Value,
}

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn renders_match_jinja2_with_transformers_settings() {
    let cases: Vec<Case> = serde_json::from_str(&fixture("hf_golden.json")).unwrap();
    assert!(cases.len() >= 150);
    for (i, case) in cases.into_iter().enumerate() {
        let template =
            ChatTemplate::new(&fixture(&case.template), &case.bos_token, &case.eos_token).unwrap();
        let messages = case
            .messages
            .into_iter()
            .map(|m| TemplateMessage {
                role: m.role,
                content: m.content,
                name: None,
                tool_calls: m.tool_calls.map(|calls| {
                    calls
                        .into_iter()
                        .map(|c| TemplateToolCall {
                            id: c.id,
                            name: c.function.name,
                            arguments: c.function.arguments,
                        })
                        .collect()
                }),
                tool_call_id: m.tool_call_id,
                reasoning: None,
            })
            .collect();
        let input = TemplateInput {
            messages,
            tools: case.tools,
            add_generation_prompt: case.add_generation_prompt,
            vars: Default::default(),
        };
        // Render first, then read the date, retrying across midnight.
        loop {
            let before = chrono::Local::now().format("%d %b %Y").to_string();
            let got = template.render(&input).unwrap();
            if chrono::Local::now().format("%d %b %Y").to_string() != before {
                continue;
            }
            let want = case.rendered.replace(DATE_PLACEHOLDER, &before);
            assert_eq!(got, want, "case {i} ({})", case.template);
            break;
        }
    }
}
