//! Groq's rate limits (docs/decisions/0015-rate-limits-and-service-tiers.md): requests and
//! tokens per minute and per day, per organization and model, kept in token buckets
//! ([`peregrine_store::Counters`]: in the process, or in the shared database so replicas
//! admit no more than the limit together), and the `x-ratelimit-*` headers.
//!
//! A request draws 1 from each request bucket and its tokens from each token bucket: its
//! prompt plus the completion it asks for at most, reserved at admission; when it ends, the
//! reservation is corrected to what it used, without its cached prompt tokens
//! ([`RateLimiter::settle`]). Service tiers: `flex` draws from buckets of its own, ten times
//! larger; `auto` tries `on_demand`'s, then `flex`'s; `performance` shares `on_demand`'s
//! (its difference is in the scheduler). Batch work is not counted: only the chat handler
//! asks.

mod duration;
mod policy;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use peregrine_runtime::ServiceTier;
use peregrine_store::{Counters, Draw};

pub use duration::go_duration;
pub use policy::{preset, LimitPolicy, Limits, OrgPolicy, GROQ_FREE};

use crate::error::ServiceError;
use crate::files::store_err;
use crate::metrics::Rejections;

/// How much larger the flex tier's limits are than on_demand's (Groq: "10x").
pub const FLEX_FACTOR: f64 = 10.0;

/// One limited dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dim {
    Rpm,
    Rpd,
    Tpm,
    Tpd,
}

impl Dim {
    const ALL: [Dim; 4] = [Dim::Rpm, Dim::Rpd, Dim::Tpm, Dim::Tpd];

    fn window_secs(self) -> f64 {
        match self {
            Dim::Rpm | Dim::Tpm => 60.0,
            Dim::Rpd | Dim::Tpd => 86_400.0,
        }
    }

    fn tokens(self) -> bool {
        matches!(self, Dim::Tpm | Dim::Tpd)
    }

    fn limit(self, l: &Limits) -> Option<u64> {
        match self {
            Dim::Rpm => l.rpm,
            Dim::Rpd => l.rpd,
            Dim::Tpm => l.tpm,
            Dim::Tpd => l.tpd,
        }
    }

    /// As Groq names it in its messages.
    fn describe(self) -> &'static str {
        match self {
            Dim::Rpm => "requests per minute (RPM)",
            Dim::Rpd => "requests per day (RPD)",
            Dim::Tpm => "tokens per minute (TPM)",
            Dim::Tpd => "tokens per day (TPD)",
        }
    }

    /// Its name in keys and in `/metrics` reasons.
    fn key(self) -> &'static str {
        match self {
            Dim::Rpm => "rpm",
            Dim::Rpd => "rpd",
            Dim::Tpm => "tpm",
            Dim::Tpd => "tpd",
        }
    }
}

/// A refused request: 429 (or 413 when it could never fit), Groq's message, the wait.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    /// 429, or 413 for a request larger than a whole token budget.
    pub status: u16,
    /// `requests` or `tokens` (Groq's error `type`).
    pub kind: &'static str,
    /// The limit that refused it: `rpm`, `rpd`, `tpm` or `tpd`.
    pub limit: &'static str,
    pub message: String,
    /// Seconds until the request would fit (429 only).
    pub wait: Option<f64>,
    /// The headers of the buckets as they are.
    pub headers: RateHeaders,
}

/// The `x-ratelimit-*` values: requests from the per-day bucket and tokens from the
/// per-minute one, as Groq sends them (each from the other window when only that is set).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RateHeaders {
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
}

/// One header group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset: f64,
}

impl RateHeaders {
    /// Header names and values, in Groq's order.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(w) = self.requests {
            out.push(("x-ratelimit-limit-requests", w.limit.to_string()));
            out.push(("x-ratelimit-remaining-requests", w.remaining.to_string()));
            out.push(("x-ratelimit-reset-requests", go_duration(w.reset)));
        }
        if let Some(w) = self.tokens {
            out.push(("x-ratelimit-limit-tokens", w.limit.to_string()));
            out.push(("x-ratelimit-remaining-tokens", w.remaining.to_string()));
            out.push(("x-ratelimit-reset-tokens", go_duration(w.reset)));
        }
        out
    }
}

/// One bucket of a grant.
#[derive(Clone, Debug)]
struct Bucket {
    dim: Dim,
    draw: Draw,
    /// Its level after the request's draw (or correction).
    level: f64,
}

/// An admitted request: the tier it runs in, and what to correct when it ends.
#[derive(Clone, Debug)]
pub struct Grant {
    /// The tier used (`auto` resolved).
    pub tier: ServiceTier,
    /// Tokens drawn from the token buckets at admission.
    pub reserved: u64,
    buckets: Vec<Bucket>,
}

