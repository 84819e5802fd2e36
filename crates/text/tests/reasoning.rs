//! The reasoning parsers on scripted token streams: tags split across tokens, unterminated
//! reasoning, reasoning then a tool call, Harmony's channels; and any split of a stream
//! gives the same pieces as the whole.

use peregrine_text::reasoning::{Piece, ReasoningParser, ReasoningSyntax, Start};
use peregrine_text::tools::{self, ToolFormat, ToolParser};
use proptest::prelude::*;

/// Runs `tokens` through a parser; adjacent pieces of one kind merged.
fn run(syntax: ReasoningSyntax, start: Start, tokens: &[&str]) -> Vec<Piece> {
    let mut p = ReasoningParser::new(syntax, start);
    let mut out: Vec<Piece> = Vec::new();
    for t in tokens {
        out.extend(p.push(t));
    }
    out.extend(p.finish());
    merge(out)
}

fn merge(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    for p in pieces {
        match (out.last_mut(), p) {
            (Some(Piece::Reasoning(a)), Piece::Reasoning(b)) => a.push_str(&b),
            (Some(Piece::Answer(a)), Piece::Answer(b)) => a.push_str(&b),
            (_, p) => out.push(p),
        }
    }
    out
}

fn r(s: &str) -> Piece {
    Piece::Reasoning(s.into())
}
fn a(s: &str) -> Piece {
    Piece::Answer(s.into())
}

const THINK: ReasoningSyntax = ReasoningSyntax::Think;
const HARMONY: ReasoningSyntax = ReasoningSyntax::Harmony;

#[test]
fn qwen3_output_whole_tags() {
    let out = run(
        THINK,
        Start::Open,
        &[
            "<think>",
            "\n",
            "Okay",
            " thinking",
            ".",
            "\n",
            "</think>",
            "\n\n",
            "Hello",
            "!",
        ],
    );
    assert_eq!(out, vec![r("Okay thinking."), a("Hello!")]);
}

#[test]
fn tags_split_across_tokens() {
    let out = run(
        THINK,
        Start::Open,
        &[
            "<", "th", "ink", ">\nI", " see", " <", "/", "thi", "nk", ">", "\n", "Yes",
        ],
    );
    assert_eq!(out, vec![r("I see"), a("Yes")]);
}

#[test]
fn a_tag_and_text_in_one_token() {
    let out = run(THINK, Start::Open, &["<think>Hmm</think>Done"]);
    assert_eq!(out, vec![r("Hmm"), a("Done")]);
}

#[test]
fn text_that_only_looks_like_a_tag_stays_reasoning() {
    let out = run(
        THINK,
        Start::Open,
        &["<think>", "a </th", "eory> b", "</think>", "c"],
    );
    assert_eq!(out, vec![r("a </theory> b"), a("c")]);
}

#[test]
fn unterminated_reasoning_is_all_reasoning() {
    let out = run(
        THINK,
        Start::Open,
        &["<think>", "\nStill", " going", "\n", "</th"],
    );
    assert_eq!(out, vec![r("Still going\n</th")]);
    let out = run(THINK, Start::Reasoning, &["\nStill", " going\n\n"]);
    assert_eq!(out, vec![r("Still going")]);
}

#[test]
fn an_answer_without_reasoning_is_all_answer() {
    let out = run(THINK, Start::Open, &["Hel", "lo <think> there"]);
    assert_eq!(out, vec![a("Hello <think> there")]);
    // A prefix of the tag that turns out not to be one.
    let out = run(THINK, Start::Open, &["<th", "ought>"]);
    assert_eq!(out, vec![a("<thought>")]);
    // Nothing at all.
    assert_eq!(run(THINK, Start::Open, &[]), vec![]);
}

#[test]
fn reasoning_opened_by_the_prompt() {
    // DeepSeek-R1's template ends the generation prompt with `<think>\n`.
    let out = run(
        THINK,
        Start::Reasoning,
        &["First", " step.", "\n</think>\n\n", "42"],
    );
    assert_eq!(out, vec![r("First step."), a("42")]);
}

#[test]
fn reasoning_closed_by_the_prompt() {
    // Qwen3 with enable_thinking=false: `<think>\n\n</think>\n\n` is in the prompt.
    let out = run(THINK, Start::Answer, &["\n", "Hi", " <think>x</think>"]);
    assert_eq!(out, vec![a("Hi <think>x</think>")]);
}

#[test]
fn the_parser_says_when_the_answer_starts_and_which_tokens_reasoned() {
    let mut p = ReasoningParser::new(THINK, Start::Open);
    let mut reasoning_tokens = 0;
    let mut answer_started_at = None;
    for (i, t) in ["<think>", "a", "b", "</think>", "\n\n", "c"]
        .iter()
        .enumerate()
    {
        p.push(t);
        if p.last_was_reasoning() {
            reasoning_tokens += 1;
        }
        if p.in_answer() && answer_started_at.is_none() {
            answer_started_at = Some(i);
        }
    }
    // `<think>`, a, b and `</think>`.
    assert_eq!(reasoning_tokens, 4);
    assert_eq!(answer_started_at, Some(3));
}

