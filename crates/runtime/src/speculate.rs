//! Speculative decoding: guesses of the next tokens, and when checking them pays. Guesses
//! come from the sequence's own history (prompt lookup, model-free, here) or from a smaller
//! draft model of the same vocabulary ([`crate::draft_model`]).
//!
//! A sequence whose last tokens occurred earlier in its prompt or output (code being
//! repeated with a change, a quoted document, a list that follows a pattern) is likely to go
//! on as it did then. Those following tokens are fed as drafts after the sampled token, in
//! the same forward pass, with logits for every row; the engine loop then samples each row
//! in turn and keeps the drafts up to the first one that differs from what was sampled.
//!
//! It is lossless: every output token is still sampled, by the request's own sampler and RNG,
//! from the logits of the position it occupies. A draft only saves the pass that would have
//! computed that position. With a deterministic draft this is standard speculative sampling
//! (accept draft `d` with probability `p(d)`, else sample the rest of `p`), so sampled output
//! keeps the model's distribution and greedy output is the same token for token, up to the
//! rounding of a batched pass against a single-row one.
//!
//! Whether to draft is a cost question: a pass of `rows + k` rows must give more tokens per
//! second than the `rows`-row pass it replaces, given how often this sequence's drafts were
//! right ([`Acceptance`]) and what passes of each size cost here ([`StepCosts`]).

use peregrine_engine::TokenId;

use crate::cost::StepCosts;

/// When sequences draft.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Speculation {
    /// Never.
    Off,
    /// Where the measured step costs and the sequence's acceptance rate say a bigger pass
    /// gives more tokens per second (needs the cost model).
    #[default]
    Auto,
    /// Whenever a recurring n-gram gives a draft, whatever it costs: for measuring
    /// acceptance and verify costs, and for tests that must see drafts checked.
    Always,
}

impl Speculation {
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Speculation::Auto,
            2 => Speculation::Always,
            _ => Speculation::Off,
        }
    }
}

/// Longest and shortest suffix matched against the history: a match of four tokens predicts
/// better than one of two; one token alone predicts too little to pay.
const MAX_NGRAM: usize = 4;
const MIN_NGRAM: usize = 2;

/// How many suffix lengths are matched (and tracked apart: a longer match predicts better).
pub const MATCH_LENGTHS: usize = MAX_NGRAM - MIN_NGRAM + 1;

/// The kind of drafts that come from the draft model, after the [`MATCH_LENGTHS`] kinds of
/// looked-up ones.
pub const MODEL_KIND: usize = MATCH_LENGTHS;

/// Kinds of drafts tracked apart: each suffix length, and the draft model.
pub const KINDS: usize = MATCH_LENGTHS + 1;

/// Guesses of the next tokens, and the length of the suffix match they came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    pub tokens: Vec<TokenId>,
    pub matched: usize,
}

impl Draft {
    /// Which of the [`MATCH_LENGTHS`] acceptance estimates this draft uses.
    pub fn kind(&self) -> usize {
        self.matched.clamp(MIN_NGRAM, MAX_NGRAM) - MIN_NGRAM
    }
}

/// Up to `max` tokens that followed the most recent earlier occurrence of the longest suffix
/// of `history` (four tokens down to two) seen before; `None` when none recurs.
pub fn lookup(history: &[TokenId], max: usize) -> Option<Draft> {
    if max == 0 {
        return None;
    }
    let len = history.len();
    for n in (MIN_NGRAM..=MAX_NGRAM).rev() {
        if len <= n {
            continue;
        }
        let suffix = &history[len - n..];
        // Most recent first: an edit in progress follows the latest copy of the text.
        if let Some(at) = (0..len - n).rev().find(|&i| &history[i..i + n] == suffix) {
            let from = at + n;
            return Some(Draft {
                tokens: history[from..(from + max).min(len)].to_vec(),
                matched: n,
            });
        }
    }
    None
}

