//! The tool-call parser: every family's syntax, bare and fenced JSON, malformed and
//! truncated calls, and the same pieces however the text is split into tokens.

use peregrine_text::tools::{ParseError, ParsedCall, Piece, ToolFormat, ToolParser};
use proptest::prelude::*;
use serde_json::{json, Value};

const FORMATS: [ToolFormat; 4] = [
    ToolFormat::Hermes,
    ToolFormat::Llama3,
    ToolFormat::Mistral,
    ToolFormat::Json,
];

/// Outputs of every family: valid, parallel, with text around, malformed and truncated.
const TEXTS: &[&str] = &[
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>",
    "I will check.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"s\": \"x } ] \\\" y\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {\"n\": [1, {\"k\": null}]}}\n</tool_call>",
    "<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}",
    "<tool_call>\n{\"name\": \"a\", \"argum",
    "<tool_call>\n{\"nome\": 1}\n</tool_call>",
    "<tool_call>oops</tool_call> and more",
    "{\"name\": \"calculate\", \"arguments\": {\"expression\": \"25 * 4 + 10\"}}",
    "  \n{\"name\": \"a\", \"parameters\": {}}\n{\"name\": \"b\", \"parameters\": {\"é\": \"ü\"}}",
    "```json\n{\"name\": \"a\", \"arguments\": {\"q\": \"```\"}}\n```",
    "```\n[{\"name\": \"a\", \"arguments\": {}}, {\"name\": \"b\", \"arguments\": {}}]\n```",
    "```python\nprint({'a': 1})\n```",
    "{\"result\": 100, \"note\": \"not a call\"}",
    "{\"name\": \"a\", \"arguments\": {\"x\": ",
    "<|python_tag|>{\"name\": \"a\", \"parameters\": {\"q\": 1}}; {\"name\": \"b\", \"parameters\": {}}",
    "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"q\": 1}}, {\"name\": \"b\", \"arguments\": {}}]",
    "[TOOL_CALLS]get_time[ARGS]{\"tz\": \"UTC\"}",
    "[TOOL_CALLS]get_time[ARGS]{\"tz\": ",
    "The answer is 110. No tool needed: `2 < 3` and <b>bold</b> [x] {y}.",
    "Héllo wörld ✓ <tool_ and [TOOL_ and <|python_",
    "",
    "   ",
    "{\"result\": 1}\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>",
    "[Note: see below] and {unbalanced",
    "{\"a\": 1} trailing {\"name\": \"b\", \"arguments\": {}}",
    "```\nls -la\n```\nDone.",
    "```json\n{\"answer\": 42}\n```",
    "\u{80}\u{fffd} {\"name\": \"x\"",
];

fn run(format: ToolFormat, chunks: &[&str]) -> Result<Vec<Piece>, ParseError> {
    let mut p = ToolParser::new(format);
    let mut out = Vec::new();
    for c in chunks {
        out.extend(p.push(c));
    }
    out.extend(p.finish()?);
    // Content pieces may be split differently; merge neighbours.
    let mut merged: Vec<Piece> = Vec::new();
    for piece in out {
        match (merged.last_mut(), piece) {
            (Some(Piece::Content(a)), Piece::Content(b)) => a.push_str(&b),
            (_, p) => merged.push(p),
        }
    }
    Ok(merged)
}

/// Splits `text` at the given (char-boundary-adjusted) byte positions.
fn split<'a>(text: &'a str, cuts: &[usize]) -> Vec<&'a str> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|&c| {
            let mut c = c % (text.len() + 1);
            while !text.is_char_boundary(c) {
                c -= 1;
            }
            c
        })
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut last = 0;
    for p in points {
        out.push(&text[last..p]);
        last = p;
    }
    out.push(&text[last..]);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_split_gives_the_same_pieces(
        text_idx in 0..TEXTS.len(),
        format_idx in 0..FORMATS.len(),
        cuts in proptest::collection::vec(0usize..400, 0..24),
    ) {
        let text = TEXTS[text_idx];
        let format = FORMATS[format_idx];
        let whole = run(format, &[text]);
        let pieces = run(format, &split(text, &cuts));
        prop_assert_eq!(&whole, &pieces, "text {:?} format {:?}", text, format);
        // Byte-at-a-time (one token per byte) agrees too.
        let bytes: Vec<&str> = (0..text.len())
            .filter(|&i| text.is_char_boundary(i))
            .zip((1..=text.len()).filter(|&i| text.is_char_boundary(i)))
            .map(|(a, b)| &text[a..b])
            .collect();
        prop_assert_eq!(&whole, &run(format, &bytes));
    }

    #[test]
    fn no_call_syntax_reaches_content_when_calls_parse(
        text_idx in 0..TEXTS.len(),
        format_idx in 0..FORMATS.len(),
    ) {
        let format = FORMATS[format_idx];
        if let Ok(pieces) = run(format, &[TEXTS[text_idx]]) {
            let has_call = pieces.iter().any(|p| matches!(p, Piece::Call(_)));
            for p in &pieces {
                if let (true, Piece::Content(c)) = (has_call, p) {
                    prop_assert!(!c.contains("\"name\""), "{:?}", c);
                    if let Some(tag) = format.open_tag() {
                        prop_assert!(!c.contains(tag), "{:?}", c);
                    }
                }
            }
        }
    }
}

