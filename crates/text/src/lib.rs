//! Pure, synchronous text handling for Peregrine: no I/O, no async, no engine.
//!
//! The pieces, in the order a request meets them:
//!
//! 1. [`template`]: [`ChatTemplate`] compiles the model's Jinja chat template (the GGUF's
//!    `tokenizer.chat_template`) once at load; [`ChatTemplate::render_prompt`] turns a
//!    conversation ([`TemplateMessage`]s + tool definitions) into the prompt text, with
//!    assistant prefill when the conversation ends on an assistant message. A template that
//!    rejects the conversation (`raise_exception`) yields [`TemplateError::Raised`], meant
//!    for a 400.
//! 2. [`detok`]: per sequence, an [`IncrementalDecoder`] turns each sampled token's bytes
//!    into text without splitting a UTF-8 character.
//! 3. [`stop`]: per sequence, a [`StopMatcher`] sees that text, holds back what could be the
//!    start of a stop string and reports when one completes ([`StopStep::stopped`]).
//!
//! At the end of generation, `IncrementalDecoder::flush` then `StopMatcher::push` +
//! `StopMatcher::flush` release what was held back.

pub mod control;
pub mod detok;
pub mod guard;
pub mod reasoning;
pub mod stop;
pub mod template;
pub mod tools;

pub use detok::IncrementalDecoder;
pub use stop::{StopMatcher, StopStep};
pub use template::{
    ChatTemplate, RenderedPrompt, TemplateError, TemplateInput, TemplateMessage, TemplateToolCall,
    TemplateVars,
};
