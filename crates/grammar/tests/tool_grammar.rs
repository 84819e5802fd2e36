//! Tool-call grammars over the mock's byte vocabulary: every family's syntax, names and
//! arguments constrained, parallel or not, lazy grammars fed the opening already written.

use crate::common;

use common::{feed, grammars};
use peregrine_engine::{MockVocab, TokenId};
use peregrine_grammar::{CallGrammar, CallSyntax, Constraint, GrammarSpec, Marker, ToolDef};
use peregrine_text::tools::ToolFormat;
use serde_json::json;

fn weather() -> serde_json::Value {
    json!({"type": "object", "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
    }, "required": ["city", "unit"], "additionalProperties": false})
}

fn compile(format: ToolFormat, parallel: bool, lazy: bool) -> Constraint {
    let syntax = CallSyntax::resolve(format, &MockVocab);
    let w = weather();
    let tools = [
        ToolDef {
            name: "get_weather",
            parameters: Some(&w),
        },
        ToolDef {
            name: "now",
            parameters: None,
        },
    ];
    let g = CallGrammar {
        syntax: &syntax,
        tools: &tools,
        any_name: false,
        parallel,
        lazy,
    };
    grammars().compile(&GrammarSpec::Lark(g.lark())).unwrap()
}

const HERMES_CALL: &str =
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>";

#[test]
fn mock_tags_are_text_markers() {
    let s = CallSyntax::resolve(ToolFormat::Hermes, &MockVocab);
    assert_eq!(s.open, Some(Marker::Text("<tool_call>".into())));
    assert!(s.marker_tokens().is_empty());
}

#[test]
fn forced_hermes_accepts_calls_and_ends() {
    let mut c = compile(ToolFormat::Hermes, true, false);
    feed(&mut c, HERMES_CALL).unwrap();
    assert!(c.is_complete());
    feed(
        &mut c,
        "\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>",
    )
    .unwrap();
    assert!(c.is_complete());
    c.compute_mask().unwrap();
    assert!(c.allows(257), "end of turn after the calls");
    assert!(!c.allows(TokenId::from(b'x')), "no text after the calls");
}

#[test]
fn forced_grammar_refuses_text_unknown_names_and_bad_arguments() {
    let mut c = compile(ToolFormat::Hermes, true, false);
    assert!(feed(&mut c, "Sure").is_err());
    let mut c = compile(ToolFormat::Hermes, true, false);
    assert!(feed(&mut c, "<tool_call>\n{\"name\": \"get_time\"").is_err());
    let mut c = compile(ToolFormat::Hermes, true, false);
    assert!(feed(
        &mut c,
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"kelvin\""
    )
    .is_err());
    let mut c = compile(ToolFormat::Hermes, true, false);
    c.compute_mask().unwrap();
    assert!(!c.allows(257), "no end of turn before a call");
}

#[test]
fn one_call_only_without_parallel() {
    let mut c = compile(ToolFormat::Hermes, false, false);
    feed(&mut c, HERMES_CALL).unwrap();
    c.compute_mask().unwrap();
    assert!(c.allows(257));
    assert!(!c.allows(TokenId::from(b'\n')));
}

#[test]
fn every_family_has_a_forced_form() {
    let cases = [
        (
            ToolFormat::Llama3,
            "{\"name\": \"now\", \"parameters\": {}}; {\"name\": \"now\", \"parameters\": {}}",
        ),
        (
            ToolFormat::Mistral,
            "[TOOL_CALLS][{\"name\": \"now\", \"arguments\": {}}, {\"name\": \"now\", \"arguments\": {}}]",
        ),
        (
            ToolFormat::Json,
            "{\"name\": \"now\", \"arguments\": {}}\n{\"name\": \"now\", \"arguments\": {}}",
        ),
    ];
    for (f, text) in cases {
        let mut c = compile(f, true, false);
        feed(&mut c, text).unwrap_or_else(|e| panic!("{f:?}: {e}"));
        assert!(c.is_complete(), "{f:?}");
    }
}

#[test]
fn lazy_grammar_takes_any_opening_fed_at_once() {
    for opening in [
        "<tool_call>\n{\"na",
        "{\"name\": \"get_",
        "[{\"name\": ",
        "```json\n{",
    ] {
        let mut c = compile(ToolFormat::Hermes, true, true);
        c.feed(opening.as_bytes(), &[])
            .unwrap_or_else(|e| panic!("{opening:?}: {e}"));
    }
    let mut c = compile(ToolFormat::Hermes, true, true);
    c.feed(b"{\"na", &[]).unwrap();
    feed(&mut c, "me\": \"now\", \"arguments\": {}}").unwrap();
    assert!(c.is_complete());
    // Text that is no call's opening is refused.
    let mut c = compile(ToolFormat::Hermes, true, true);
    assert!(c.feed(b"{\"answer\"", &[]).is_err());
}

