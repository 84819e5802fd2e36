//! Measurements the engine thread keeps for benchmarks and operators: how long grammar masks
//! take per token, how long a step waited for them after its forward pass, and how many
//! tokens jump-forward and speculation saved passes for.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Samples kept per series; older ones are overwritten (a ring), so memory stays bounded.
const KEEP: usize = 1 << 16;

#[derive(Default)]
struct Series {
    samples: Vec<f32>,
    next: usize,
    count: u64,
}

impl Series {
    fn push(&mut self, d: Duration) {
        let us = d.as_secs_f32() * 1e6;
        if self.samples.len() < KEEP {
            self.samples.push(us);
        } else {
            self.samples[self.next] = us;
        }
        self.next = (self.next + 1) % KEEP;
        self.count += 1;
    }

    fn summary(&self) -> Summary {
        let mut v = self.samples.clone();
        v.sort_unstable_by(f32::total_cmp);
        let pick = |q: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            let i = ((v.len() - 1) as f64 * q).round() as usize;
            f64::from(v[i])
        };
        Summary {
            count: self.count,
            mean_us: if v.is_empty() {
                0.0
            } else {
                v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64
            },
            p50_us: pick(0.5),
            p99_us: pick(0.99),
            max_us: v.last().map_or(0.0, |&x| f64::from(x)),
        }
    }
}

/// Distribution of one measurement, in microseconds, over the kept samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Summary {
    /// Samples ever recorded (the distribution covers the most recent 65,536).
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// Grammar work, jump-forward and speculation as the engine thread saw them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MaskStats {
    /// Time to compute one token mask, per constrained token.
    pub mask: Summary,
    /// Per step with constrained sequences: time spent waiting for masks after the forward
    /// pass finished (0 when the masks were ready first: fully overlapped).
    pub wait: Summary,
    /// Tokens the grammar forced and jump-forward appended without sampling.
    pub forced_tokens: u64,
    /// Draft tokens sent for verification (speculative decoding), and how many were right.
    pub drafted_tokens: u64,
    pub accepted_tokens: u64,
    /// Idle slots' cells moved to host memory before a long prefill, and sequences put back
    /// from there when a request reused them.
    pub offloaded_cells: u64,
    pub restored_seqs: u64,
}

#[derive(Default)]
struct Inner {
    mask: Series,
    wait: Series,
    forced_tokens: u64,
    drafted_tokens: u64,
    accepted_tokens: u64,
    offloaded_cells: u64,
    restored_seqs: u64,
    /// The step costs measured at load: (rows, seconds).
    step_costs: Vec<(usize, f64)>,
    /// The draft model's, when there is one.
    draft_step_costs: Vec<(usize, f64)>,
}

/// Shared between the engine thread (writer) and [`crate::Runtime`] (reader).
#[derive(Clone, Default)]
pub(crate) struct StatsCell(Arc<Mutex<Inner>>);

impl StatsCell {
    pub fn record(&self, masks: &[Duration], wait: Duration) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for &m in masks {
            g.mask.push(m);
        }
        g.wait.push(wait);
    }

    pub fn record_forced(&self, n: usize) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forced_tokens += n as u64;
    }

    pub fn record_drafts(&self, drafted: usize, accepted: usize) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.drafted_tokens += drafted as u64;
        g.accepted_tokens += accepted as u64;
    }

    pub fn record_offload(&self, cells: usize) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .offloaded_cells += cells as u64;
    }

    pub fn record_restore(&self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .restored_seqs += 1;
    }

    pub fn set_step_costs(&self, curve: Vec<(usize, f64)>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).step_costs = curve;
    }

    pub fn step_costs(&self) -> Vec<(usize, f64)> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.step_costs.clone()
    }

    pub fn set_draft_step_costs(&self, curve: Vec<(usize, f64)>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .draft_step_costs = curve;
    }

    pub fn draft_step_costs(&self) -> Vec<(usize, f64)> {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.draft_step_costs.clone()
    }

    pub fn snapshot(&self) -> MaskStats {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        MaskStats {
            mask: g.mask.summary(),
            wait: g.wait.summary(),
            forced_tokens: g.forced_tokens,
            drafted_tokens: g.drafted_tokens,
            accepted_tokens: g.accepted_tokens,
            offloaded_cells: g.offloaded_cells,
            restored_seqs: g.restored_seqs,
        }
    }

    /// Clears the counters and timings (the step costs measured at load stay).
    pub fn reset(&self) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let step_costs = std::mem::take(&mut g.step_costs);
        let draft_step_costs = std::mem::take(&mut g.draft_step_costs);
        *g = Inner {
            step_costs,
            draft_step_costs,
            ..Inner::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_samples() {
        let s = StatsCell::default();
        let ms: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        s.record(&ms, Duration::ZERO);
        let snap = s.snapshot();
        assert_eq!(snap.mask.count, 100);
        assert!((snap.mask.mean_us - 50.5).abs() < 0.01);
        assert!((snap.mask.p99_us - 99.0).abs() < 1.01);
        assert!((snap.mask.max_us - 100.0).abs() < 0.01);
        assert_eq!(snap.wait.count, 1);
        s.reset();
        assert_eq!(s.snapshot(), MaskStats::default());
    }
}
