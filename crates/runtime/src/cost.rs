//! The step cost model: what a forward pass of `g` single-token decode rows costs here,
//! measured, and how to split a step of such rows into passes that cost least in total.
//!
//! On some CPUs a pass of two rows takes longer than two passes of one (the batched kernels
//! take another path than the single-row one), while four or eight rows are cheaper per row
//! than one. Grouping by measurement rather than by rule keeps whatever the machine does.
//! Costs start from a calibration at load (which also warms the machine up) and follow the
//! steps actually run (an exponential moving average), so a shape that grew expensive with
//! longer contexts is seen as such.

/// Weight of a new measurement in the moving average.
const ALPHA: f64 = 0.2;

/// A split must beat one pass by this factor: measurements are noisy, and one pass keeps
/// every stream's tokens in step.
const MARGIN: f64 = 0.9;

/// Measured seconds of a pass of `g` decode rows, for `g` in `1..=max_rows`.
#[derive(Clone, Debug)]
pub struct StepCosts {
    secs: Vec<Option<f64>>,
}

impl StepCosts {
    /// No measurements yet: every step runs as one pass.
    pub fn new(max_rows: usize) -> Self {
        Self {
            secs: vec![None; max_rows],
        }
    }

    /// Records a pass of `rows` decode rows that took `secs`.
    pub fn record(&mut self, rows: usize, secs: f64) {
        let Some(slot) = rows.checked_sub(1).and_then(|i| self.secs.get_mut(i)) else {
            return;
        };
        *slot = Some(match *slot {
            Some(old) => old + ALPHA * (secs - old),
            None => secs,
        });
    }

    /// The measured cost of a pass of `rows` rows.
    pub fn of(&self, rows: usize) -> Option<f64> {
        rows.checked_sub(1)
            .and_then(|i| self.secs.get(i).copied().flatten())
    }

    /// Every measured shape: (rows, seconds), fewest rows first.
    pub fn curve(&self) -> Vec<(usize, f64)> {
        (self.secs.iter().enumerate())
            .filter_map(|(i, s)| s.map(|s| (i + 1, s)))
            .collect()
    }

    /// Measures forward passes of 1..=`max_rows` single-token decode rows on `engine` (rows
    /// spread over `slots` sequences from their first positions, a few passes of each size, the
    /// median kept, the first of each size a warm-up) and logs them under `what`. The sequences
    /// are emptied after each size. A failed pass ends that size with what it has.
    pub fn measure<E: peregrine_engine::Engine>(
        engine: &mut E,
        slots: usize,
        max_rows: usize,
        what: &str,
    ) -> StepCosts {
        use peregrine_engine::{Batch, BatchToken, SeqId};
        const PASSES: u32 = 4;
        let slots = slots.max(1);
        let mut costs = Self::new(max_rows);
        let mut batch = Batch::default();
        for g in 1..=max_rows {
            let mut times = Vec::new();
            let mut next_pos = vec![0u32; slots];
            for pass in 0..PASSES {
                batch.clear();
                for row in 0..g {
                    let seq = row % slots;
                    batch.push(BatchToken {
                        token: 0,
                        pos: next_pos[seq],
                        seq: SeqId(seq as u32),
                        logits: true,
                    });
                    next_pos[seq] += 1;
                }
                let t0 = std::time::Instant::now();
                if engine.decode(&batch).is_err() {
                    break;
                }
                if pass > 0 {
                    times.push(t0.elapsed().as_secs_f64());
                }
            }
            for seq in 0..slots.min(g) {
                engine.clear_seq(SeqId(seq as u32), 0);
            }
            times.sort_by(f64::total_cmp);
            if let Some(&median) = times.get(times.len() / 2) {
                costs.record(g, median);
            }
        }
        let ms: Vec<String> = (costs.curve().iter())
            .map(|(g, s)| format!("{g}:{:.1}", s * 1e3))
            .collect();
        tracing::info!(passes_ms = %ms.join(" "), "{what} step costs measured (rows:ms)");
        costs
    }

