//! Validation of a batch's input file: every line is a JSON object with a unique
//! `custom_id`, `method` POST, the chat-completions `url`, and a `body` that parses as a chat
//! request for a served model. Errors are line-numbered, in the Batch object's `errors` form.

use std::collections::HashMap;

use peregrine_protocol::batches::BatchError;
use peregrine_protocol::parse::parse_chat_request;
use peregrine_store::NewLine;
use serde_json::Value;

use crate::batches::ENDPOINT;
use crate::error::ServiceError;
use crate::registry::ModelRegistry;

/// Most validation errors reported for one file.
pub const MAX_ERRORS: usize = 1000;

fn line_error(line: i64, code: &str, message: String, param: Option<&str>) -> BatchError {
    BatchError {
        code: code.into(),
        message,
        param: param.map(str::to_string),
        line: Some(line),
    }
}

/// Checks every line of the input file. Returns the lines to run, or the errors.
/// `org` is the batch's organization: its fine-tuned models resolve, no other's.
pub fn check_lines(
    registry: &ModelRegistry,
    org: &str,
    text: &str,
) -> Result<Vec<NewLine>, Vec<BatchError>> {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, i64> = HashMap::new();
    for (i, raw) in text.split('\n').enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        if errors.len() >= MAX_ERRORS {
            break;
        }
        match check_line(registry, org, i as i64 + 1, raw, &mut seen) {
            Ok(line) => lines.push(line),
            Err(e) => errors.push(e),
        }
    }
    if lines.is_empty() && errors.is_empty() {
        errors.push(line_error(
            1,
            "empty_file",
            "The input file has no requests.".into(),
            None,
        ));
    }
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(errors)
    }
}

/// Line `n`: its envelope, then its body. `seen` maps each `custom_id` to its first line.
fn check_line(
    registry: &ModelRegistry,
    org: &str,
    n: i64,
    raw: &str,
    seen: &mut HashMap<String, i64>,
) -> Result<NewLine, BatchError> {
    let v = parse_object(n, raw)?;
    let custom_id = custom_id(n, &v, seen)?;
    check_method_and_url(n, &v)?;
    let Some(body @ Value::Object(_)) = v.get("body") else {
        return Err(line_error(
            n,
            "missing_required_parameter",
            "`body` is required and must be a JSON object.".into(),
            Some("body"),
        ));
    };
    let body = body.to_string();
    check_body(registry, org, n, &body)?;
    Ok(NewLine {
        line_no: n,
        custom_id,
        body,
    })
}

fn parse_object(n: i64, raw: &str) -> Result<Value, BatchError> {
    let invalid = |message| line_error(n, "invalid_json_line", message, None);
    match serde_json::from_str(raw) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(invalid("The line is not a JSON object.".into())),
        Err(e) => Err(invalid(format!("The line is not valid JSON: {e}"))),
    }
}

/// The line's `custom_id`, new to this file.
fn custom_id(n: i64, v: &Value, seen: &mut HashMap<String, i64>) -> Result<String, BatchError> {
    let id = match v.get("custom_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return Err(line_error(
                n,
                "missing_required_parameter",
                "`custom_id` is required and must be a non-empty string.".into(),
                Some("custom_id"),
            ))
        }
    };
    if let Some(first) = seen.get(&id) {
        return Err(line_error(
            n,
            "duplicate_custom_id",
            format!(
                "The custom_id '{id}' is already used on line {first}; custom_id values must be unique within a batch."
            ),
            Some("custom_id"),
        ));
    }
    seen.insert(id.clone(), n);
    Ok(id)
}

fn check_method_and_url(n: i64, v: &Value) -> Result<(), BatchError> {
    let method = v.get("method").and_then(Value::as_str).unwrap_or("");
    if method != "POST" {
        return Err(line_error(
            n,
            "invalid_method",
            format!("Invalid value: '{method}'. Supported values are: 'POST'"),
            Some("method"),
        ));
    }
    let url = v.get("url").and_then(Value::as_str).unwrap_or("");
    if url != ENDPOINT {
        return Err(line_error(
            n,
            "invalid_url",
            format!("Invalid value: '{url}'. Supported values are: '{ENDPOINT}'"),
            Some("url"),
        ));
    }
    Ok(())
}

/// The body parses as a non-streaming chat request for a served model. (The rest of its
/// checks run with the line, so their errors land in the error file like the live 400s.)
fn check_body(registry: &ModelRegistry, org: &str, n: i64, body: &str) -> Result<(), BatchError> {
    let req = parse_chat_request(body.as_bytes())
        .map_err(|e| line_error(n, "invalid_request", e.message(), Some("body")))?;
    if req.stream == Some(true) {
        return Err(line_error(
            n,
            "invalid_request",
            "`stream` is not supported in batch requests.".into(),
            Some("body.stream"),
        ));
    }
    if registry.resolve(&req.model, org).is_none() {
        return Err(line_error(
            n,
            "model_not_found",
            ServiceError::ModelNotFound(req.model.clone()).to_string(),
            Some("body.model"),
        ));
    }
    Ok(())
}
