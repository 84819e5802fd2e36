//! The served models and the alias ids that resolve to them, and the LoRA adapters
//! registered at run time through the fine-tuning API (one organization's each).

use std::sync::{Arc, RwLock};

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
    /// The organization a fine-tuned adapter belongs to: only it sees and runs the model.
    /// `None`: every caller (the config's models and adapters).
    pub owner: Option<String>,
    /// Converts a LoRA adapter ZIP for this model into the engine's adapter file; `None`
    /// where the engine cannot (the fine-tuning API then refuses this base model).
    pub adapter_converter: Option<AdapterConverter>,
}

/// A PEFT adapter ZIP in, the engine's adapter file out, or why the ZIP was refused (a
/// message for the client). Set by whoever loaded the weights (the llama engine), so this
/// crate stays free of the engine's formats.
pub type AdapterConverter = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync>;

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
            owner: None,
            adapter_converter: None,
        }
    }

    /// This model, with the converter of its adapter ZIPs.
    pub fn with_converter(mut self, convert: AdapterConverter) -> Self {
        self.adapter_converter = Some(convert);
        self
    }

    /// Whether a caller of organization `org` may see and run this model.
    pub fn visible_to(&self, org: &str) -> bool {
        self.owner.as_deref().is_none_or(|o| o == org)
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
            owner: None,
            adapter_converter: None,
        }
    }

    /// An adapter registered by organization `org` (the fine-tuning API): only it sees it.
    pub fn owned_by_org(mut self, org: &str) -> Self {
        self.owner = Some(org.to_string());
        self
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
    /// Adapters registered at run time (the fine-tuning API): added and removed while
    /// requests run, so behind a lock; a request holds its model's `Arc`, so removing one
    /// never pulls it from under a running request.
    fine_tuned: RwLock<Vec<Arc<ServedModel>>>,
}

/// How a requested id resolved.
pub struct Resolved {
    pub model: Arc<ServedModel>,
    /// The id as listed (canonical or alias), in its listed spelling.
    pub listed_id: String,
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

    /// Resolves a model id or alias for a caller of organization `org`, ignoring ASCII case
    /// as Groq does. Another organization's fine-tuned models do not resolve.
    pub fn resolve(&self, id: &str, org: &str) -> Option<Resolved> {
        if let Some(m) = self.models.iter().find(|m| m.id.eq_ignore_ascii_case(id)) {
            return Some(Resolved {
                model: m.clone(),
                listed_id: m.id.clone(),
            });
        }
        if let Some((a, i)) = self
            .aliases
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(id))
        {
            return Some(Resolved {
                model: self.models[*i].clone(),
                listed_id: a.clone(),
            });
        }
        let fine_tuned = self.fine_tuned.read().unwrap_or_else(|e| e.into_inner());
        fine_tuned
            .iter()
            .find(|m| m.id.eq_ignore_ascii_case(id) && m.visible_to(org))
            .map(|m| Resolved {
                model: m.clone(),
                listed_id: m.id.clone(),
            })
    }

    /// The models of the configuration (base models and their configured adapters).
    pub fn models(&self) -> &[Arc<ServedModel>] {
        &self.models
    }

    /// The adapters registered at run time that organization `org` sees.
    pub fn fine_tuned(&self, org: &str) -> Vec<Arc<ServedModel>> {
        let fine_tuned = self.fine_tuned.read().unwrap_or_else(|e| e.into_inner());
        fine_tuned
            .iter()
            .filter(|m| m.visible_to(org))
            .cloned()
            .collect()
    }

    /// Serves a registered adapter (replacing one with the same id).
    pub fn add_fine_tuned(&self, model: ServedModel) {
        let mut fine_tuned = self.fine_tuned.write().unwrap_or_else(|e| e.into_inner());
        fine_tuned.retain(|m| m.id != model.id);
        fine_tuned.push(Arc::new(model));
    }

    /// Stops serving a registered adapter; requests already running on it finish. Whether
    /// it was served.
    pub fn remove_fine_tuned(&self, id: &str) -> bool {
        let mut fine_tuned = self.fine_tuned.write().unwrap_or_else(|e| e.into_inner());
        let before = fine_tuned.len();
        fine_tuned.retain(|m| m.id != id);
        fine_tuned.len() != before
    }

    /// The ids of the adapters registered at run time, of every organization.
    pub fn fine_tuned_ids(&self) -> Vec<String> {
        let fine_tuned = self.fine_tuned.read().unwrap_or_else(|e| e.into_inner());
        fine_tuned.iter().map(|m| m.id.clone()).collect()
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
