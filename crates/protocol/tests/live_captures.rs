//! Byte-for-byte checks against verbatim Groq captures (a response and a stream; see
//! docs/wire-contract.md): building the same values with our types must serialise to exactly
//! the captured text (key order included), and the captures must parse back into the same
//! values.

use peregrine_protocol::chat::{
    AssistantMessage, AssistantRole, ChatCompletion, ChatCompletionChunk,
    ChatCompletionChunkObject, ChatCompletionObject, Choice, ChunkChoice, Delta, FunctionCallDelta,
    ToolCallDelta, Usage, XGroq,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn assert_wire<T>(value: &T, captured: &str)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    assert_eq!(serde_json::to_string(value).unwrap(), captured);
    let parsed: T = serde_json::from_str(captured).unwrap();
    assert_eq!(&parsed, value);
}

/// Spec §3.1, "Current live shape (2026, qwen)". The capture's content was elided to `…` in
/// the spec; the same placeholder is used here.
#[test]
fn non_streaming_completion() {
    let captured = r#"{"id":"chatcmpl-a79f596a-cdc3-4b0b-9e02-0cd4dda5506e","object":"chat.completion","created":1791297846,"model":"qwen/qwen3.8-27b","choices":[{"index":0,"message":{"role":"assistant","content":"…"},"logprobs":null,"finish_reason":"stop"}],"usage":{"queue_time":0.0521354,"prompt_tokens":16,"prompt_time":0.00080814,"completion_tokens":19,"completion_time":0.036813737,"total_tokens":35,"total_time":0.037621877},"usage_breakdown":null,"system_fingerprint":"fp_21e59ac2de","x_groq":{"id":"req_01m48tqzdve5v8d97j7jgm40as","seed":1321871292},"service_tier":"on_demand"}"#;
    let completion = ChatCompletion {
        id: "chatcmpl-a79f596a-cdc3-4b0b-9e02-0cd4dda5506e".into(),
        object: ChatCompletionObject,
        created: 1791297846,
        model: "qwen/qwen3.8-27b".into(),
        choices: vec![Choice {
            index: 0,
            message: AssistantMessage {
                role: AssistantRole,
                content: Some("…".into()),
                reasoning: None,
                tool_calls: None,
                executed_tools: None,
            },
            logprobs: None,
            finish_reason: "stop".into(),
        }],
        usage: Usage {
            queue_time: 0.0521354,
            prompt_tokens: 16,
            prompt_time: 0.00080814,
            completion_tokens: 19,
            completion_time: 0.036813737,
            total_tokens: 35,
            total_time: 0.037621877,
            prompt_tokens_details: None,
            completion_tokens_details: None,
        },
        usage_breakdown: None,
        system_fingerprint: "fp_21e59ac2de".into(),
        x_groq: XGroq {
            id: "req_01m48tqzdve5v8d97j7jgm40as".into(),
            seed: Some(1321871292),
            usage: None,
            error: None,
            usage_breakdown: None,
        },
        service_tier: Some("on_demand".into()),
    };
    assert_wire(&completion, captured);
}

/// Spec §3.1: gpt-oss with parsed reasoning, and a tool-call-only message (`content: null`).
#[test]
fn assistant_message_shapes() {
    let reasoning = AssistantMessage {
        content: Some("ok".into()),
        reasoning: Some("short".into()),
        ..AssistantMessage::default()
    };
    assert_wire(
        &reasoning,
        r#"{"role":"assistant","content":"ok","reasoning":"short"}"#,
    );
    let tool_only = AssistantMessage {
        tool_calls: Some(vec![peregrine_protocol::chat::ToolCall {
            id: "call_abc123".into(),
            kind: "function".into(),
            function: peregrine_protocol::chat::FunctionCall {
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into(),
            },
        }]),
        ..AssistantMessage::default()
    };
    assert_wire(
        &tool_only,
        r#"{"role":"assistant","content":null,"tool_calls":[{"id":"call_abc123","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]}"#,
    );
}

const ID: &str = "chatcmpl-8087db6b-4c33-4e5e-ba30-a85377c54ccc";
const REQ_ID: &str = "req_01kztr8bqme32rx8ttyjtpk0nw";

fn chunk(choices: Vec<ChunkChoice>) -> ChatCompletionChunk {
    ChatCompletionChunk {
        id: ID.into(),
        object: ChatCompletionChunkObject,
        created: 1786530508,
        model: "openai/gpt-oss-20b".into(),
        system_fingerprint: "fp_ef00694abe".into(),
        choices,
        x_groq: None,
        usage: None,
        service_tier: None,
    }
}

fn capture_usage() -> Usage {
    Usage {
        queue_time: 0.017371826,
        prompt_tokens: 75,
        prompt_time: 0.003517995,
        completion_tokens: 1,
        completion_time: 0.001015726,
        total_tokens: 76,
        total_time: 0.004533721,
        prompt_tokens_details: None,
        completion_tokens_details: None,
    }
}

