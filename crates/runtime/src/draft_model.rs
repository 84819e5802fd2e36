//! Drafts from a smaller model of the same vocabulary (the catalogue's 0.5B coder for its
//! 1.5B one): greedy guesses of a sequence's next tokens, which the target then verifies in
//! one pass like any other draft ([`crate::speculate`]).
//!
//! The draft model runs its own engine with one sequence per slot of the target. Its cache
//! follows each sequence lazily: before drafting, whatever it holds past the sequence's
//! history (the wrong drafts of the last step, or another request's tokens in a reused slot)
//! is dropped and the tokens it has not seen yet are fed, in the same pass that gives the
//! first draft. A sequence that never drafts costs the draft model nothing, so a draft model
//! that does not pay on this machine is only loaded, never run.
//!
//! Drafting stops at the first token the draft model is unsure of (its top probability under
//! [`P_MIN`], as llama.cpp's own speculative example does): a guess it gives even odds is more
//! likely to waste the bigger verify pass than to save one.

use peregrine_engine::{Batch, BatchToken, Engine, EngineError, SeqId, TokenId};

use crate::cost::StepCosts;

/// The draft model's least top probability for a token to be sent as a draft.
pub const P_MIN: f32 = 0.6;

/// What one sequence asks of the draft model.
pub struct DraftAsk<'a> {
    pub seq: SeqId,
    /// Every token of the sequence so far: its cached tokens and the one pending.
    pub history: &'a [TokenId],
    /// Most drafts wanted.
    pub max: usize,
}

/// The draft model's engine and what its cache holds per slot.
pub struct DraftModel<E: Engine> {
    engine: E,
    /// Per slot of the target: the tokens whose cells the draft model's cache holds.
    cached: Vec<Vec<TokenId>>,
    /// What passes of 1, 2, ... rows of the draft model cost, measured at load.
    costs: StepCosts,
    batch: Batch,
}

impl<E: Engine> DraftModel<E> {
    /// A draft model over `engine`, which must have at least as many sequences as the
    /// target has slots.
    pub fn new(engine: E) -> Self {
        let slots = engine.info().n_seq_max as usize;
        Self {
            engine,
            cached: vec![Vec::new(); slots],
            costs: StepCosts::new(slots.max(1)),
            batch: Batch::default(),
        }
    }

    /// What a pass of `rows` draft rows costs, once measured.
    pub fn cost(&self, rows: usize) -> Option<f64> {
        self.costs.of(rows)
    }

    /// Every measured pass size: (rows, seconds).
    pub fn curve(&self) -> Vec<(usize, f64)> {
        self.costs.curve()
    }

    /// Measures passes of 1..=slots rows, as the model's calibration does.
    pub fn calibrate(&mut self) {
        let slots = self.cached.len().max(1);
        self.costs = StepCosts::measure(&mut self.engine, slots, slots, "draft model");
        for cached in &mut self.cached {
            cached.clear();
        }
    }

    /// Greedy drafts for each ask, in order: up to `max` tokens each, fewer where the draft
    /// model grows unsure. A failed pass ends the drafts where they are (and empties the
    /// draft model's cache of those sequences), never an error: drafts are only guesses.
    pub fn draft(&mut self, asks: &[DraftAsk<'_>]) -> Vec<Vec<TokenId>> {
        let mut out = vec![Vec::new(); asks.len()];
        // Whether each ask may draft on: not once the draft model was unsure.
        let mut going: Vec<bool> = asks.iter().map(|a| a.max > 0).collect();
        if let Err(e) = self.catch_up(asks, &mut out, &mut going) {
            tracing::debug!(error = %e, "the draft model's pass failed; no drafts this step");
            self.forget(asks);
            return vec![Vec::new(); asks.len()];
        }
        // One pass per further draft, over every sequence still going.
        loop {
            let rows: Vec<usize> = (0..asks.len())
                .filter(|&i| going[i] && !out[i].is_empty() && out[i].len() < asks[i].max)
                .collect();
            if rows.is_empty() {
                return out;
            }
            self.batch.clear();
            for &i in &rows {
                self.batch.push(BatchToken {
                    token: *out[i].last().expect("only asks with a draft go on"),
                    pos: (asks[i].history.len() + out[i].len() - 1) as u32,
                    seq: asks[i].seq,
                    logits: true,
                });
            }
            if let Err(e) = self.engine.decode(&self.batch) {
                tracing::debug!(error = %e, "the draft model's pass failed; drafts cut short");
                self.forget(asks);
                return out;
            }
            for (row, &i) in rows.iter().enumerate() {
                let fed = *out[i].last().expect("only asks with a draft go on");
                self.cached[asks[i].seq.0 as usize].push(fed);
                self.take(row, &mut out[i], &mut going[i]);
            }
        }
    }

    /// The draft from logits row `row`: kept when the draft model is sure enough, else the
    /// sequence stops drafting.
    fn take(&self, row: usize, draft: &mut Vec<TokenId>, going: &mut bool) {
        let (tok, p) = top(self.engine.logits(row));
        if p >= P_MIN {
            draft.push(tok);
        } else {
            *going = false;
        }
    }

    /// Makes each ask's cache hold its history but the last token, then feeds that token to
    /// get the first draft; the feeding is chunked to the engine's batch size.
    fn catch_up(
        &mut self,
        asks: &[DraftAsk<'_>],
        out: &mut [Vec<TokenId>],
        going: &mut [bool],
    ) -> Result<(), EngineError> {
        let n_batch = (self.engine.info().n_batch as usize).max(1);
        // (ask, position, token, whether its logits give the first draft)
        let mut feed: Vec<(usize, u32, TokenId, bool)> = Vec::new();
        for (i, ask) in asks.iter().enumerate() {
            if !going[i] || ask.history.is_empty() {
                going[i] = false;
                continue;
            }
            let cached = &mut self.cached[ask.seq.0 as usize];
            // At least the last token is fed: its logits give the first draft.
            let mut keep = common_prefix(cached, ask.history).min(ask.history.len() - 1);
            if keep < cached.len() && !self.engine.clear_seq(ask.seq, keep as u32) {
                // The cache dropped the whole sequence instead of its tail.
                keep = 0;
            }
            cached.truncate(keep);
            let n = ask.history.len();
            for (pos, &tok) in ask.history.iter().enumerate().skip(keep) {
                feed.push((i, pos as u32, tok, pos + 1 == n));
            }
        }
        for chunk in feed.chunks(n_batch) {
            self.batch.clear();
            for &(i, pos, token, logits) in chunk {
                self.batch.push(BatchToken {
                    token,
                    pos,
                    seq: asks[i].seq,
                    logits,
                });
            }
            self.engine.decode(&self.batch)?;
            for (row, &(i, _, token, last)) in chunk.iter().enumerate() {
                self.cached[asks[i].seq.0 as usize].push(token);
                if last {
                    self.take(row, &mut out[i], &mut going[i]);
                }
            }
        }
        Ok(())
    }

    /// Empties the draft model's cache of the asks' sequences (after a failed pass, what it
    /// holds is not known).
    fn forget(&mut self, asks: &[DraftAsk<'_>]) {
        for ask in asks {
            self.engine.clear_seq(ask.seq, 0);
            self.cached[ask.seq.0 as usize].clear();
        }
    }
}

/// The most likely token of a logits row and its probability (the softmax's top).
fn top(logits: &[f32]) -> (TokenId, f32) {
    let Some((best, &max)) = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)) else {
        return (0, 0.0);
    };
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    (best as TokenId, 1.0 / sum.max(1.0))
}

fn common_prefix(a: &[TokenId], b: &[TokenId]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