    /// Costs of passes of 1, 2, ... rows, in milliseconds (tests of what uses the costs).
    #[cfg(test)]
    pub(crate) fn from_ms(ms: &[f64]) -> Self {
        let mut c = StepCosts::new(ms.len());
        for (i, &m) in ms.iter().enumerate() {
            c.record(i + 1, m / 1e3);
        }
        c
    }

    /// Group sizes (largest first) for a step of `rows` decode rows: the split with the least
    /// total cost, or `[rows]` (one pass) unless a split is clearly cheaper. Only measured
    /// shapes are considered.
    pub fn split(&self, rows: usize) -> Vec<usize> {
        let Some(whole) = self.of(rows) else {
            return vec![rows];
        };
        // best[r]: least total cost of r rows, and the first group of that split.
        let mut best: Vec<Option<(f64, usize)>> = vec![None; rows + 1];
        best[0] = Some((0.0, 0));
        for r in 1..=rows {
            best[r] = (1..=r)
                .filter_map(|g| {
                    let rest = best[r - g]?.0;
                    Some((self.of(g)? + rest, g))
                })
                .min_by(|a, b| a.0.total_cmp(&b.0));
        }
        match best[rows] {
            Some((total, _)) if total < MARGIN * whole => {
                let mut groups = Vec::new();
                let mut r = rows;
                while r > 0 {
                    let g = best[r].map_or(r, |b| b.1);
                    groups.push(g);
                    r -= g;
                }
                groups.sort_unstable_by(|a, b| b.cmp(a));
                groups
            }
            _ => vec![rows],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn costs(ms: &[f64]) -> StepCosts {
        StepCosts::from_ms(ms)
    }

    #[test]
    fn unmeasured_shapes_run_as_one_pass() {
        assert_eq!(StepCosts::new(8).split(2), vec![2]);
        let mut c = StepCosts::new(8);
        c.record(1, 0.017);
        assert_eq!(c.split(2), vec![2], "the two-row pass was never measured");
    }

    #[test]
    fn two_single_rows_when_a_pair_costs_more_than_two_singles() {
        // The figures: 17 ms for one row, 45 ms for two, 58 ms for four, 112 for 8.
        let c = costs(&[17.0, 45.0, 52.0, 58.0, 75.0, 90.0, 100.0, 112.0]);
        assert_eq!(c.split(1), vec![1]);
        assert_eq!(c.split(2), vec![1, 1]);
        assert_eq!(c.split(3), vec![3]);
        assert_eq!(c.split(4), vec![4]);
        assert_eq!(c.split(8), vec![8]);
    }

    #[test]
    fn batching_that_pays_is_kept() {
        let c = costs(&[17.0, 20.0, 24.0, 28.0]);
        for r in 1..=4 {
            assert_eq!(c.split(r), vec![r]);
        }
    }

    #[test]
    fn a_split_must_clearly_win() {
        // 2 x 17 = 34 against 36: within the margin, one pass.
        assert_eq!(costs(&[17.0, 36.0]).split(2), vec![2]);
    }

    #[test]
    fn the_average_follows_new_measurements() {
        let mut c = costs(&[10.0]);
        for _ in 0..50 {
            c.record(1, 0.020);
        }
        assert!((c.of(1).unwrap() - 0.020).abs() < 1e-4);
        c.record(0, 1.0);
        c.record(9, 1.0);
        assert_eq!(c.of(9), None, "out-of-range shapes are ignored");
    }

    proptest! {
        #[test]
        fn splits_cover_the_rows_and_never_cost_more(
            ms in proptest::collection::vec(1.0f64..200.0, 1..9),
            rows in 1usize..9,
        ) {
            let c = costs(&ms);
            let groups = c.split(rows);
            prop_assert_eq!(groups.iter().sum::<usize>(), rows);
            prop_assert!(groups.windows(2).all(|w| w[0] >= w[1]));
            if let Some(whole) = c.of(rows) {
                let total: f64 = groups.iter().map(|&g| c.of(g).unwrap()).sum();
                prop_assert!(total <= whole + 1e-12);
            } else {
                prop_assert_eq!(groups, vec![rows]);
            }
        }
    }
}