/// Spec §3.4: `openai/gpt-oss-20b`, `stream_options.include_usage:true`, `max_tokens:1`; the
/// three `data:` payloads, verbatim.
#[test]
fn streaming_chunks() {
    let first = r#"{"id":"chatcmpl-8087db6b-4c33-4e5e-ba30-a85377c54ccc","object":"chat.completion.chunk","created":1786530508,"model":"openai/gpt-oss-20b","system_fingerprint":"fp_ef00694abe","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"x_groq":{"id":"req_01kztr8bqme32rx8ttyjtpk0nw","seed":91721220}}"#;
    let finish = r#"{"id":"chatcmpl-8087db6b-4c33-4e5e-ba30-a85377c54ccc","object":"chat.completion.chunk","created":1786530508,"model":"openai/gpt-oss-20b","system_fingerprint":"fp_ef00694abe","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}],"x_groq":{"id":"req_01kztr8bqme32rx8ttyjtpk0nw","usage":{"queue_time":0.017371826,"prompt_tokens":75,"prompt_time":0.003517995,"completion_tokens":1,"completion_time":0.001015726,"total_tokens":76,"total_time":0.004533721}},"usage":{"queue_time":0.017371826,"prompt_tokens":75,"prompt_time":0.003517995,"completion_tokens":1,"completion_time":0.001015726,"total_tokens":76,"total_time":0.004533721}}"#;
    let usage_only = r#"{"id":"chatcmpl-8087db6b-4c33-4e5e-ba30-a85377c54ccc","object":"chat.completion.chunk","created":1786530508,"model":"openai/gpt-oss-20b","system_fingerprint":"fp_ef00694abe","choices":[],"usage":{"queue_time":0.017371826,"prompt_tokens":75,"prompt_time":0.003517995,"completion_tokens":1,"completion_time":0.001015726,"total_tokens":76,"total_time":0.004533721},"service_tier":"on_demand"}"#;

    let mut c = chunk(vec![ChunkChoice {
        index: 0,
        delta: Delta {
            role: Some(AssistantRole),
            content: Some(String::new()),
            ..Delta::default()
        },
        logprobs: None,
        finish_reason: None,
    }]);
    c.x_groq = Some(XGroq {
        seed: Some(91721220),
        ..XGroq::new(REQ_ID)
    });
    assert_wire(&c, first);

    let mut c = chunk(vec![ChunkChoice {
        finish_reason: Some("length".into()),
        ..ChunkChoice::default()
    }]);
    c.x_groq = Some(XGroq {
        usage: Some(capture_usage()),
        ..XGroq::new(REQ_ID)
    });
    c.usage = Some(capture_usage());
    assert_wire(&c, finish);

    let mut c = chunk(vec![]);
    c.usage = Some(capture_usage());
    c.service_tier = Some("on_demand".into());
    assert_wire(&c, usage_only);
}

/// Spec §3.4: llama-3.3-70b tool-call delta (whole call in one delta, `index` last). The
/// capture elides the envelope with `…`, so only the `choices` entry is compared verbatim.
#[test]
fn tool_call_delta() {
    let captured = r#"{"index":0,"delta":{"tool_calls":[{"id":"tk85n1k4m","type":"function","function":{"name":"weather","arguments":"{}"},"index":0}]},"logprobs":null,"finish_reason":null}"#;
    let choice = ChunkChoice {
        index: 0,
        delta: Delta {
            tool_calls: Some(vec![ToolCallDelta {
                id: Some("tk85n1k4m".into()),
                kind: Some("function".into()),
                function: Some(FunctionCallDelta {
                    name: Some("weather".into()),
                    arguments: Some("{}".into()),
                }),
                index: 0,
            }]),
            ..Delta::default()
        },
        logprobs: None,
        finish_reason: None,
    };
    assert_wire(&choice, captured);

    // Older streams: later fragments carry only `index` and a piece of the arguments.
    let fragment = ToolCallDelta {
        function: Some(FunctionCallDelta {
            arguments: Some("{\"ci".into()),
            ..FunctionCallDelta::default()
        }),
        ..ToolCallDelta::default()
    };
    assert_wire(&fragment, r#"{"function":{"arguments":"{\"ci"},"index":0}"#);
}

/// Spec §3.4: qwen3-32b parsed reasoning delta, and the mid-stream failure `x_groq`.
#[test]
fn reasoning_delta_and_stream_error() {
    let delta = Delta {
        reasoning: Some("Okay".into()),
        ..Delta::default()
    };
    assert_wire(&delta, r#"{"reasoning":"Okay"}"#);
    let x = XGroq {
        error: Some("over_capacity".into()),
        ..XGroq::new(REQ_ID)
    };
    assert_wire(
        &x,
        r#"{"id":"req_01kztr8bqme32rx8ttyjtpk0nw","error":"over_capacity"}"#,
    );
}
