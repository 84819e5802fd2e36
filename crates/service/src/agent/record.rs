//! The records of a run: its transcript line and its `executed_tools` entry, in the shapes
//! of Groq's documented examples.

use peregrine_protocol::chat::{CodeResult, ExecutedTool, SearchResult, SearchResults};
use peregrine_tools::{ToolId, ToolRun};
use serde_json::Value;

use super::plan::function_name;
use super::Style;

/// How a call shows in the transcript: the code itself for Python, the query or URL.
pub(super) fn transcript_arguments(id: ToolId, args: &Value) -> String {
    let key = match id {
        ToolId::CodeInterpreter => "code",
        ToolId::VisitWebsite => "url",
        ToolId::WolframAlpha => "query",
        _ => "query",
    };
    match args.get(key).and_then(Value::as_str) {
        Some(s) => s.to_string(),
        None => args.to_string(),
    }
}

/// The `executed_tools` entry of one run, in the shapes of Groq's docs: gpt-oss style code
/// execution is a `function` named `python` whose `arguments` is the code and whose text is
/// in `code_results`; compound entries have the tool's `type`, JSON `arguments` and `output`.
pub(super) fn executed_record(
    style: Style,
    index: u32,
    id: ToolId,
    arguments: &str,
    args: &Value,
    run: &ToolRun,
) -> ExecutedTool {
    let hits = run.search_hits.as_ref().map(|hits| {
        hits.iter()
            .map(|h| SearchResult {
                title: h.title.clone(),
                url: h.url.clone(),
                content: h.content.clone(),
                score: h.score,
            })
            .collect()
    });
    match style {
        Style::Builtin => ExecutedTool {
            name: Some(function_name(id).to_string()),
            index,
            kind: "function".into(),
            arguments: match id {
                ToolId::CodeInterpreter => transcript_arguments(id, args),
                _ => arguments.to_string(),
            },
            output: run.code_text.is_none().then(|| run.output.clone()),
            search_results: Some(SearchResults { results: hits }),
            code_results: run
                .code_text
                .as_ref()
                .map(|t| code_results(t, &run.code_pngs)),
        },
        Style::Compound { .. } => ExecutedTool {
            name: None,
            index,
            kind: id.executed_type().into(),
            arguments: arguments.to_string(),
            output: Some(run.output.clone()),
            search_results: Some(SearchResults {
                results: Some(hits.unwrap_or_default()),
            }),
            // Groq's compound examples carry no `code_results`; figures still need a place.
            code_results: (!run.code_pngs.is_empty())
                .then(|| code_results(&run.output, &run.code_pngs)),
        },
    }
}

/// `code_results`: the printed text, then each figure.
fn code_results(text: &str, pngs: &[String]) -> Vec<CodeResult> {
    let mut out = vec![CodeResult {
        text: Some(text.to_string()),
        png: None,
    }];
    out.extend(pngs.iter().map(|p| CodeResult {
        text: None,
        png: Some(p.clone()),
    }));
    out
}
