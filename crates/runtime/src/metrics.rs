//! What the engine thread measures for `GET /metrics`, under vLLM's metric names where vLLM
//! has one (so dashboards made for vLLM read Peregrine) and `peregrine_` names otherwise.
//!
//! [`EngineFamilies`] registers every family once in the server's registry; each served
//! model's engine thread gets [`EngineMetrics`], the handles of its own series (label
//! `model_name`, as vLLM labels them). Handles update lock-free atomics, so the engine
//! thread records without waiting for a scrape.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::request::ServiceTier;

/// vLLM's buckets for time to first token (seconds).
const TTFT_BUCKETS: [f64; 18] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0,
];
/// vLLM's buckets for time per output token (seconds).
const TPOT_BUCKETS: [f64; 15] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
];
/// vLLM's buckets for end-to-end and queue latency (seconds).
const E2E_BUCKETS: [f64; 18] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabel {
    pub model_name: String,
    /// A service tier, or `batch` for Batch API work.
    pub tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub model_name: String,
    pub finished_reason: String,
}

/// The tiers a queued request can be in (`auto` is resolved before it queues), and batch.
const QUEUES: [&str; 4] = ["on_demand", "flex", "performance", "batch"];

fn queue_index(tier: ServiceTier, background: bool) -> usize {
    match (background, tier) {
        (true, _) => 3,
        (false, ServiceTier::Flex) => 1,
        (false, ServiceTier::Performance) => 2,
        (false, ServiceTier::OnDemand | ServiceTier::Auto) => 0,
    }
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every engine family, registered once.
#[derive(Clone, Debug)]
pub struct EngineFamilies {
    running: Family<ModelLabel, Gauge>,
    waiting: Family<ModelLabel, Gauge>,
    queue: Family<TierLabel, Gauge>,
    kv_usage: Family<ModelLabel, Gauge<f64, AtomicU64>>,
    ttft: HistogramFamily<ModelLabel>,
    tpot: HistogramFamily<ModelLabel>,
    e2e: HistogramFamily<ModelLabel>,
    queue_time: HistogramFamily<ModelLabel>,
    prompt_tokens: Family<ModelLabel, Counter>,
    generation_tokens: Family<ModelLabel, Counter>,
    finished: Family<ReasonLabel, Counter>,
    prefix_queries: Family<ModelLabel, Counter>,
    prefix_hits: Family<ModelLabel, Counter>,
    mask: HistogramFamily<ModelLabel>,
}

fn ttft_histogram() -> Histogram {
    Histogram::new(TTFT_BUCKETS)
}
fn tpot_histogram() -> Histogram {
    Histogram::new(TPOT_BUCKETS)
}
fn e2e_histogram() -> Histogram {
    Histogram::new(E2E_BUCKETS)
}
/// 10 µs to ~0.3 s, doubling.
fn mask_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-5, 2.0, 16))
}

impl EngineFamilies {
    /// Registers the families in `r`.
    pub fn register(r: &mut Registry) -> Self {
        let f = Self::default();
        r.register(
            "vllm:num_requests_running",
            "Requests holding a sequence slot (batch work included)",
            f.running.clone(),
        );
        r.register(
            "vllm:num_requests_waiting",
            "Interactive requests waiting for a sequence slot",
            f.waiting.clone(),
        );
        r.register(
            "peregrine_queue_depth",
            "Requests waiting for a sequence slot, by service tier (batch: Batch API lines)",
            f.queue.clone(),
        );
        r.register(
            "vllm:kv_cache_usage_perc",
            "KV cache cells held by running sequences, as a fraction of the context (a shared prefix counts once per sequence)",
            f.kv_usage.clone(),
        );
        r.register(
            "vllm:time_to_first_token_seconds",
            "Time from submission to the first completion token (queue and prefill)",
            f.ttft.clone(),
        );
        r.register(
            "vllm:time_per_output_token_seconds",
            "Mean time between completion tokens, one observation per request",
            f.tpot.clone(),
        );
        r.register(
            "vllm:e2e_request_latency_seconds",
            "Time from submission to the last token",
            f.e2e.clone(),
        );
        r.register(
            "vllm:request_queue_time_seconds",
            "Time a request waited for a sequence slot",
            f.queue_time.clone(),
        );
        r.register(
            "vllm:prompt_tokens",
            "Prompt tokens of finished requests (cached ones included)",
            f.prompt_tokens.clone(),
        );
        r.register(
            "vllm:generation_tokens",
            "Completion tokens of finished requests",
            f.generation_tokens.clone(),
        );
        r.register(
            "vllm:request_success",
            "Finished requests by finish reason (rejected: an output its grammar or tool syntax refused)",
            f.finished.clone(),
        );
        r.register(
            "vllm:prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache",
            f.prefix_queries.clone(),
        );
        r.register(
            "vllm:prefix_cache_hits",
            "Prompt tokens found in the prefix cache (not computed again)",
            f.prefix_hits.clone(),
        );
        r.register(
            "peregrine_grammar_mask_seconds",
            "Time to compute one constrained token's grammar mask",
            f.mask.clone(),
        );
        f
    }

