//! `response_format`: the grammar the output must follow, and what the model is told about
//! it (added to the prompt by [`super::prompt`] when the conversation does not already say it).

use peregrine_grammar::{strict, GrammarSpec};
use peregrine_protocol::chat::{JsonSchemaFormat, ResponseFormat};
use serde_json::Value;

use super::{valid_name, PrepareError};

/// A `response_format` that constrains the output, resolved.
pub(super) struct OutputFormat {
    pub spec: GrammarSpec,
    /// What the model is told when the prompt does not already say it.
    pub instruction: String,
    /// Text whose presence in the prompt means the model was already told.
    pub markers: Vec<String>,
}

pub(super) fn output_format(
    format: Option<&ResponseFormat>,
) -> Result<Option<OutputFormat>, PrepareError> {
    match format {
        None | Some(ResponseFormat::Text) => Ok(None),
        Some(ResponseFormat::JsonObject) => Ok(Some(OutputFormat {
            spec: GrammarSpec::JsonObject,
            instruction: "Respond with a single JSON object and nothing else.".into(),
            markers: vec!["json".into()],
        })),
        Some(ResponseFormat::JsonSchema { json_schema: f }) => json_schema_format(f).map(Some),
    }
}

fn json_schema_format(f: &JsonSchemaFormat) -> Result<OutputFormat, PrepareError> {
    if !valid_name(&f.name) {
        return Err(PrepareError::SchemaName(f.name.clone()));
    }
    let schema = match &f.schema {
        Some(s @ Value::Object(_)) => s.clone(),
        Some(_) => return Err(PrepareError::SchemaNotObject),
        None => return Err(PrepareError::SchemaMissing),
    };
    if f.strict == Some(true) {
        strict::check(&schema).map_err(PrepareError::SchemaStrict)?;
    }
    // The schema counts as mentioned when every top-level property name appears quoted in
    // the prompt (a pasted schema or example); otherwise the model is shown the schema, as
    // Groq's docs advise.
    let markers: Vec<String> = schema
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().map(|k| format!("\"{k}\"")).collect())
        .filter(|m: &Vec<String>| !m.is_empty())
        .unwrap_or_else(|| vec![schema.to_string()]);
    let about = match &f.description {
        Some(d) if !d.is_empty() => format!(" ({d})"),
        _ => String::new(),
    };
    let instruction = format!(
        "Respond with a single JSON value and nothing else. It must match the JSON Schema `{}`{about}:\n{}",
        f.name, schema
    );
    Ok(OutputFormat {
        spec: GrammarSpec::JsonSchema(schema),
        instruction,
        markers,
    })
}

#[cfg(test)]
mod tests {
    use super::super::valid_name;

    #[test]
    fn schema_names_are_checked() {
        assert!(valid_name("product_review-2"));
        assert!(!valid_name(""));
        assert!(!valid_name("has space"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
