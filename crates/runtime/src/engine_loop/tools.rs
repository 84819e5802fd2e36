//! A sequence's tool calls on the engine thread: the streaming parser over its output, the
//! lazy grammar started when a call opens, and the checks each call must pass.

use peregrine_engine::TokenId;
use peregrine_grammar::Constraint;
use peregrine_text::tools::{ParseError, ParsedCall, Piece, ToolParser};

use crate::request::{ToolPlan, FAILED_CALL};

/// A sequence's view of its own calls (engine thread).
pub(crate) struct ToolState {
    pub plan: ToolPlan,
    parser: ToolParser,
    /// Every generated token with the byte offset where its text begins.
    tokens: Vec<(TokenId, usize)>,
    bytes: Vec<u8>,
    /// The text the parser saw: the `failed_generation` of a rejection.
    pub text: String,
    pub calls: usize,
    /// Calls made so far, as (name, arguments).
    seen: Vec<(String, String)>,
    /// The model repeated a call of this turn word for word: a small model's loop. The
    /// repeat is dropped and the turn ends there.
    pub repeated: bool,
}

/// What one step of the parser yields.
pub(crate) enum ToolOutput {
    Content(String),
    Call { name: String, arguments: String },
}

impl ToolState {
    pub fn new(plan: ToolPlan) -> Self {
        Self {
            parser: ToolParser::new(plan.format),
            plan,
            tokens: Vec::new(),
            bytes: Vec::new(),
            text: String::new(),
            calls: 0,
            seen: Vec::new(),
            repeated: false,
        }
    }

    /// The text of a control token that is part of the call syntax.
    pub fn marker_text(&self, tok: TokenId) -> Option<&str> {
        super::marker_text(&self.plan.markers, tok)
    }

    /// Records a generated token and its bytes (before detokenization and stop matching).
    pub fn record(&mut self, tok: TokenId, bytes: &[u8]) {
        self.tokens.push((tok, self.bytes.len()));
        self.bytes.extend_from_slice(bytes);
    }

    /// Feeds text released by the stop matcher. Returns the pieces, or Groq's message when a
    /// call is refused. When a call has just opened and `constraint` is empty, the lazy
    /// grammar is started there.
    pub fn push(
        &mut self,
        text: &str,
        constraint: &mut Option<Constraint>,
    ) -> Result<Vec<ToolOutput>, String> {
        self.text.push_str(text);
        let pieces = self.parser.push(text);
        if self.parser.failed() {
            // A tagged call that is not a call: no point generating further.
            return Err(FAILED_CALL.to_string());
        }
        if constraint.is_none() && self.plan.lazy.is_some() && self.parser.call_opened() {
            if let Some(start) = self.parser.call_start() {
                match self.start_lazy(start) {
                    Some(c) => *constraint = Some(c),
                    // A call the grammar cannot take from here would go on unconstrained
                    // and fail at its end anyway: it fails now, with what was written.
                    None if self.opening_is_call(start) => return Err(FAILED_CALL.to_string()),
                    // JSON text (`{"answer": ...}`): an answer, not a call.
                    None => {}
                }
            }
        }
        self.convert(pieces)
    }

    /// A call the model wrote in its reasoning syntax's own form (Harmony's
    /// `to=functions.NAME`): checked like any other.
    pub fn push_call(&mut self, name: String, arguments: &str) -> Result<Vec<ToolOutput>, String> {
        self.text.push_str(arguments);
        let arguments = match serde_json::from_str::<serde_json::Value>(arguments) {
            Ok(v) if v.is_object() => v,
            _ => return Err(FAILED_CALL.to_string()),
        };
        self.convert(vec![Piece::Call(ParsedCall { name, arguments })])
    }

    /// Ends the output: what the parser held back, and the final checks. `length`: the
    /// output was cut by `max_tokens` or the context; a call it cut short after complete ones
    /// is dropped (the finish reason says `length`), a first call cut short is a failure.
    pub fn finish(&mut self, length: bool) -> Result<Vec<ToolOutput>, String> {
        let parser = std::mem::replace(&mut self.parser, ToolParser::new(self.plan.format));
        let pieces = match parser.finish() {
            Ok(p) => p,
            Err(ParseError::Truncated) if length && self.calls > 0 => Vec::new(),
            Err(ParseError::Truncated | ParseError::Malformed(_)) => {
                return Err(FAILED_CALL.to_string())
            }
        };
        let out = self.convert(pieces)?;
        if self.plan.forced && self.calls == 0 {
            return Err("Tool choice is required, but model did not call a tool".into());
        }
        Ok(out)
    }

    fn convert(&mut self, pieces: Vec<Piece>) -> Result<Vec<ToolOutput>, String> {
        let mut out = Vec::with_capacity(pieces.len());
        if self.repeated {
            return Ok(out);
        }
        for p in pieces {
            match p {
                Piece::Content(c) => out.push(ToolOutput::Content(c)),
                Piece::Call(call) => {
                    let arguments = call.arguments.to_string();
                    if self
                        .seen
                        .iter()
                        .any(|(n, a)| *n == call.name && *a == arguments)
                    {
                        self.repeated = true;
                        break;
                    }
                    if !self.plan.parallel && self.calls >= 1 {
                        return Err("Tool call validation failed: the model called more than one tool, but parallel_tool_calls is false".into());
                    }
                    if let Some(check) = &self.plan.check {
                        check.check(&call)?;
                    }
                    self.calls += 1;
                    self.seen.push((call.name.clone(), arguments.clone()));
                    out.push(ToolOutput::Call {
                        name: call.name,
                        arguments,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Whether what was written from byte `start` on is a call's opening (not JSON text).
    fn opening_is_call(&self, start: usize) -> bool {
        let written = String::from_utf8_lossy(self.bytes.get(start..).unwrap_or_default());
        self.parser.opening_is_call(&written)
    }

    /// Starts the lazy grammar at byte `start` of the output: the part of the token that
    /// straddles `start`, then every later token. `None` when what was written is not the
    /// opening of a call the grammar knows (the parser then decides alone).
    fn start_lazy(&mut self, start: usize) -> Option<Constraint> {
        // Offsets into the text the parser saw are offsets into the token bytes only while
        // that text is the bytes verbatim (invalid UTF-8 is replaced in the text).
        if self.bytes.get(..start)? != self.text.as_bytes().get(..start)? {
            self.plan.lazy = None;
            return None;
        }
        let mut c = self.plan.lazy.take()?;
        let i = self
            .tokens
            .iter()
            .rposition(|&(_, at)| at <= start)
            .unwrap_or(0);
        let (first_tok, first_at) = self.tokens.get(i).copied()?;
        let first_end = self.tokens.get(i + 1).map_or(self.bytes.len(), |t| t.1);
        let rest: Vec<TokenId> = self.tokens[i + 1..].iter().map(|t| t.0).collect();
        let result = if first_at == start {
            let mut all = vec![first_tok];
            all.extend(rest);
            c.feed(&[], &all)
        } else {
            c.feed(self.bytes.get(start..first_end)?, &rest)
        };
        match result {
            Ok(()) => Some(c),
            Err(e) => {
                tracing::debug!(error = %e, "a call opened that the grammar does not accept");
                None
            }
        }
    }
}
