//! Peregrine's runtime: from a parsed wire request to a stream of events.
//!
//! Call order:
//! 1. [`validate::validate`] turns a `ChatCompletionRequest` into a [`ValidRequest`] (template
//!    rendered, prompt tokenized, context and every parameter checked) or a
//!    [`ValidationError`] that names the field.
//! 2. [`Runtime::submit`] queues it (or answers [`AdmissionError::QueueFull`]) and returns a
//!    receiver of [`Event`]s; dropping the receiver cancels the request.
//! 3. The engine thread (`engine_loop`) admits requests into KV slots (reusing a cached
//!    prompt prefix), asks the [`scheduler`] for a plan, runs one batched forward pass,
//!    samples ([`sampling`]), detokenizes, matches stop strings and sends events.

mod engine_loop;
pub mod events;
mod handle;
pub mod sampling;
pub mod scheduler;
pub mod stats;
pub mod tools;
pub mod validate;

pub use events::{Event, FinishReason, Finished, Rejection, TokenLogprob, TopLogprob, UsageStats};
pub use handle::{AdmissionError, Runtime, RuntimeConfig};
pub use stats::{MaskStats, Summary};
pub use tools::ToolPlan;
pub use validate::{validate, ModelContext, ServiceTier, ValidRequest, ValidationError};
