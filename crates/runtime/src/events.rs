//! What the engine thread sends back for one request.

/// One event of a request's stream, in order: any number of `Delta`s, then exactly one
/// `Finished` or `Failed`.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// New output text (already past stop-string matching; may be empty when only
    /// log-probabilities are reported for a token whose text is held back).
    Delta {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    /// Reasoning text of a reasoning model (`reasoning_format: parsed`), before the answer.
    Reasoning {
        text: String,
    },
    /// A complete, checked tool call (`arguments`: compact JSON of an object).
    ToolCall {
        name: String,
        arguments: String,
    },
    Finished(Finished),
    /// Generation failed after it started (the response headers may be out already).
    Failed(String),
    /// Generation ended but the text is not an acceptable answer (the text sent so far is
    /// the failed generation).
    Rejected(Rejection),
    /// Batch work only: the sequence gave its slot to an interactive request. Nothing it
    /// produced counts; submit it again.
    Preempted,
}

/// Why a finished text was refused.
#[derive(Clone, Debug, PartialEq)]
pub enum Rejection {
    /// Not a complete value of the requested JSON format (Groq's `json_validate_failed`).
    Json(String),
    /// A tool call that cannot be parsed or does not fit its tool, or no call where one was
    /// required (Groq's `tool_use_failed`). `failed_generation` is the whole output.
    Tool {
        message: String,
        failed_generation: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// End of turn or a stop sequence.
    Stop,
    /// `max_tokens` or the context window reached.
    Length,
    /// The model called tools.
    ToolCalls,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub reason: FinishReason,
    pub usage: UsageStats,
}

/// Token counts and the times measured where they happen (seconds).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct UsageStats {
    pub prompt_tokens: u32,
    /// Prompt tokens whose KV cache was reused from an earlier request.
    pub cached_tokens: u32,
    pub completion_tokens: u32,
    /// Completion tokens spent reasoning (`None`: the model does not reason).
    pub reasoning_tokens: Option<u32>,
    /// From submission until the request got a sequence slot.
    pub queue_time: f64,
    /// From getting a slot until the first completion token was sampled.
    pub prompt_time: f64,
    /// From the first completion token until the end.
    pub completion_time: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top: Vec<TopLogprob>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TopLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}
