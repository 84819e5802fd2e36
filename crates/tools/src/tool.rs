//! The built-in tool seam: one small trait for a tool the server runs itself, the record of
//! one run, and the catalogue ([`ToolKit`]) that makes a request's tools from the server's
//! configuration.

use async_trait::async_trait;
use serde_json::{json, Value};

use std::sync::Arc;

use crate::fetch::{FetchConfig, Fetcher};
use crate::sandbox::{PythonSandbox, SandboxConfig};
use crate::search::{SearchBackend, SearchSettings, SearchTool};

/// The built-in tools, by the identifiers of Groq's `compound_custom.tools.enabled_tools`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ToolId {
    WebSearch,
    CodeInterpreter,
    VisitWebsite,
    BrowserAutomation,
    WolframAlpha,
}

impl ToolId {
    pub const ALL: [ToolId; 5] = [
        ToolId::WebSearch,
        ToolId::CodeInterpreter,
        ToolId::VisitWebsite,
        ToolId::BrowserAutomation,
        ToolId::WolframAlpha,
    ];

    /// The identifier clients write in `enabled_tools`.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolId::WebSearch => "web_search",
            ToolId::CodeInterpreter => "code_interpreter",
            ToolId::VisitWebsite => "visit_website",
            ToolId::BrowserAutomation => "browser_automation",
            ToolId::WolframAlpha => "wolfram_alpha",
        }
    }

    pub fn parse(s: &str) -> Option<ToolId> {
        ToolId::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The `type` of its `executed_tools` entries on compound.
    pub fn executed_type(self) -> &'static str {
        match self {
            ToolId::WebSearch => "search",
            ToolId::CodeInterpreter => "python",
            ToolId::VisitWebsite => "visit",
            ToolId::BrowserAutomation => "browser_automation",
            ToolId::WolframAlpha => "wolfram",
        }
    }
}

/// The function a built-in tool shows the model: it calls it like any function tool, so the
/// call is constrained by the same call grammar.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolFunction {
    pub name: &'static str,
    pub description: &'static str,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
}

/// One search hit (`search_results.results[]`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchHit {
    pub title: String,
    pub url: String,
    pub content: String,
    pub score: f64,
}

/// The record of one run of a built-in tool: what the model reads next and what the client
/// sees in `executed_tools`. A tool that fails says so in `output`; it never fails the
/// request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolRun {
    /// Text for the model and the `output` field (printed text, page text, an error).
    pub output: String,
    /// Code execution only: the printed text as `code_results[].text`.
    pub code_text: Option<String>,
    /// Code execution only: figures as base64 PNGs (`code_results[].png`).
    pub code_pngs: Vec<String>,
    /// Search only: the hits.
    pub search_hits: Option<Vec<SearchHit>>,
}

/// A tool the server runs itself. One value per request: it may keep state between the
/// calls of that request (the Python interpreter does).
#[async_trait]
pub trait BuiltinTool: Send {
    fn id(&self) -> ToolId;
    /// The function the model calls.
    fn function(&self) -> ToolFunction;
    /// Runs one call; `arguments` is the call's arguments object, already checked against
    /// [`ToolFunction::parameters`] by the call grammar.
    async fn run(&mut self, arguments: &Value) -> ToolRun;
}

/// The `python` function: code execution in the request's sandbox.
pub struct PythonTool {
    sandbox: PythonSandbox,
}

impl PythonTool {
    pub fn new(cfg: SandboxConfig) -> Self {
        PythonTool {
            sandbox: PythonSandbox::new(cfg),
        }
    }

    /// The code of a call's arguments.
    pub fn code_of(arguments: &Value) -> &str {
        arguments.get("code").and_then(Value::as_str).unwrap_or("")
    }
}

#[async_trait]
impl BuiltinTool for PythonTool {
    fn id(&self) -> ToolId {
        ToolId::CodeInterpreter
    }

    fn function(&self) -> ToolFunction {
        ToolFunction {
            name: "python",
            description: "Runs Python 3 code in a sandbox with no network and returns what it \
                          prints (and the value of a last bare expression). Variables persist \
                          between calls of this conversation. Use it for any calculation.",
            parameters: json!({
                "type": "object",
                "properties": {"code": {"type": "string", "description": "Python code to run."}},
                "required": ["code"],
            }),
        }
    }