#[test]
fn any_name_allows_unknown_tools() {
    let syntax = CallSyntax::resolve(ToolFormat::Hermes, &MockVocab);
    let g = CallGrammar {
        syntax: &syntax,
        tools: &[],
        any_name: true,
        parallel: false,
        lazy: false,
    };
    let mut c = grammars().compile(&GrammarSpec::Lark(g.lark())).unwrap();
    feed(
        &mut c,
        "<tool_call>\n{\"name\": \"anything-1\", \"arguments\": {\"x\": [1]}}\n</tool_call>",
    )
    .unwrap();
    assert!(c.is_complete());
}

#[test]
fn empty_object_arguments() {
    let syntax = CallSyntax::resolve(ToolFormat::Json, &MockVocab);
    let p = json!({"type": "object", "properties": {}});
    let tools = [ToolDef {
        name: "get_time",
        parameters: Some(&p),
    }];
    let g = CallGrammar {
        syntax: &syntax,
        tools: &tools,
        any_name: false,
        parallel: true,
        lazy: true,
    };
    let mut c = grammars().compile(&GrammarSpec::Lark(g.lark())).unwrap();
    c.feed(b"{", &[]).unwrap();
    feed(&mut c, "\"name\": \"get_time\", \"arguments\": {}}").unwrap();
    assert!(c.is_complete());
}

#[test]
fn a_call_object_may_open_on_its_own_line() {
    let mut c = compile(ToolFormat::Hermes, true, true);
    c.feed(b"```json\n{\n  \"name\": ", &[]).unwrap();
    feed(&mut c, "\"now\", \"arguments\": {}}\n```").unwrap();
    assert!(c.is_complete());
    let mut c = compile(ToolFormat::Hermes, true, true);
    assert!(
        c.feed(format!("{{{}\"name\"", "\n".repeat(129)).as_bytes(), &[])
            .is_err(),
        "not unbounded"
    );
}

/// What the tool parser takes as a call's opening, in layouts a tokenizer produces as one
/// token or a few: a lazy grammar fed any of them goes on to constrain the call.
#[test]
fn lazy_grammar_takes_every_layout_the_parser_opens_a_call_with() {
    let openings = [
        "{\r\n",
        "{\r\n  \"name\": ",
        "{\t\"na",
        "[\n  {\"name\": ",
        "```json\n                                                                \n{",
        "[ {",
        "```JSON\r\n{",
        "``` json \n\n{\n",
        "```tool_call\n{",
        "```\n[{",
        "{\"function\": {\"name\": \"now\", ",
    ];
    for opening in openings {
        let mut c = compile(ToolFormat::Hermes, true, true);
        c.feed(opening.as_bytes(), &[])
            .unwrap_or_else(|e| panic!("{opening:?}: {e}"));
    }
    let mut c = compile(ToolFormat::Hermes, false, true);
    c.feed(b"{\r\n", &[]).unwrap();
    feed(&mut c, "\"name\": \"now\", \"arguments\": {}}").unwrap();
    assert!(c.is_complete());
    let mut c = compile(ToolFormat::Hermes, false, true);
    c.feed(b"{\"function\": ", &[]).unwrap();
    feed(&mut c, "{\"name\": \"now\", \"arguments\": {}}}").unwrap();
    assert!(c.is_complete());
}

#[test]
fn a_lazy_tag_may_be_followed_by_any_whitespace_or_none() {
    for (format, opening, rest) in [
        (
            ToolFormat::Hermes,
            "<tool_call>{",
            "\"name\": \"now\", \"arguments\": {}}\n</tool_call>",
        ),
        (
            ToolFormat::Hermes,
            "<tool_call>\r\n",
            "{\"name\": \"now\", \"arguments\": {}}\n</tool_call>",
        ),
        (
            ToolFormat::Mistral,
            "[TOOL_CALLS] [\n",
            "{\"name\": \"now\", \"arguments\": {}}]",
        ),
        (
            ToolFormat::Mistral,
            "[TOOL_CALLS]{",
            "\"name\": \"now\", \"arguments\": {}}",
        ),
        (ToolFormat::Mistral, "[TOOL_CALLS]now[ARGS]", "{}"),
    ] {
        let mut c = compile(format, false, true);
        c.feed(opening.as_bytes(), &[])
            .unwrap_or_else(|e| panic!("{opening:?}: {e}"));
        feed(&mut c, rest).unwrap_or_else(|e| panic!("{opening:?}: {e}"));
        assert!(c.is_complete(), "{opening:?}");
    }
    // A forced grammar keeps the family's own layout.
    let mut c = compile(ToolFormat::Hermes, false, false);
    assert!(feed(&mut c, "<tool_call>{").is_err());
}
