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

use peregrine_protocol::chat::{
    ChatCompletionRequest, ChatMessage, CodeResult, ExecutedTool, FunctionCall, FunctionDefinition,
    MessageContent, SearchResult, SearchResults, Tool, ToolCall, ToolChoice,
};
use peregrine_runtime::{Event, FinishReason, Rejection, TokenLogprob, UsageStats};
use peregrine_tools::{
    cap_output, BuiltinTool, RequestSettings, SearchSettings, ToolId, ToolKit, ToolRun,
};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::chat_wire::call_id;
use crate::completions::{rejected, ChatJob, Completions, GeneratedCall, Priority, ResponseMeta};
use crate::error::ServiceError;

use compound::SystemVersion;

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
}

fn invalid(message: String, param: &'static str) -> ServiceError {
    ServiceError::InvalidParam { message, param }
}

/// The built-in tool a `tools[].type` names on a chat model.
fn builtin_kind(kind: &str) -> Option<ToolId> {
    match kind {
        "code_interpreter" => Some(ToolId::CodeInterpreter),
        "browser_search" => Some(ToolId::WebSearch),
        _ => None,
    }
}

/// `Some(plan)` when the request needs the tool loop; `None` for an ordinary completion.
pub fn plan(
    req: &ChatCompletionRequest,
    model_version: Option<&str>,
    svc: &Completions,
) -> Result<Option<AgentPlan>, ServiceError> {
    let kit = svc.tool_kit();
    if let Some(mini) = compound::compound_model(&req.model) {
        let version = SystemVersion::from_header(model_version)?;
        let setup = compound::setup(req, version, svc.registry(), kit)?;
        let search = search_settings(req, &setup.tools, kit)?;
        let mut base = base_request(req, &setup.tools)?;
        add_system_prompt(
            &mut base.messages,
            &compound::system_prompt(&setup.tools, mini),
        );
        return Ok(Some(AgentPlan {
            style: Style::Compound { mini },
            tools: setup.tools,
            base,
            reasoning_model: setup.reasoning_model,
            answering_model: setup.answering_model,
            first_choice: None,
            max_calls: if mini { 1 } else { kit.max_calls },
            include_reasoning: req.include_reasoning != Some(false),
            settings: RequestSettings {
                search,
                wolfram_app_id: setup.wolfram_app_id,
            },
        }));
    }
    let tools = builtin_tools(req, kit)?;
    if tools.is_empty() {
        if req.compound_custom.is_some() {
            // Groq's wording for a parameter the model lacks.
            return Err(invalid(
                "`compound_custom` is not supported with this model".into(),
                "compound_custom",
            ));
        }
        return Ok(None);
    }
    let served = svc
        .registry()
        .resolve(&req.model)
        .ok_or_else(|| ServiceError::ModelNotFound(req.model.clone()))?
        .model
        .id
        .clone();
    let search = search_settings(req, &tools, kit)?;
    let mut base = base_request(req, &tools)?;
    base.tools = req.tools.as_ref().map(|t| {
        t.iter()
            .filter(|t| builtin_kind(&t.kind).is_none())
            .cloned()
            .collect()
    });
    Ok(Some(AgentPlan {
        style: Style::Builtin,
        tools,
        base,
        reasoning_model: served.clone(),
        answering_model: served,
        first_choice: req.tool_choice.clone(),
        max_calls: kit.max_calls,
        include_reasoning: req.include_reasoning != Some(false),
        settings: RequestSettings {
            search,
            wolfram_app_id: None,
        },
    }))
}

/// `search_settings` on the wire; unknown keys are refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSearchSettings {
    #[serde(default)]
    include_domains: Option<Vec<String>>,
    #[serde(default)]
    exclude_domains: Option<Vec<String>>,
    #[serde(default)]
    include_images: Option<bool>,
    #[serde(default)]
    country: Option<String>,
}

