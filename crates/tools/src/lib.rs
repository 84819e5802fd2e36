//! Server-side built-in tools (issue 12). So far: [`sandbox::PythonSandbox`], the isolated
//! Python process that `code_interpreter` will run a request's code in, keeping its state
//! between the calls of that request. Not wired to the API yet: `code_interpreter` is still
//! refused with Groq's 400.

pub mod sandbox;

pub use sandbox::{PythonSandbox, RunOutput, SandboxConfig, SandboxError, SandboxLimits};
