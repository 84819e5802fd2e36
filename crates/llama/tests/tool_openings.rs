//! Calls that open in any layout stay constrained, on the real tokenizers: the default model
//! (`PEREGRINE_DEFAULT_MODEL`, Qwen2.5's 151k-token vocabulary) and the test model
//! (`PEREGRINE_TEST_MODEL`, SmolLM2). Without them these tests say so and pass.
//!
//! Under `tool_choice: auto` the model writes freely until the tool parser sees a call open;
//! the call grammar then starts, fed what was written of the call. Whatever token opened it,
//! the grammar must take that opening, or the rest of the call would be generated
//! unconstrained (a CRLF after `{` once did exactly that, and the request ended in a 400):
//!
//! - a property test over every token of the vocabulary, after each state in which a call
//!   may be about to open (the answer's start, a `[`, a fence's info line, part of a text
//!   tag): each one that opens a call is taken by the lazy grammar;
//! - the model itself, pushed by `logit_bias` to open with `{` + CRLF, makes a valid call.

mod support;

use std::path::Path;

use peregrine_engine::TokenId;
use peregrine_grammar::{CallGrammar, Constraint, GrammarSpec, Marker, ToolDef};
use peregrine_protocol::parse::parse_chat_request;
use peregrine_runtime::{prepare, Event, ModelContext};
use peregrine_text::tools::ToolParser;
use serde_json::{json, Value};

fn weather() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}},
           "required": ["city"], "additionalProperties": false})
}

/// The lazy call grammars a request can get: one tool, parallel or not, or any name.
fn lazy_grammars(ctx: &ModelContext) -> Vec<(String, Constraint)> {
    let w = weather();
    let tools = [ToolDef {
        name: "get_weather",
        parameters: Some(&w),
    }];
    [(false, false), (true, false), (true, true)]
        .into_iter()
        .map(|(parallel, any_name)| {
            let g = CallGrammar {
                syntax: &ctx.tool_syntax,
                tools: &tools,
                any_name,
                parallel,
                lazy: true,
            };
            let c = ctx
                .grammars
                .compile(&GrammarSpec::Lark(g.lark()))
                .expect("the call grammar compiles");
            (format!("parallel={parallel} any_name={any_name}"), c)
        })
        .collect()
}

/// States in which the next token may open a call: nothing written yet, an array or a
/// fence not yet holding an object, or a text tag cut short.
fn contexts(ctx: &ModelContext) -> Vec<String> {
    let mut out: Vec<String> = [
        "",
        "\n",
        "[",
        "[ ",
        "[\n",
        "```",
        "``` ",
        "```json",
        "```JSON",
        "```tool_call",
        "```\n",
        "```\r\n",
    ]
    .map(String::from)
    .to_vec();
    if let Some(Marker::Text(tag)) = &ctx.tool_syntax.open {
        out.extend((1..tag.len()).map(|n| tag[..n].to_string()));
    }
    out
}

/// The text a token adds: its bytes, or the text of a control token of the call syntax.
fn token_bytes(ctx: &ModelContext, tok: TokenId) -> Vec<u8> {
    let bytes = ctx.vocab.token_bytes(tok);
    if !bytes.is_empty() {
        return bytes;
    }
    (ctx.tool_syntax.marker_tokens())
        .into_iter()
        .find(|(id, _)| *id == tok)
        .map_or(bytes, |(_, text)| text.into_bytes())
}

/// The text of `bytes` that is complete UTF-8: what the detokenizer has released.
fn released(bytes: &[u8]) -> &str {
    match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap(),
    }
}

/// Feeds `context` then token `tok` to a fresh parser, as the engine loop does; when a call
/// opens, the opening written from its start (the bytes, running ahead of the text by an
/// unfinished character) if it is a call's and not JSON text.
fn opening(ctx: &ModelContext, context: &str, tok: TokenId) -> Option<Vec<u8>> {
    let mut p = ToolParser::new(ctx.tool_syntax.format);
    p.push(context);
    if p.call_opened() {
        return None;
    }
    let mut bytes = context.as_bytes().to_vec();
    bytes.extend(token_bytes(ctx, tok));
    p.push(released(&bytes[context.len()..]));
    if !p.call_opened() {
        return None;
    }
    let written = bytes.get(p.call_start()?..)?.to_vec();
    p.opening_is_call(&String::from_utf8_lossy(&written))
        .then_some(written)
}