/// The request's search settings (with the deprecated top-level domain lists), checked
/// against the server's search backend when the request searches.
fn search_settings(
    req: &ChatCompletionRequest,
    tools: &[ToolId],
    kit: &ToolKit,
) -> Result<SearchSettings, ServiceError> {
    let param = "search_settings";
    let wire: WireSearchSettings = match &req.search_settings {
        None => WireSearchSettings::default(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| invalid(format!("`search_settings`: {e}"), param))?,
    };
    let mut s = SearchSettings {
        include_domains: wire.include_domains.unwrap_or_default(),
        exclude_domains: wire.exclude_domains.unwrap_or_default(),
        country: wire.country,
        include_images: wire.include_images.unwrap_or(false),
    };
    s.include_domains
        .extend(req.include_domains.iter().flatten().cloned());
    s.exclude_domains
        .extend(req.exclude_domains.iter().flatten().cloned());
    if let (true, Ok(backend)) = (tools.contains(&ToolId::WebSearch), &kit.search) {
        backend
            .check(&s)
            .map_err(|e| invalid(e.to_string(), param))?;
    }
    Ok(s)
}

/// The built-in entries of a chat request's `tools`, each available here and without keys
/// this server does not know.
fn builtin_tools(req: &ChatCompletionRequest, kit: &ToolKit) -> Result<Vec<ToolId>, ServiceError> {
    let mut out = Vec::new();
    for t in req.tools.iter().flatten() {
        let Some(id) = builtin_kind(&t.kind) else {
            continue;
        };
        if let Some(key) = t.extra.keys().next() {
            return Err(invalid(
                format!("`{}` tools take no `{}`", t.kind, shown(key)),
                "tools",
            ));
        }
        kit.check(id).map_err(|e| invalid(e.to_string(), "tools"))?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    Ok(out)
}

fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The request every turn starts from: the compound and search fields are the loop's, a
/// client function may not take a built-in tool's name, and `search_settings` needs search.
fn base_request(
    req: &ChatCompletionRequest,
    tools: &[ToolId],
) -> Result<ChatCompletionRequest, ServiceError> {
    let searches = tools.contains(&ToolId::WebSearch);
    if !searches
        && (req.search_settings.is_some()
            || req.include_domains.is_some()
            || req.exclude_domains.is_some())
    {
        return Err(invalid(
            "`search_settings` needs the web search tool, which this request does not use".into(),
            "search_settings",
        ));
    }
    let names: Vec<&str> = tools.iter().map(|&t| function_name(t)).collect();
    for f in req
        .tools
        .iter()
        .flatten()
        .filter_map(|t| t.function.as_ref())
    {
        if names.contains(&f.name.as_str()) {
            return Err(invalid(
                format!(
                    "function name `{}` is taken by a built-in tool of this request",
                    f.name
                ),
                "tools",
            ));
        }
    }
    let mut base = req.clone();
    base.compound_custom = None;
    base.search_settings = None;
    base.include_domains = None;
    base.exclude_domains = None;
    base.include_reasoning = None;
    base.stream = Some(false);
    base.stream_options = None;
    Ok(base)
}

/// The function name the model calls for `tool`.
pub fn function_name(tool: ToolId) -> &'static str {
    match tool {
        ToolId::WebSearch => "search",
        ToolId::CodeInterpreter => "python",
        ToolId::VisitWebsite => "visit",
        ToolId::BrowserAutomation => "browser",
        ToolId::WolframAlpha => "wolfram",
    }
}

