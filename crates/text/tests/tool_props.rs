//! The tool-call parser gives the same pieces however the text is split into tokens.

use peregrine_text::tools::{ParseError, Piece, ToolFormat, ToolParser};
use proptest::prelude::*;

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
