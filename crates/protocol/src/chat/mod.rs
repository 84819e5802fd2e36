//! Chat completions: the request body, its messages, the response and the stream chunks.
//!
//! - [`ChatCompletionRequest`] and its parts ([`ChatMessage`], [`MessageContent`], [`Tool`],
//!   [`ToolChoice`], [`ResponseFormat`], ...): what clients send (docs/wire-contract.md, "Chat completions request").
//! - [`ChatCompletion`]: the non-streaming answer (docs/wire-contract.md, "Chat completion response"), with [`Usage`] and [`XGroq`].
//! - [`ChatCompletionChunk`]: one SSE `data:` payload of a stream (docs/wire-contract.md, "Streaming").

mod executed;
mod message;
mod request;
mod response;
mod stream;

pub use executed::{
    CodeResult, ExecutedTool, ModelUsage, SearchResult, SearchResults, UsageBreakdown,
};
pub use message::{ChatMessage, ContentPart, FunctionCall, ImageUrl, MessageContent, ToolCall};
pub use request::{
    ChatCompletionRequest, FunctionCallChoice, FunctionDefinition, FunctionName, JsonSchemaFormat,
    ResponseFormat, StopSequences, StreamOptions, Tool, ToolChoice, REQUEST_FIELDS,
};
pub use response::{
    AssistantMessage, AssistantRole, ChatCompletion, ChatCompletionObject, Choice, ChoiceLogprobs,
    CompletionTokensDetails, PromptTokensDetails, TokenLogprob, TopLogprob, Usage, XGroq,
};
pub use stream::{
    ChatCompletionChunk, ChatCompletionChunkObject, ChunkChoice, Delta, FunctionCallDelta,
    ToolCallDelta,
};

#[cfg(test)]
pub(crate) use request::tests::full_request;