/// Puts `prompt` first: before the client's own system text when it has one.
fn add_system_prompt(messages: &mut Vec<ChatMessage>, prompt: &str) {
    if let Some(ChatMessage::System {
        content: MessageContent::Text(text),
        ..
    }) = messages.first_mut()
    {
        *text = format!("{prompt}\n\n{text}");
        return;
    }
    messages.insert(
        0,
        ChatMessage::System {
            content: MessageContent::Text(prompt.to_string()),
            name: None,
        },
    );
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
        .prepare_turn(turn.request(&plan, &plan.base.messages, &tools), request_id)
        .await?;
    let mut meta = first.meta.clone();
    meta.model = plan.base.model.clone();
    meta.include_usage = include_usage;
    let (tx, rx) = mpsc::channel(64);
    let style = plan.style;
    let runner = Runner {
        svc: svc.clone(),
        messages: plan.base.messages.clone(),
        calls_left: plan.max_calls,
        output_cap: kit.output_cap,
        plan,
        tools,
        executed: 0,
        ran: Vec::new(),
        finish: AgentFinish {
            reason: FinishReason::Stop,
            usage: UsageStats::default(),
            per_model: Vec::new(),
        },
        tx,
        stream,
    };
    tokio::spawn(runner.run(first, turn));
    Ok(AgentJob {
        meta,
        style,
        stream,
        events: rx,
    })
}

/// One turn's settings.
#[derive(Clone, Copy)]
struct Turn {
    first: bool,
    /// Tools may be called in this turn.
    calls_on: bool,
}

impl Turn {
    fn first(plan: &AgentPlan) -> Turn {
        Turn {
            first: true,
            calls_on: plan.max_calls > 0,
        }
    }

    /// The turn's request: the conversation so far and its `tool_choice`. A turn that may
    /// call tools sees the client's functions and the built-in tools as functions; the
    /// answer turn sees only the client's functions (with `tool_choice: none`), so a model
    /// that would rather call again reads the results it has and answers.
    fn request(
        self,
        plan: &AgentPlan,
        messages: &[ChatMessage],
        tools: &[Box<dyn BuiltinTool>],
    ) -> ChatCompletionRequest {
        let mut req = plan.base.clone();
        req.messages = messages.to_vec();
        let mut all: Vec<Tool> = req.tools.take().unwrap_or_default();
        let client_tools = !all.is_empty();
        if self.calls_on {
            all.extend(tools.iter().map(|t| {
                let f = t.function();
                Tool::function(FunctionDefinition {
                    name: f.name.to_string(),
                    description: Some(f.description.to_string()),
                    parameters: Some(f.parameters),
                    strict: None,
                })
            }));
        }
        req.tools = (!all.is_empty()).then_some(all);
        req.model = if self.calls_on {
            plan.reasoning_model.clone()
        } else {
            plan.answering_model.clone()
        };
        req.tool_choice = match (self.first, self.calls_on) {
            (_, false) => client_tools.then(|| ToolChoice::Mode("none".into())),
            (true, true) => plan.first_choice.clone(),
            (false, true) => Some(ToolChoice::Mode("auto".into())),
        };
        req
    }
}

/// The loop's state on its task.
struct Runner {
    svc: Completions,
    plan: AgentPlan,
    tools: Vec<Box<dyn BuiltinTool>>,
    messages: Vec<ChatMessage>,
    calls_left: usize,
    output_cap: usize,
    executed: u32,
    /// Calls run so far (name, arguments).
    ran: Vec<(String, String)>,
    finish: AgentFinish,
    tx: mpsc::Sender<AgentEvent>,
    stream: bool,
}

/// What one turn produced.
struct TurnOutput {
    text: String,
    logprobs: Vec<TokenLogprob>,
    calls: Vec<GeneratedCall>,
    reason: FinishReason,
    /// Why the turn's tool call could not be used.
    failed_call: Option<String>,
}

/// The client is gone: stop.
struct Gone;

impl Runner {
    async fn run(mut self, first: ChatJob, mut turn: Turn) {
        let mut job = first;
        loop {
            let out = match self.turn(job, turn).await {
                Ok(Some(out)) => out,
                Ok(None) => return,
                Err(e) => {
                    let _ = self.tx.send(AgentEvent::Failed(e)).await;
                    return;
                }
            };
            match self.after_turn(out, turn).await {
                Ok(true) => {}
                Ok(false) | Err(Gone) => return,
            }
            turn = Turn {
                first: false,
                calls_on: self.calls_left > 0,
            };
            let req = turn.request(&self.plan, &self.messages, &self.tools);
            job = match self.svc.prepare_turn(req, String::new()).await {
                Ok(j) => j,
                Err(e) => {
                    let _ = self.tx.send(AgentEvent::Failed(e)).await;
                    return;
                }
            };
        }
    }

