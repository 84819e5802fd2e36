//! Wire types for Peregrine's Groq-compatible API: serde structs only (no tokio, no axum).
//!
//! The JSON shapes follow Groq's API (docs/wire-contract.md,
//! <https://console.groq.com/docs/api-reference>); field order in response structs is the
//! key order of Groq's live responses, so `serde_json::to_string` matches them byte for byte.
//!
//! Key types, in the order a request meets them:
//! - [`parse::parse_chat_request`]: request bytes -> [`chat::ChatCompletionRequest`], or a
//!   [`parse::RequestParseError`] whose message names the field in Groq's wording
//!   (`property 'max_token' is unsupported, did you mean 'max_tokens'?`).
//! - [`chat::ChatCompletionRequest`] with [`chat::ChatMessage`] (one variant per `role`, each
//!   rejecting unknown fields), [`chat::MessageContent`], [`chat::Tool`],
//!   [`chat::ToolChoice`], [`chat::ResponseFormat`]. Shapes only: ranges and per-model rules
//!   are the runtime's validation layer's job.
//! - [`chat::ChatCompletion`]: the non-streaming answer, with [`chat::Usage`] and
//!   [`chat::XGroq`].
//! - [`chat::ChatCompletionChunk`]: one SSE `data:` payload of a stream.
//! - [`error::ErrorEnvelope`] / [`error::ErrorObject`]: every error body.
//! - [`models::Model`] / [`models::ModelList`]: the models API.
//! - [`files::FileObject`] and [`batches::Batch`] (with [`batches::BatchOutputLine`], a line
//!   of a batch's result files): the Files and Batch APIs.
//!
//! Fixed strings (`"object":"chat.completion"`, `"role":"assistant"`, ...) are zero-sized
//! types such as [`chat::ChatCompletionObject`], so a response cannot carry a wrong one.
//!
//! Every wire type derives `utoipa::ToSchema`; [`openapi::document`] (or [`openapi::json`])
//! is the OpenAPI 3.1 document of the whole API built from them.

pub mod batches;
pub mod chat;
pub mod error;
pub mod files;
pub mod fine_tunings;
pub mod models;
pub mod openapi;
pub mod parse;
pub mod responses;
mod wire;

pub use chat::{ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage};
pub use error::{ErrorEnvelope, ErrorObject};
pub use parse::{parse_chat_request, RequestParseError};