#[test]
fn every_family_parses_its_own_syntax() {
    let expect = [
        (ToolFormat::Hermes, TEXTS[1], 2),
        (ToolFormat::Llama3, TEXTS[13], 2),
        (ToolFormat::Mistral, TEXTS[14], 2),
        (ToolFormat::Mistral, TEXTS[15], 1),
        (ToolFormat::Json, TEXTS[7], 2),
    ];
    for (f, text, n) in expect {
        let pieces = run(f, &[text]).unwrap();
        let calls = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Call(_)))
            .count();
        assert_eq!(calls, n, "{f:?}: {pieces:?}");
    }
    assert_eq!(
        run(ToolFormat::Hermes, &[TEXTS[3]]),
        Err(ParseError::Truncated)
    );
    assert!(matches!(
        run(ToolFormat::Hermes, &[TEXTS[4]]),
        Err(ParseError::Malformed(_))
    ));
    assert_eq!(
        run(ToolFormat::Mistral, &[TEXTS[16]]),
        Err(ParseError::Truncated)
    );
    assert_eq!(
        run(ToolFormat::Json, &[TEXTS[12]]),
        Err(ParseError::Truncated)
    );
    assert_eq!(
        run(ToolFormat::Json, &[TEXTS[11]]).unwrap(),
        vec![Piece::Content(TEXTS[11].into())]
    );
}

fn parse_all(format: ToolFormat, chunks: &[&str]) -> Result<Vec<Piece>, ParseError> {
    let mut p = ToolParser::new(format);
    let mut out = Vec::new();
    for c in chunks {
        out.extend(p.push(c));
    }
    out.extend(p.finish()?);
    Ok(merge(out))
}

fn merge(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    for p in pieces {
        match (out.last_mut(), p) {
            (Some(Piece::Content(a)), Piece::Content(b)) => a.push_str(&b),
            (_, p) => out.push(p),
        }
    }
    out
}

fn call(name: &str, args: Value) -> Piece {
    Piece::Call(ParsedCall {
        name: name.into(),
        arguments: args,
    })
}

#[test]
fn detects_families_from_templates() {
    assert_eq!(
        ToolFormat::detect(include_str!("fixtures/qwen2.5-instruct.jinja")),
        ToolFormat::Hermes
    );
    assert_eq!(
        ToolFormat::detect(include_str!("fixtures/llama-3.2-instruct.jinja")),
        ToolFormat::Llama3
    );
    assert_eq!(
        ToolFormat::detect(include_str!("fixtures/smollm2.jinja")),
        ToolFormat::Json
    );
    assert_eq!(
        ToolFormat::detect("{{ '[AVAILABLE_TOOLS]' }}{{ '[TOOL_CALLS]' }}"),
        ToolFormat::Mistral
    );
}

#[test]
fn hermes_parallel_calls_with_text_before() {
    let text = "Sure.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {}}\n</tool_call>";
    assert_eq!(
        parse_all(ToolFormat::Hermes, &[text]).unwrap(),
        vec![
            Piece::Content("Sure.\n".into()),
            call("a", json!({"x": 1})),
            call("b", json!({}))
        ]
    );
}

#[test]
fn bare_and_fenced_json_at_the_start_are_calls_in_every_family() {
    for f in [
        ToolFormat::Hermes,
        ToolFormat::Llama3,
        ToolFormat::Mistral,
        ToolFormat::Json,
    ] {
        let bare = r#"{"name": "a", "arguments": {"x": "}"}}"#;
        assert_eq!(
            parse_all(f, &[bare]).unwrap(),
            vec![call("a", json!({"x": "}"}))]
        );
        let fenced = "```json\n{\"name\": \"a\", \"parameters\": {}}\n```";
        assert_eq!(parse_all(f, &[fenced]).unwrap(), vec![call("a", json!({}))]);
        let array = r#"[{"name": "a", "arguments": {}}, {"name": "b", "arguments": "{\"y\": 2}"}]"#;
        assert_eq!(
            parse_all(f, &[array]).unwrap(),
            vec![call("a", json!({})), call("b", json!({"y": 2}))]
        );
    }
}

