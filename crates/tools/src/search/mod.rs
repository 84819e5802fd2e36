//! `web_search`: one [`SearchBackend`] trait, an embedded offline default ([`LocalIndex`],
//! a tantivy full-text index over the operator's documents) and adapters for search APIs
//! ([`api::SearxNg`], [`api::Tavily`], [`api::Brave`]). `search_settings` are honoured by
//! every backend or refused by it ([`SearchBackend::check`]), never ignored.

pub mod api;
pub mod local;

use async_trait::async_trait;
use serde_json::{json, Value};

use crate::tool::{BuiltinTool, SearchHit, ToolFunction, ToolId, ToolRun};

pub use local::LocalIndex;

/// One search: the query and the request's `search_settings`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchQuery {
    pub query: String,
    pub max_results: usize,
    pub settings: SearchSettings,
}

/// `search_settings` (and the deprecated top-level `include_domains`/`exclude_domains`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchSettings {
    /// Only hits on these domains (`example.com` also matches its subdomains; `*.edu`
    /// matches any host under `edu`).
    pub include_domains: Vec<String>,
    pub exclude_domains: Vec<String>,
    /// A lowercase English country name (`"germany"`).
    pub country: Option<String>,
    pub include_images: bool,
}

/// Why a search did not run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// A setting this backend cannot honour (answered with a 400 before the model runs).
    #[error("`search_settings.{0}` is not supported by this server's search backend ({1})")]
    Unsupported(&'static str, &'static str),
    #[error("the search backend failed: {0}")]
    Backend(String),
}

/// A search engine the `search` tool asks.
#[async_trait]
pub trait SearchBackend: Send + Sync + std::fmt::Debug {
    /// The backend's name, for messages.
    fn name(&self) -> &'static str;
    /// Refuses settings this backend cannot honour.
    fn check(&self, settings: &SearchSettings) -> Result<(), SearchError>;
    /// The best hits, best first, with the domain filters applied.
    async fn search(&self, q: &SearchQuery) -> Result<Vec<SearchHit>, SearchError>;
}

/// Whether `url`'s host passes the include and exclude lists.
pub fn domain_allowed(url: &str, s: &SearchSettings) -> bool {
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .unwrap_or_default();
    let matches = |pattern: &String| domain_matches(&host, pattern);
    (s.include_domains.is_empty() || s.include_domains.iter().any(matches))
        && !s.exclude_domains.iter().any(matches)
}

/// `example.com` matches it and its subdomains; `*.edu` any host under `edu`.
fn domain_matches(host: &str, pattern: &str) -> bool {
    let p = pattern
        .trim()
        .trim_start_matches("*.")
        .trim_start_matches('.');
    let p = p.to_ascii_lowercase();
    !p.is_empty() && (host == p || host.ends_with(&format!(".{p}")))
}

/// The `search` function: asks the server's backend.
pub struct SearchTool {
    backend: std::sync::Arc<dyn SearchBackend>,
    settings: SearchSettings,
    max_results: usize,
}

impl SearchTool {
    pub fn new(
        backend: std::sync::Arc<dyn SearchBackend>,
        settings: SearchSettings,
        max_results: usize,
    ) -> Self {
        SearchTool {
            backend,
            settings,
            max_results,
        }
    }
}

/// The hits as the model reads them (and as Groq's transcript shows them).
pub fn hits_text(hits: &[SearchHit]) -> String {
    if hits.is_empty() {
        return "No results.".into();
    }
    hits.iter()
        .map(|h| {
            format!(
                "Title: {}\nURL: {}\nContent: {}\nScore: {:.4}\n",
                h.title, h.url, h.content, h.score
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[async_trait]
impl BuiltinTool for SearchTool {
    fn id(&self) -> ToolId {
        ToolId::WebSearch
    }

    fn function(&self) -> ToolFunction {
        ToolFunction {
            name: "search",
            description: "Searches the web and returns the best matching pages (title, URL, \
                          a passage).",
            parameters: json!({
                "type": "object",
                "properties": {"query": {"type": "string", "description": "What to search for."}},
                "required": ["query"],
            }),
        }
    }

    async fn run(&mut self, arguments: &Value) -> ToolRun {
        let query = arguments.get("query").and_then(Value::as_str).unwrap_or("");
        let q = SearchQuery {
            query: query.to_string(),
            max_results: self.max_results,
            settings: self.settings.clone(),
        };
        match self.backend.search(&q).await {
            Ok(hits) => ToolRun {
                output: hits_text(&hits),
                search_hits: Some(hits),
                ..Default::default()
            },
            Err(e) => ToolRun {
                output: format!("Error: {e}"),
                search_hits: Some(Vec::new()),
                ..Default::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_match_with_subdomains_and_wildcards() {
        let s = SearchSettings {
            include_domains: vec!["*.edu".into(), "example.com".into()],
            exclude_domains: vec!["bad.example.com".into()],
            ..Default::default()
        };
        assert!(domain_allowed("https://mit.edu/x", &s));
        assert!(domain_allowed("https://cs.mit.edu/x", &s));
        assert!(domain_allowed("https://example.com/", &s));
        assert!(domain_allowed("https://www.example.com/", &s));
        assert!(!domain_allowed("https://bad.example.com/", &s));
        assert!(!domain_allowed("https://notexample.com/", &s));
        assert!(!domain_allowed("https://edu.com/", &s));
        assert!(domain_allowed(
            "https://any.org/",
            &SearchSettings::default()
        ));
    }
}
