//! What handlers share: the completions service (with the served models), the auth keys, the
//! file and batch storage and the HTTP policy.

use std::sync::Arc;

use peregrine_service::{Completions, ModelRegistry, Storage};

use crate::policy::HttpPolicy;

/// Everything handlers share.
pub struct AppState {
    pub completions: Completions,
    /// Accepted API keys; empty = no authentication.
    pub api_keys: Vec<String>,
    /// File and batch storage; `None` answers that the Files API is not enabled.
    pub storage: Option<Arc<Storage>>,
    /// Allowed origins and hosts, body read timeout.
    pub policy: HttpPolicy,
}

impl AppState {
    pub fn registry(&self) -> &ModelRegistry {
        self.completions.registry()
    }
}

pub type SharedState = Arc<AppState>;
