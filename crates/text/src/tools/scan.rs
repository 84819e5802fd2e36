//! JSON scanning for the tool-call parser: where a streamed JSON value ends, and whether
//! a value (or the start of one) is a call.

use serde_json::{Map, Value};

use super::{ParsedCall, ToolFormat};

pub(super) enum Scan {
    /// Not decided yet: more text is needed.
    Pending,
    /// A complete JSON value and the bytes of `buf` it (and its syntax) used.
    Done(Value, usize),
    /// Not a call; the first `.1` bytes of `buf` are decided (answer text, outside a tag).
    Invalid(String, usize),
}

/// JSON's whitespace: what may stand between a fence line, `[` and `{` of a call (the call
/// grammar allows the same there).
fn trim_json_ws(t: &str) -> &str {
    t.trim_start_matches([' ', '\t', '\r', '\n'])
}

/// A fence's info string without the blanks around it (the call grammar's reading too).
fn fence_lang(info: &str) -> &str {
    info.trim_matches([' ', '\t', '\r'])
}

/// Whether a fence with this info string (between ```` ``` ```` and the line break) may hold
/// calls: `json` in any case, `tool_call`, or none.
pub(super) fn call_fence(info: &str) -> bool {
    let lang = fence_lang(info);
    lang.is_empty() || lang.eq_ignore_ascii_case("json") || lang == "tool_call"
}

/// What follows the `{` that opens the object of a bare or fenced region (inside a fence
/// line and a `[`, whitespace skipped); `None` before that `{` shows.
fn object_body(text: &str) -> Option<&str> {
    let mut t = text.trim_start();
    if t.starts_with("```") {
        t = &t[t.find('\n')? + 1..];
    }
    t = trim_json_ws(t);
    if let Some(r) = t.strip_prefix('[') {
        t = trim_json_ws(r);
    }
    t.strip_prefix('{')
}

/// Whether a bare or fenced region has opened an object, or a ```` ```json ```` fence: at the
/// start of an answer, under `tool_choice: auto`, that is a call's opening (the lazy grammar
/// starts there, before the model picks how to lay the object out).
pub(super) fn object_opened(text: &str) -> bool {
    let t = text.trim_start();
    let json_fence = t
        .strip_prefix("```")
        .and_then(|r| r.split_once('\n'))
        .is_some_and(|(lang, _)| fence_lang(lang).eq_ignore_ascii_case("json"));
    json_fence || object_body(text).is_some()
}

/// A call's first key: `"name"`, or `"function"` of OpenAI's own shape.
const CALL_KEYS: [&str; 2] = ["\"name\"", "\"function\""];

/// Whether a bare or fenced region shows a call's first key: cut short, it is a truncated
/// call rather than text.
pub(super) fn call_shaped(text: &str) -> bool {
    object_body(text).is_some_and(|r| {
        let r = trim_json_ws(r);
        CALL_KEYS.iter().any(|k| r.starts_with(k))
    })
}

/// Whether a bare or fenced region is, so far, the opening of a call: a fence, a `[` with
/// nothing after it yet, or an object with nothing but whitespace or a call's first key (or
/// the start of one) written. `{"answer"` is not, nor `[]`: they are JSON text.
pub(super) fn may_be_call(text: &str) -> bool {
    let mut t = text.trim_start();
    if t.starts_with("```") {
        match t.find('\n') {
            Some(nl) => t = &t[nl + 1..],
            None => return true,
        }
    }
    t = trim_json_ws(t);
    if let Some(r) = t.strip_prefix('[') {
        t = trim_json_ws(r);
    }
    match t.strip_prefix('{') {
        Some(r) => {
            let r = trim_json_ws(r);
            CALL_KEYS
                .iter()
                .any(|k| r.starts_with(k) || k.starts_with(r))
        }
        None => t.is_empty(),
    }
}

/// Whether what was written of a call opened by the family's tag (`opening`, tag first)
/// may still be a call: whitespace, then the start of a call object or list (see
/// [`may_be_call`]), or Mistral's `name[ARGS]`. `<tool_call>{{` is not: it fails either way.
pub(super) fn tag_body_may_be_call(format: ToolFormat, opening: &str) -> bool {
    let tag = format.open_tag().unwrap_or_default();
    let body = trim_json_ws(opening.strip_prefix(tag).unwrap_or(opening));
    if body.is_empty() || body.starts_with(['{', '[']) {
        return may_be_call(body);
    }
    format == ToolFormat::Mistral
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '[' | ']'))
}

/// Scans the JSON object or array starting at `buf[at]`; `Done` carries the value and the
/// length of its text.
pub(super) fn scan_json(buf: &str, at: usize) -> Scan {
    let bytes = &buf.as_bytes()[at..];
    match bytes.first() {
        None => return Scan::Pending,
        Some(b'{' | b'[') => {}
        Some(_) => return Scan::Invalid("expected a JSON object".into(), at + 1),
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
                        Err(e) => Scan::Invalid(format!("invalid JSON: {e}"), at + i + 1),
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
pub(super) fn calls_of(value: Value) -> Option<Vec<ParsedCall>> {
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