    /// Runs one turn. Text is held back while the turn may still call a tool (it is then
    /// reasoning, not answer); a turn without tools streams its text as it comes.
    async fn turn(&mut self, job: ChatJob, turn: Turn) -> Result<Option<TurnOutput>, ServiceError> {
        let model = job.model.id.clone();
        let (_, mut rx) = self.svc.start(job, Priority::Interactive)?;
        let live = !turn.calls_on && self.stream;
        let mut out = TurnOutput {
            text: String::new(),
            logprobs: Vec::new(),
            calls: Vec::new(),
            reason: FinishReason::Stop,
            failed_call: None,
        };
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Delta { text, logprobs } if live => {
                    out.text.push_str(&text);
                    let ev = AgentEvent::Content { text, logprobs };
                    if self.tx.send(ev).await.is_err() {
                        return Ok(None);
                    }
                }
                Event::Delta { text, logprobs } => {
                    out.text.push_str(&text);
                    out.logprobs.extend(logprobs);
                }
                Event::ToolCall { name, arguments } => {
                    out.calls.push(GeneratedCall { name, arguments })
                }
                Event::Finished(f) => {
                    self.add_usage(&model, &f.usage);
                    out.reason = f.reason;
                    if live {
                        out.text.clear();
                    }
                    return Ok(Some(out));
                }
                Event::Failed(why) => return Err(ServiceError::Internal(why)),
                // A call that cannot be used (cut off, not fitting its tool) in a turn that
                // may call tools: the loop goes on to the answer instead of failing.
                Event::Rejected(Rejection::Tool { message, .. }) if turn.calls_on => {
                    out.failed_call = Some(message);
                    return Ok(Some(out));
                }
                Event::Rejected(r) => return Err(rejected(r, out.text)),
                Event::Preempted => return Err(ServiceError::Internal("preempted".into())),
            }
        }
        Err(ServiceError::Internal(
            "the engine dropped the request".into(),
        ))
    }

    fn add_usage(&mut self, model: &str, u: &UsageStats) {
        add(&mut self.finish.usage, u);
        match self.finish.per_model.iter_mut().find(|(m, _)| m == model) {
            Some((_, sum)) => add(sum, u),
            None => self.finish.per_model.push((model.to_string(), u.clone())),
        }
    }

    /// Runs the turn's built-in calls, or ends the loop. `Ok(true)`: another turn follows.
    async fn after_turn(&mut self, out: TurnOutput, turn: Turn) -> Result<bool, Gone> {
        if let Some(why) = out.failed_call {
            self.reason(format!("[a tool call could not be run: {why}]\n"))
                .await?;
            self.calls_left = 0;
            return Ok(true);
        }
        let (builtin, user): (Vec<GeneratedCall>, Vec<GeneratedCall>) = out
            .calls
            .into_iter()
            .partition(|c| self.tool_index(&c.name).is_some());
        if builtin.is_empty() || !turn.calls_on {
            return self.answer(out.text, out.logprobs, user, out.reason).await;
        }
        // A call the model already made, with the same arguments, is not run again: the
        // model has that result. Only repeats: the tools are done, the answer turn follows.
        let builtin: Vec<GeneratedCall> = builtin
            .into_iter()
            .filter(|c| !self.ran.contains(&(c.name.clone(), c.arguments.clone())))
            .collect();
        if builtin.is_empty() && user.is_empty() {
            self.calls_left = 0;
            return Ok(true);
        }
        if !out.text.trim().is_empty() {
            self.reason(format!("{}\n", out.text.trim())).await?;
        }
        let mut calls = Vec::new();
        let mut results = Vec::new();
        for call in builtin.into_iter().take(self.calls_left) {
            self.calls_left -= 1;
            let id = call_id();
            let output = self.execute(&call).await?;
            self.ran.push((call.name.clone(), call.arguments.clone()));
            calls.push(ToolCall {
                id: id.clone(),
                kind: "function".into(),
                function: FunctionCall {
                    name: call.name,
                    arguments: call.arguments,
                },
            });
            results.push(ChatMessage::Tool {
                content: MessageContent::Text(cap_output(&output, self.output_cap)),
                tool_call_id: id,
                name: None,
            });
        }
        self.messages.push(ChatMessage::Assistant {
            content: (!out.text.trim().is_empty()).then(|| MessageContent::Text(out.text)),
            name: None,
            reasoning: None,
            tool_calls: Some(calls),
            function_call: None,
        });
        self.messages.extend(results);
        if !user.is_empty() {
            // The client's own calls end the loop: the client runs them.
            return self
                .answer(String::new(), Vec::new(), user, FinishReason::ToolCalls)
                .await;
        }
        Ok(true)
    }

    fn tool_index(&self, name: &str) -> Option<usize> {
        self.tools
            .iter()
            .position(|t| function_name(t.id()) == name)
    }

    /// Runs one built-in call and reports it; returns the output for the model.
    async fn execute(&mut self, call: &GeneratedCall) -> Result<String, Gone> {
        let i = self.tool_index(&call.name).expect("partitioned on it");
        let args: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::Null);
        let tool = &mut self.tools[i];
        let id = tool.id();
        let run = tool.run(&args).await;
        let shown_args = transcript_arguments(id, &args);
        self.reason(format!(
            "<tool>{}({})</tool>\n<output>{}</output>\n",
            function_name(id),
            shown_args,
            run.output.trim_end()
        ))
        .await?;
        let record = executed_record(
            self.plan.style,
            self.executed,
            id,
            &call.arguments,
            &args,
            &run,
        );
        self.executed += 1;
        self.send(AgentEvent::Executed(record)).await?;
        Ok(run.output)
    }

    /// The last events: held-back answer text, the client's calls, the finish.
    async fn answer(
        &mut self,
        text: String,
        logprobs: Vec<TokenLogprob>,
        user: Vec<GeneratedCall>,
        reason: FinishReason,
    ) -> Result<bool, Gone> {
        if !text.is_empty() || !logprobs.is_empty() {
            self.send(AgentEvent::Content { text, logprobs }).await?;
        }
        for call in user {
            self.send(AgentEvent::ToolCall(call)).await?;
        }
        self.finish.reason = reason;
        let finish = self.finish.clone();
        self.send(AgentEvent::Finished(finish)).await?;
        Ok(false)
    }

    /// Transcript text, unless the client turned reasoning off. (`&mut self` here and in
    /// `send`: the tools are `Send` but not `Sync`, so the loop's future may hold only
    /// exclusive borrows of itself across an await.)
    async fn reason(&mut self, text: String) -> Result<(), Gone> {
        if !self.plan.include_reasoning {
            return Ok(());
        }
        self.send(AgentEvent::Reasoning(text)).await
    }

    async fn send(&mut self, ev: AgentEvent) -> Result<(), Gone> {
        self.tx.send(ev).await.map_err(|_| Gone)
    }
}

fn add(sum: &mut UsageStats, u: &UsageStats) {
    sum.prompt_tokens += u.prompt_tokens;
    sum.cached_tokens += u.cached_tokens;
    sum.completion_tokens += u.completion_tokens;
    sum.queue_time += u.queue_time;
    sum.prompt_time += u.prompt_time;
    sum.completion_time += u.completion_time;
}

/// How a call shows in the transcript: the code itself for Python, the query or URL.
fn transcript_arguments(id: ToolId, args: &Value) -> String {
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
fn executed_record(
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