/// Weight of one verify step in the moving averages.
const RATE_ALPHA: f64 = 0.3;
/// What a sequence starts from, by suffix match length (two, three, four tokens), then for
/// the draft model: the chance that the first draft is right, and that each later one is
/// right given the one before it was. A four-token match in code or quoted text is usually a
/// copy that goes on; a two-token match is often a common pair of words; a smaller model of
/// the same family agrees with the larger on most tokens of code (the acceptance rates
/// published for such pairs are 60-80% per token). Guesses, corrected by each verify step:
/// they set how readily a sequence tries, and a wrong try costs one bigger pass.
const PRIORS: [(f64, f64); KINDS] = [(0.4, 0.8), (0.6, 0.9), (0.8, 0.95), (0.7, 0.8)];
/// How far the estimates move back toward the prior in a step that found a draft but did not
/// send it, so a sequence that stopped drafting tries again after a while (its text may have
/// come to a part that repeats).
const RECOVERY: f64 = 0.05;
/// Drafting must beat not drafting by this factor in expected tokens per second: costs are
/// measured, and noisy.
const MARGIN: f64 = 1.05;
/// Draft positions tracked; longer drafts count as this long.
const POSITIONS: usize = 16;

fn prior((first, next): (f64, f64), i: usize) -> f64 {
    first * next.powi(i as i32)
}

/// How often a sequence's drafts were right, by position: `run[i]` is a moving average of
/// whether the first `i + 1` drafts were all right, over the verify steps that sent at least
/// that many. Drafts from a copy come in runs (right until the copy diverges), so this
/// survival curve predicts a long draft far better than one per-token rate would.
#[derive(Clone, Debug)]
pub struct Acceptance {
    run: [f64; POSITIONS],
    prior: (f64, f64),
}

impl Acceptance {
    /// Starting from the prior of drafts of `kind` (see [`Draft::kind`]).
    pub fn for_kind(kind: usize) -> Self {
        let p = PRIORS[kind.min(KINDS - 1)];
        Self {
            run: std::array::from_fn(|i| prior(p, i)),
            prior: p,
        }
    }

    /// One estimate per kind of draft.
    pub fn all() -> [Acceptance; KINDS] {
        std::array::from_fn(Self::for_kind)
    }

    /// The estimated chance that the first draft is right.
    pub fn rate(&self) -> f64 {
        self.run[0]
    }

    /// A verify step sent `drafted` drafts and the first `accepted` were right.
    pub fn record(&mut self, drafted: usize, accepted: usize) {
        for (i, r) in self.run.iter_mut().enumerate().take(drafted) {
            let all_right = if i < accepted { 1.0 } else { 0.0 };
            *r += RATE_ALPHA * (all_right - *r);
        }
    }

    /// A draft was found and not sent: drift back toward the prior.
    pub fn idle(&mut self) {
        let p = self.prior;
        for (i, r) in self.run.iter_mut().enumerate() {
            *r += RECOVERY * (prior(p, i) - *r);
        }
    }

    /// Expected right drafts out of `k`: the chance that each position is reached and right,
    /// summed (never more likely than the position before it).
    pub fn expected(&self, k: usize) -> f64 {
        let mut reach = 1.0f64;
        let mut sum = 0.0;
        for i in 0..k {
            reach = reach.min(self.run[i.min(POSITIONS - 1)]);
            sum += reach;
        }
        sum
    }
}

