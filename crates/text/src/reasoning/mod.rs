//! Reasoning in generated text: which syntax a model family thinks in, and streaming parsers
//! that split its output into reasoning and answer (and, for Harmony, tool calls).
//!
//! Two families, told apart by the chat template (like the tool-call format):
//! - [`ReasoningSyntax::Think`]: `<think>…</think>` before the answer (Qwen3, QwQ,
//!   DeepSeek-R1). The opening tag may be the model's first output, or already in the prompt
//!   (templates that end the generation prompt with `<think>\n`); a prompt ending in an empty
//!   `<think></think>` (Qwen3 with `enable_thinking=false`) starts in the answer.
//! - [`ReasoningSyntax::Harmony`]: gpt-oss's channels, `<|channel|>analysis<|message|>…<|end|>`
//!   then `<|start|>assistant<|channel|>final<|message|>…`; a `commentary` message addressed
//!   `to=functions.NAME` is a tool call ([`harmony`]).
//!
//! The parsers work on text: control tokens of the syntax must be shown to them as their text
//! (the engine maps those token ids, [`ReasoningSyntax::tags`]). Tags may arrive split across
//! pushes; what could be the start of a tag is held back until it is known.
//!
//! ```
//! use peregrine_text::reasoning::{Piece, ReasoningParser, ReasoningSyntax, Start};
//!
//! let mut p = ReasoningParser::new(ReasoningSyntax::Think, Start::Open);
//! let mut out = p.push("<thi");
//! out.extend(p.push("nk>\nLet me see.\n</th"));
//! out.extend(p.push("ink>\n\nHello!"));
//! out.extend(p.finish());
//! assert_eq!(
//!     out,
//!     vec![Piece::Reasoning("Let me see.".into()), Piece::Answer("Hello!".into())]
//! );
//! ```

pub mod harmony;
mod think;

pub use harmony::HarmonyParser;
pub use think::ThinkParser;

/// Opening and closing tags of the `<think>` family.
pub const THINK_OPEN: &str = "<think>";
pub const THINK_CLOSE: &str = "</think>";

/// How a model family writes its reasoning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReasoningSyntax {
    /// `<think>…</think>` then the answer.
    Think,
    /// gpt-oss's Harmony channels.
    Harmony,
}

/// The `reasoning_effort` values a family accepts, as a template reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EffortControl {
    /// No control: `reasoning_effort` is refused.
    None,
    /// Qwen3's switch: `none` renders with `enable_thinking=false`, `default` as is.
    EnableThinking,
    /// gpt-oss: `low` / `medium` / `high`, rendered as `reasoning_effort`.
    Levels,
}

impl ReasoningSyntax {
    /// The family whose reasoning a chat template renders, if any.
    pub fn detect(template_source: &str) -> Option<Self> {
        if template_source.contains("<|channel|>") && template_source.contains("<|message|>") {
            Some(ReasoningSyntax::Harmony)
        } else if template_source.contains(THINK_CLOSE) {
            Some(ReasoningSyntax::Think)
        } else {
            None
        }
    }

    /// Parses a config value (`think`, `harmony`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "think" | "qwen3" | "deepseek-r1" => Some(ReasoningSyntax::Think),
            "harmony" | "gpt-oss" => Some(ReasoningSyntax::Harmony),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ReasoningSyntax::Think => "think",
            ReasoningSyntax::Harmony => "harmony",
        }
    }

    /// The texts of the syntax's tags, which may be single control tokens.
    pub fn tags(self) -> &'static [&'static str] {
        match self {
            ReasoningSyntax::Think => &[THINK_OPEN, THINK_CLOSE],
            ReasoningSyntax::Harmony => harmony::TAGS,
        }
    }

    /// Which `reasoning_effort` control the template offers.
    pub fn effort_control(self, template_source: &str) -> EffortControl {
        match self {
            ReasoningSyntax::Harmony => EffortControl::Levels,
            ReasoningSyntax::Think if template_source.contains("enable_thinking") => {
                EffortControl::EnableThinking
            }
            ReasoningSyntax::Think => EffortControl::None,
        }
    }

    /// Where the output starts, from the end of the rendered prompt: inside the reasoning
    /// when the prompt opened it, in the answer when the prompt holds a closed (empty)
    /// reasoning block, otherwise before it (the model may open it).
    pub fn start(self, prompt: &str) -> Start {
        match self {
            ReasoningSyntax::Harmony => Start::Open,
            ReasoningSyntax::Think => {
                let tail = prompt.trim_end();
                if tail.ends_with(THINK_OPEN) {
                    Start::Reasoning
                } else if tail.ends_with(THINK_CLOSE) {
                    Start::Answer
                } else {
                    Start::Open
                }
            }
        }
    }
}

