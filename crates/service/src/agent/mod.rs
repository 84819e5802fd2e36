//! The built-in tool loop: a request whose model calls tools the server runs itself
//! (`tools: [{"type": "code_interpreter"}]` on any served model, or a compound model id).
//!
//! Each turn is an ordinary chat completion on a served model, with the built-in tools shown
//! to it as functions, so a call is constrained by the same call grammar as a client's
//! function. A call of a built-in tool is run ([`peregrine_tools::BuiltinTool`]); its output,
//! capped, goes back to the model as a tool result, and the model goes on until it answers
//! in text, calls one of the client's own functions (returned as `tool_calls`), or the call
//! limit is reached (the last turn may not call tools). A tool that fails says so in its
//! output; the loop goes on.
//!
//! The loop reports [`AgentEvent`]s as they happen: reasoning (the transcript
//! `<tool>python(...)</tool> <output>...</output>`), each executed tool, the answer. A
//! stream sends them as chunks; [`collect`] folds them into one [`AgentOutcome`].

pub mod compound;
mod plan;
mod record;
mod runner;

use peregrine_protocol::chat::{ChatCompletionRequest, ExecutedTool, ToolChoice};
use peregrine_runtime::{FinishReason, TokenLogprob, UsageStats};
use peregrine_tools::{RequestSettings, ToolId};
use tokio::sync::mpsc;

use crate::completions::{Completions, GeneratedCall, ResponseMeta};
use crate::error::ServiceError;

use plan::invalid;
pub use plan::{function_name, plan};
use runner::{Runner, Turn};

/// How the client asked for built-in tools; it decides the shapes of `executed_tools`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// gpt-oss style: `tools: [{"type": "code_interpreter"}]` on a chat model.
    Builtin,
    /// A compound model id; `mini` makes at most one tool call.
    Compound { mini: bool },
}

/// A request that runs the tool loop, checked.
#[derive(Debug)]
pub struct AgentPlan {
    pub style: Style,
    pub tools: Vec<ToolId>,
    /// The request each turn starts from: built-in tools and compound fields taken out.
    pub base: ChatCompletionRequest,
    /// Served model ids: the turns that may call tools, and the answer after the last call.
    pub reasoning_model: String,
    pub answering_model: String,
    /// `tool_choice` of the first turn; later turns are `auto`, the last `none`.
    pub first_choice: Option<ToolChoice>,
    pub max_calls: usize,
    /// Whether `reasoning` is returned (`include_reasoning`, default true).
    pub include_reasoning: bool,
    /// The request's own tool settings (`search_settings`, the Wolfram|Alpha AppID).
    pub settings: RequestSettings,
    /// The caller's organization: every turn resolves its models for it.
    pub org: String,
}

/// What the loop reports, in order.
#[derive(Debug)]
pub enum AgentEvent {
    /// Transcript text: what the model wrote before a call, and each call with its output.
    Reasoning(String),
    /// A built-in tool finished.
    Executed(ExecutedTool),
    /// Answer text.
    Content {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    /// A call of one of the client's own functions (the answer ends with `tool_calls`).
    ToolCall(GeneratedCall),
    Finished(AgentFinish),
    /// The loop failed after it started.
    Failed(ServiceError),
}

/// The end of the loop: why, and the usage of every turn.
#[derive(Debug, Clone)]
pub struct AgentFinish {
    pub reason: FinishReason,
    /// Summed over every turn.
    pub usage: UsageStats,
    /// Per served model, in first-use order; compound responses report it.
    pub per_model: Vec<(String, UsageStats)>,
}

/// A started loop: its response metadata and its events.
pub struct AgentJob {
    pub meta: ResponseMeta,
    pub style: Style,
    /// The client asked for a stream.
    pub stream: bool,
    pub events: mpsc::Receiver<AgentEvent>,
}

/// Prepares the first turn (so its errors are the request's, before any header) and starts
/// the loop on a task. Dropping the receiver stops the loop at its next step.
pub async fn start(
    svc: &Completions,
    plan: AgentPlan,
    request_id: String,
    stream: bool,
    include_usage: bool,
) -> Result<AgentJob, ServiceError> {
    let kit = svc.tool_kit();
    let mut tools = Vec::with_capacity(plan.tools.len());
    for &id in &plan.tools {
        let tool = kit.make(id, &plan.settings);
        tools.push(tool.map_err(|e| invalid(e.to_string(), "tools"))?);
    }
    let turn = Turn::first(&plan);
    let first = svc
        .prepare_turn(
            turn.request(&plan, &plan.base.messages, &tools),
            request_id,
            &plan.org,
        )
        .await?;
    let mut meta = first.meta.clone();
    meta.model = plan.base.model.clone();
    meta.include_usage = include_usage;
    let (tx, rx) = mpsc::channel(64);
    let style = plan.style;
    let runner = Runner::new(svc.clone(), plan, tools, kit.output_cap, tx, stream);
    tokio::spawn(runner.run(first, turn));
    Ok(AgentJob {
        meta,
        style,
        stream,
        events: rx,
    })
}

/// A finished loop, folded.
#[derive(Debug)]
pub struct AgentOutcome {
    pub meta: ResponseMeta,
    pub style: Style,
    pub content: String,
    pub logprobs: Vec<TokenLogprob>,
    pub reasoning: String,
    pub executed: Vec<ExecutedTool>,
    pub tool_calls: Vec<GeneratedCall>,
    pub finish: AgentFinish,
}

/// Runs a started loop to its end.
pub async fn collect(job: AgentJob) -> Result<AgentOutcome, ServiceError> {
    let AgentJob {
        meta,
        style,
        mut events,
        ..
    } = job;
    let (mut content, mut logprobs, mut reasoning) = (String::new(), Vec::new(), String::new());
    let (mut executed, mut tool_calls) = (Vec::new(), Vec::new());
    while let Some(ev) = events.recv().await {
        match ev {
            AgentEvent::Reasoning(t) => reasoning.push_str(&t),
            AgentEvent::Executed(t) => executed.push(t),
            AgentEvent::Content { text, logprobs: l } => {
                content.push_str(&text);
                logprobs.extend(l);
            }
            AgentEvent::ToolCall(c) => tool_calls.push(c),
            AgentEvent::Failed(e) => return Err(e),
            AgentEvent::Finished(finish) => {
                return Ok(AgentOutcome {
                    meta,
                    style,
                    content,
                    logprobs,
                    reasoning,
                    executed,
                    tool_calls,
                    finish,
                })
            }
        }
    }
    Err(ServiceError::Internal("the tool loop ended early".into()))
}
