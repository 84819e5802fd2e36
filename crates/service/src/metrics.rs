//! The registry behind `GET /metrics`: the engine families of every served model
//! ([`EngineFamilies`]) and the services' own: rate-limit rejections by reason and batch
//! lines by status. Encoded in the OpenMetrics text format, which Prometheus scrapes.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use peregrine_runtime::metrics::EngineFamilies;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabel {
    pub model_name: String,
    /// `rpm`, `rpd`, `tpm`, `tpd` (429), `request_too_large` (413), `tier_not_available`
    /// (400), or `flex_capacity` (498).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LineLabel {
    /// `completed` or `failed` (the line's result was stored), or `lease_lost` (another
    /// replica had taken the line over; this result was dropped).
    pub status: String,
}

/// Rate-limit rejections, by model and reason.
#[derive(Clone, Debug, Default)]
pub struct Rejections(Family<RejectionLabel, Counter>);

impl Rejections {
    pub fn count(&self, model: &str, reason: &str) {
        (self.0)
            .get_or_create(&RejectionLabel {
                model_name: model.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }
}

/// Batch lines run by this replica, by status.
#[derive(Clone, Debug, Default)]
pub struct BatchLines(Family<LineLabel, Counter>);

impl BatchLines {
    pub fn count(&self, status: &str) {
        (self.0)
            .get_or_create(&LineLabel {
                status: status.to_string(),
            })
            .inc();
    }
}

/// Every family `/metrics` shows.
pub struct Metrics {
    registry: Registry,
    pub engine: EngineFamilies,
    pub rejections: Rejections,
    pub batch_lines: BatchLines,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let engine = EngineFamilies::register(&mut registry);
        let rejections = Rejections::default();
        registry.register(
            "peregrine_rate_limit_rejections",
            "Requests refused by rate limits or service tiers, by reason",
            rejections.0.clone(),
        );
        let batch_lines = BatchLines::default();
        registry.register(
            "peregrine_batch_lines",
            "Batch API lines run by this replica, by status",
            batch_lines.0.clone(),
        );
        Self {
            registry,
            engine,
            rejections,
            batch_lines,
        }
    }

    /// The OpenMetrics text of every series.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_counters_are_encoded() {
        let m = Metrics::new();
        m.rejections.count("m", "rpm");
        m.rejections.count("m", "rpm");
        m.batch_lines.count("completed");
        let text = m.encode();
        assert!(
            text.contains(
                "peregrine_rate_limit_rejections_total{model_name=\"m\",reason=\"rpm\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("peregrine_batch_lines_total{status=\"completed\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
