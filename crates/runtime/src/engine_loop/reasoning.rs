//! A reasoning model's output on the engine thread: the parser that splits reasoning from
//! answer, what each `reasoning_format` does with the reasoning, and the count of
//! reasoning tokens.

use peregrine_engine::TokenId;
use peregrine_text::reasoning::{Piece, ReasoningParser, Start, THINK_OPEN};

use crate::request::{ReasoningMode, ReasoningPlan};

/// A sequence's reasoning (engine thread).
pub(crate) struct ReasoningState {
    parser: ReasoningParser,
    plan: ReasoningPlan,
    /// `raw` with the reasoning opened by the prompt: the opening tag is written before the
    /// first text, so `content` shows the whole block.
    open_tag: Option<&'static str>,
    /// Completion tokens that were (in part) reasoning.
    pub tokens: u32,
}

/// One step's output, split.
#[derive(Default)]
pub(crate) struct Split {
    /// Reasoning to send as such (`parsed` only).
    pub reasoning: String,
    /// Answer text (in `raw`, everything).
    pub answer: String,
    /// Calls written in the syntax's own form (Harmony), as (name, arguments).
    pub calls: Vec<(String, String)>,
}

impl ReasoningState {
    pub fn new(plan: ReasoningPlan) -> Self {
        let raw_opened = plan.mode == ReasoningMode::Raw && plan.start == Start::Reasoning;
        ReasoningState {
            parser: ReasoningParser::new(plan.syntax, plan.start),
            open_tag: raw_opened.then_some(THINK_OPEN),
            plan,
            tokens: 0,
        }
    }

    /// The text of a control token that is part of the syntax.
    pub fn marker_text(&self, tok: TokenId) -> Option<&str> {
        super::marker_text(&self.plan.markers, tok)
    }

    /// Whether the output is in the answer now (a grammar for the answer may start).
    pub fn in_answer(&self) -> bool {
        self.parser.in_answer()
    }

    /// Splits one token's text (and counts the token when it reasoned).
    pub fn push(&mut self, text: &str) -> Split {
        let pieces = self.parser.push(text);
        if self.parser.last_was_reasoning() {
            self.tokens += 1;
        }
        self.split(text, pieces)
    }

    /// Ends the output: what the parser held back.
    pub fn finish(&mut self, tail: &str) -> Split {
        let mut pieces = self.parser.push(tail);
        pieces.extend(self.parser.finish());
        self.split(tail, pieces)
    }

    fn split(&mut self, text: &str, pieces: Vec<Piece>) -> Split {
        let mut out = Split::default();
        if self.plan.mode == ReasoningMode::Raw {
            // The text as generated; the parser only tracked where the answer begins.
            if let Some(tag) = self.open_tag.take() {
                out.answer.push_str(tag);
            }
            out.answer.push_str(text);
            return out;
        }
        for p in pieces {
            match p {
                Piece::Reasoning(r) if self.plan.mode == ReasoningMode::Parsed => {
                    out.reasoning.push_str(&r)
                }
                Piece::Reasoning(_) => {}
                Piece::Answer(a) => out.answer.push_str(&a),
                Piece::Call { name, arguments } => out.calls.push((name, arguments)),
            }
        }
        out
    }
}
