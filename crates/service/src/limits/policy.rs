//! Which limits apply: per model (by the id the client asked for, `*` for any other) and
//! per organization over them, dimension by dimension; and which service tiers an
//! organization may use.

use std::collections::HashMap;

use peregrine_runtime::ServiceTier;
use serde::Deserialize;

/// Requests and tokens per minute and per day; an unset one is not limited.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub rpm: Option<u64>,
    pub rpd: Option<u64>,
    pub tpm: Option<u64>,
    pub tpd: Option<u64>,
}

impl Limits {
    pub const fn new(rpm: u64, rpd: u64, tpm: u64, tpd: Option<u64>) -> Self {
        Self {
            rpm: Some(rpm),
            rpd: Some(rpd),
            tpm: Some(tpm),
            tpd,
        }
    }

    /// Each dimension from `self`, or from `under` where `self` leaves it unset.
    fn over(self, under: Limits) -> Limits {
        Limits {
            rpm: self.rpm.or(under.rpm),
            rpd: self.rpd.or(under.rpd),
            tpm: self.tpm.or(under.tpm),
            tpd: self.tpd.or(under.tpd),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

/// One organization's settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrgPolicy {
    /// Its own limits, per model id (`*`: any model), over the models' limits.
    #[serde(default)]
    pub limits: HashMap<String, Limits>,
    /// The tiers it may ask for (`on_demand`, `flex`, `performance`; `auto` needs
    /// `on_demand`) [all].
    pub service_tiers: Option<Vec<String>>,
}

/// Every limit of the deployment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LimitPolicy {
    /// Per model id as requested; `*` for every model not listed.
    pub models: HashMap<String, Limits>,
    pub orgs: HashMap<String, OrgPolicy>,
}

/// Groq's free-tier limits (console.groq.com/docs/rate-limits), as a ready preset: the ids
/// are Groq's public ones, which Peregrine serves as aliases of the default model.
pub const GROQ_FREE: &[(&str, Limits)] = &[
    (
        "llama-3.1-8b-instant",
        Limits::new(30, 14_400, 6_000, Some(500_000)),
    ),
    (
        "llama-3.3-70b-versatile",
        Limits::new(30, 1_000, 12_000, Some(100_000)),
    ),
    (
        "openai/gpt-oss-20b",
        Limits::new(30, 1_000, 8_000, Some(200_000)),
    ),
    (
        "openai/gpt-oss-120b",
        Limits::new(30, 1_000, 8_000, Some(200_000)),
    ),
    (
        "qwen/qwen3-32b",
        Limits::new(60, 1_000, 6_000, Some(500_000)),
    ),
    (
        "moonshotai/kimi-k2-instruct",
        Limits::new(60, 1_000, 10_000, Some(300_000)),
    ),
    (
        "moonshotai/kimi-k2-instruct-0905",
        Limits::new(60, 1_000, 10_000, Some(300_000)),
    ),
    (
        "meta-llama/llama-4-scout-17b-16e-instruct",
        Limits::new(30, 1_000, 30_000, Some(500_000)),
    ),
    (
        "meta-llama/llama-4-maverick-17b-128e-instruct",
        Limits::new(30, 1_000, 6_000, Some(500_000)),
    ),
    ("groq/compound", Limits::new(30, 250, 70_000, None)),
    ("groq/compound-mini", Limits::new(30, 250, 70_000, None)),
    // Any other id (the served models' own): the most common free-tier row.
    ("*", Limits::new(30, 1_000, 6_000, Some(100_000))),
];

/// The names a preset is chosen by.
pub fn preset(name: &str) -> Option<HashMap<String, Limits>> {
    match name {
        "groq-free" => Some(GROQ_FREE.iter().map(|(m, l)| (m.to_string(), *l)).collect()),
        "none" => Some(HashMap::new()),
        _ => None,
    }
}

impl LimitPolicy {
    /// The limits of `org` on `model`: the organization's entry for the model, its `*`
    /// entry, the model's, then `*`, dimension by dimension.
    pub fn limits(&self, org: &str, model: &str) -> Limits {
        let pick = |table: &HashMap<String, Limits>| {
            let exact = table.get(model).copied().unwrap_or_default();
            exact.over(table.get("*").copied().unwrap_or_default())
        };
        let base = pick(&self.models);
        match self.orgs.get(org) {
            Some(o) => pick(&o.limits).over(base),
            None => base,
        }
    }

    /// Whether `org` may use `tier`.
    pub fn allows(&self, org: &str, tier: ServiceTier) -> bool {
        let Some(list) = self.orgs.get(org).and_then(|o| o.service_tiers.as_ref()) else {
            return true;
        };
        let listed = |t: ServiceTier| list.iter().any(|n| n == t.as_str());
        match tier {
            ServiceTier::Auto => listed(ServiceTier::OnDemand),
            t => listed(t),
        }
    }

    /// The tier names organizations may list.
    pub fn check_tier_name(name: &str) -> bool {
        matches!(name, "on_demand" | "flex" | "performance")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim(rpm: Option<u64>, tpm: Option<u64>) -> Limits {
        Limits {
            rpm,
            tpm,
            ..Default::default()
        }
    }

    #[test]
    fn an_organization_overrides_a_model_dimension_by_dimension() {
        let mut p = LimitPolicy::default();
        p.models.insert("m".into(), lim(Some(30), Some(6000)));
        p.models.insert("*".into(), lim(Some(10), None));
        let mut org = OrgPolicy::default();
        org.limits.insert("m".into(), lim(None, Some(100)));
        org.limits.insert("*".into(), lim(Some(5), None));
        p.orgs.insert("org_a".into(), org);
        assert_eq!(p.limits("org_b", "m"), lim(Some(30), Some(6000)));
        assert_eq!(p.limits("org_b", "other"), lim(Some(10), None));
        assert_eq!(p.limits("org_a", "m"), lim(Some(5), Some(100)));
        assert_eq!(p.limits("org_a", "other"), lim(Some(5), None));
    }

    #[test]
    fn tiers_are_all_allowed_unless_listed() {
        let mut p = LimitPolicy::default();
        assert!(p.allows("org_a", ServiceTier::Flex));
        p.orgs.insert(
            "org_a".into(),
            OrgPolicy {
                service_tiers: Some(vec!["on_demand".into()]),
                ..Default::default()
            },
        );
        assert!(p.allows("org_a", ServiceTier::OnDemand));
        assert!(p.allows("org_a", ServiceTier::Auto));
        assert!(!p.allows("org_a", ServiceTier::Flex));
        assert!(!p.allows("org_a", ServiceTier::Performance));
    }

    #[test]
    fn the_groq_free_preset_covers_every_model() {
        let models = preset("groq-free").unwrap();
        let p = LimitPolicy {
            models,
            orgs: HashMap::new(),
        };
        assert_eq!(p.limits("o", "llama-3.1-8b-instant").tpm, Some(6000));
        assert_eq!(p.limits("o", "my-own-model").rpm, Some(30));
        assert!(preset("gold").is_none());
    }
}
