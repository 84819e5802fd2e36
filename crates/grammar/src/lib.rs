//! Constrained decoding over llguidance.
//!
//! Call order:
//! 1. [`Grammars::new`] once per model: builds the token trie from the model's [`Vocab`]
//!    (control tokens marked special) and llguidance's parser factory, with [`GrammarLimits`].
//! 2. [`Grammars::compile`] per request, before admission: a [`GrammarSpec`] (from
//!    `response_format`) becomes a fresh [`Constraint`], or a [`GrammarError`] that names what
//!    could not be compiled. Compiled grammars are cached by their spec.
//! 3. Per step, on the engine thread: [`Constraint::compute_mask`] (may run on another thread,
//!    overlapped with the forward pass), [`Constraint::apply`] to the logits row, sample,
//!    [`Constraint::commit`] the token.
//! 4. At the end: [`Constraint::is_complete`] and [`Constraint::check_output`] decide whether the
//!    text is a finished, schema-valid value (else Groq's `json_validate_failed`).
//!
//! [`strict::check`] enforces Groq's `strict: true` rules on a schema.
//!
//! [`Vocab`]: peregrine_engine::Vocab

mod compile;
mod constraint;
pub mod strict;
mod tokenizer;
pub mod tools;

pub use compile::{GrammarError, GrammarLimits, GrammarSpec, Grammars, DEFAULT_CACHE_BYTES};
pub use constraint::{Constraint, OutputError};
pub use tokenizer::tok_env;
pub use tools::{CallGrammar, CallSyntax, Marker, ToolDef};
