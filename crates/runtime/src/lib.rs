//! Peregrine's runtime: from a parsed wire request to a stream of events.
//!
//! Call order:
//! 1. [`model::build`] starts a model: its engine thread ([`Runtime`]) and the
//!    [`ModelContext`] that preparation reads.
//! 2. [`prepare::prepare`] turns a `ChatCompletionRequest` into a [`PreparedRequest`]
//!    (template rendered, prompt tokenized, context and every parameter checked, grammars
//!    compiled) or a [`PrepareError`] that names the field.
//! 3. [`Runtime::submit`] queues it (or answers [`AdmissionError::QueueFull`]) and returns a
//!    receiver of [`Event`]s; dropping the receiver cancels the request.
//! 4. The engine thread (`engine_loop`) admits requests into KV slots (reusing a cached
//!    prompt prefix), asks the [`scheduler`] for a plan, runs one batched forward pass,
//!    samples ([`sampling`]), detokenizes, matches stop strings, parses tool calls and sends
//!    events.
//!
//! Module graph (no cycles): `prepare` -> `model`, `request`; `model` -> `handle` ->
//! `engine_loop` -> `request`, `scheduler`, `cost`, `speculate`, `sampling`;
//! `speculate` -> `cost`.

pub mod cost;
pub mod draft_model;
mod engine_loop;
pub mod events;
mod handle;
pub mod metrics;
pub mod model;
pub mod prepare;
pub mod request;
pub mod sampling;
pub mod scheduler;
pub mod speculate;
pub mod stats;

pub use events::{Event, FinishReason, Finished, Rejection, TokenLogprob, TopLogprob, UsageStats};
pub use handle::{AdmissionError, EngineState, Runtime, RuntimeConfig};
pub use metrics::{EngineFamilies, EngineMetrics};
pub use model::{
    build, build_with_draft, draft_mismatch, join_engine_threads, BuildError, BuiltModel,
    ModelContext, ModelSettings,
};
pub use peregrine_engine::AdapterId;
pub use prepare::{prepare, prepare_with_images, PrepareError};
pub use request::{PreparedRequest, PromptImage, ServiceTier, ToolPlan};
pub use speculate::Speculation;
pub use stats::{MaskStats, Summary};
