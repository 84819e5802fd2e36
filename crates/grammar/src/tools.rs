//! Grammars of tool calls: the family's call syntax with each tool's name and its arguments
//! constrained to the tool's `parameters` schema, as a Lark grammar for llguidance.

use std::sync::Arc;

use peregrine_engine::{TokenId, Vocab};
use peregrine_text::tools::ToolFormat;
use serde_json::{json, Value};

use crate::compile::json_options;

/// A tag of the call syntax: text, or a control token the model emits as one token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Marker {
    Text(String),
    Token { id: TokenId, text: String },
}

impl Marker {
    /// The marker's text as the tool parser sees it.
    pub fn text(&self) -> &str {
        match self {
            Marker::Text(t) | Marker::Token { text: t, .. } => t,
        }
    }

    fn lark(&self) -> String {
        match self {
            Marker::Text(t) => lark_str(t),
            Marker::Token { id, .. } => format!("<[{id}]>"),
        }
    }
}

/// A model's call syntax, with its tags resolved against the vocabulary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSyntax {
    pub format: ToolFormat,
    pub open: Option<Marker>,
    pub close: Option<Marker>,
    /// Tokens that would begin an answer with (the whitespace before) a call: text starting
    /// with `{`, `[` or a backtick, or only whitespace. Banned as the first token when calls
    /// are off (`tool_choice: none`), so the answer is text.
    pub openers: Arc<[TokenId]>,
}

impl CallSyntax {
    /// Resolves the family's tags: a tag the tokenizer keeps as one control token is matched
    /// as that token (its text never appears in the output otherwise).
    pub fn resolve(format: ToolFormat, vocab: &dyn Vocab) -> Self {
        let marker = |tag: &str| {
            let toks = vocab.tokenize(tag);
            match toks.as_slice() {
                [id] if vocab.token_bytes(*id).is_empty() && vocab.special_text(*id).is_some() => {
                    Marker::Token {
                        id: *id,
                        text: tag.to_string(),
                    }
                }
                _ => Marker::Text(tag.to_string()),
            }
        };
        let openers: Vec<TokenId> = (0..vocab.n_vocab() as TokenId)
            .filter(|&t| {
                let b = vocab.token_bytes(t);
                let start = b.iter().position(|c| !c.is_ascii_whitespace());
                !b.is_empty() && start.is_none_or(|i| matches!(b[i], b'{' | b'[' | b'`'))
            })
            .collect();
        Self {
            format,
            open: format.open_tag().map(marker),
            close: format.close_tag().map(marker),
            openers: openers.into(),
        }
    }

    /// Control tokens that must be shown to the tool parser as text.
    pub fn marker_tokens(&self) -> Vec<(TokenId, String)> {
        [&self.open, &self.close]
            .into_iter()
            .flatten()
            .filter_map(|m| match m {
                Marker::Token { id, text } => Some((*id, text.clone())),
                Marker::Text(_) => None,
            })
            .collect()
    }
}

/// A tool the grammar may call.
#[derive(Clone, Copy, Debug)]
pub struct ToolDef<'a> {
    pub name: &'a str,
    /// The `parameters` schema; `None` means any object.
    pub parameters: Option<&'a Value>,
}

/// What the grammar allows.
#[derive(Clone, Copy, Debug)]
pub struct CallGrammar<'a> {
    pub syntax: &'a CallSyntax,
    /// The tools that may be called (one for a named `tool_choice`).
    pub tools: &'a [ToolDef<'a>],
    /// Any function name with any object arguments (`disable_tool_validation`).
    pub any_name: bool,
    /// Several calls allowed.
    pub parallel: bool,
    /// `true`: the grammar starts at a call's opening that the model already wrote, in any
    /// form the parser accepts (`tool_choice: auto`); `false`: the model must call in its
    /// family's own syntax from the first token (`required` / named).
    pub lazy: bool,
}

/// A fence's first line as the tool parser reads it: an info string of `json` (any case),
/// `tool_call` or nothing, padded with blanks, then the line break.
const FENCE_LINE: &str = r"```[ \t]*([jJ][sS][oO][nN]|tool_call)?[ \t\r]*\n";

fn lark_str(s: &str) -> String {
    // JSON string syntax is Lark's string syntax.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn json_rule(schema: &Value) -> String {
    let mut s = schema.clone();
    if let Some(obj) = s.as_object_mut() {
        obj.insert("x-guidance".into(), json_options());
    }
    format!("%json {s}")
}