    async fn run(&mut self, arguments: &Value) -> ToolRun {
        let code = Self::code_of(arguments);
        match self.sandbox.run(code).await {
            Ok(out) => {
                let mut text = out.output;
                if let Some(err) = out.error {
                    if !text.is_empty() && !text.ends_with('\n') {
                        text.push('\n');
                    }
                    text.push_str(&err);
                }
                ToolRun {
                    output: text.clone(),
                    code_text: Some(text),
                    code_pngs: out.images,
                    search_hits: None,
                }
            }
            Err(e) => ToolRun {
                output: format!("Error: {e}"),
                ..Default::default()
            },
        }
    }
}

/// The `visit` function: fetches a URL behind the SSRF guard and returns its text.
pub struct VisitTool {
    fetcher: Fetcher,
}

impl VisitTool {
    pub fn new(fetcher: Fetcher) -> Self {
        VisitTool { fetcher }
    }
}

#[async_trait]
impl BuiltinTool for VisitTool {
    fn id(&self) -> ToolId {
        ToolId::VisitWebsite
    }

    fn function(&self) -> ToolFunction {
        ToolFunction {
            name: "visit",
            description: "Fetches a web page and returns its title and readable text.",
            parameters: json!({
                "type": "object",
                "properties": {"url": {"type": "string", "description": "The http(s) URL to visit."}},
                "required": ["url"],
            }),
        }
    }

    async fn run(&mut self, arguments: &Value) -> ToolRun {
        let url = arguments.get("url").and_then(Value::as_str).unwrap_or("");
        let output = match self.fetcher.fetch(url).await {
            Ok(page) => {
                let mut s = String::new();
                if let Some(t) = &page.title {
                    s.push_str(&format!("Title: {t}\n"));
                }
                s.push_str(&format!(
                    "URL: {}\nStatus: {}\n\n{}",
                    page.url,
                    page.status,
                    page.text.trim()
                ));
                if page.truncated {
                    s.push_str("\n[page truncated at the size limit]");
                }
                s
            }
            Err(e) => format!("Error: {e}"),
        };
        ToolRun {
            output,
            ..Default::default()
        }
    }
}

/// What one request brings for its tools.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestSettings {
    /// `search_settings`.
    pub search: SearchSettings,
    /// `compound_custom.tools.wolfram_settings.authorization`.
    pub wolfram_app_id: Option<String>,
}

