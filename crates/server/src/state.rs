//! Shared server state: the served models (with their aliases) and the auth settings.

use std::sync::Arc;

use peregrine_runtime::{ModelContext, Runtime};

/// One model being served.
pub struct ServedModel {
    /// Canonical id (`qwen2.5-coder-0.5b-instruct`).
    pub id: String,
    /// Human-readable name for `/models`.
    pub name: String,
    pub owned_by: String,
    /// Unix time the model was loaded.
    pub created: i64,
    /// `fp_` + 10 hex digits identifying the weights and this build.
    pub fingerprint: String,
    /// Groq `supported_features` values (`tools`, `json_mode`, ...).
    pub features: Vec<String>,
    pub runtime: Runtime,
    pub ctx: Arc<ModelContext>,
}

/// The models a server answers for, and the alias ids that resolve to them.
#[derive(Default)]
pub struct ModelRegistry {
    models: Vec<Arc<ServedModel>>,
    /// (alias id, index into `models`)
    aliases: Vec<(String, usize)>,
}

/// How a requested id resolved.
pub struct Resolved<'a> {
    pub model: &'a Arc<ServedModel>,
    /// The id as listed (canonical or alias), in its listed spelling.
    pub listed_id: &'a str,
}

impl ModelRegistry {
    pub fn add(&mut self, model: ServedModel, aliases: Vec<String>) {
        let idx = self.models.len();
        self.models.push(Arc::new(model));
        for a in aliases {
            if !self.aliases.iter().any(|(x, _)| x.eq_ignore_ascii_case(&a)) {
                self.aliases.push((a, idx));
            }
        }
    }

    /// Resolves a model id or alias, ignoring ASCII case as Groq does.
    pub fn resolve(&self, id: &str) -> Option<Resolved<'_>> {
        if let Some(m) = self.models.iter().find(|m| m.id.eq_ignore_ascii_case(id)) {
            return Some(Resolved {
                model: m,
                listed_id: &m.id,
            });
        }
        self.aliases
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(id))
            .map(|(a, i)| Resolved {
                model: &self.models[*i],
                listed_id: a,
            })
    }

    pub fn models(&self) -> &[Arc<ServedModel>] {
        &self.models
    }

    pub fn aliases(&self) -> impl Iterator<Item = (&str, &Arc<ServedModel>)> {
        self.aliases
            .iter()
            .map(|(a, i)| (a.as_str(), &self.models[*i]))
    }
}

/// Everything handlers share.
pub struct AppState {
    pub registry: ModelRegistry,
    /// Accepted API keys; empty = no authentication.
    pub api_keys: Vec<String>,
    /// File storage (the Files API); `None` answers that it is not enabled.
    pub files: Option<crate::files::FilesState>,
}

pub type SharedState = Arc<AppState>;
