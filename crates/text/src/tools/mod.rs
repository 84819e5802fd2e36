//! Tool calls in generated text: the call syntax of each model family, and a streaming
//! parser that splits a model's output into answer text and calls.
//!
//! The family ([`ToolFormat`]) is fixed per model (from its chat template or its config),
//! never guessed per request. Whatever the family, a call written as bare JSON
//! (`{"name": ..., "arguments": ...}`, or an array of them) or in a ```` ```json ```` fence at
//! the start of the answer (or right after another call) is parsed too: small models often
//! write that instead of their template's tags.
//!
//! ```
//! use peregrine_text::tools::{Piece, ToolFormat, ToolParser};
//!
//! let mut p = ToolParser::new(ToolFormat::Hermes);
//! let mut out = p.push("Let me check.<tool_");
//! out.extend(p.push("call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"));
//! out.extend(p.finish().unwrap());
//! assert_eq!(out[0], Piece::Content("Let me check.".into()));
//! let Piece::Call(call) = &out[1] else { panic!() };
//! assert_eq!(call.name, "get_weather");
//! assert_eq!(call.arguments["city"], "Paris");
//! ```

mod scan;

use serde_json::{Map, Value};

use scan::{
    call_fence, call_shaped, calls_of, may_be_call, object_opened, scan_json, tag_body_may_be_call,
    Scan,
};

/// How a model family writes tool calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolFormat {
    /// Qwen 2.5 / Hermes: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`,
    /// one block per call.
    Hermes,
    /// Llama 3.x: `{"name": ..., "parameters": {...}}`, optionally after `<|python_tag|>`;
    /// several calls separated by `;`.
    Llama3,
    /// Mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]` (or the newer
    /// `[TOOL_CALLS]name[ARGS]{...}`).
    Mistral,
    /// No template support: bare `{"name": ..., "arguments": {...}}` JSON (tools are described
    /// in the system prompt).
    Json,
}

impl ToolFormat {
    /// The family whose syntax a chat template teaches.
    pub fn detect(template_source: &str) -> Self {
        if template_source.contains("<tool_call>") {
            ToolFormat::Hermes
        } else if template_source.contains("[TOOL_CALLS]") {
            ToolFormat::Mistral
        } else if template_source.contains("<|python_tag|>")
            || (template_source.contains("ipython") && template_source.contains("parameters"))
        {
            ToolFormat::Llama3
        } else {
            ToolFormat::Json
        }
    }

    /// Parses a config value (`hermes`, `llama3`, `mistral`, `json`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "hermes" | "qwen" => Some(ToolFormat::Hermes),
            "llama3" | "llama" => Some(ToolFormat::Llama3),
            "mistral" => Some(ToolFormat::Mistral),
            "json" => Some(ToolFormat::Json),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ToolFormat::Hermes => "hermes",
            ToolFormat::Llama3 => "llama3",
            ToolFormat::Mistral => "mistral",
            ToolFormat::Json => "json",
        }
    }

    /// The tag that opens a call anywhere in the text.
    pub fn open_tag(self) -> Option<&'static str> {
        match self {
            ToolFormat::Hermes => Some("<tool_call>"),
            ToolFormat::Llama3 => Some("<|python_tag|>"),
            ToolFormat::Mistral => Some("[TOOL_CALLS]"),
            ToolFormat::Json => None,
        }
    }

    /// The tag that closes a call, if the family has one.
    pub fn close_tag(self) -> Option<&'static str> {
        match self {
            ToolFormat::Hermes => Some("</tool_call>"),
            _ => None,
        }
    }

    /// The key the family writes the arguments under.
    pub fn args_key(self) -> &'static str {
        match self {
            ToolFormat::Llama3 => "parameters",
            _ => "arguments",
        }
    }
}

/// A call parsed from the text: the function name and its arguments (always a JSON object).
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedCall {
    pub name: String,
    pub arguments: Value,
}