fn every_opening_token_is_taken(path: &Path) {
    let f = support::start(path);
    let ctx = &f.ctx;
    let grammars = lazy_grammars(ctx);
    let mut checked = 0usize;
    let mut refused = Vec::new();
    for context in contexts(ctx) {
        for tok in 0..ctx.vocab.n_vocab() as TokenId {
            let Some(written) = opening(ctx, &context, tok) else {
                continue;
            };
            checked += 1;
            for (name, grammar) in &grammars {
                let mut c = grammar.clone();
                if let Err(e) = c.feed(&written, &[]) {
                    refused.push(format!(
                        "{name}: after {context:?}, token {tok} opens {:?}: {e}",
                        String::from_utf8_lossy(&written)
                    ));
                }
            }
        }
    }
    eprintln!(
        "{}: {checked} (state, token) pairs open a call",
        path.display()
    );
    // Tokens such as `{"`, `{\n`, `{\r\n` and `[{"` exist in every vocabulary tested: a
    // count this low means the test is not looking.
    assert!(checked >= 20, "only {checked} openings found");
    assert!(
        refused.is_empty(),
        "{} openings refused:\n{}",
        refused.len(),
        refused.join("\n")
    );
}

#[test]
fn every_token_that_opens_a_call_is_taken_by_the_grammar_on_the_default_model() {
    if let Some(path) = support::model_path("the call-opening property test") {
        every_opening_token_is_taken(&path);
    }
}

#[test]
fn every_token_that_opens_a_call_is_taken_by_the_grammar_on_the_test_model() {
    if let Some(path) = support::model_from_env("PEREGRINE_TEST_MODEL", "the call-opening test") {
        every_opening_token_is_taken(&path);
    }
}

/// The default model, made by `logit_bias` to open its answer with the one token `{\r\n`
/// under `tool_choice: auto`, goes on to a valid call: the grammar took the opening.
#[tokio::test(flavor = "multi_thread")]
async fn a_crlf_opened_call_is_constrained() {
    let Some(path) = support::model_path("the CRLF-opened call test") else {
        return;
    };
    let f = support::start(&path);
    let crlf = f.ctx.vocab.tokenize_piece("{\r\n", false);
    let [tok] = crlf.as_slice() else {
        panic!("`{{\\r\\n` is not one token of this vocabulary: {crlf:?}");
    };
    let body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": weather()}}],
        "tool_choice": "auto",
        "temperature": 0,
        "max_tokens": 60,
        "logit_bias": {tok.to_string(): 100},
    });
    let req = parse_chat_request(body.to_string().as_bytes()).expect("parses");
    let ctx = f.ctx.clone();
    let valid = tokio::task::spawn_blocking(move || prepare(&req, &ctx, 1))
        .await
        .unwrap()
        .expect("prepared");
    let mut rx = f.runtime.submit(valid).expect("admitted");
    let mut calls = Vec::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::ToolCall { name, arguments } => calls.push((name, arguments)),
            Event::Finished(done) => {
                assert_eq!(done.reason.as_str(), "tool_calls", "{calls:?}");
                break;
            }
            Event::Delta { text, .. } if !text.is_empty() => {
                panic!("answer text {text:?}: the call was not seen")
            }
            Event::Delta { .. } => {}
            other => panic!("the call did not hold: {other:?}"),
        }
    }
    let [(name, arguments)] = calls.as_slice() else {
        panic!("one call expected: {calls:?}");
    };
    assert_eq!(name, "get_weather");
    let args: Value = serde_json::from_str(arguments).unwrap();
    assert!(args["city"].is_string(), "{args}");
}