#[test]
fn llama3_and_mistral_syntax() {
    let t =
        r#"<|python_tag|>{"name": "a", "parameters": {"q": 1}}; {"name": "b", "parameters": {}}"#;
    assert_eq!(
        parse_all(ToolFormat::Llama3, &[t]).unwrap(),
        vec![call("a", json!({"q": 1})), call("b", json!({}))]
    );
    let t = r#"[TOOL_CALLS][{"name": "a", "arguments": {"q": 1}}]"#;
    assert_eq!(
        parse_all(ToolFormat::Mistral, &[t]).unwrap(),
        vec![call("a", json!({"q": 1}))]
    );
    let t = r#"[TOOL_CALLS]get_time[ARGS]{"tz": "UTC"}"#;
    assert_eq!(
        parse_all(ToolFormat::Mistral, &[t]).unwrap(),
        vec![call("get_time", json!({"tz": "UTC"}))]
    );
}

#[test]
fn json_that_is_not_a_call_is_text() {
    let t = r#"{"answer": 42}"#;
    assert_eq!(
        parse_all(ToolFormat::Hermes, &[t]).unwrap(),
        vec![Piece::Content(t.into())]
    );
    let t =
        "```json\n{\"name\": \"a\", \"arguments\": {}}\n{\"name\": \"b\", \"arguments\": {}}\n```";
    assert_eq!(
        parse_all(ToolFormat::Json, &[t]).unwrap(),
        vec![call("a", json!({})), call("b", json!({}))]
    );
    let t = "```python\nprint(1)\n```";
    assert_eq!(
        parse_all(ToolFormat::Json, &[t]).unwrap(),
        vec![Piece::Content(t.into())]
    );
    let t = "Use `x` here";
    assert_eq!(
        parse_all(ToolFormat::Json, &[t]).unwrap(),
        vec![Piece::Content(t.into())]
    );
}

#[test]
fn malformed_and_truncated_calls_are_errors() {
    assert_eq!(
        parse_all(
            ToolFormat::Hermes,
            &["<tool_call>\n{\"name\": \"a\", \"argu"]
        ),
        Err(ParseError::Truncated)
    );
    assert!(matches!(
        parse_all(ToolFormat::Hermes, &["<tool_call>\nnot json</tool_call>"]),
        Err(ParseError::Malformed(_))
    ));
    assert!(matches!(
        parse_all(ToolFormat::Hermes, &["<tool_call>{\"x\": 1}</tool_call>"]),
        Err(ParseError::Malformed(_))
    ));
    assert_eq!(
        parse_all(ToolFormat::Json, &["{\"name\": \"a\", \"arguments\": {"]),
        Err(ParseError::Truncated)
    );
}

#[test]
fn tag_prefixes_are_held_back_but_released_at_the_end() {
    let mut p = ToolParser::new(ToolFormat::Hermes);
    assert_eq!(p.push("a <tool"), vec![Piece::Content("a ".into())]);
    assert_eq!(p.finish().unwrap(), vec![Piece::Content("<tool".into())]);
}

#[test]
fn call_start_points_at_the_opening() {
    let mut p = ToolParser::new(ToolFormat::Hermes);
    p.push("Hi ");
    assert_eq!(p.call_start(), None);
    p.push("<tool_call>\n{\"na");
    assert_eq!(p.call_start(), Some(3));
    let mut p = ToolParser::new(ToolFormat::Json);
    p.push("\n  {");
    assert_eq!(p.call_start(), Some(3));
}

#[test]
fn json_and_brackets_that_are_not_calls_stay_text() {
    // An unbalanced bracket at the start is text at the end, not a truncated call.
    assert_eq!(
        parse_all(ToolFormat::Hermes, &["[Note: see below"]).unwrap(),
        vec![Piece::Content("[Note: see below".into())]
    );
    // JSON that is not a call is text, and a tagged call after it is still a call.
    assert_eq!(
        parse_all(
            ToolFormat::Hermes,
            &["{\"result\": 1}\n<tool_call>\n{\"name\": \"a\", \"arguments\": {}}\n</tool_call>"]
        )
        .unwrap(),
        vec![
            Piece::Content("{\"result\": 1}\n".into()),
            call("a", json!({}))
        ]
    );
    // A shell block is text.
    let t = "```\nls -la\n```";
    assert_eq!(
        parse_all(ToolFormat::Json, &[t]).unwrap(),
        vec![Piece::Content(t.into())]
    );
}

#[test]
fn a_call_opens_with_its_tag_or_an_object() {
    let mut p = ToolParser::new(ToolFormat::Hermes);
    p.push("[");
    assert!(
        p.in_call() && !p.call_opened(),
        "a `[` alone may be a Markdown link"
    );
    p.push("see](x)");
    assert!(!p.in_call());
    let mut p = ToolParser::new(ToolFormat::Hermes);
    p.push("```\n");
    assert!(!p.call_opened(), "a plain fence may hold code");
    p.push("[{");
    assert!(p.call_opened());
    let mut p = ToolParser::new(ToolFormat::Hermes);
    p.push("```json\n");
    assert!(p.call_opened());
    let mut p = ToolParser::new(ToolFormat::Hermes);
    p.push(" {");
    assert!(p.call_opened());
    let mut p = ToolParser::new(ToolFormat::Hermes);
    p.push("<tool_call>");
    assert!(p.call_opened());
}
