//! Groq's `strict: true` rules for `response_format.json_schema`: every object lists all of its
//! properties in `required` and sets `additionalProperties: false` (optional values are written
//! as unions with `null`). Checked before compilation, so a broken rule is a 400 naming the
//! path, never a silently looser answer.

use std::collections::HashSet;

use serde_json::Value;

/// Most missing property names listed in an error; the rest are counted.
const MAX_LISTED: usize = 10;

/// `a, b, c`, or the first [`MAX_LISTED`] and how many more.
fn listed(names: &[&str]) -> String {
    let shown = names[..names.len().min(MAX_LISTED)].join(", ");
    match names.len().saturating_sub(MAX_LISTED) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// A broken strict-mode rule, at a JSON pointer into the schema.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("strict mode: {reason} at `{path}`")]
pub struct StrictError {
    /// JSON pointer of the offending subschema (`#` is the root).
    pub path: String,
    pub reason: String,
}

/// Checks every subschema reachable through the structural keywords.
pub fn check(schema: &Value) -> Result<(), StrictError> {
    walk(schema, "#".to_string())
}

fn is_object_schema(obj: &serde_json::Map<String, Value>) -> bool {
    match obj.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => obj.contains_key("properties"),
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn walk(node: &Value, path: String) -> Result<(), StrictError> {
    let Some(obj) = node.as_object() else {
        return Ok(());
    };
    if is_object_schema(obj) {
        if obj.get("additionalProperties") != Some(&Value::Bool(false)) {
            return Err(StrictError {
                path,
                reason: "`additionalProperties` must be false on every object".into(),
            });
        }
        // A set: a schema may list many thousands of properties, and the check stays linear.
        let required: HashSet<&str> = obj
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            let missing: Vec<&str> = props
                .keys()
                .map(String::as_str)
                .filter(|k| !required.contains(k))
                .collect();
            if !missing.is_empty() {
                return Err(StrictError {
                    path,
                    reason: format!(
                        "every property must be in `required` (missing: {})",
                        listed(&missing)
                    ),
                });
            }
        }
    }
    for key in ["properties", "$defs", "definitions", "patternProperties"] {
        if let Some(map) = obj.get(key).and_then(Value::as_object) {
            for (k, v) in map {
                walk(v, format!("{path}/{key}/{}", escape(k)))?;
            }
        }
    }
    for key in ["items", "additionalProperties", "not", "if", "then", "else"] {
        if let Some(v) = obj.get(key) {
            match v {
                Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        walk(v, format!("{path}/{key}/{i}"))?;
                    }
                }
                v => walk(v, format!("{path}/{key}"))?,
            }
        }
    }
    for key in ["anyOf", "oneOf", "allOf", "prefixItems"] {
        if let Some(list) = obj.get(key).and_then(Value::as_array) {
            for (i, v) in list.iter().enumerate() {
                walk(v, format!("{path}/{key}/{i}"))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_a_strict_schema_with_defs_and_nullable_fields() {
        let s = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "nick": {"type": ["string", "null"]},
                "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}}
            },
            "required": ["name", "nick", "tags"],
            "additionalProperties": false,
            "$defs": {"tag": {"type": "object", "properties": {"v": {"type": "string"}},
                     "required": ["v"], "additionalProperties": false}}
        });
        assert_eq!(check(&s), Ok(()));
    }

    #[test]
    fn names_the_path_of_an_open_object() {
        let s = json!({
            "type": "object",
            "properties": {"address": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
            "required": ["address"],
            "additionalProperties": false
        });
        let e = check(&s).unwrap_err();
        assert_eq!(e.path, "#/properties/address");
        assert!(e.reason.contains("additionalProperties"));
    }

    #[test]
    fn names_missing_required_properties() {
        let s = json!({
            "type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "integer"}},
            "required": ["a"],
            "additionalProperties": false
        });
        let e = check(&s).unwrap_err();
        assert_eq!(e.path, "#");
        assert!(e.reason.contains("missing: b"), "{}", e.reason);
    }

    #[test]
    fn a_huge_object_is_checked_in_linear_time_with_a_short_error() {
        let n = 150_000;
        let props: serde_json::Map<String, Value> = (0..n)
            .map(|i| (format!("p{i}"), json!({"type": "integer"})))
            .collect();
        let required: Vec<Value> = (0..n - 20).map(|i| json!(format!("p{i}"))).collect();
        let s = json!({"type": "object", "properties": props, "required": required,
                       "additionalProperties": false});
        let e = check(&s).unwrap_err();
        assert!(e.reason.ends_with("and 10 more)"), "{}", e.reason);
        assert!(e.reason.len() < 300);
    }

    #[test]
    fn looks_inside_anyof_items_and_defs() {
        let s = json!({
            "type": "object",
            "properties": {"p": {"anyOf": [{"type": "object", "properties": {}, "additionalProperties": false},
                                           {"type": "array", "items": {"type": "object"}}]}},
            "required": ["p"],
            "additionalProperties": false
        });
        let e = check(&s).unwrap_err();
        assert_eq!(e.path, "#/properties/p/anyOf/1/items");
    }
}
