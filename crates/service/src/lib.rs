//! Peregrine's services, below HTTP and above the runtime and the store.
//!
//! - [`registry`]: the served models ([`ServedModel`]) and their alias ids.
//! - [`completions`]: chat completions as a service. A request body becomes a [`ChatJob`]
//!   (parsed, model resolved, prepared by `peregrine_runtime::prepare`); the job runs at a
//!   [`Priority`] and yields events, or a folded [`Completion`], or a [`CompletionError`].
//!   The chat handler and the batch worker use it; the Responses API will.
//! - [`agent`]: the built-in tool loop (code execution, compound models) over completions
//!   and `peregrine_tools`.
//! - [`chat_wire`]: domain results in Groq's chat-completion shapes.
//! - [`files`] and [`batches`]: the Files and Batch APIs over `Store` and `Blobs`
//!   ([`Storage`]); [`batch_worker`] runs batches (validation in `batch_lines`).
//! - [`fine_tunings`]: LoRA adapter ZIPs registered, converted and hot-loaded as
//!   fine-tuned models ([`FineTunings`]).
//! - [`limits`]: Groq's rate limits (token buckets per organization, model and tier) and
//!   their `x-ratelimit-*` headers.
//! - [`error`]: [`ServiceError`], the one map from every failure to Groq's status and
//!   envelope, shared by HTTP answers and batch error files.

pub mod agent;
mod batch_in_flight;
mod batch_lines;
pub mod batch_worker;
pub mod batches;
pub mod chat_wire;
pub mod collector;
pub mod completions;
pub mod error;
pub mod files;
pub mod fine_tunings;
pub mod images;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod registry;
pub mod repeats;
pub mod responses_wire;

pub use completions::{
    ChatJob, ChatRun, Completion, CompletionError, Completions, GeneratedCall, Priority,
    ResponseMeta,
};
pub use error::ServiceError;
pub use files::Storage;
pub use fine_tunings::FineTunings;
pub use keys::{ApiKeys, Principal};
pub use limits::{Grant, RateLimiter};
pub use metrics::Metrics;
pub use registry::{AdapterConverter, ModelMeta, ModelRegistry, Resolved, ServedModel};

/// A new request id, `req_` + a lower-case ULID (also `x_groq.id`).
pub fn new_request_id() -> String {
    format!("req_{}", ulid::Ulid::new().to_string().to_lowercase())
}