impl Grant {
    /// A grant without limits.
    fn unlimited(tier: ServiceTier) -> Self {
        Self {
            tier,
            reserved: 0,
            buckets: Vec::new(),
        }
    }

    /// The headers as of the draw (or the last correction).
    pub fn headers(&self) -> RateHeaders {
        headers_of(self.buckets.iter().map(|b| (b.dim, &b.draw, b.level)))
    }
}

fn window(draw: &Draw, level: f64) -> Window {
    Window {
        limit: draw.capacity.round() as u64,
        remaining: level.max(0.0).floor() as u64,
        reset: (draw.capacity - level).max(0.0) / draw.per_sec,
    }
}

fn headers_of<'a>(buckets: impl Iterator<Item = (Dim, &'a Draw, f64)> + Clone) -> RateHeaders {
    let find = |first: Dim, then: Dim| {
        let b = buckets.clone();
        let pick = |d: Dim| b.clone().find(|(dim, _, _)| *dim == d);
        pick(first)
            .or_else(|| pick(then))
            .map(|(_, draw, level)| window(draw, level))
    };
    RateHeaders {
        requests: find(Dim::Rpd, Dim::Rpm),
        tokens: find(Dim::Tpm, Dim::Tpd),
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The rate limiter: the policy and where its buckets live.
pub struct RateLimiter {
    policy: LimitPolicy,
    counters: Arc<dyn Counters>,
    rejections: Rejections,
}

impl RateLimiter {
    pub fn new(policy: LimitPolicy, counters: Arc<dyn Counters>) -> Self {
        Self {
            policy,
            counters,
            rejections: Rejections::default(),
        }
    }

    /// Counts refusals in `rejections` (`/metrics`).
    pub fn with_metrics(mut self, rejections: Rejections) -> Self {
        self.rejections = rejections;
        self
    }

    /// A limiter without limits: every request passes, and no headers are sent.
    pub fn unlimited() -> Self {
        Self::new(
            LimitPolicy::default(),
            Arc::new(peregrine_store::MemoryCounters::new()),
        )
    }

    pub fn policy(&self) -> &LimitPolicy {
        &self.policy
    }

    /// Admits a request of `org` for `model` (the id as asked for) in `tier`, drawing one
    /// request and `tokens` tokens; or says why not.
    pub async fn admit(
        &self,
        org: &str,
        model: &str,
        tier: ServiceTier,
        tokens: u64,
    ) -> Result<Grant, ServiceError> {
        if !self.policy.allows(org, tier) {
            self.rejections.count(model, "tier_not_available");
            return Err(ServiceError::TierNotAvailable {
                tier: tier.as_str(),
                org: org.to_string(),
            });
        }
        let limits = self.policy.limits(org, model);
        let tiers: &[ServiceTier] = match tier {
            ServiceTier::Auto if self.policy.allows(org, ServiceTier::Flex) => {
                &[ServiceTier::OnDemand, ServiceTier::Flex]
            }
            ServiceTier::Auto => &[ServiceTier::OnDemand],
            ServiceTier::OnDemand => &[ServiceTier::OnDemand],
            ServiceTier::Flex => &[ServiceTier::Flex],
            ServiceTier::Performance => &[ServiceTier::Performance],
        };
        if limits.is_empty() {
            return Ok(Grant::unlimited(tiers[0]));
        }
        let mut first_refusal = None;
        for &t in tiers {
            match self.try_tier(org, model, t, &limits, tokens).await? {
                Ok(grant) => return Ok(grant),
                Err(refusal) => {
                    first_refusal.get_or_insert(refusal);
                }
            }
        }
        let refusal = first_refusal.expect("at least one tier was tried");
        let reason = if refusal.status == 413 {
            "request_too_large"
        } else {
            refusal.limit
        };
        self.rejections.count(model, reason);
        Err(ServiceError::RateLimited(Box::new(refusal)))
    }

    /// One tier's buckets: Ok(Ok) admitted, Ok(Err) refused.
    async fn try_tier(
        &self,
        org: &str,
        model: &str,
        tier: ServiceTier,
        limits: &Limits,
        tokens: u64,
    ) -> Result<Result<Grant, Refusal>, ServiceError> {
        let draws = draws(org, model, tier, limits, tokens);
        let now = now_secs();
        let drawn = (self.counters.draw(
            &draws.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
            now,
        ))
        .await
        .map_err(store_err)?;
        let at_levels = |take: bool| {
            draws
                .iter()
                .zip(&drawn.levels)
                .map(move |((dim, d), l)| Bucket {
                    dim: *dim,
                    draw: d.clone(),
                    level: if take { l - d.cost } else { *l },
                })
                .collect::<Vec<_>>()
        };
        if drawn.admitted {
            return Ok(Ok(Grant {
                tier,
                reserved: tokens,
                buckets: at_levels(true),
            }));
        }
        let buckets = at_levels(false);
        let headers = headers_of(buckets.iter().map(|b| (b.dim, &b.draw, b.level)));
        Ok(Err(refusal(org, model, tier, &buckets, headers)))
    }

    /// Corrects a grant's token reservation to what the request used (`used`: its
    /// uncached prompt tokens and its completion tokens); the grant's headers follow.
    pub async fn settle(&self, grant: &mut Grant, used: u64) -> Result<(), ServiceError> {
        let amount = grant.reserved as f64 - used as f64;
        let now = now_secs();
        for b in grant.buckets.iter_mut().filter(|b| b.dim.tokens()) {
            b.level = (self.counters.credit(&b.draw, amount, now))
                .await
                .map_err(store_err)?;
        }
        grant.reserved = used;
        Ok(())
    }
}

/// The draws of one request in one tier.
fn draws(
    org: &str,
    model: &str,
    tier: ServiceTier,
    limits: &Limits,
    tokens: u64,
) -> Vec<(Dim, Draw)> {
    // Performance shares on_demand's buckets; flex has its own, larger ones.
    let (bucket_tier, factor) = match tier {
        ServiceTier::Flex => ("flex", FLEX_FACTOR),
        _ => ("on_demand", 1.0),
    };
    Dim::ALL
        .iter()
        .filter_map(|&dim| {
            let capacity = dim.limit(limits)? as f64 * factor;
            Some((
                dim,
                Draw {
                    key: format!("{org}\u{1f}{model}\u{1f}{bucket_tier}\u{1f}{}", dim.key()),
                    capacity,
                    per_sec: capacity / dim.window_secs(),
                    cost: if dim.tokens() { tokens as f64 } else { 1.0 },
                },
            ))
        })
        .collect()
}

/// Groq's 429 (or 413) for the first bucket that does not hold its cost.
fn refusal(
    org: &str,
    model: &str,
    tier: ServiceTier,
    buckets: &[Bucket],
    headers: RateHeaders,
) -> Refusal {
    let short = buckets
        .iter()
        .find(|b| b.draw.cost > b.level)
        .expect("a refused draw has a bucket short of its cost");
    let (d, dim) = (&short.draw, short.dim);
    let kind = if dim.tokens() { "tokens" } else { "requests" };
    let head = format!(
        "in organization `{org}` service tier `{}` on {}",
        tier.as_str(),
        dim.describe()
    );
    if d.cost > d.capacity {
        return Refusal {
            status: 413,
            kind,
            limit: dim.key(),
            message: format!(
                "Request too large for model `{model}` {head}: Limit {}, Requested {}, please reduce your message size and try again.",
                d.capacity.round(),
                d.cost.round()
            ),
            wait: None,
            headers,
        };
    }
    let wait = (d.cost - short.level) / d.per_sec;
    Refusal {
        status: 429,
        kind,
        limit: dim.key(),
        message: format!(
            "Rate limit reached for model `{model}` {head}: Limit {}, Used {}, Requested {}. Please try again in {}.",
            d.capacity.round(),
            (d.capacity - short.level).max(0.0).round(),
            d.cost.round(),
            go_duration(wait)
        ),
        wait: Some(wait),
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peregrine_store::MemoryCounters;

    fn limiter(limits: Limits) -> RateLimiter {
        let mut policy = LimitPolicy::default();
        policy.models.insert("m".into(), limits);
        RateLimiter::new(policy, Arc::new(MemoryCounters::new()))
    }

    fn refusal_of(e: ServiceError) -> Refusal {
        match e {
            ServiceError::RateLimited(r) => *r,
            other => panic!("expected a rate-limit refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn requests_per_minute_trip_with_groqs_message_and_wait() {
        let l = limiter(Limits {
            rpm: Some(2),
            ..Default::default()
        });
        for _ in 0..2 {
            l.admit("org_a", "m", ServiceTier::OnDemand, 10)
                .await
                .unwrap();
        }
        let r = refusal_of(
            l.admit("org_a", "m", ServiceTier::OnDemand, 10)
                .await
                .unwrap_err(),
        );
        assert_eq!((r.status, r.kind), (429, "requests"));
        assert!(
            r.message.starts_with("Rate limit reached for model `m` in organization `org_a` service tier `on_demand` on requests per minute (RPM): Limit 2, Used 2, Requested 1. Please try again in "),
            "{}",
            r.message
        );
        // 2 per minute: one more in 30 s.
        let wait = r.wait.unwrap();
        assert!((29.9..=30.0).contains(&wait), "{wait}");
        // Another organization has its own buckets.
        l.admit("org_b", "m", ServiceTier::OnDemand, 10)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn tokens_are_reserved_then_corrected_and_headers_follow() {
        let l = limiter(Limits {
            rpd: Some(100),
            tpm: Some(6000),
            ..Default::default()
        });
        let mut g = l
            .admit("o", "m", ServiceTier::OnDemand, 1000)
            .await
            .unwrap();
        let h = g.headers();
        let (req, tok) = (h.requests.unwrap(), h.tokens.unwrap());
        assert_eq!((req.limit, req.remaining), (100, 99));
        // One request of 100 per day refills in 864 s.
        assert!((req.reset - 864.0).abs() < 0.1, "{}", req.reset);
        assert_eq!((tok.limit, tok.remaining), (6000, 5000));
        assert!((tok.reset - 10.0).abs() < 0.1, "{}", tok.reset);
        // It used 400 of the 1000 reserved (cached prompt tokens already left out).
        l.settle(&mut g, 400).await.unwrap();
        let tok = g.headers().tokens.unwrap();
        assert!((5599..=5601).contains(&tok.remaining), "{}", tok.remaining);
        let pairs = g.headers().pairs();
        assert_eq!(pairs[0], ("x-ratelimit-limit-requests", "100".to_string()));
        assert_eq!(pairs[3].0, "x-ratelimit-limit-tokens");
    }

    #[tokio::test]
    async fn a_request_larger_than_the_budget_is_413_and_over_what_is_left_429() {
        let l = limiter(Limits {
            tpm: Some(6000),
            tpd: Some(7000),
            ..Default::default()
        });
        let r = refusal_of(
            l.admit("o", "m", ServiceTier::OnDemand, 15041)
                .await
                .unwrap_err(),
        );
        assert_eq!((r.status, r.kind, r.wait), (413, "tokens", None));
        assert!(r.message.contains("on tokens per minute (TPM): Limit 6000, Requested 15041, please reduce your message size"), "{}", r.message);
        l.admit("o", "m", ServiceTier::OnDemand, 5000)
            .await
            .unwrap();
        let r = refusal_of(
            l.admit("o", "m", ServiceTier::OnDemand, 3000)
                .await
                .unwrap_err(),
        );
        assert_eq!((r.status, r.kind), (429, "tokens"));
        assert!(
            r.message
                .contains("(TPM): Limit 6000, Used 5000, Requested 3000. Please try again in "),
            "{}",
            r.message
        );
        // 1000 more tokens at 100 per second.
        let wait = r.wait.unwrap();
        assert!((19.9..=20.0).contains(&wait), "{wait}");
        // Several buckets short: the first in order (minute before day) is named.
        let r = refusal_of(
            l.admit("o", "m", ServiceTier::OnDemand, 2500)
                .await
                .unwrap_err(),
        );
        assert!(r.message.contains("tokens per minute"), "{}", r.message);
    }

    #[tokio::test]
    async fn auto_falls_back_to_flex_which_has_ten_times_the_limits() {
        let l = limiter(Limits {
            rpm: Some(1),
            ..Default::default()
        });
        let g = l.admit("o", "m", ServiceTier::Auto, 1).await.unwrap();
        assert_eq!(g.tier, ServiceTier::OnDemand);
        let g = l.admit("o", "m", ServiceTier::Auto, 1).await.unwrap();
        assert_eq!(g.tier, ServiceTier::Flex);
        assert_eq!(g.headers().requests.unwrap().limit, 10);
        assert!(l.admit("o", "m", ServiceTier::OnDemand, 1).await.is_err());
        for _ in 0..9 {
            l.admit("o", "m", ServiceTier::Flex, 1).await.unwrap();
        }
        let r = refusal_of(l.admit("o", "m", ServiceTier::Auto, 1).await.unwrap_err());
        // Both tiers are out: the answer names on_demand's limit.
        assert!(
            r.message.contains("service tier `on_demand`"),
            "{}",
            r.message
        );
    }

    #[tokio::test]
    async fn unlimited_models_and_forbidden_tiers() {
        let mut l = limiter(Limits::default());
        let g = l.admit("o", "m", ServiceTier::Auto, 1 << 40).await.unwrap();
        assert_eq!(g.tier, ServiceTier::OnDemand);
        assert_eq!(g.headers(), RateHeaders::default());
        l.policy.orgs.insert(
            "o".into(),
            OrgPolicy {
                service_tiers: Some(vec!["on_demand".into()]),
                ..Default::default()
            },
        );
        let e = l.admit("o", "m", ServiceTier::Flex, 1).await.unwrap_err();
        assert_eq!(e.status(), 400);
        // Auto never falls to a tier the organization may not use.
        let g = l.admit("o", "m", ServiceTier::Auto, 1).await.unwrap();
        assert_eq!(g.tier, ServiceTier::OnDemand);
    }
}
