//! Rate-limit counters: token buckets that admit a request only if every bucket it draws
//! from holds its cost, all or nothing. [`MemoryCounters`] keeps them in the process (one
//! replica); [`SqlStore`](crate::SqlStore) keeps them in the database, so replicas sharing a
//! PostgreSQL never admit more than the limit between them (row locks serialise draws).
//!
//! A bucket holds at most `capacity` and refills at `per_sec` (a limit of N per minute is a
//! bucket of N refilling N/60 per second, which is how Groq's own counters behave: the wait
//! in its 429 messages is exactly the time the bucket needs to hold the request).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::StoreError;

/// One bucket a request draws from.
#[derive(Clone, Debug, PartialEq)]
pub struct Draw {
    /// Unique per organization, model, tier and dimension.
    pub key: String,
    pub capacity: f64,
    /// Refill per second.
    pub per_sec: f64,
    /// What the request takes.
    pub cost: f64,
}

/// What a draw found.
#[derive(Clone, Debug, PartialEq)]
pub struct Drawn {
    /// Every bucket held its cost, and all costs were taken.
    pub admitted: bool,
    /// Each bucket's level (same order as the draws) after the refill up to now and before
    /// the costs were taken.
    pub levels: Vec<f64>,
}

/// A bucket's level at `now`, from its level at `at`: refilled, never above capacity. A
/// clock that went back (another replica's) refills nothing.
pub fn refill(level: f64, at: f64, now: f64, capacity: f64, per_sec: f64) -> f64 {
    (level + (now - at).max(0.0) * per_sec).min(capacity)
}

/// Whether every bucket holds its draw's cost.
pub fn admits(draws: &[Draw], levels: &[f64]) -> bool {
    draws.iter().zip(levels).all(|(d, l)| d.cost <= *l)
}

/// Where the buckets live.
#[async_trait::async_trait]
pub trait Counters: Send + Sync {
    /// Refills the buckets up to `now` (Unix seconds) and, when every one holds its cost,
    /// takes the costs, atomically. A bucket used for the first time starts full.
    async fn draw(&self, draws: &[Draw], now: f64) -> Result<Drawn, StoreError>;
    /// Adds `amount` (negative takes) to a bucket after refilling it to `now`, capped at
    /// its capacity: the correction once a request's real cost is known. Returns the level.
    async fn credit(&self, draw: &Draw, amount: f64, now: f64) -> Result<f64, StoreError>;
}

/// Buckets in this process.
#[derive(Default)]
pub struct MemoryCounters {
    /// key -> (level, at).
    buckets: Mutex<HashMap<String, (f64, f64)>>,
}

impl MemoryCounters {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait::async_trait]
impl Counters for MemoryCounters {
    async fn draw(&self, draws: &[Draw], now: f64) -> Result<Drawn, StoreError> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let levels: Vec<f64> = draws
            .iter()
            .map(|d| match buckets.get(&d.key) {
                Some(&(level, at)) => refill(level, at, now, d.capacity, d.per_sec),
                None => d.capacity,
            })
            .collect();
        let admitted = admits(draws, &levels);
        if admitted {
            for (d, l) in draws.iter().zip(&levels) {
                buckets.insert(d.key.clone(), (l - d.cost, now));
            }
        }
        Ok(Drawn { admitted, levels })
    }

    async fn credit(&self, d: &Draw, amount: f64, now: f64) -> Result<f64, StoreError> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let level = match buckets.get(&d.key) {
            Some(&(level, at)) => refill(level, at, now, d.capacity, d.per_sec),
            None => d.capacity,
        };
        let level = (level + amount).min(d.capacity);
        buckets.insert(d.key.clone(), (level, now));
        Ok(level)
    }
}

/// The behaviour every [`Counters`] must have, run on each implementation's own buckets
/// (`tag` keeps the keys of one run apart from others in a shared server).
#[cfg(test)]
pub(crate) mod suite {
    use super::*;

    fn draw(tag: &str, key: &str, capacity: f64, cost: f64) -> Draw {
        Draw {
            key: format!("{tag}{key}"),
            capacity,
            per_sec: capacity / 60.0,
            cost,
        }
    }

    pub async fn a_bucket_admits_until_empty_then_refills_with_time(c: &dyn Counters, tag: &str) {
        let d = [draw(tag, "rpm", 3.0, 1.0)];
        for expected in [3.0, 2.0, 1.0] {
            let got = c.draw(&d, 100.0).await.unwrap();
            assert!(got.admitted);
            assert_eq!(got.levels, vec![expected]);
        }
        let refused = c.draw(&d, 100.0).await.unwrap();
        assert!(!refused.admitted);
        assert_eq!(refused.levels, vec![0.0]);
        // 3 per minute: one more after 20 s.
        assert!(!c.draw(&d, 119.0).await.unwrap().admitted);
        assert!(c.draw(&d, 120.0).await.unwrap().admitted);
    }

    pub async fn nothing_is_taken_unless_every_bucket_holds_its_cost(c: &dyn Counters, tag: &str) {
        let both = [draw(tag, "rpm", 10.0, 1.0), draw(tag, "tpm", 100.0, 80.0)];
        assert!(c.draw(&both, 0.0).await.unwrap().admitted);
        let refused = c.draw(&both, 0.0).await.unwrap();
        assert!(!refused.admitted);
        assert_eq!(refused.levels, vec![9.0, 20.0]);
        // The request bucket was not charged for the refused draw.
        assert_eq!(c.draw(&both[..1], 0.0).await.unwrap().levels, vec![9.0]);
    }

    pub async fn credits_correct_a_reservation_and_never_overfill(c: &dyn Counters, tag: &str) {
        let tpm = draw(tag, "tpm", 100.0, 90.0);
        c.draw(std::slice::from_ref(&tpm), 0.0).await.unwrap();
        // The request used 30 of the 90 reserved.
        assert_eq!(c.credit(&tpm, 60.0, 0.0).await.unwrap(), 70.0);
        // It used 50 more than reserved: the bucket goes below zero and the next waits.
        assert_eq!(c.credit(&tpm, -120.0, 0.0).await.unwrap(), -50.0);
        assert!(
            !c.draw(&[draw(tag, "tpm", 100.0, 1.0)], 0.0)
                .await
                .unwrap()
                .admitted
        );
        assert_eq!(c.credit(&tpm, 1e9, 0.0).await.unwrap(), 100.0);
    }

    pub async fn all(c: &dyn Counters, tag: &str) {
        a_bucket_admits_until_empty_then_refills_with_time(c, &format!("{tag}a:")).await;
        nothing_is_taken_unless_every_bucket_holds_its_cost(c, &format!("{tag}b:")).await;
        credits_correct_a_reservation_and_never_overfill(c, &format!("{tag}c:")).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_counters_behave() {
        suite::all(&MemoryCounters::new(), "").await;
    }

    #[test]
    fn refill_is_capped_and_ignores_a_clock_that_went_back() {
        assert_eq!(refill(0.0, 10.0, 40.0, 60.0, 1.0), 30.0);
        assert_eq!(refill(50.0, 10.0, 40.0, 60.0, 1.0), 60.0);
        assert_eq!(refill(5.0, 40.0, 10.0, 60.0, 1.0), 5.0);
    }
}