/// How many of `available` drafts to add to a pass that already has `rows` rows expected to
/// give `tokens` tokens, each draft costing `per_draft` seconds to make (0 for a looked-up
/// one, a draft model's pass for a drafted one): the count with the most expected tokens per
/// second, with that rate; `None` unless it beats the pass without drafts by [`MARGIN`].
/// Only measured pass sizes are considered, so nothing is drafted before the costs are known.
pub fn best_draft(
    costs: &StepCosts,
    rows: usize,
    tokens: f64,
    acceptance: &Acceptance,
    available: usize,
    per_draft: f64,
) -> Option<(usize, f64)> {
    let base_rate = tokens / costs.of(rows)?;
    (1..=available)
        .filter_map(|k| {
            let secs = costs.of(rows + k)? + k as f64 * per_draft;
            Some((k, (tokens + acceptance.expected(k)) / secs))
        })
        .filter(|&(_, rate)| rate > MARGIN * base_rate)
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// [`best_draft`]'s count for drafts that cost nothing to make (looked up); 0 for none.
pub fn draft_len(
    costs: &StepCosts,
    rows: usize,
    tokens: f64,
    acceptance: &Acceptance,
    available: usize,
) -> usize {
    best_draft(costs, rows, tokens, acceptance, available, 0.0).map_or(0, |(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Drafts right independently with chance `p` each.
    fn runs(p: f64) -> Acceptance {
        Acceptance {
            run: std::array::from_fn(|i| p.powi(i as i32 + 1)),
            prior: (p, p),
        }
    }

    fn costs(ms: &[f64]) -> StepCosts {
        StepCosts::from_ms(ms)
    }

    #[test]
    fn the_longest_recurring_suffix_predicts_what_followed_it_last() {
        // "a b c d" ... "x b c d" ... then "b c d": the latest copy wins.
        let h = [1, 2, 3, 4, 5, 9, 2, 3, 4, 6, 7, 2, 3, 4];
        let d = lookup(&h, 2).unwrap();
        assert_eq!(
            (d.tokens.as_slice(), d.matched, d.kind()),
            (&[6, 7][..], 3, 1)
        );
        assert_eq!(lookup(&h, 10).unwrap().tokens, vec![6, 7, 2, 3, 4]);
        // A four-token match beats a more recent two-token one.
        let h = [1, 2, 3, 4, 50, 51, 8, 3, 4, 60, 1, 2, 3, 4];
        let d = lookup(&h, 2).unwrap();
        assert_eq!(
            (d.tokens.as_slice(), d.matched, d.kind()),
            (&[50, 51][..], 4, 2)
        );
    }

    #[test]
    fn nothing_recurs_nothing_is_drafted() {
        assert_eq!(lookup(&[1, 2, 3, 4, 5], 4), None);
        assert_eq!(lookup(&[], 4), None);
        assert_eq!(lookup(&[7, 7], 4), None, "a one-token match is too weak");
        assert_eq!(lookup(&[1, 2, 3, 1, 2], 0), None);
        assert_eq!(lookup(&[7, 7, 7], 4).unwrap().tokens, vec![7]);
    }

    #[test]
    fn acceptance_follows_what_verification_found() {
        let mut a = Acceptance::for_kind(1);
        for _ in 0..20 {
            a.record(4, 0);
        }
        assert!(a.rate() < 0.01, "{}", a.rate());
        assert!(a.expected(4) < 0.01);
        for _ in 0..20 {
            a.record(4, 4);
        }
        assert!(a.rate() > 0.99);
        assert!((a.expected(3) - 3.0).abs() < 0.05);
        // Positions never sent keep their estimate, but are never likelier than the one
        // before them.
        assert!(a.expected(6) < a.expected(4) + 2.0 * 0.99);
        for _ in 0..40 {
            a.idle();
        }
        assert!(
            (a.rate() - PRIORS[1].0).abs() < 0.2,
            "an idle sequence drifts to the prior"
        );
    }

    #[test]
    fn runs_of_right_drafts_are_expected_as_runs() {
        // Half the steps copy all six drafts right, half get the first one wrong: 3 right
        // per step of six, where one per-token rate (0.5) would predict about one.
        let mut a = Acceptance::for_kind(0);
        for i in 0..200 {
            a.record(6, if i % 2 == 0 { 6 } else { 0 });
        }
        let e = a.expected(6);
        assert!((2.0..4.5).contains(&e), "{e}");
    }

    #[test]
    fn drafts_go_where_a_bigger_pass_costs_little_more() {
        let good = runs(0.8);
        // A 2-row pass costs 5% more than a 1-row one: drafting pays, several drafts most.
        let cheap = costs(&[10.0, 10.5, 11.0, 11.5, 12.0, 12.5, 13.0, 13.5]);
        let k = draft_len(&cheap, 1, 1.0, &good, 7);
        assert!(k >= 4, "{k}");
        // A row costs as much as a pass: verifying cannot beat decoding one by one.
        let linear = costs(&[10.0, 20.0, 30.0, 40.0]);
        assert_eq!(draft_len(&linear, 1, 1.0, &good, 3), 0);
        // Right once in ten: never worth a bigger pass.
        assert_eq!(draft_len(&cheap, 1, 1.0, &runs(0.1), 7), 0);
        // Unmeasured sizes are never chosen.
        assert_eq!(draft_len(&costs(&[10.0]), 1, 1.0, &good, 3), 0);
        assert_eq!(draft_len(&StepCosts::new(8), 1, 1.0, &good, 3), 0);
    }

    #[test]
    fn drafts_that_cost_a_pass_each_must_earn_it() {
        let good = runs(0.8);
        let cheap = costs(&[10.0, 10.5, 11.0, 11.5, 12.0, 12.5, 13.0, 13.5]);
        // A draft model at a fifth of the target's pass still pays where verifying is cheap...
        let (k, rate) = best_draft(&cheap, 1, 1.0, &good, 7, 0.002).unwrap();
        assert!(k >= 2, "{k}");
        assert!(rate > 1.0 / 0.010);
        // ... but fewer drafts than when they are free, and none at the target's own cost.
        assert!(k <= draft_len(&cheap, 1, 1.0, &good, 7));
        assert_eq!(best_draft(&cheap, 1, 1.0, &good, 7, 0.010), None);
        // Where a pass of k rows costs k one-row passes, no draft model pays.
        let linear = costs(&[10.0, 20.0, 30.0, 40.0]);
        assert_eq!(best_draft(&linear, 1, 1.0, &runs(0.95), 3, 0.001), None);
        // The draft model's estimate is one more kind.
        assert_eq!(Acceptance::all().len(), KINDS);
        assert_eq!(
            Acceptance::for_kind(MODEL_KIND).rate(),
            PRIORS[MODEL_KIND].0
        );
    }

    proptest! {
        #[test]
        fn drafting_never_lowers_the_expected_rate(
            ms in proptest::collection::vec(1.0f64..200.0, 1..9),
            rows in 1usize..5,
            rate in 0.0f64..1.0,
            available in 0usize..8,
            per_draft in prop_oneof![Just(0.0f64), 0.0f64..0.1],
        ) {
            let c = costs(&ms);
            let acc = runs(rate);
            let tokens = rows as f64;
            let best = best_draft(&c, rows, tokens, &acc, available, per_draft);
            if let Some((k, _)) = best {
                prop_assert!(0 < k && k <= available);
                let secs = c.of(rows + k).unwrap() + k as f64 * per_draft;
                let with = (tokens + acc.expected(k)) / secs;
                let without = tokens / c.of(rows).unwrap();
                prop_assert!(with > without);
            }
        }

        #[test]
        fn a_draft_is_a_real_continuation(
            history in proptest::collection::vec(0u32..4, 0..60),
            max in 0usize..8,
        ) {
            let d = lookup(&history, max).map_or(Vec::new(), |d| d.tokens);
            prop_assert!(d.len() <= max);
            if !d.is_empty() {
                // The draft occurs in the history right after an earlier copy of a suffix.
                let found = (MIN_NGRAM..=MAX_NGRAM).any(|n| {
                    history.len() > n && (0..history.len() - n).any(|i| {
                        history[i..i + n] == history[history.len() - n..]
                            && history[i + n..].starts_with(&d)
                    })
                });
                prop_assert!(found);
            }
        }
    }
}