/// Where a parser starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The model may open its reasoning (or answer at once).
    Open,
    /// The prompt opened the reasoning: everything up to the closing tag is reasoning.
    Reasoning,
    /// The prompt closed it: everything is answer.
    Answer,
}

/// What a parser yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Reasoning(String),
    Answer(String),
    /// A tool call in the syntax's own form (Harmony): the function name and its arguments
    /// as the model wrote them.
    Call {
        name: String,
        arguments: String,
    },
}

/// A streaming parser of either family.
#[derive(Debug)]
pub enum ReasoningParser {
    Think(ThinkParser),
    Harmony(HarmonyParser),
}

impl ReasoningParser {
    pub fn new(syntax: ReasoningSyntax, start: Start) -> Self {
        match syntax {
            ReasoningSyntax::Think => ReasoningParser::Think(ThinkParser::new(start)),
            ReasoningSyntax::Harmony => ReasoningParser::Harmony(HarmonyParser::new()),
        }
    }

    /// Feeds generated text; returns what is now known. Adjacent pieces of one kind are
    /// merged.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        match self {
            ReasoningParser::Think(p) => p.push(text),
            ReasoningParser::Harmony(p) => p.push(text),
        }
    }

    /// Ends the output: releases what was held back. Reasoning that never closed stays
    /// reasoning (the answer is then empty).
    pub fn finish(&mut self) -> Vec<Piece> {
        match self {
            ReasoningParser::Think(p) => p.finish(),
            ReasoningParser::Harmony(p) => p.finish(),
        }
    }

    /// Whether the output is now in the answer: the reasoning is over, so a grammar for the
    /// answer may start. (Harmony: inside a `final` message or a call's arguments.)
    pub fn in_answer(&self) -> bool {
        match self {
            ReasoningParser::Think(p) => p.in_answer(),
            ReasoningParser::Harmony(p) => p.in_answer(),
        }
    }

    /// Whether the text pushed last belonged (in part) to the reasoning: its tags included,
    /// so that a token that opens or closes it counts as a reasoning token.
    pub fn last_was_reasoning(&self) -> bool {
        match self {
            ReasoningParser::Think(p) => p.last_was_reasoning(),
            ReasoningParser::Harmony(p) => p.last_was_reasoning(),
        }
    }
}

/// Appends `piece`, merging it into the last piece of the same kind; empty text is dropped.
pub(crate) fn put(out: &mut Vec<Piece>, piece: Piece) {
    match (out.last_mut(), piece) {
        (_, Piece::Reasoning(t) | Piece::Answer(t)) if t.is_empty() => {}
        (Some(Piece::Reasoning(a)), Piece::Reasoning(b)) => a.push_str(&b),
        (Some(Piece::Answer(a)), Piece::Answer(b)) => a.push_str(&b),
        (_, p) => out.push(p),
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `tag` (text that
/// may yet become the tag), at a character boundary.
pub(crate) fn partial_tag_len(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_told_apart_by_their_templates() {
        let qwen3 = "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}";
        assert_eq!(ReasoningSyntax::detect(qwen3), Some(ReasoningSyntax::Think));
        assert_eq!(
            ReasoningSyntax::Think.effort_control(qwen3),
            EffortControl::EnableThinking
        );
        let r1 = "{{'<｜Assistant｜><think>\\n'}}{% set content = content.split('</think>')[-1] %}";
        assert_eq!(ReasoningSyntax::detect(r1), Some(ReasoningSyntax::Think));
        assert_eq!(
            ReasoningSyntax::Think.effort_control(r1),
            EffortControl::None
        );
        let oss = "<|start|>assistant<|channel|>final<|message|>{{ m.content }}<|end|>";
        assert_eq!(ReasoningSyntax::detect(oss), Some(ReasoningSyntax::Harmony));
        assert_eq!(ReasoningSyntax::detect("<|im_start|>assistant\n"), None);
    }

    #[test]
    fn the_prompt_tail_says_where_the_output_starts() {
        let t = ReasoningSyntax::Think;
        assert_eq!(t.start("<|im_start|>assistant\n"), Start::Open);
        assert_eq!(
            t.start("<|im_start|>assistant\n<think>\n"),
            Start::Reasoning
        );
        assert_eq!(
            t.start("<|im_start|>assistant\n<think>\n\n</think>\n\n"),
            Start::Answer
        );
    }

    #[test]
    fn partial_tags_are_measured_at_char_boundaries() {
        assert_eq!(partial_tag_len("abc</th", "</think>"), 4);
        assert_eq!(partial_tag_len("abc<", "</think>"), 1);
        assert_eq!(partial_tag_len("abc", "</think>"), 0);
        assert_eq!(partial_tag_len("é", "</think>"), 0);
        // The whole tag is not partial.
        assert_eq!(partial_tag_len("</think>", "</think>"), 0);
    }
}
