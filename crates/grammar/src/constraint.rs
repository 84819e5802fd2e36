//! One sequence's constraint: the token mask before each sample, the commit after it, and the
//! final check of the text.

use std::sync::Arc;
use std::time::{Duration, Instant};

use llguidance::Matcher;
use peregrine_engine::TokenId;
use toktrie::SimpleVob;

/// Why a finished text is not an acceptable answer (Groq's `json_validate_failed`).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OutputError {
    /// Generation ended (token limit, stop sequence) before the value was complete.
    #[error("Failed to generate JSON. Please adjust your prompt. See 'failed_generation' for more details.")]
    Incomplete,
    /// The grammar could not go on (a mask over its fuel limit, an internal parser error).
    #[error("Failed to generate JSON. Please adjust your prompt. See 'failed_generation' for more details. Error: {0}")]
    Grammar(String),
    /// The text parses but does not validate (a safety net behind the grammar).
    #[error("Generated JSON does not match the expected schema. Please adjust your prompt. See 'failed_generation' for more details. Error: jsonschema: {0}")]
    Schema(String),
}

/// A per-sequence constraint. `Send`, so masks can be computed off the engine thread.
/// A clone goes on from the same point on its own.
#[derive(Clone)]
pub struct Constraint {
    matcher: Matcher,
    validator: Option<Arc<jsonschema::Validator>>,
    mask: Option<SimpleVob>,
    mask_time: Duration,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("stopped", &self.matcher.is_stopped())
            .field("has_mask", &self.mask.is_some())
            .finish_non_exhaustive()
    }
}

impl Constraint {
    pub(crate) fn new(matcher: Matcher, validator: Option<Arc<jsonschema::Validator>>) -> Self {
        Self {
            matcher,
            validator,
            mask: None,
            mask_time: Duration::ZERO,
        }
    }

    /// Computes the set of tokens allowed next (only end-of-generation once the value is
    /// complete). Call once before each [`Constraint::apply`]; safe to call from another
    /// thread while the forward pass runs.
    pub fn compute_mask(&mut self) -> Result<(), OutputError> {
        let t0 = Instant::now();
        let r = self.matcher.compute_mask_or_eos();
        self.mask_time = t0.elapsed();
        match r {
            Ok(m) => {
                self.mask = Some(m);
                Ok(())
            }
            Err(e) => {
                self.mask = None;
                Err(OutputError::Grammar(first_line(&e.to_string())))
            }
        }
    }

    /// How long the last [`Constraint::compute_mask`] took.
    pub fn last_mask_time(&self) -> Duration {
        self.mask_time
    }

    /// Whether a mask is ready for [`Constraint::apply`].
    pub fn has_mask(&self) -> bool {
        self.mask.is_some()
    }

    /// Sets the logits of every disallowed token to -inf. Tokens beyond the vocabulary the
    /// grammar knows (padding rows) are disallowed too.
    pub fn apply(&self, logits: &mut [f32]) {
        let Some(mask) = &self.mask else { return };
        let words = mask.as_slice();
        for (w, chunk) in logits.chunks_mut(32).enumerate() {
            let bits = words.get(w).copied().unwrap_or(0);
            if bits == u32::MAX && chunk.len() == 32 {
                continue;
            }
            for (b, l) in chunk.iter_mut().enumerate() {
                if bits & (1 << b) == 0 {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
    }

    /// Whether `token` is allowed by the current mask (`true` when no mask was computed).
    pub fn allows(&self, token: TokenId) -> bool {
        self.mask.as_ref().is_none_or(|m| m.is_allowed(token))
    }

    /// Advances the grammar past a sampled token.
    pub fn commit(&mut self, token: TokenId) -> Result<(), OutputError> {
        self.mask = None;
        if self.matcher.is_stopped() {
            // Only end-of-generation was allowed; it ends the sequence.
            return Ok(());
        }
        self.matcher
            .consume_token(token)
            .map_err(|e| OutputError::Grammar(first_line(&e.to_string())))
    }

    /// The tokens the grammar allows and no other, from here on (an object's fixed keys and
    /// punctuation): jump-forward appends them without sampling. llguidance keeps back a
    /// last token that a longer one could still extend, so these are the canonical tokens
    /// of the forced text. Empty once the grammar has stopped.
    pub fn forced_tokens(&mut self) -> Vec<TokenId> {
        if self.matcher.is_stopped() {
            return Vec::new();
        }
        self.matcher.compute_ff_tokens()
    }

    /// Advances the grammar past tokens generated before it was started (a lazy grammar
    /// that begins at a call's opening): `bytes` first (the opening's part of a token that
    /// began before it, tokenized by the grammar's own tokenizer), then whole `tokens`.
    /// An error means the text so far is not a prefix of the grammar.
    pub fn feed(&mut self, bytes: &[u8], tokens: &[TokenId]) -> Result<(), OutputError> {
        self.mask = None;
        let err = |e: String| OutputError::Grammar(first_line(&e));
        let mut all = Vec::new();
        if !bytes.is_empty() {
            let env = self.matcher.tok_env().map_err(|e| err(e.to_string()))?;
            all.extend(env.tokenize_bytes(bytes));
        }
        all.extend_from_slice(tokens);
        let n = self
            .matcher
            .try_consume_tokens(&all)
            .map_err(|e| err(e.to_string()))?;
        if n < all.len() {
            return Err(OutputError::Grammar(format!(
                "the text is not a prefix of the grammar (stopped after {n} of {} tokens)",
                all.len()
            )));
        }
        Ok(())
    }

    /// Whether the text so far is a complete value of the grammar.
    pub fn is_complete(&mut self) -> bool {
        (self.matcher.is_stopped() && !self.matcher.is_error())
            || self.matcher.is_accepting().unwrap_or(false)
    }

    /// Checks a finished answer: complete, parses, and validates against the schema.
    pub fn check_output(&mut self, text: &str) -> Result<(), OutputError> {
        if let Some(e) = self.matcher.get_error() {
            return Err(OutputError::Grammar(first_line(&e)));
        }
        if !self.is_complete() {
            return Err(OutputError::Incomplete);
        }
        let Some(validator) = &self.validator else {
            return Ok(());
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| OutputError::Incomplete)?;
        match validator.validate(&value) {
            Ok(()) => Ok(()),
            Err(e) => Err(OutputError::Schema(format!(
                "'{}' does not validate with {}: {}",
                e.instance_path(),
                e.schema_path(),
                e
            ))),
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).chars().take(500).collect()
}
