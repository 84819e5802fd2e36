//! Domain results in Groq's chat-completion shapes: the non-streaming object, stream chunks,
//! usage and log-probabilities. One place for both the HTTP handler and batch result files.

use peregrine_protocol::chat::{
    AssistantMessage, ChatCompletion, ChatCompletionChunk, Choice, ChoiceLogprobs, ChunkChoice,
    CompletionTokensDetails, FunctionCall, ModelUsage, PromptTokensDetails, TokenLogprob, ToolCall,
    TopLogprob, Usage, UsageBreakdown, XGroq,
};
use peregrine_runtime::UsageStats;

use crate::agent::{AgentFinish, AgentOutcome, Style};
use crate::completions::{Completion, GeneratedCall, ResponseMeta};

/// A fresh tool-call id: `call_` and 24 random alphanumerics (ids are opaque to clients).
pub fn call_id() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!(
        "call_{}",
        Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
    )
}

/// Seconds at nanosecond precision, as Groq reports them.
fn secs(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

pub fn usage(u: &UsageStats) -> Usage {
    let (prompt_time, completion_time) = (secs(u.prompt_time), secs(u.completion_time));
    Usage {
        queue_time: secs(u.queue_time),
        prompt_tokens: u64::from(u.prompt_tokens),
        prompt_time,
        completion_tokens: u64::from(u.completion_tokens),
        completion_time,
        total_tokens: u64::from(u.prompt_tokens + u.completion_tokens),
        total_time: secs(prompt_time + completion_time),
        prompt_tokens_details: (u.cached_tokens > 0).then_some(PromptTokensDetails {
            cached_tokens: u64::from(u.cached_tokens),
        }),
        completion_tokens_details: u.reasoning_tokens.map(|n| CompletionTokensDetails {
            reasoning_tokens: u64::from(n),
        }),
    }
}

pub fn logprobs(lps: Vec<peregrine_runtime::TokenLogprob>) -> Vec<TokenLogprob> {
    lps.into_iter()
        .map(|t| TokenLogprob {
            token: t.token,
            logprob: f64::from(t.logprob),
            bytes: Some(t.bytes),
            top_logprobs: t
                .top
                .into_iter()
                .map(|x| TopLogprob {
                    token: x.token,
                    logprob: f64::from(x.logprob),
                    bytes: Some(x.bytes),
                })
                .collect(),
        })
        .collect()
}

fn tool_calls(calls: Vec<GeneratedCall>) -> Vec<ToolCall> {
    calls
        .into_iter()
        .map(|call| ToolCall {
            id: call_id(),
            kind: "function".into(),
            function: FunctionCall {
                name: call.name,
                arguments: call.arguments,
            },
        })
        .collect()
}

/// The message's answer and calls: a turn that only calls tools has `content: null`.
fn answer(content: String, calls: Vec<GeneratedCall>) -> AssistantMessage {
    let calls = tool_calls(calls);
    let content = (calls.is_empty() || !content.trim().is_empty()).then_some(content);
    AssistantMessage {
        content,
        tool_calls: (!calls.is_empty()).then_some(calls),
        ..Default::default()
    }
}

/// The one-choice response around `message`.
fn completion(
    meta: ResponseMeta,
    message: AssistantMessage,
    lps: Vec<peregrine_runtime::TokenLogprob>,
    reason: &str,
    u: &UsageStats,
) -> ChatCompletion {
    ChatCompletion {
        id: meta.id,
        object: Default::default(),
        created: meta.created,
        model: meta.model,
        choices: vec![Choice {
            index: 0,
            message,
            logprobs: meta.logprobs.then(|| ChoiceLogprobs {
                content: logprobs(lps),
            }),
            finish_reason: reason.to_string(),
        }],
        usage: usage(u),
        usage_breakdown: None,
        system_fingerprint: meta.fingerprint,
        x_groq: XGroq {
            id: meta.request_id,
            seed: Some(meta.seed),
            ..Default::default()
        },
        service_tier: Some(meta.service_tier.to_string()),
    }
}

/// The non-streaming response.
pub fn chat_completion(c: Completion) -> ChatCompletion {
    let message = AssistantMessage {
        reasoning: (!c.reasoning.is_empty()).then_some(c.reasoning),
        ..answer(c.content, c.tool_calls)
    };
    let reason = c.finished.reason.as_str();
    completion(c.meta, message, c.logprobs, reason, &c.finished.usage)
}

/// Compound's `usage_breakdown`: one entry per served model the loop ran.
pub fn usage_breakdown(finish: &AgentFinish) -> UsageBreakdown {
    UsageBreakdown {
        models: finish
            .per_model
            .iter()
            .map(|(model, u)| ModelUsage {
                model: model.clone(),
                usage: usage(u),
            })
            .collect(),
    }
}

/// The non-streaming response of the built-in tool loop: the answer, the transcript as
/// `reasoning`, `executed_tools`, usage summed over the turns (and per model on compound).
pub fn agent_completion(o: AgentOutcome) -> ChatCompletion {
    let message = AssistantMessage {
        reasoning: (!o.reasoning.is_empty()).then_some(o.reasoning),
        executed_tools: Some(o.executed),
        ..answer(o.content, o.tool_calls)
    };
    let reason = o.finish.reason.as_str();
    let mut c = completion(o.meta, message, o.logprobs, reason, &o.finish.usage);
    if matches!(o.style, Style::Compound { .. }) {
        c.usage_breakdown = serde_json::to_value(usage_breakdown(&o.finish)).ok();
    }
    c
}

/// A stream chunk of this response with `choices` and nothing else set.
pub fn chunk(meta: &ResponseMeta, choices: Vec<ChunkChoice>) -> ChatCompletionChunk {
    ChatCompletionChunk {
        id: meta.id.clone(),
        object: Default::default(),
        created: meta.created,
        model: meta.model.clone(),
        system_fingerprint: meta.fingerprint.clone(),
        choices,
        x_groq: None,
        usage: None,
        service_tier: None,
    }
}