    /// The handles of one model's series.
    pub fn for_model(&self, model: &str) -> EngineMetrics {
        let m = ModelLabel {
            model_name: model.to_string(),
        };
        let tier = |t: &str| TierLabel {
            model_name: model.to_string(),
            tier: t.to_string(),
        };
        EngineMetrics {
            model: model.to_string(),
            running: self.running.get_or_create(&m).clone(),
            waiting: self.waiting.get_or_create(&m).clone(),
            queue: QUEUES.map(|t| self.queue.get_or_create(&tier(t)).clone()),
            kv_usage: self.kv_usage.get_or_create(&m).clone(),
            ttft: self.ttft.get_or_create(&m).clone(),
            tpot: self.tpot.get_or_create(&m).clone(),
            e2e: self.e2e.get_or_create(&m).clone(),
            queue_time: self.queue_time.get_or_create(&m).clone(),
            prompt_tokens: self.prompt_tokens.get_or_create(&m).clone(),
            generation_tokens: self.generation_tokens.get_or_create(&m).clone(),
            finished: self.finished.clone(),
            prefix_queries: self.prefix_queries.get_or_create(&m).clone(),
            prefix_hits: self.prefix_hits.get_or_create(&m).clone(),
            mask: self.mask.get_or_create(&m).clone(),
        }
    }
}

impl Default for EngineFamilies {
    fn default() -> Self {
        Self {
            running: Family::default(),
            waiting: Family::default(),
            queue: Family::default(),
            kv_usage: Family::default(),
            ttft: Family::new_with_constructor(ttft_histogram),
            tpot: Family::new_with_constructor(tpot_histogram),
            e2e: Family::new_with_constructor(e2e_histogram),
            queue_time: Family::new_with_constructor(e2e_histogram),
            prompt_tokens: Family::default(),
            generation_tokens: Family::default(),
            finished: Family::default(),
            prefix_queries: Family::default(),
            prefix_hits: Family::default(),
            mask: Family::new_with_constructor(mask_histogram),
        }
    }
}

/// One model's series, written by its engine thread. `Default` gives handles registered
/// nowhere (tests and benchmarks that serve no `/metrics`).
#[derive(Clone, Debug)]
pub struct EngineMetrics {
    model: String,
    running: Gauge,
    waiting: Gauge,
    queue: [Gauge; 4],
    kv_usage: Gauge<f64, AtomicU64>,
    ttft: Histogram,
    tpot: Histogram,
    e2e: Histogram,
    queue_time: Histogram,
    prompt_tokens: Counter,
    generation_tokens: Counter,
    finished: Family<ReasonLabel, Counter>,
    prefix_queries: Counter,
    prefix_hits: Counter,
    mask: Histogram,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        EngineFamilies::default().for_model("")
    }
}

