//! `executed_tools`: what a server-side tool ran for a message (docs/wire-contract.md,
//! "Built-in tools"), and compound's `usage_breakdown`.
//!
//! Field order is the order of Groq's documented examples; do not reorder.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::response::Usage;

/// One tool the server ran while answering (`message.executed_tools[]`, and streamed in
/// `delta.executed_tools` as each tool finishes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExecutedTool {
    /// The tool's function name (`"python"` for gpt-oss-style code execution); omitted when
    /// `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Position in `executed_tools`.
    pub index: u32,
    /// `"python"`, `"search"`, `"visit"`, `"wolfram"` on compound; `"function"` for
    /// gpt-oss-style built-in tools.
    #[serde(rename = "type")]
    pub kind: String,
    /// The call's arguments: JSON text on compound, the raw code for gpt-oss-style code
    /// execution.
    pub arguments: String,
    /// What the tool returned (printed text, page text, an error); omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Web search hits; `{"results": null}` for tools that do not search.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_results: Option<SearchResults>,
    /// Code execution results (text and figures); omitted when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_results: Option<Vec<CodeResult>>,
}

/// `executed_tools[].search_results`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchResults {
    /// The hits, best first; `null` (always written) for tools that do not search.
    #[serde(default)]
    #[schema(required = true)]
    pub results: Option<Vec<SearchResult>>,
}

/// One search hit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SearchResult {
    pub title: String,
    pub url: String,
    /// The matching passage.
    pub content: String,
    /// Relevance, higher is better.
    pub score: f64,
}

/// One result of a code execution: printed text, or a figure as base64 PNG.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CodeResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Base64 PNG of a figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub png: Option<String>,
}

/// Compound's `usage_breakdown`: usage per underlying model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageBreakdown {
    pub models: Vec<ModelUsage>,
}

/// One entry of [`UsageBreakdown::models`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelUsage {
    pub model: String,
    pub usage: Usage,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt_oss_code_execution_matches_the_docs_example() {
        // Groq's docs (code execution, gpt-oss): keys in this order.
        let t = ExecutedTool {
            name: Some("python".into()),
            index: 0,
            kind: "function".into(),
            arguments: "import math\nmath.sqrt(12345)\n".into(),
            output: None,
            search_results: Some(SearchResults { results: None }),
            code_results: Some(vec![CodeResult {
                text: Some("111.1080555135405".into()),
                png: None,
            }]),
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"name":"python","index":0,"type":"function","arguments":"import math\nmath.sqrt(12345)\n","search_results":{"results":null},"code_results":[{"text":"111.1080555135405"}]}"#
        );
    }

    #[test]
    fn compound_search_matches_the_docs_example() {
        let t = ExecutedTool {
            index: 1,
            kind: "search".into(),
            arguments: r#"{"query":"ai"}"#.into(),
            output: Some("Title: x".into()),
            search_results: Some(SearchResults {
                results: Some(vec![SearchResult {
                    title: "x".into(),
                    url: "https://example.com/".into(),
                    content: "c".into(),
                    score: 0.8091708,
                }]),
            }),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"index":1,"type":"search","arguments":"{\"query\":\"ai\"}","output":"Title: x","search_results":{"results":[{"title":"x","url":"https://example.com/","content":"c","score":0.8091708}]}}"#
        );
    }
}
