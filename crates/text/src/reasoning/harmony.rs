//! gpt-oss's Harmony format: the output is a run of messages, each a header then a body.
//!
//! ```text
//! <|channel|>analysis<|message|>The user asks…<|end|>
//! <|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city":"Paris"}<|call|>
//! <|start|>assistant<|channel|>final<|message|>It is sunny.<|return|>
//! ```
//!
//! The generation prompt ends with `<|start|>assistant`, so the first header has no
//! `<|start|>`. `analysis` bodies (and `commentary` without a recipient, gpt-oss's
//! preambles) are reasoning; `final` is the answer; a message addressed
//! `to=functions.NAME` is a call whose body is its arguments. `<|call|>` and `<|return|>`
//! end the turn (they are end-of-generation tokens, so usually never pushed as text).
//! Text with no header at all (a model that ignores the format) is taken as the answer.

use super::{partial_tag_len, put, Piece};

pub const START: &str = "<|start|>";
pub const END: &str = "<|end|>";
pub const MESSAGE: &str = "<|message|>";
pub const CHANNEL: &str = "<|channel|>";
pub const CONSTRAIN: &str = "<|constrain|>";
pub const RETURN: &str = "<|return|>";
pub const CALL: &str = "<|call|>";

/// Every tag of the format (control tokens in gpt-oss's vocabulary).
pub const TAGS: &[&str] = &[START, END, MESSAGE, CHANNEL, CONSTRAIN, RETURN, CALL];

/// A header longer than this without `<|message|>` is not a header: the text is the answer.
const MAX_HEADER: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Body {
    Reasoning,
    Final,
    /// A call to `name`; its arguments so far.
    Call {
        name: String,
        arguments: String,
    },
}

#[derive(Debug)]
enum State {
    Header {
        buf: String,
    },
    Body {
        body: Body,
        held: String,
    },
    /// Text with no header: all answer.
    Plain,
}

/// Splits Harmony output (see the module docs).
#[derive(Debug)]
pub struct HarmonyParser {
    state: State,
    last_reasoning: bool,
}

impl Default for HarmonyParser {
    fn default() -> Self {
        Self::new()
    }
}

impl HarmonyParser {
    pub fn new() -> Self {
        HarmonyParser {
            state: State::Header { buf: String::new() },
            last_reasoning: false,
        }
    }

    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.last_reasoning = false;
        let mut out = Vec::new();
        let mut rest = text.to_string();
        loop {
            match &mut self.state {
                State::Plain => {
                    put(&mut out, Piece::Answer(rest));
                    return out;
                }
                State::Header { buf } => {
                    self.last_reasoning = true;
                    buf.push_str(&rest);
                    if let Some(i) = buf.find(MESSAGE) {
                        let body = body_of(&buf[..i]);
                        rest = buf[i + MESSAGE.len()..].to_string();
                        self.state = State::Body {
                            body,
                            held: String::new(),
                        };
                        continue;
                    }
                    if buf.len() > MAX_HEADER || !could_be_header(buf) {
                        put(&mut out, Piece::Answer(std::mem::take(buf)));
                        self.state = State::Plain;
                    }
                    return out;
                }
                State::Body { body, held } => {
                    if *body == Body::Reasoning {
                        self.last_reasoning = true;
                    }
                    held.push_str(&rest);
                    let Some((i, tag)) = first_tag(held) else {
                        // What may be the start of a tag waits for the next push.
                        let keep = TAGS.iter().map(|t| partial_tag_len(held, t)).max();
                        let sure = held.len() - keep.unwrap_or(0);
                        let text: String = held.drain(..sure).collect();
                        add_text(&mut out, body, text);
                        return out;
                    };
                    let text = held[..i].to_string();
                    rest = held[i + tag.len()..].to_string();
                    let mut body = std::mem::replace(body, Body::Reasoning);
                    add_text(&mut out, &mut body, text);
                    end_message(&mut out, body);
                    if tag == CALL || tag == RETURN {
                        // The turn is over; anything after is not the model's to say.
                        self.state = State::Header { buf: String::new() };
                        return out;
                    }
                    let buf = if tag == START { START } else { "" };
                    self.state = State::Header {
                        buf: buf.to_string(),
                    };
                }
            }
        }
    }

    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        match std::mem::replace(&mut self.state, State::Plain) {
            State::Header { buf } => {
                if !buf.contains("<|") {
                    put(&mut out, Piece::Answer(buf));
                }
            }
            State::Body { mut body, held } => {
                add_text(&mut out, &mut body, held);
                end_message(&mut out, body);
            }
            State::Plain => {}
        }
        out
    }

    pub fn in_answer(&self) -> bool {
        matches!(
            self.state,
            State::Plain
                | State::Body {
                    body: Body::Final,
                    ..
                }
        )
    }

    pub fn last_was_reasoning(&self) -> bool {
        self.last_reasoning
    }
}

/// Adds body text: reasoning and answer go out now, a call's arguments are kept.
fn add_text(out: &mut Vec<Piece>, body: &mut Body, text: String) {
    match body {
        Body::Reasoning => put(out, Piece::Reasoning(text)),
        Body::Final => put(out, Piece::Answer(text)),
        Body::Call { arguments, .. } => arguments.push_str(&text),
    }
}

/// A message ended: a call is complete.
fn end_message(out: &mut Vec<Piece>, body: Body) {
    if let Body::Call { name, arguments } = body {
        out.push(Piece::Call {
            name,
            arguments: arguments.trim().to_string(),
        });
    }
}

/// The first complete tag in `s`: where it starts and which.
fn first_tag(s: &str) -> Option<(usize, &'static str)> {
    TAGS.iter()
        .filter_map(|&t| s.find(t).map(|i| (i, t)))
        .min_by_key(|&(i, _)| i)
}

/// Whether `buf` may still be (the beginning of) a message header: it starts with a tag or
/// the start of one, or with a recipient (` to=`), possibly after the role.
fn could_be_header(buf: &str) -> bool {
    let s = buf.trim_start();
    let s = s.strip_prefix(START).unwrap_or(s);
    if !s.is_empty() && "assistant".starts_with(s) {
        return true;
    }
    let s = s.strip_prefix("assistant").unwrap_or(s).trim_start();
    s.is_empty()
        || s.starts_with("<|")
        || "<|".starts_with(s)
        || s.starts_with("to=")
        || "to=".starts_with(s)
}

/// What kind of body a header announces.
fn body_of(header: &str) -> Body {
    let word_after = |key: &str| {
        header.find(key).map(|i| {
            let s = &header[i + key.len()..];
            let end = s
                .find(|c: char| c.is_whitespace() || c == '<')
                .unwrap_or(s.len());
            s[..end].to_string()
        })
    };
    let channel = word_after(CHANNEL).unwrap_or_default();
    if let Some(name) =
        word_after("to=").and_then(|r| r.strip_prefix("functions.").map(str::to_string))
    {
        return Body::Call {
            name,
            arguments: String::new(),
        };
    }
    match channel.as_str() {
        "final" => Body::Final,
        _ => Body::Reasoning,
    }
}