/// One ended request, as the engine thread saw it.
pub(crate) struct Ended {
    pub prompt_tokens: usize,
    pub completion_tokens: u32,
    pub queue: Duration,
    /// From submission to the first completion token; `None` when none was sampled.
    pub first_token: Option<Duration>,
    pub total: Duration,
    /// `stop`, `length`, `tool_calls`, or `rejected`/`failed`.
    pub reason: &'static str,
}

impl EngineMetrics {
    /// How full the engine is, once per loop turn: sequences running, and the requests
    /// waiting as (tier, is batch work) pairs.
    pub(crate) fn occupancy(
        &self,
        running: usize,
        waiting: impl Iterator<Item = (ServiceTier, bool)>,
        kv_fraction: f64,
    ) {
        let mut queued = [0i64; 4];
        for (tier, background) in waiting {
            queued[queue_index(tier, background)] += 1;
        }
        self.running.set(running as i64);
        self.waiting.set(queued[..3].iter().sum());
        for (g, n) in self.queue.iter().zip(queued) {
            g.set(n);
        }
        self.kv_usage.set(kv_fraction.clamp(0.0, 1.0));
    }

    /// A prompt looked up in the prefix cache: `hit` of its `tokens` were found.
    pub(crate) fn prefix_lookup(&self, tokens: usize, hit: usize) {
        self.prefix_queries.inc_by(tokens as u64);
        self.prefix_hits.inc_by(hit as u64);
    }

    pub(crate) fn ended(&self, e: &Ended) {
        self.prompt_tokens.inc_by(e.prompt_tokens as u64);
        self.generation_tokens
            .inc_by(u64::from(e.completion_tokens));
        self.queue_time.observe(e.queue.as_secs_f64());
        self.e2e.observe(e.total.as_secs_f64());
        if let Some(first) = e.first_token {
            self.ttft.observe(first.as_secs_f64());
            if e.completion_tokens > 1 {
                let per = (e.total - first).as_secs_f64() / f64::from(e.completion_tokens - 1);
                self.tpot.observe(per);
            }
        }
        (self.finished)
            .get_or_create(&ReasonLabel {
                model_name: self.model.clone(),
                finished_reason: e.reason.to_string(),
            })
            .inc();
    }

    pub(crate) fn masks(&self, times: &[Duration]) {
        for t in times {
            self.mask.observe(t.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn series_carry_vllm_names_and_the_model_label() {
        let mut r = Registry::default();
        let f = EngineFamilies::register(&mut r);
        let m = f.for_model("llama-3.1-8b-instant");
        m.occupancy(
            2,
            [
                (ServiceTier::Performance, false),
                (ServiceTier::OnDemand, false),
                (ServiceTier::OnDemand, true),
            ]
            .into_iter(),
            0.25,
        );
        m.prefix_lookup(100, 60);
        m.ended(&Ended {
            prompt_tokens: 100,
            completion_tokens: 11,
            queue: Duration::from_millis(5),
            first_token: Some(Duration::from_millis(105)),
            total: Duration::from_millis(1105),
            reason: "stop",
        });
        let mut out = String::new();
        encode(&mut out, &r).unwrap();
        let label = "model_name=\"llama-3.1-8b-instant\"";
        for line in [
            format!("vllm:num_requests_running{{{label}}} 2"),
            format!("vllm:num_requests_waiting{{{label}}} 2"),
            format!("peregrine_queue_depth{{{label},tier=\"batch\"}} 1"),
            format!("peregrine_queue_depth{{{label},tier=\"performance\"}} 1"),
            format!("vllm:kv_cache_usage_perc{{{label}}} 0.25"),
            format!("vllm:prompt_tokens_total{{{label}}} 100"),
            format!("vllm:generation_tokens_total{{{label}}} 11"),
            format!("vllm:prefix_cache_hits_total{{{label}}} 60"),
            format!("vllm:request_success_total{{{label},finished_reason=\"stop\"}} 1"),
            format!("vllm:time_to_first_token_seconds_count{{{label}}} 1"),
            // 1 s over 10 intervals.
            format!("vllm:time_per_output_token_seconds_sum{{{label}}} 0.1"),
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
    }
}
