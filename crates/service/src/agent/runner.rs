//! The loop on its task: one turn after another, the built-in calls of each run and fed
//! back, the events sent as they happen.

use peregrine_protocol::chat::{
    ChatCompletionRequest, ChatMessage, FunctionCall, FunctionDefinition, MessageContent, Tool,
    ToolCall, ToolChoice,
};
use peregrine_runtime::{Event, FinishReason, Rejection, TokenLogprob, UsageStats};
use peregrine_tools::{cap_output, BuiltinTool};
use serde_json::Value;
use tokio::sync::mpsc;

use super::plan::function_name;
use super::record::{executed_record, transcript_arguments};
use super::{AgentEvent, AgentFinish, AgentPlan};
use crate::chat_wire::call_id;
use crate::completions::{rejected, ChatJob, Completions, GeneratedCall, Priority};
use crate::error::ServiceError;
use crate::repeats::{add, close_tool_phase};

/// One turn's settings.
#[derive(Clone, Copy)]
pub(super) struct Turn {
    first: bool,
    /// Tools may be called in this turn.
    calls_on: bool,
}

impl Turn {
    pub(super) fn first(plan: &AgentPlan) -> Turn {
        Turn {
            first: true,
            calls_on: plan.max_calls > 0,
        }
    }

    /// The turn's request: the conversation so far and its `tool_choice`. A turn that may
    /// call tools sees the client's functions and the built-in tools as functions; the
    /// answer turn sees only the client's functions (with `tool_choice: none`), so a model
    /// that would rather call again reads the results it has and answers.
    pub(super) fn request(
        self,
        plan: &AgentPlan,
        messages: &[ChatMessage],
        tools: &[Box<dyn BuiltinTool>],
    ) -> ChatCompletionRequest {
        let mut req = plan.base.clone();
        req.messages = messages.to_vec();
        if !self.calls_on && messages.len() > plan.base.messages.len() {
            close_tool_phase(&mut req.messages);
        }
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
pub(super) struct Runner {
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

impl Runner {
    pub(super) fn new(
        svc: Completions,
        plan: AgentPlan,
        tools: Vec<Box<dyn BuiltinTool>>,
        output_cap: usize,
        tx: mpsc::Sender<AgentEvent>,
        stream: bool,
    ) -> Self {
        Runner {
            svc,
            messages: plan.base.messages.clone(),
            calls_left: plan.max_calls,
            output_cap,
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
        }
    }
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
    pub(super) async fn run(mut self, first: ChatJob, mut turn: Turn) {
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
            job = match self
                .svc
                .prepare_turn(req, String::new(), &self.plan.org)
                .await
            {
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
                // A reasoning model's own reasoning joins the loop's transcript.
                Event::Reasoning { text } => {
                    if self.reason(text).await.is_err() {
                        return Ok(None);
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repeats::ANSWER_NOTE;

    fn tool(text: &str) -> ChatMessage {
        ChatMessage::Tool {
            content: MessageContent::Text(text.into()),
            tool_call_id: "call_1".into(),
            name: None,
        }
    }

    #[test]
    fn the_answer_turn_closes_the_last_tool_result_only() {
        let mut messages = vec![tool("111.108"), tool("42")];
        close_tool_phase(&mut messages);
        let texts: Vec<String> = messages
            .iter()
            .map(|m| match m {
                ChatMessage::Tool { content, .. } => content.as_text(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(texts[0], "111.108");
        assert_eq!(texts[1], format!("42\n\n{ANSWER_NOTE}"));

        // A conversation that does not end with a result is left as it is.
        let mut messages = vec![tool("1"), ChatMessage::user("go on")];
        let before = format!("{messages:?}");
        close_tool_phase(&mut messages);
        assert_eq!(format!("{messages:?}"), before);
    }
}