/// A piece of the output, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    /// Answer text.
    Content(String),
    /// A complete call.
    Call(ParsedCall),
}

/// Why the output's calls could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A call was opened but the text ended before it was complete.
    #[error("the tool call is incomplete")]
    Truncated,
    /// A call was opened but what follows is not a call.
    #[error("the tool call is malformed: {0}")]
    Malformed(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Region {
    /// After the family's open tag.
    Tag,
    /// A bare JSON value at the start of the answer.
    Bare,
    /// A ```` ``` ```` fence at the start of the answer.
    Fenced,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace yet (`after_call`: right after a call).
    Start { after_call: bool },
    /// In answer text.
    Text,
    /// In a call region that started at byte `start` of `buf`'s absolute stream.
    Call(Region),
    /// A malformed call was seen; the rest is ignored.
    Failed,
}

/// Splits streamed output into [`Piece`]s. Text that may still turn out to be (the start of)
/// a call is held back until that is decided.
#[derive(Clone, Debug)]
pub struct ToolParser {
    format: ToolFormat,
    state: State,
    /// Text pushed but not yet emitted or consumed. In `Call`, starts at the call's opening.
    buf: String,
    /// Bytes pushed before `buf` begins.
    offset: usize,
    error: Option<ParseError>,
    calls: usize,
}

/// The longest fence info line (```` ```json ````) looked at before deciding a fence is code.
const MAX_FENCE_LINE: usize = 16;

impl ToolParser {
    pub fn new(format: ToolFormat) -> Self {
        Self {
            format,
            state: State::Start { after_call: false },
            buf: String::new(),
            offset: 0,
            error: None,
            calls: 0,
        }
    }

    /// Whether the parser is inside a call right now.
    pub fn in_call(&self) -> bool {
        matches!(self.state, State::Call(_))
    }

    /// Byte offset (in everything pushed so far) where the current call began.
    pub fn call_start(&self) -> Option<usize> {
        self.in_call().then_some(self.offset)
    }

    /// Whether the current call has opened: its tag, or (at the start of the answer or after
    /// a call) a JSON object, bare, in an array or in a fence. A `[` or a fence alone is not
    /// yet an opening: Markdown links and code blocks start that way.
    pub fn call_opened(&self) -> bool {
        match self.state {
            State::Call(Region::Tag) => true,
            State::Call(_) => object_opened(&self.buf),
            _ => false,
        }
    }

    /// Whether the call that has opened, `opening` being what was written of it (from
    /// [`ToolParser::call_start`]; it may run ahead of the text pushed, by the bytes of a
    /// character not yet complete), is so far a call and not JSON text: opened by the
    /// family's tag, or an object whose first key is (or may still become) a call's.
    pub fn opening_is_call(&self, opening: &str) -> bool {
        match self.state {
            State::Call(Region::Tag) => tag_body_may_be_call(self.format, opening),
            State::Call(_) => may_be_call(opening),
            _ => false,
        }
    }

    /// Whether a call opened by the family's tag turned out malformed (the output has failed).
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }

    /// Number of calls parsed so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Adds generated text; returns what is decided.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        if self.state == State::Failed {
            return out;
        }
        self.buf.push_str(text);
        while self.step(&mut out, false) {}
        out
    }

    /// Ends the text: held-back text is answer text, an unfinished call is an error.
    pub fn finish(mut self) -> Result<Vec<Piece>, ParseError> {
        let mut out = Vec::new();
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        while self.step(&mut out, true) {}
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        match self.state {
            State::Call(Region::Tag) => Err(ParseError::Truncated),
            State::Call(_) if call_shaped(&self.buf) => Err(ParseError::Truncated),
            State::Call(_) => {
                out.push(Piece::Content(std::mem::take(&mut self.buf)));
                Ok(out)
            }
            _ => {
                if !self.buf.is_empty() && self.state == State::Text {
                    out.push(Piece::Content(std::mem::take(&mut self.buf)));
                }
                Ok(out)
            }
        }
    }

    fn emit(&mut self, out: &mut Vec<Piece>, n: usize) {
        if n == 0 {
            return;
        }
        let text: String = self.buf.drain(..n).collect();
        self.offset += n;
        match out.last_mut() {
            Some(Piece::Content(c)) => c.push_str(&text),
            _ => out.push(Piece::Content(text)),
        }
    }

    fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
        self.offset += n;
    }

    /// One transition. Returns whether to go on.
    fn step(&mut self, out: &mut Vec<Piece>, end: bool) -> bool {
        match self.state {
            State::Failed => false,
            State::Start { after_call } => self.step_start(end, after_call),
            State::Text => self.step_text(out, end),
            State::Call(region) => self.step_call(out, end, region),
        }
    }

    fn step_start(&mut self, end: bool, after_call: bool) -> bool {
        let ws = self.buf.len() - self.buf.trim_start().len();
        let t = &self.buf[ws..];
        // `;` separates Llama 3 calls.
        if after_call && t.starts_with(';') {
            self.consume(ws + 1);
            return true;
        }
        if t.is_empty() {
            if end && !after_call {
                // An all-whitespace answer stays what it is.
                self.state = State::Text;
                return true;
            }
            return false;
        }
        let tag = self.format.open_tag();
        if let Some(tag) = tag {
            if t.starts_with(tag) {
                self.consume(ws);
                self.state = State::Call(Region::Tag);
                return true;
            }
            if tag.starts_with(t) && !end {
                return false;
            }
        }
        if t.starts_with('{') || t.starts_with('[') {
            self.consume(ws);
            self.state = State::Call(Region::Bare);
            return true;
        }
        if t.starts_with("```") {
            match t.find('\n') {
                Some(nl) if call_fence(&t[3..nl]) => {
                    self.consume(ws);
                    self.state = State::Call(Region::Fenced);
                    return true;
                }
                Some(_) => {}
                None if t.len() < MAX_FENCE_LINE && !end => return false,
                None => {}
            }
        } else if "```".starts_with(t) && !end {
            return false;
        }
        // Answer text. Whitespace between calls is dropped; before the first, it is text.
        if after_call {
            self.consume(ws);
        }
        self.state = State::Text;
        true
    }

    fn step_text(&mut self, out: &mut Vec<Piece>, end: bool) -> bool {
        let Some(tag) = self.format.open_tag() else {
            let n = self.buf.len();
            self.emit(out, n);
            return false;
        };
        if let Some(i) = self.buf.find(tag) {
            self.emit(out, i);
            self.state = State::Call(Region::Tag);
            return true;
        }
        // Hold back a suffix that could be the start of the tag.
        let keep = if end {
            0
        } else {
            (1..tag.len().min(self.buf.len() + 1))
                .rev()
                .find(|&k| {
                    self.buf.is_char_boundary(self.buf.len() - k)
                        && tag.starts_with(&self.buf[self.buf.len() - k..])
                })
                .unwrap_or(0)
        };
        let n = self.buf.len() - keep;
        self.emit(out, n);
        false
    }

    fn step_call(&mut self, out: &mut Vec<Piece>, end: bool, region: Region) -> bool {
        let scanned = match region {
            Region::Tag => self.scan_tag(end),
            Region::Bare => scan_json(&self.buf, 0),
            Region::Fenced => self.scan_fence(end),
        };
        match scanned {
            Scan::Pending => false,
            Scan::Done(value, used) => match calls_of(value) {
                Some(calls) => {
                    self.consume(used);
                    self.calls += calls.len();
                    out.extend(calls.into_iter().map(Piece::Call));
                    self.state = State::Start { after_call: true };
                    true
                }
                None => self.not_a_call(
                    out,
                    region,
                    "the JSON is not a {\"name\", \"arguments\"} call",
                    used,
                ),
            },
            Scan::Invalid(why, span) => self.not_a_call(out, region, &why, span),
        }
    }

    /// A region that turned out not to be a call: an error after a tag; otherwise its first
    /// `span` bytes are answer text and the rest is scanned as text.
    fn not_a_call(&mut self, out: &mut Vec<Piece>, region: Region, why: &str, span: usize) -> bool {
        if region == Region::Tag {
            self.error = Some(ParseError::Malformed(why.to_string()));
            self.state = State::Failed;
            return false;
        }
        let mut n = span.clamp(1, self.buf.len());
        while !self.buf.is_char_boundary(n) {
            n += 1;
        }
        self.emit(out, n);
        self.state = State::Text;
        true
    }

    fn scan_tag(&self, end: bool) -> Scan {
        let tag = self.format.open_tag().unwrap_or_default();
        let after = &self.buf[tag.len()..];
        let ws = after.len() - after.trim_start().len();
        let body_at = tag.len() + ws;
        let body = &self.buf[body_at..];
        if body.is_empty() {
            return Scan::Pending;
        }
        if self.format == ToolFormat::Mistral && !body.starts_with(['[', '{']) {
            return self.scan_mistral_named(body_at, end);
        }
        let (value, n) = match scan_json(&self.buf, body_at) {
            Scan::Done(v, n) => (v, n),
            other => return other,
        };
        let mut used = body_at + n;
        if let Some(close) = self.format.close_tag() {
            let rest = &self.buf[used..];
            let ws = rest.len() - rest.trim_start().len();
            let r = &rest[ws..];
            if r.starts_with(close) {
                used += ws + close.len();
            } else if close.starts_with(r) && !end {
                return Scan::Pending;
            }
            // A missing close tag is forgiven: the call itself is complete.
        }
        Scan::Done(value, used)
    }

    /// `[TOOL_CALLS]name[ARGS]{...}`.
    fn scan_mistral_named(&self, body_at: usize, end: bool) -> Scan {
        const ARGS: &str = "[ARGS]";
        let body = &self.buf[body_at..];
        let Some(i) = body.find(ARGS) else {
            let looks_like_name = body
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '[');
            return if looks_like_name && !end && body.len() < 80 {
                Scan::Pending
            } else {
                Scan::Invalid(
                    "expected [ARGS] after the function name".into(),
                    self.buf.len(),
                )
            };
        };
        let name = body[..i].trim().to_string();
        match scan_json(&self.buf, body_at + i + ARGS.len()) {
            Scan::Done(args, n) => Scan::Done(
                Value::Object(Map::from_iter([
                    ("name".to_string(), Value::String(name)),
                    ("arguments".to_string(), args),
                ])),
                body_at + i + ARGS.len() + n,
            ),
            other => other,
        }
    }

    /// A fence holding one or more JSON values (one call per line, or an array).
    fn scan_fence(&self, end: bool) -> Scan {
        let Some(nl) = self.buf.find('\n') else {
            return Scan::Pending;
        };
        let mut values = Vec::new();
        let mut at = nl + 1;
        loop {
            let rest = &self.buf[at..];
            let r = rest.trim_start();
            at += rest.len() - r.len();
            if r.starts_with("```") {
                if values.is_empty() {
                    return Scan::Invalid("the fence holds no JSON".into(), at + 3);
                }
                let items = values
                    .into_iter()
                    .flat_map(|v| match v {
                        Value::Array(items) => items,
                        v => vec![v],
                    })
                    .collect();
                return Scan::Done(Value::Array(items), at + 3);
            }
            if r.is_empty() || ("```".starts_with(r) && !values.is_empty()) {
                return if end {
                    Scan::Invalid("the fence is not closed".into(), self.buf.len())
                } else {
                    Scan::Pending
                };
            }
            if !r.starts_with(['{', '[']) {
                return Scan::Invalid("the fence holds something other than JSON".into(), at);
            }
            match scan_json(&self.buf, at) {
                Scan::Done(v, n) => {
                    values.push(v);
                    at += n;
                }
                other => return other,
            }
        }
    }
}
