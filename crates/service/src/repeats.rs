//! A call the conversation already has the result of is not made again (decision 0022).
//!
//! Agent frameworks keep offering their tools after a call's result comes back, and small
//! models then call the same tool with the same arguments again, turn after turn, so the
//! loop never ends. Under `tool_choice: auto`, when a completion repeats a call whose result
//! is already in the conversation, the completion is run again as the answer: calls turned
//! off (`tool_choice: none`, the tools still shown to the template) and
//! the last result ending with a line asking for the answer. The client sees one completion
//! (whatever text came before the calls, then the answer) whose usage counts both passes.
//! Any repeat, not only all-repeats: a small model that starts over with a call it has the
//! result of goes on with made-up ones (`calculate("100")`, then `"110"`; a list of cities
//! after the two it was asked for), which the client would run and be looped on again.
//! New calls alone, a first call, `required` and named choices: untouched.

use peregrine_protocol::chat::{ChatCompletionRequest, ChatMessage, MessageContent, ToolChoice};
use peregrine_runtime::{Event, Finished, UsageStats};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::completions::{Completions, Priority};

/// Said after the last result in the answer pass (as the tool loop's answer turn does).
pub const ANSWER_NOTE: &str = "The tool results above are final. Answer the user's question \
now in plain words, using them; do not call a tool.";

/// Ends the last tool result of an answer turn's conversation with [`ANSWER_NOTE`] (the
/// tool loop's answer turn, and the answer pass here). Why:
/// the history teaches a small model the call syntax, and with calls banned it went on
/// writing one as text (`>{"name": "python", ...}`) or echoing the result's tags; with the
/// note the default 0.5B model answered from the results in 3 of 3 cases, without it in
/// 1 of 3 (decision 0011). In the tool message rather than a message of its own, since
/// some templates refuse a system or user message there.
pub(crate) fn close_tool_phase(messages: &mut [ChatMessage]) {
    if let Some(ChatMessage::Tool {
        content: MessageContent::Text(text),
        ..
    }) = messages.last_mut()
    {
        text.push_str("\n\n");
        text.push_str(ANSWER_NOTE);
    }
}

/// The calls with results in a conversation, and the request that answers instead.
pub struct RepeatGuard {
    answered: Vec<(String, Value)>,
    answer: Box<ChatCompletionRequest>,
    request_id: String,
    org: String,
}

/// A guard for `req` when it needs one: tools offered under `auto` (or no choice) and calls
/// with results in the conversation.
pub fn guard(req: &ChatCompletionRequest, request_id: &str, org: &str) -> Option<RepeatGuard> {
    let auto = match &req.tool_choice {
        None => true,
        Some(ToolChoice::Mode(m)) => m == "auto",
        Some(ToolChoice::Named { .. }) => false,
    };
    if !auto || req.tools.as_ref().is_none_or(|t| t.is_empty()) {
        return None;
    }
    let answered = answered_calls(&req.messages);
    if answered.is_empty() {
        return None;
    }
    let mut answer = req.clone();
    answer.tool_choice = Some(ToolChoice::Mode("none".into()));
    close_tool_phase(&mut answer.messages);
    Some(RepeatGuard {
        answered,
        answer: Box::new(answer),
        request_id: request_id.to_string(),
        org: org.to_string(),
    })
}

/// `(name, arguments)` of each assistant call that a later `tool` message answers.
fn answered_calls(messages: &[ChatMessage]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let ChatMessage::Assistant {
            tool_calls: Some(calls),
            ..
        } = m
        else {
            continue;
        };
        for c in calls {
            let has_result = messages[i + 1..].iter().any(
                |r| matches!(r, ChatMessage::Tool { tool_call_id, .. } if *tool_call_id == c.id),
            );
            if has_result {
                out.push((c.function.name.clone(), arguments(&c.function.arguments)));
            }
        }
    }
    out
}

