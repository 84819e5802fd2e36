//! Token sampling over one logits row: penalties, logit bias, temperature, nucleus (top-p),
//! a per-request seeded RNG, and log-probabilities for `logprobs` / `top_logprobs`.

use std::collections::HashMap;

use peregrine_engine::TokenId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How the next token is chosen. Illegal combinations (greedy with a temperature) cannot be
/// written down.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampling {
    /// Always the most likely token (`temperature` 0, which Groq turns into 1e-8).
    Greedy,
    /// Sample from the tempered distribution restricted to the top-`top_p` mass.
    Random { temperature: f32, top_p: f32 },
}

/// Everything that decides the next token, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    pub mode: Sampling,
    /// The seed actually used (echoed as `x_groq.seed`).
    pub seed: u64,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// Added to the logit of each listed token.
    pub logit_bias: Vec<(TokenId, f32)>,
    /// `Some(n)`: report the chosen token's log-probability and the `n` most likely tokens.
    pub logprobs: Option<u8>,
}

/// One sampled token and, when asked for, its log-probabilities.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampled {
    pub token: TokenId,
    /// Log-probability of `token`, then of the top alternatives, most likely first.
    pub logprobs: Option<(f32, Vec<(TokenId, f32)>)>,
}

/// Sets the logits of forbidden tokens to -inf (a grammar's token mask).
pub type LogitsMask<'a> = &'a dyn Fn(&mut [f32]);

/// Per-sequence sampler state.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    counts: HashMap<TokenId, u32>,
    scratch: Vec<f32>,
}

/// Probabilities below this are left out of the nucleus before sorting: what they add up to
/// over a 152k vocabulary (< 0.2%) cannot change which tokens a top-p cut keeps in practice,
/// and it spares sorting the whole vocabulary every step.
const NUCLEUS_FLOOR: f32 = 1e-8;

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self {
            params,
            rng,
            counts: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Chooses the next token from `logits` and records it for the penalties.
    pub fn sample(&mut self, logits: &[f32]) -> Sampled {
        self.sample_masked(logits, None)
    }

    /// Like [`Sampler::sample`], with `mask` first setting the logits of tokens a grammar
    /// forbids to -inf. Log-probabilities are those of the distribution actually sampled from.
    pub fn sample_masked(&mut self, logits: &[f32], mask: Option<LogitsMask<'_>>) -> Sampled {
        let p = &self.params;
        let adjusted = mask.is_some()
            || !p.logit_bias.is_empty()
            || (!self.counts.is_empty()
                && (p.frequency_penalty != 0.0 || p.presence_penalty != 0.0));
        let row: &[f32] = if adjusted {
            self.scratch.clear();
            self.scratch.extend_from_slice(logits);
            for (&tok, &n) in &self.counts {
                if let Some(l) = self.scratch.get_mut(tok as usize) {
                    *l -= p.frequency_penalty * n as f32 + p.presence_penalty;
                }
            }
            for &(tok, bias) in &p.logit_bias {
                if let Some(l) = self.scratch.get_mut(tok as usize) {
                    *l += bias;
                }
            }
            if let Some(mask) = mask {
                mask(&mut self.scratch);
            }
            &self.scratch
        } else {
            logits
        };
        let token = match p.mode {
            Sampling::Greedy => argmax(row),
            Sampling::Random { temperature, top_p } => {
                sample_nucleus(row, temperature, top_p, &mut self.rng)
            }
        };
        let logprobs = p.logprobs.map(|n| log_probs(row, token, n as usize));
        *self.counts.entry(token).or_insert(0) += 1;
        Sampled { token, logprobs }
    }
}

fn argmax(row: &[f32]) -> TokenId {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as TokenId
}

fn sample_nucleus(row: &[f32], temperature: f32, top_p: f32, rng: &mut StdRng) -> TokenId {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return argmax(row);
    }
    let inv_t = 1.0 / temperature;
    let mut cands: Vec<(TokenId, f32)> = Vec::new();
    let mut total = 0.0f32;
    for (i, &l) in row.iter().enumerate() {
        let w = ((l - max) * inv_t).exp();
        total += w;
        cands.push((i as TokenId, w));
    }
    if top_p < 1.0 {
        let floor = NUCLEUS_FLOOR * total;
        cands.retain(|&(_, w)| w >= floor);
        cands.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        let mut acc = 0.0;
        let mut keep = cands.len();
        for (i, &(_, w)) in cands.iter().enumerate() {
            acc += w / total;
            if acc >= top_p {
                keep = i + 1;
                break;
            }
        }
        cands.truncate(keep.max(1));
        total = cands.iter().map(|c| c.1).sum();
    }
    let mut r = rng.gen::<f32>() * total;
    for &(tok, w) in &cands {
        if r < w {
            return tok;
        }
        r -= w;
    }
    // Rounding left `r` past the end: the last token with any weight (never a masked one).
    cands.iter().rev().find(|c| c.1 > 0.0).map_or(0, |c| c.0)
}

