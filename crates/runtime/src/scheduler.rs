//! The continuous-batching planner: a pure function from the sequences in flight to the
//! number of tokens each feeds into the next forward pass. No engine calls, no async.
//!
//! Policy:
//! - every decoding sequence feeds exactly one token per step (streams never stall);
//! - the remaining token budget goes to prefilling sequences, oldest first, in chunks;
//! - while any sequence is decoding, prefill uses the smaller `busy` budget so one long
//!   prompt cannot freeze the running streams for more than one short step.

/// What the planner needs to know about one sequence in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqView {
    /// Prompt tokens not yet in the KV cache; 0 once the sequence is decoding.
    pub prefill_remaining: usize,
}

/// Token budgets for one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Most tokens in one forward pass (the engine's batch size).
    pub max_tokens: usize,
    /// Most prefill tokens in a step that also decodes other sequences.
    pub busy_prefill: usize,
}

/// Plans one step. Returns, for each sequence in `seqs` (same order), how many tokens it
/// feeds. The sum never exceeds `budget.max_tokens`, provided the number of decoding
/// sequences does not exceed it either (the engine guarantees `n_seq_max <= n_batch`).
pub fn plan(seqs: &[SeqView], budget: Budget) -> Vec<usize> {
    let decoding = seqs.iter().filter(|s| s.prefill_remaining == 0).count();
    let mut left = budget.max_tokens.saturating_sub(decoding);
    if decoding > 0 {
        left = left.min(budget.busy_prefill.max(1));
    }
    seqs.iter()
        .map(|s| {
            if s.prefill_remaining == 0 {
                1
            } else {
                let n = s.prefill_remaining.min(left);
                left -= n;
                n
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const B: Budget = Budget {
        max_tokens: 64,
        busy_prefill: 16,
    };

    #[test]
    fn decoders_get_one_token_and_prefill_gets_the_rest() {
        let seqs = [
            SeqView {
                prefill_remaining: 0,
            },
            SeqView {
                prefill_remaining: 100,
            },
            SeqView {
                prefill_remaining: 0,
            },
        ];
        assert_eq!(plan(&seqs, B), vec![1, 16, 1]);
    }

    #[test]
    fn idle_prefill_uses_the_whole_batch() {
        let seqs = [
            SeqView {
                prefill_remaining: 100,
            },
            SeqView {
                prefill_remaining: 10,
            },
        ];
        assert_eq!(plan(&seqs, B), vec![64, 0]);
    }

    proptest! {
        #[test]
        fn plans_respect_budget_and_make_progress(
            rem in proptest::collection::vec(0usize..300, 0..32),
            max in 32usize..600,
            busy in 1usize..600,
        ) {
            let seqs: Vec<SeqView> = rem.iter().map(|&r| SeqView { prefill_remaining: r }).collect();
            let budget = Budget { max_tokens: max, busy_prefill: busy };
            let p = plan(&seqs, budget);
            prop_assert_eq!(p.len(), seqs.len());
            prop_assert!(p.iter().sum::<usize>() <= max);
            for (s, n) in seqs.iter().zip(&p) {
                if s.prefill_remaining == 0 {
                    prop_assert_eq!(*n, 1);
                } else {
                    prop_assert!(*n <= s.prefill_remaining);
                }
            }
            if !seqs.is_empty() {
                prop_assert!(p.iter().sum::<usize>() > 0);
            }
            // The oldest prefilling sequence always advances.
            if let Some(i) = seqs.iter().position(|s| s.prefill_remaining > 0) {
                prop_assert!(p[i] > 0);
            }
        }
    }
}