/// Arguments as JSON, so key order and spacing do not make a repeat look new.
fn arguments(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

impl RepeatGuard {
    fn repeats(&self, name: &str, args: &str) -> bool {
        let args = arguments(args);
        (self.answered.iter()).any(|(n, a)| n == name && *a == args)
    }

    /// Relays a job's events; calls are held until the end, and if one repeats, the answer
    /// pass runs and its events follow instead.
    pub(crate) fn relay(
        self,
        svc: Completions,
        mut rx: mpsc::Receiver<Event>,
        priority: Priority,
    ) -> mpsc::Receiver<Event> {
        let (tx, out) = mpsc::channel(64);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(ev) = rx.recv().await {
                let ev = match ev {
                    Event::ToolCall { .. } => {
                        held.push(ev);
                        continue;
                    }
                    Event::Finished(f) if self.any_repeats(&held) => {
                        self.answer(svc, f, &tx, priority).await;
                        return;
                    }
                    ev => ev,
                };
                let end = matches!(ev, Event::Finished(_));
                if end {
                    for call in held.drain(..) {
                        if tx.send(call).await.is_err() {
                            return;
                        }
                    }
                }
                if tx.send(ev).await.is_err() || end {
                    return;
                }
            }
        });
        out
    }

    fn any_repeats(&self, calls: &[Event]) -> bool {
        calls.iter().any(|c| match c {
            Event::ToolCall { name, arguments } => self.repeats(name, arguments),
            _ => false,
        })
    }

    /// Runs the answer pass and relays it, its usage added to the first pass's. If it cannot
    /// run, the first pass's end stands (its calls dropped: they were repeats).
    async fn answer(
        self,
        svc: Completions,
        first: Finished,
        tx: &mpsc::Sender<Event>,
        priority: Priority,
    ) {
        let started = async {
            let job = svc
                .prepare(*self.answer, self.request_id, &self.org)
                .await?;
            svc.start(job, priority).map(|(_, rx)| rx)
        };
        let mut rx = match started.await {
            Ok(rx) => rx,
            Err(e) => {
                tracing::warn!(error = %e, "the answer pass after a repeated call failed to start");
                let _ = tx.send(Event::Finished(first)).await;
                return;
            }
        };
        while let Some(ev) = rx.recv().await {
            let ev = match ev {
                Event::Finished(mut f) => {
                    add(&mut f.usage, &first.usage);
                    Event::Finished(f)
                }
                ev => ev,
            };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    }
}

/// Adds `u` to `sum`: the client pays for both passes.
pub(crate) fn add(sum: &mut UsageStats, u: &UsageStats) {
    sum.prompt_tokens += u.prompt_tokens;
    sum.cached_tokens += u.cached_tokens;
    sum.completion_tokens += u.completion_tokens;
    if let Some(n) = u.reasoning_tokens {
        *sum.reasoning_tokens.get_or_insert(0) += n;
    }
    sum.queue_time += u.queue_time;
    sum.prompt_time += u.prompt_time;
    sum.completion_time += u.completion_time;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> ChatCompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    fn conversation(choice: Option<&str>) -> ChatCompletionRequest {
        let mut v = json!({"model": "m", "tools": [{"type": "function", "function": {"name": "w"}}],
            "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{\"city\": \"Paris\", \"unit\": \"c\"}"}},
                    {"id": "c2", "type": "function", "function": {"name": "w", "arguments": "{\"city\": \"Rome\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]});
        if let Some(c) = choice {
            v["tool_choice"] = json!(c);
        }
        req(v)
    }

    #[test]
    fn only_answered_calls_repeated_under_auto_are_guarded() {
        let g = guard(&conversation(None), "r", "o").unwrap();
        // Same call, other key order and spacing: a repeat.
        assert!(g.repeats("w", r#"{"unit":"c","city":"Paris"}"#));
        assert!(!g.repeats("w", r#"{"city":"Lyon","unit":"c"}"#));
        // c2 has no result in the conversation: calling it is no repeat.
        assert!(!g.repeats("w", r#"{"city":"Rome"}"#));
        assert!(guard(&conversation(Some("auto")), "r", "o").is_some());
        for choice in ["required", "none"] {
            assert!(guard(&conversation(Some(choice)), "r", "o").is_none());
        }
        let mut first_turn = conversation(None);
        first_turn.messages.truncate(1);
        assert!(guard(&first_turn, "r", "o").is_none());
    }

    #[test]
    fn the_answer_pass_turns_calls_off_and_asks_for_the_answer() {
        let g = guard(&conversation(None), "r", "o").unwrap();
        assert_eq!(g.answer.tool_choice, Some(ToolChoice::Mode("none".into())));
        assert!(
            g.answer.tools.is_some(),
            "the template still sees the tools"
        );
        let Some(ChatMessage::Tool { content, .. }) = g.answer.messages.last() else {
            panic!("ends with the result");
        };
        assert_eq!(content.as_text(), format!("sunny\n\n{ANSWER_NOTE}"));
    }
}
