//! Server-side built-in tools (issue 12): the [`BuiltinTool`] seam, the catalogue of a
//! server's tools ([`ToolKit`]), code execution ([`PythonTool`] over
//! [`sandbox::PythonSandbox`], an isolated Python process that keeps a request's state
//! between its calls), website visits ([`VisitTool`] over [`fetch::Fetcher`], behind an
//! SSRF guard), web search ([`search`]: a local tantivy index or a search API) and
//! Wolfram|Alpha ([`wolfram`], with the client's AppID). The agent loop that lets a model call them lives in the service crate
//! (`peregrine_service::agent`).

pub mod fetch;
pub mod sandbox;
pub mod search;
pub mod tool;
pub mod wolfram;

pub use fetch::{FetchConfig, FetchError, Fetcher, Page};
pub use sandbox::{PythonSandbox, RunOutput, SandboxConfig, SandboxError, SandboxLimits};
pub use search::{SearchBackend, SearchError, SearchQuery, SearchSettings};
pub use tool::{
    cap_output, BuiltinTool, PythonTool, RequestSettings, SearchHit, ToolFunction, ToolId, ToolKit,
    ToolRun, Unavailable, VisitTool,
};
