//! The continuous-batching planner: a pure function from the sequences in flight to the
//! number of tokens each feeds into the next forward pass. No engine calls, no async.
//!
//! Policy:
//! - every decoding sequence feeds its pending tokens each step (streams never stall): one
//!   sampled token, plus any its grammar forced after it (jump-forward);
//! - the remaining token budget goes to prefilling sequences, oldest first, in chunks;
//! - while any sequence is decoding, prefill uses the smaller `busy` budget so one long
//!   prompt cannot freeze the running streams for more than one short step;
//! - a prompt's last token is fed in a step after the rest of the prompt: its logits choose
//!   the first completion token, and computed as its sequence's only row they are the same
//!   whether the rest of the prompt was just computed or came from the prefix cache (where
//!   only that token is computed), so a seeded request repeats its text either way;
//! - background (batch) sequences run in what interactive ones leave: while any interactive
//!   sequence is in flight, at most `background_rows` background sequences that are already
//!   decoding feed a token, and none prefills. With no interactive sequence they are served
//!   like any other.

/// What the planner needs to know about one sequence in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SeqView {
    /// Prompt tokens not yet in the KV cache; 0 once the sequence is decoding.
    pub prefill_remaining: usize,
    /// Tokens a decoding sequence feeds when it runs: its sampled token and those its grammar
    /// forced after it (jump-forward). Read as at least 1.
    pub feed: usize,
    /// Batch work, at the lowest priority.
    pub background: bool,
}

/// Token budgets for one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Most tokens in one forward pass (the engine's batch size).
    pub max_tokens: usize,
    /// Most prefill tokens in a step that also decodes other sequences.
    pub busy_prefill: usize,
    /// Most background sequences decoding beside interactive ones.
    pub background_rows: usize,
}

/// Plans one step. Returns, for each sequence in `seqs` (same order), how many tokens it
/// feeds. The sum never exceeds `budget.max_tokens`, provided the decoding sequences' feeds
/// do not exceed it either (the engine loop caps jump-forward at `n_batch / n_seq_max`).
pub fn plan(seqs: &[SeqView], budget: Budget) -> Vec<usize> {
    let interactive = seqs.iter().any(|s| !s.background);
    // Whether a sequence takes part this step; called in order, it hands out the background
    // rows (so two passes in the same order agree).
    let runner = || {
        let mut background_rows = budget.background_rows;
        move |s: &SeqView| {
            if !s.background || !interactive {
                true
            } else if s.prefill_remaining == 0 && background_rows > 0 {
                background_rows -= 1;
                true
            } else {
                false
            }
        }
    };
    let mut runs = runner();
    let decoding: usize = seqs
        .iter()
        .filter(|s| runs(s) && s.prefill_remaining == 0)
        .map(|s| s.feed.max(1))
        .sum();
    let mut left = budget.max_tokens.saturating_sub(decoding);
    if decoding > 0 {
        left = left.min(budget.busy_prefill.max(1));
    }
    let mut runs = runner();
    seqs.iter()
        .map(|s| {
            if !runs(s) {
                0
            } else if s.prefill_remaining == 0 {
                s.feed.max(1)
            } else {
                let mut n = s.prefill_remaining.min(left);
                if n == s.prefill_remaining && n > 1 {
                    n -= 1;
                }
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
        background_rows: 1,
    };

    fn fg(prefill_remaining: usize) -> SeqView {
        SeqView {
            prefill_remaining,
            feed: 1,
            background: false,
        }
    }

    fn bg(prefill_remaining: usize) -> SeqView {
        SeqView {
            prefill_remaining,
            feed: 1,
            background: true,
        }
    }

    #[test]
    fn decoders_get_one_token_and_prefill_gets_the_rest() {
        assert_eq!(plan(&[fg(0), fg(100), fg(0)], B), vec![1, 16, 1]);
    }

    #[test]
    fn forced_tokens_ride_in_one_step_and_leave_less_for_prefill() {
        let jump = SeqView { feed: 6, ..fg(0) };
        assert_eq!(plan(&[jump, fg(100)], B), vec![6, 16]);
        let tight = Budget {
            max_tokens: 10,
            ..B
        };
        assert_eq!(plan(&[jump, fg(100), fg(0)], tight), vec![6, 3, 1]);
    }

    #[test]
    fn the_last_prompt_token_goes_in_a_step_of_its_own() {
        assert_eq!(plan(&[fg(10)], B), vec![9]);
        assert_eq!(plan(&[fg(1)], B), vec![1]);
        assert_eq!(plan(&[fg(0), fg(5), fg(3)], B), vec![1, 4, 2]);
    }

    #[test]
    fn idle_prefill_uses_the_whole_batch() {
        assert_eq!(plan(&[fg(100), fg(10)], B), vec![64, 0]);
    }

    #[test]
    fn background_runs_only_in_what_interactive_work_leaves() {
        // Alone, batch sequences are served like any other.
        assert_eq!(plan(&[bg(0), bg(100), bg(0)], B), vec![1, 16, 1]);
        // Beside an interactive sequence: one background decoder, no background prefill.
        assert_eq!(plan(&[bg(0), bg(100), bg(0), fg(0)], B), vec![1, 0, 0, 1]);
        assert_eq!(plan(&[bg(0), fg(30)], B), vec![1, 16]);
        let none = Budget {
            background_rows: 0,
            ..B
        };
        assert_eq!(plan(&[bg(0), fg(0)], none), vec![0, 1]);
    }

    proptest! {
        #[test]
        fn plans_respect_budget_and_make_progress(
            seqs in proptest::collection::vec((0usize..300, 1usize..4, any::<bool>()), 0..32),
            max in 96usize..600,
            busy in 1usize..600,
            rows in 0usize..4,
        ) {
            let seqs: Vec<SeqView> = seqs
                .iter()
                .map(|&(r, f, b)| SeqView { prefill_remaining: r, feed: f, background: b })
                .collect();
            let budget = Budget { max_tokens: max, busy_prefill: busy, background_rows: rows };
            let p = plan(&seqs, budget);
            prop_assert_eq!(p.len(), seqs.len());
            prop_assert!(p.iter().sum::<usize>() <= max);
            let interactive = seqs.iter().any(|s| !s.background);
            let mut bg_rows = 0;
            for (s, n) in seqs.iter().zip(&p) {
                if s.background && interactive {
                    // Batch work never prefills beside interactive work, and decodes in at
                    // most `background_rows` rows.
                    prop_assert!(s.prefill_remaining == 0 || *n == 0);
                    bg_rows += usize::from(*n > 0);
                } else if s.prefill_remaining == 0 {
                    prop_assert_eq!(*n, s.feed);
                } else {
                    prop_assert!(*n < s.prefill_remaining || s.prefill_remaining == 1);
                }
            }
            if interactive {
                prop_assert!(bg_rows <= rows);
            }
            if !seqs.is_empty() {
                prop_assert!(p.iter().sum::<usize>() > 0);
            }
            // The oldest prefilling sequence that may run always advances.
            if let Some(i) = seqs
                .iter()
                .position(|s| s.prefill_remaining > 0 && (!s.background || !interactive))
            {
                prop_assert!(p[i] > 0);
            }
        }
    }
}
