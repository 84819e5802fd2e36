//! The `<think>…</think>` family: reasoning first, then the answer.
//!
//! Whitespace around the reasoning (Qwen3 writes `<think>\n…\n</think>\n\n`) belongs to the
//! tags: the reasoning is trimmed, and the answer starts at its first non-space character.

use super::{partial_tag_len, put, Piece, Start, THINK_CLOSE, THINK_OPEN};

#[derive(Debug)]
enum State {
    /// Nothing but whitespace and (part of) the opening tag so far: `held`.
    Open { held: String },
    /// Inside the reasoning; `held` may end the reasoning (trailing whitespace, part of the
    /// closing tag). `leading`: nothing emitted yet (leading whitespace is dropped).
    Reasoning { held: String, leading: bool },
    /// In the answer; `leading`: right after the closing tag (whitespace is dropped).
    Answer { leading: bool },
}

/// Splits a `<think>` family's output (see the module docs).
#[derive(Debug)]
pub struct ThinkParser {
    state: State,
    last_reasoning: bool,
}

impl ThinkParser {
    pub fn new(start: Start) -> Self {
        let state = match start {
            Start::Open => State::Open {
                held: String::new(),
            },
            Start::Reasoning => State::Reasoning {
                held: String::new(),
                leading: true,
            },
            Start::Answer => State::Answer { leading: true },
        };
        ThinkParser {
            state,
            last_reasoning: false,
        }
    }

    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.last_reasoning = false;
        let mut out = Vec::new();
        let mut rest = text.to_string();
        loop {
            match &mut self.state {
                State::Open { held } => {
                    held.push_str(&rest);
                    let trimmed = held.trim_start();
                    if let Some(after) = trimmed.strip_prefix(THINK_OPEN) {
                        rest = after.to_string();
                        self.last_reasoning = true;
                        self.state = State::Reasoning {
                            held: String::new(),
                            leading: true,
                        };
                        continue;
                    }
                    if THINK_OPEN.starts_with(trimmed) {
                        return out;
                    }
                    // The model answered without reasoning.
                    put(&mut out, Piece::Answer(std::mem::take(held)));
                    self.state = State::Answer { leading: false };
                    return out;
                }
                State::Reasoning { held, leading } => {
                    self.last_reasoning = true;
                    held.push_str(&rest);
                    if let Some(i) = held.find(THINK_CLOSE) {
                        let reasoning = held[..i].trim_end();
                        let reasoning = if *leading {
                            reasoning.trim_start()
                        } else {
                            reasoning
                        };
                        put(&mut out, Piece::Reasoning(reasoning.to_string()));
                        rest = held[i + THINK_CLOSE.len()..].to_string();
                        self.state = State::Answer { leading: true };
                        continue;
                    }
                    let keep = partial_tag_len(held, THINK_CLOSE);
                    let sure = held[..held.len() - keep].trim_end().len();
                    let mut emit: String = held.drain(..sure).collect();
                    if *leading {
                        emit = emit.trim_start().to_string();
                        *leading = emit.is_empty();
                    }
                    put(&mut out, Piece::Reasoning(emit));
                    return out;
                }
                State::Answer { leading } => {
                    let text = if *leading {
                        rest.trim_start()
                    } else {
                        rest.as_str()
                    };
                    if !text.is_empty() {
                        *leading = false;
                    }
                    put(&mut out, Piece::Answer(text.to_string()));
                    return out;
                }
            }
        }
    }

    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        match &mut self.state {
            State::Open { held } => put(&mut out, Piece::Answer(std::mem::take(held))),
            State::Reasoning { held, leading } => {
                // Unterminated: what was held (trailing whitespace, a tag's beginning) is
                // reasoning text after all, less the surrounding whitespace.
                let text = if *leading {
                    held.trim()
                } else {
                    held.trim_end()
                }
                .to_string();
                held.clear();
                put(&mut out, Piece::Reasoning(text));
            }
            State::Answer { .. } => {}
        }
        out
    }

    pub fn in_answer(&self) -> bool {
        matches!(self.state, State::Answer { .. })
    }

    pub fn last_was_reasoning(&self) -> bool {
        self.last_reasoning
    }
}
