//! What handlers share: the completions service (with the served models), the auth keys, the
//! file and batch storage and the HTTP policy.

use std::sync::Arc;

use peregrine_service::{
    ApiKeys, Completions, FineTunings, Metrics, ModelRegistry, RateLimiter, Storage,
};

use crate::policy::HttpPolicy;

/// Everything handlers share.
pub struct AppState {
    pub completions: Completions,
    /// Static and managed API keys; with none, requests are not authenticated.
    pub keys: ApiKeys,
    /// Rate limits per organization and model (none configured: every request passes).
    pub limiter: Arc<RateLimiter>,
    /// What `GET /metrics` shows (the models' series are written by their engine threads).
    pub metrics: Arc<Metrics>,
    /// File and batch storage; `None` answers that the Files API is not enabled.
    pub storage: Option<Arc<Storage>>,
    /// The fine-tuning API (LoRA adapters registered at run time); `None` answers that it is
    /// not enabled.
    pub fine_tunings: Option<Arc<FineTunings>>,
    /// Allowed origins and hosts, body read timeout.
    pub policy: HttpPolicy,
}

impl AppState {
    pub fn registry(&self) -> &ModelRegistry {
        self.completions.registry()
    }
}

pub type SharedState = Arc<AppState>;
