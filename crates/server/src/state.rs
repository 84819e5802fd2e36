//! What handlers share: the completions service (with the served models), the auth keys and
//! the file and batch storage.

use std::sync::Arc;

use peregrine_service::{Completions, ModelRegistry, Storage};

/// Everything handlers share.
pub struct AppState {
    pub completions: Completions,
    /// Accepted API keys; empty = no authentication.
    pub api_keys: Vec<String>,
    /// File and batch storage; `None` answers that the Files API is not enabled.
    pub storage: Option<Arc<Storage>>,
}

impl AppState {
    pub fn registry(&self) -> &ModelRegistry {
        self.completions.registry()
    }
}

pub type SharedState = Arc<AppState>;