#[test]
fn reasoning_then_a_tool_call() {
    let out = run(
        THINK,
        Start::Open,
        &[
            "<think>",
            "I need the weather.",
            "</think>",
            "\n\n",
            "<tool_call>",
            "\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n",
            "</tool_call>",
        ],
    );
    assert_eq!(out[0], r("I need the weather."));
    let Piece::Answer(answer) = &out[1] else {
        panic!("{out:?}")
    };
    // The answer goes on to the tool-call parser, which finds the call in it.
    let mut tools = ToolParser::new(ToolFormat::Hermes);
    let mut pieces = tools.push(answer);
    pieces.extend(tools.finish().unwrap());
    let calls: Vec<_> = pieces
        .iter()
        .filter_map(|p| match p {
            tools::Piece::Call(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(calls.len(), 1, "{pieces:?}");
    assert_eq!(calls[0].name, "get_weather");
    assert_eq!(calls[0].arguments["city"], "Paris");
}

#[test]
fn harmony_analysis_then_final() {
    let out = run(
        HARMONY,
        Start::Open,
        &[
            "<|channel|>",
            "analysis",
            "<|message|>",
            "User",
            " greets.",
            "<|end|>",
            "<|start|>",
            "assistant",
            "<|channel|>",
            "final",
            "<|message|>",
            "Hi",
            "!",
        ],
    );
    assert_eq!(out, vec![r("User greets."), a("Hi!")]);
}

#[test]
fn harmony_tool_call_channel() {
    let tokens = [
        "<|channel|>analysis<|message|>",
        "Need weather.",
        "<|end|>",
        "<|start|>assistant",
        "<|channel|>commentary to=",
        "functions.get_weather",
        " <|constrain|>json",
        "<|message|>",
        "{\"city\":",
        "\"Paris\"}",
        "<|call|>",
    ];
    let out = run(HARMONY, Start::Open, &tokens);
    assert_eq!(
        out,
        vec![
            r("Need weather."),
            Piece::Call {
                name: "get_weather".into(),
                arguments: "{\"city\":\"Paris\"}".into()
            }
        ]
    );
    // `<|call|>` is an end-of-generation token: usually never pushed. The call still ends
    // with the output.
    let out = run(HARMONY, Start::Open, &tokens[..tokens.len() - 1]);
    assert!(matches!(out.last(), Some(Piece::Call { name, .. }) if name == "get_weather"));
}

#[test]
fn harmony_recipient_before_the_channel() {
    let out = run(
        HARMONY,
        Start::Open,
        &[
            " to=functions.lookup<|channel|>commentary json<|message|>{}",
            "<|call|>",
        ],
    );
    assert_eq!(
        out,
        vec![Piece::Call {
            name: "lookup".into(),
            arguments: "{}".into()
        }]
    );
}

#[test]
fn harmony_tags_split_across_pushes() {
    let out = run(
        HARMONY,
        Start::Open,
        &[
            "<|chan",
            "nel|>analysis<|mess",
            "age|>a <|e",
            "nd|><|start|>assistant<|channel|>final<|message|>b",
        ],
    );
    assert_eq!(out, vec![r("a "), a("b")]);
}

#[test]
fn harmony_text_without_a_header_is_the_answer() {
    let out = run(HARMONY, Start::Open, &["Just", " text"]);
    assert_eq!(out, vec![a("Just text")]);
}

#[test]
fn harmony_unterminated_analysis_is_reasoning() {
    let out = run(
        HARMONY,
        Start::Open,
        &["<|channel|>analysis<|message|>", "thinking", " <|"],
    );
    assert_eq!(out, vec![r("thinking <|")]);
}

#[test]
fn harmony_in_answer_only_in_final() {
    let mut p = ReasoningParser::new(HARMONY, Start::Open);
    p.push("<|channel|>analysis<|message|>x");
    assert!(!p.in_answer());
    assert!(p.last_was_reasoning());
    p.push("<|end|><|start|>assistant<|channel|>final<|message|>");
    assert!(p.in_answer());
    p.push("y");
    assert!(!p.last_was_reasoning());
}

/// Splits `text` at the given char positions.
fn split_at(text: &str, cuts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (chars.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut from = 0;
    for c in cuts.into_iter().chain([chars.len()]) {
        out.push(chars[from..c].iter().collect());
        from = c;
    }
    out
}

proptest! {
    #[test]
    fn any_split_gives_the_same_pieces(
        reasoning in "[a-z <>/|\n]{0,30}",
        answer in "[a-zé <>/\n]{0,30}",
        cuts in proptest::collection::vec(0usize..80, 0..12),
    ) {
        for (syntax, text) in [
            (THINK, format!("<think>\n{reasoning}</think>\n\n{answer}")),
            (HARMONY, format!("<|channel|>analysis<|message|>{reasoning}<|end|><|start|>assistant<|channel|>final<|message|>{answer}")),
        ] {
            let whole = run(syntax, Start::Open, &[text.as_str()]);
            let parts = split_at(&text, &cuts);
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            prop_assert_eq!(run(syntax, Start::Open, &parts), whole, "{:?}", parts);
        }
    }
}
