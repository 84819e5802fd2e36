//! The served models and the alias ids that resolve to them.

use std::sync::Arc;

use peregrine_runtime::{AdapterId, BuiltModel, ModelContext, Runtime};

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
    /// A LoRA adapter over the base model's engine (`None`: the base model itself).
    pub adapter: Option<AdapterId>,
}

/// How a served model is presented, beside what [`peregrine_runtime::build`] made.
pub struct ModelMeta {
    pub id: String,
    pub name: String,
    pub owned_by: String,
    pub created: i64,
    pub fingerprint: String,
}

impl ServedModel {
    pub fn new(meta: ModelMeta, built: BuiltModel) -> Self {
        Self {
            id: meta.id,
            name: meta.name,
            owned_by: meta.owned_by,
            created: meta.created,
            fingerprint: meta.fingerprint,
            features: features(&built.ctx),
            runtime: built.runtime,
            ctx: built.ctx,
            adapter: None,
        }
    }

    /// A LoRA adapter the engine has loaded, served as model `id` on this model's engine
    /// (it shares the engine's slots and queue with the base).
    pub fn with_adapter(&self, id: String, adapter: AdapterId) -> Self {
        Self {
            name: id.clone(),
            fingerprint: format!("{}-lora{}", self.fingerprint, adapter.0),
            id,
            owned_by: self.owned_by.clone(),
            created: self.created,
            features: self.features.clone(),
            runtime: self.runtime.clone(),
            ctx: self.ctx.clone(),
            adapter: Some(adapter),
        }
    }
}

/// What every served model does (constrained decoding makes JSON mode, schemas and tool
/// calls work on any model), and `reasoning` for a model that reasons.
fn features(ctx: &ModelContext) -> Vec<String> {
    let mut f: Vec<String> = ["tools", "json_mode", "structured_outputs"]
        .map(String::from)
        .into();
    if ctx.reasoning.is_some() {
        f.push("reasoning".into());
    }
    f
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

    /// Lines worth having in flight for batch work: the served models' slots, less one per
    /// model so that an interactive request usually finds a free slot without preempting.
    pub fn batch_slots(&self) -> usize {
        self.models
            .iter()
            .map(|m| {
                (m.runtime.info().n_seq_max as usize)
                    .saturating_sub(1)
                    .max(1)
            })
            .sum()
    }
}