/// Why a tool cannot be offered on this server.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("`{0}` is not supported by this server")]
    NotBuilt(&'static str),
    #[error("`{0}` is not configured on this server: {1}")]
    NotConfigured(&'static str, String),
}

/// The server's built-in tools: what is configured, and a fresh set for each request.
#[derive(Clone, Debug)]
pub struct ToolKit {
    /// Code execution; `Err` (the reason) when it is off or bubblewrap is missing.
    pub python: Result<SandboxConfig, String>,
    /// Website visits; `Err` (the reason) when they are off.
    pub visit: Result<FetchConfig, String>,
    /// Web search; `Err` (the reason) when no backend is configured.
    pub search: Result<Arc<dyn SearchBackend>, String>,
    /// Hits one search returns [5].
    pub search_results: usize,
    /// Wolfram|Alpha's LLM API endpoint (the client brings the AppID).
    pub wolfram_endpoint: String,
    /// Most bytes of one tool output that enter the model's prompt.
    pub output_cap: usize,
    /// Most tool calls in one request (compound-mini: one).
    pub max_calls: usize,
}

/// Default cap on one tool output entering the prompt [8 KiB].
pub const DEFAULT_OUTPUT_CAP: usize = 8 << 10;
/// Default hits per search [5].
pub const DEFAULT_SEARCH_RESULTS: usize = 5;
/// Why search is off when nothing configures it.
const NO_SEARCH: &str =
    "no search backend (`--search-dir` for a local index, or `--search-backend`)";
/// Default most tool calls per request [8].
pub const DEFAULT_MAX_CALLS: usize = 8;

impl ToolKit {
    /// Code execution with `cfg` if its programs are installed; nothing else yet.
    pub fn new(cfg: SandboxConfig) -> Self {
        let python = match (cfg.bwrap.exists(), cfg.python.exists()) {
            (true, true) => Ok(cfg),
            (false, _) => Err(format!("bubblewrap not found at {}", cfg.bwrap.display())),
            (_, false) => Err(format!("Python not found at {}", cfg.python.display())),
        };
        ToolKit {
            python,
            visit: Ok(FetchConfig::default()),
            search: Err(NO_SEARCH.into()),
            search_results: DEFAULT_SEARCH_RESULTS,
            wolfram_endpoint: crate::wolfram::WOLFRAM_ENDPOINT.into(),
            output_cap: DEFAULT_OUTPUT_CAP,
            max_calls: DEFAULT_MAX_CALLS,
        }
    }

    /// A kit with every tool off.
    pub fn disabled(why: &str) -> Self {
        ToolKit {
            python: Err(why.to_string()),
            visit: Err(why.to_string()),
            search: Err(why.to_string()),
            search_results: DEFAULT_SEARCH_RESULTS,
            wolfram_endpoint: crate::wolfram::WOLFRAM_ENDPOINT.into(),
            output_cap: DEFAULT_OUTPUT_CAP,
            max_calls: DEFAULT_MAX_CALLS,
        }
    }

    /// Whether `id` can run here, and why not.
    pub fn check(&self, id: ToolId) -> Result<(), Unavailable> {
        let off = |why: &String| Unavailable::NotConfigured(id.as_str(), why.clone());
        match id {
            ToolId::CodeInterpreter => self.python.as_ref().map(|_| ()).map_err(off),
            ToolId::VisitWebsite => self.visit.as_ref().map(|_| ()).map_err(off),
            ToolId::WebSearch => self.search.as_ref().map(|_| ()).map_err(off),
            ToolId::WolframAlpha => Ok(()),
            other => Err(Unavailable::NotBuilt(other.as_str())),
        }
    }

    /// A fresh tool for one request, with the request's own settings.
    pub fn make(
        &self,
        id: ToolId,
        request: &RequestSettings,
    ) -> Result<Box<dyn BuiltinTool>, Unavailable> {
        let search = &request.search;
        self.check(id)?;
        Ok(match id {
            ToolId::CodeInterpreter => match &self.python {
                Ok(cfg) => Box::new(PythonTool::new(cfg.clone())),
                Err(_) => return Err(Unavailable::NotBuilt(id.as_str())),
            },
            ToolId::VisitWebsite => match &self.visit {
                Ok(cfg) => Box::new(VisitTool::new(Fetcher::new(cfg.clone()))),
                Err(_) => return Err(Unavailable::NotBuilt(id.as_str())),
            },
            ToolId::WebSearch => match &self.search {
                Ok(b) => Box::new(SearchTool::new(
                    b.clone(),
                    search.clone(),
                    self.search_results,
                )),
                Err(_) => return Err(Unavailable::NotBuilt(id.as_str())),
            },
            ToolId::WolframAlpha => match &request.wolfram_app_id {
                Some(key) => Box::new(crate::wolfram::WolframTool::new(
                    self.wolfram_endpoint.clone(),
                    key.clone(),
                )),
                None => {
                    return Err(Unavailable::NotConfigured(
                        id.as_str(),
                        "it needs `compound_custom.tools.wolfram_settings.authorization` \
                         (your Wolfram|Alpha AppID)"
                            .into(),
                    ))
                }
            },
            ToolId::BrowserAutomation => return Err(Unavailable::NotBuilt(id.as_str())),
        })
    }
}

/// `text` cut to at most `cap` bytes (at a character boundary), saying so.
pub fn cap_output(text: &str, cap: usize) -> String {
    if text.len() <= cap {
        return text.to_string();
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n[output truncated: {} of {} bytes shown]",
        &text[..end],
        end,
        text.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        for t in ToolId::ALL {
            assert_eq!(ToolId::parse(t.as_str()), Some(t));
        }
        assert_eq!(ToolId::parse("browser_search"), None);
    }

    #[test]
    fn output_is_capped_on_a_char_boundary() {
        assert_eq!(cap_output("abc", 3), "abc");
        let capped = cap_output("ééé", 3);
        assert!(
            capped.starts_with("é\n[output truncated: 2 of 6 bytes"),
            "{capped}"
        );
    }

    #[test]
    fn a_kit_without_bubblewrap_says_why() {
        let kit = ToolKit::new(SandboxConfig {
            bwrap: "/nonexistent/bwrap".into(),
            ..Default::default()
        });
        let e = kit.check(ToolId::CodeInterpreter).unwrap_err();
        assert!(e.to_string().contains("bubblewrap not found"), "{e}");
        assert_eq!(
            kit.check(ToolId::BrowserAutomation)
                .unwrap_err()
                .to_string(),
            "`browser_automation` is not supported by this server"
        );
    }
}