impl CallGrammar<'_> {
    /// The Lark source.
    pub fn lark(&self) -> String {
        let mut rules = self.call_rules();
        // Models often open the object on its own line (`{\n  "name"`, `{\r\n`): JSON
        // whitespace is allowed there, as long as one token of indentation can be (the
        // vocabularies have runs of 80 spaces), and bounded so that a constrained model
        // cannot loop on it; the rest of the call is compact.
        rules.push("OPEN_WS: /[ \\t\\r\\n]{1,128}/".into());
        let native = self.native_rule(&mut rules);
        let start = if self.lazy {
            // Also the forms a model writes instead of its own: bare JSON, a JSON array,
            // a fenced block. A lazy grammar is fed an opening the model wrote unconstrained,
            // so each accepts the layouts the tool parser takes as that opening: whitespace
            // inside `[`, a fence's info line as the parser reads it (```` ```json ````,
            // ```` ``` JSON ````, ```` ```tool_call ````, a CRLF), blank lines after it.
            rules.push(format!("bare: {}", self.many("call", "\n")));
            rules.push(format!(
                "array: \"[\" OPEN_WS? {} \"]\"",
                self.many("call", ", ")
            ));
            rules.push(format!("FENCE: /{FENCE_LINE}/"));
            rules.push("fenced: FENCE OPEN_WS? (bare | array) \"\\n```\"".into());
            format!("start: native | bare | array | fenced\nnative: {native}")
        } else {
            format!("start: {native}")
        };
        format!("{start}\n{}\n", rules.join("\n"))
    }

    /// `item`, or several separated by `sep` when parallel calls are allowed.
    fn many(&self, item: &str, sep: &str) -> String {
        if self.parallel {
            format!("{item} ({} {item})*", lark_str(sep))
        } else {
            item.to_string()
        }
    }

    /// `call` and its alternatives: one rule per tool (its name and argument schema), or
    /// any name with any object when calls are not checked. A lazy grammar also takes the
    /// call wrapped in OpenAI's `{"function": {...}}`, which the tool parser reads as a call.
    fn call_rules(&self) -> Vec<String> {
        let key = self.syntax.format.args_key();
        let mut rules = Vec::new();
        let mut alts = Vec::new();
        let mut named = Vec::new();
        if self.any_name {
            rules.push(format!(
                "call_any: \"{{\" OPEN_WS? \"\\\"name\\\": \" name_any \", \\\"{key}\\\": \" args_any \"}}\""
            ));
            rules.push(format!(
                "name_any: {}",
                json_rule(&json!({"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"}))
            ));
            rules.push(format!(
                "args_any: {}",
                json_rule(&json!({"type": "object"}))
            ));
            alts.push("call_any".to_string());
            named.push("NAME_RAW \"[ARGS]\" args_any".to_string());
        } else {
            for (i, t) in self.tools.iter().enumerate() {
                let head = lark_str(&format!("\"name\": {}, \"{key}\": ", lark_str(t.name)));
                rules.push(format!("call_{i}: \"{{\" OPEN_WS? {head} args_{i} \"}}\""));
                let schema = t
                    .parameters
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object"}));
                rules.push(format!("args_{i}: {}", json_rule(&schema)));
                alts.push(format!("call_{i}"));
                named.push(format!(
                    "{} args_{i}",
                    lark_str(&format!("{}[ARGS]", t.name))
                ));
            }
        }
        if self.lazy {
            rules.push(format!("one: {}", alts.join(" | ")));
            rules.push("wrapped: \"{\" OPEN_WS? \"\\\"function\\\": \" one \"}\"".into());
            rules.push("call: one | wrapped".into());
            if self.syntax.format == ToolFormat::Mistral {
                rules.push("NAME_RAW: /[a-zA-Z0-9_-]{1,64}/".into());
                rules.push(format!("named: {}", named.join(" | ")));
            }
        } else {
            rules.push(format!("call: {}", alts.join(" | ")));
        }
        rules
    }

    /// The model family's own call syntax around `call`. Lazily, the whitespace the tool
    /// parser skips after a tag is allowed there, and Mistral's tag may also open one call
    /// or the newer `name[ARGS]{...}` form.
    fn native_rule(&self, rules: &mut Vec<String>) -> String {
        let open = self.syntax.open.as_ref().map(Marker::lark);
        let close = self.syntax.close.as_ref().map(Marker::lark);
        let after_tag = if self.lazy { "OPEN_WS?" } else { "" };
        match self.syntax.format {
            ToolFormat::Hermes => {
                let (o, c) = (open.unwrap_or_default(), close.unwrap_or_default());
                let body = if self.lazy {
                    // The parser also reads a list of calls inside one tag.
                    let list = format!("\"[\" OPEN_WS? {} \"]\"", self.many("call", ", "));
                    format!("OPEN_WS? (call | {list})")
                } else {
                    "\"\\n\" call".to_string()
                };
                rules.push(format!("tagged: {o} {body} \"\\n\" {c}"));
                self.many("tagged", "\n")
            }
            ToolFormat::Mistral => {
                let o = open.unwrap_or_default();
                let list = format!("\"[\" {after_tag} {} \"]\"", self.many("call", ", "));
                if !self.lazy {
                    return format!("{o} {list}");
                }
                rules.push(format!("mistral: {o} OPEN_WS? ({list} | call | named)"));
                if self.parallel { "mistral+" } else { "mistral" }.to_string()
            }
            ToolFormat::Llama3 => {
                let calls = self.many("call", "; ");
                if self.lazy {
                    format!("{} {after_tag} {calls}", open.unwrap_or_default())
                } else {
                    calls
                }
            }
            ToolFormat::Json => self.many("call", "\n"),
        }
    }
}
