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

use serde_json::{Map, Value};

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
            State::Call(_) => Err(ParseError::Truncated),
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
                Some(nl) => {
                    let lang = t[3..nl].trim();
                    if lang.is_empty() || lang.eq_ignore_ascii_case("json") || lang == "tool_call" {
                        self.consume(ws);
                        self.state = State::Call(Region::Fenced);
                        return true;
                    }
                }
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
                ),
            },
            Scan::Invalid(why) => self.not_a_call(out, region, &why),
        }
    }

    /// A region that turned out not to be a call: an error after a tag, answer text otherwise.
    fn not_a_call(&mut self, out: &mut Vec<Piece>, region: Region, why: &str) -> bool {
        if region == Region::Tag {
            self.error = Some(ParseError::Malformed(why.to_string()));
            self.state = State::Failed;
            return false;
        }
        let n = self.buf.len();
        self.emit(out, n);
        self.state = State::Text;
        false
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
                Scan::Invalid("expected [ARGS] after the function name".into())
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
                    return Scan::Invalid("the fence holds no JSON".into());
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
                    Scan::Invalid("the fence is not closed".into())
                } else {
                    Scan::Pending
                };
            }
            if !r.starts_with(['{', '[']) {
                return Scan::Invalid("the fence holds something other than JSON".into());
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

enum Scan {
    /// Not decided yet: more text is needed.
    Pending,
    /// A complete JSON value and the bytes of `buf` it (and its syntax) used.
    Done(Value, usize),
    Invalid(String),
}

/// Scans the JSON object or array starting at `buf[at]`; `Done` carries the value and the
/// length of its text.
fn scan_json(buf: &str, at: usize) -> Scan {
    let bytes = &buf.as_bytes()[at..];
    match bytes.first() {
        None => return Scan::Pending,
        Some(b'{' | b'[') => {}
        Some(_) => return Scan::Invalid("expected a JSON object".into()),
    }
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate() {
        if in_str {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    let text = &buf[at..at + i + 1];
                    return match serde_json::from_str(text) {
                        Ok(v) => Scan::Done(v, i + 1),
                        Err(e) => Scan::Invalid(format!("invalid JSON: {e}")),
                    };
                }
            }
            _ => {}
        }
    }
    Scan::Pending
}

/// The calls a JSON value describes: `{"name", "arguments"|"parameters"}` or a non-empty
/// array of those. Arguments given as a JSON-encoded string are decoded.
fn calls_of(value: Value) -> Option<Vec<ParsedCall>> {
    match value {
        Value::Array(items) if !items.is_empty() => items.into_iter().map(call_of).collect(),
        v @ Value::Object(_) => Some(vec![call_of(v)?]),
        _ => None,
    }
}

fn call_of(value: Value) -> Option<ParsedCall> {
    let Value::Object(mut obj) = value else {
        return None;
    };
    // `{"type": "function", "function": {...}}` (OpenAI's own shape) is accepted too.
    if let Some(Value::Object(f)) = obj.remove("function") {
        return call_of(Value::Object(f));
    }
    let name = match obj.remove("name")? {
        Value::String(s) if !s.is_empty() => s,
        _ => return None,
    };
    let args = obj
        .remove("arguments")
        .or_else(|| obj.remove("parameters"))
        .unwrap_or_else(|| Value::Object(Map::new()));
    let arguments = match args {
        Value::Object(_) => args,
        Value::Null => Value::Object(Map::new()),
        Value::String(s) => match serde_json::from_str::<Value>(&s) {
            Ok(v @ Value::Object(_)) => v,
            _ => return None,
        },
        _ => return None,
    };
    // Anything else besides `type`/`id` means this is some other JSON, not a call.
    if obj.keys().any(|k| k != "type" && k != "id") {
        return None;
    }
    Some(ParsedCall { name, arguments })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
            ToolFormat::detect(include_str!("../tests/fixtures/qwen2.5-instruct.jinja")),
            ToolFormat::Hermes
        );
        assert_eq!(
            ToolFormat::detect(include_str!("../tests/fixtures/llama-3.2-instruct.jinja")),
            ToolFormat::Llama3
        );
        assert_eq!(
            ToolFormat::detect(include_str!("../tests/fixtures/smollm2.jinja")),
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
            let array =
                r#"[{"name": "a", "arguments": {}}, {"name": "b", "arguments": "{\"y\": 2}"}]"#;
            assert_eq!(
                parse_all(f, &[array]).unwrap(),
                vec![call("a", json!({})), call("b", json!({"y": 2}))]
            );
        }
    }

    #[test]
    fn llama3_and_mistral_syntax() {
        let t = r#"<|python_tag|>{"name": "a", "parameters": {"q": 1}}; {"name": "b", "parameters": {}}"#;
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
        let t = "```json\n{\"name\": \"a\", \"arguments\": {}}\n{\"name\": \"b\", \"arguments\": {}}\n```";
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
}
