//! Domain results in Groq's chat-completion shapes: the non-streaming object, stream chunks,
//! usage and log-probabilities. One place for both the HTTP handler and batch result files.

use peregrine_protocol::chat::{
    AssistantMessage, ChatCompletion, ChatCompletionChunk, Choice, ChoiceLogprobs, ChunkChoice,
    FunctionCall, PromptTokensDetails, TokenLogprob, ToolCall, TopLogprob, Usage, XGroq,
};
use peregrine_runtime::UsageStats;

use crate::completions::{Completion, ResponseMeta};

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
        completion_tokens_details: None,
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

/// The non-streaming response.
pub fn chat_completion(c: Completion) -> ChatCompletion {
    let meta = c.meta;
    let calls: Vec<ToolCall> = c
        .tool_calls
        .into_iter()
        .map(|call| ToolCall {
            id: call_id(),
            kind: "function".into(),
            function: FunctionCall {
                name: call.name,
                arguments: call.arguments,
            },
        })
        .collect();
    // A turn that only calls tools has `content: null`.
    let content = (calls.is_empty() || !c.content.trim().is_empty()).then_some(c.content);
    ChatCompletion {
        id: meta.id,
        object: Default::default(),
        created: meta.created,
        model: meta.model,
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                content,
                tool_calls: (!calls.is_empty()).then_some(calls),
                ..Default::default()
            },
            logprobs: meta.logprobs.then(|| ChoiceLogprobs {
                content: logprobs(c.logprobs),
            }),
            finish_reason: c.finished.reason.as_str().to_string(),
        }],
        usage: usage(&c.finished.usage),
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