/// Log-softmax of the chosen token and of the `n` most likely tokens.
fn log_probs(row: &[f32], chosen: TokenId, n: usize) -> (f32, Vec<(TokenId, f32)>) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + row.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    let mut top: Vec<(TokenId, f32)> = Vec::with_capacity(n + 1);
    if n > 0 {
        for (i, &l) in row.iter().enumerate() {
            if top.len() < n || l > top[top.len() - 1].1 {
                let at = top.partition_point(|&(_, v)| v >= l);
                top.insert(at, (i as TokenId, l));
                top.truncate(n);
            }
        }
    }
    let chosen_lp = row
        .get(chosen as usize)
        .map_or(f32::NEG_INFINITY, |&l| l - lse);
    (
        chosen_lp,
        top.into_iter().map(|(t, l)| (t, l - lse)).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(mode: Sampling) -> SamplingParams {
        SamplingParams {
            mode,
            seed: 7,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: vec![],
            logprobs: None,
        }
    }

    #[test]
    fn greedy_picks_argmax() {
        let mut s = Sampler::new(params(Sampling::Greedy));
        assert_eq!(s.sample(&[0.1, 3.0, 2.0]).token, 1);
    }

    #[test]
    fn same_seed_same_tokens() {
        let row: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let mode = Sampling::Random {
            temperature: 1.0,
            top_p: 0.9,
        };
        let run = || {
            let mut s = Sampler::new(params(mode));
            (0..20).map(|_| s.sample(&row).token).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        let mut other = params(mode);
        other.seed = 8;
        let mut s = Sampler::new(other);
        let b: Vec<_> = (0..20).map(|_| s.sample(&row).token).collect();
        assert_ne!(run(), b);
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // Token 0 holds ~88% of the mass: with top_p 0.5 only it can be chosen.
        let row = [5.0, 3.0, 0.0, 0.0];
        let mut s = Sampler::new(params(Sampling::Random {
            temperature: 1.0,
            top_p: 0.5,
        }));
        for _ in 0..200 {
            assert_eq!(s.sample(&row).token, 0);
        }
    }

    #[test]
    fn logit_bias_and_penalties_change_the_choice() {
        let mut p = params(Sampling::Greedy);
        p.logit_bias = vec![(2, 10.0)];
        assert_eq!(Sampler::new(p).sample(&[1.0, 2.0, 0.0]).token, 2);

        let mut p = params(Sampling::Greedy);
        p.presence_penalty = 2.0;
        let mut s = Sampler::new(p);
        assert_eq!(s.sample(&[1.0, 2.0, 0.0]).token, 1);
        // Token 1 is now penalised below token 0.
        assert_eq!(s.sample(&[1.0, 2.0, 0.0]).token, 0);
    }

    #[test]
    fn a_mask_limits_the_choice_for_greedy_and_random() {
        let only_2 = |row: &mut [f32]| {
            for (i, l) in row.iter_mut().enumerate() {
                if i != 2 {
                    *l = f32::NEG_INFINITY;
                }
            }
        };
        let mut s = Sampler::new(params(Sampling::Greedy));
        assert_eq!(s.sample_masked(&[5.0, 3.0, 0.0], Some(&only_2)).token, 2);
        let mut s = Sampler::new(params(Sampling::Random {
            temperature: 1.5,
            top_p: 0.9,
        }));
        for _ in 0..100 {
            assert_eq!(s.sample_masked(&[5.0, 3.0, 0.0], Some(&only_2)).token, 2);
        }
    }

    #[test]
    fn logprobs_are_normalised_and_sorted() {
        let mut p = params(Sampling::Greedy);
        p.logprobs = Some(2);
        let got = Sampler::new(p).sample(&[0.0, 1.0, 2.0]);
        let (lp, top) = got.logprobs.unwrap();
        assert_eq!(got.token, 2);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].0, 2);
        assert_eq!(top[1].0, 1);
        assert!((lp - top[0].1).abs() < 1e-6);
        let z: f32 = [0.0f32, 1.0, 2.0].iter().map(|l| (l - 2.0).exp()).sum();
        assert!((lp - (-z.ln())).abs() < 1e-5);
    }
}
