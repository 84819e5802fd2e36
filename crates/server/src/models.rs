//! `GET /models` and `GET /models/{id}`: served models plus their aliases, and the caller's
//! fine-tuned models.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use peregrine_protocol::models::{Model, ModelList};

use crate::error::ApiError;
use peregrine_service::agent::compound::COMPOUND_MODELS;
use peregrine_service::{ModelRegistry, Principal, ServedModel, ServiceError};

use crate::state::SharedState;

fn entry(id: &str, m: &ServedModel, alias: bool) -> Model {
    Model {
        id: id.to_string(),
        object: Default::default(),
        created: m.created,
        owned_by: m.owned_by.clone(),
        active: true,
        context_window: u64::from(m.ctx.info.n_ctx_seq),
        public_apps: None,
        max_completion_tokens: u64::from(m.ctx.max_completion_tokens),
        name: Some(if alias {
            format!("{} (alias of {})", m.name, m.id)
        } else {
            m.name.clone()
        }),
        // A vision model (loaded with its projector) also takes images.
        input_modalities: if m.ctx.vision.is_some() {
            vec!["text".into(), "image".into()]
        } else {
            vec!["text".into()]
        },
        output_modalities: vec!["text".into()],
        supported_features: m.features.clone(),
        alias_of: alias.then(|| m.id.clone()),
    }
}

/// A compound system: the first served model as the agent over the built-in tools.
fn compound_entry(id: &str, m: &ServedModel) -> Model {
    Model {
        owned_by: "Groq".into(),
        name: Some(format!("Compound ({} with built-in tools)", m.name)),
        supported_features: Vec::new(),
        ..entry(id, m, false)
    }
}

fn compound_entries(reg: &ModelRegistry) -> impl Iterator<Item = Model> + '_ {
    let first = reg.models().first();
    COMPOUND_MODELS
        .iter()
        .filter_map(move |(id, _)| first.map(|m| compound_entry(id, m)))
}

pub async fn list(
    State(state): State<SharedState>,
    Extension(who): Extension<Principal>,
) -> Json<ModelList> {
    let reg = state.registry();
    let mut data: Vec<Model> = reg
        .models()
        .iter()
        .map(|m| entry(&m.id, m, false))
        .collect();
    data.extend(reg.aliases().map(|(a, m)| entry(a, m, true)));
    data.extend(
        reg.fine_tuned(&who.org)
            .iter()
            .map(|m| entry(&m.id, m, false)),
    );
    data.extend(compound_entries(reg));
    Json(ModelList {
        object: Default::default(),
        data,
    })
}

pub async fn get(
    State(state): State<SharedState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Model>, ApiError> {
    if let Some(m) = compound_entries(state.registry()).find(|m| m.id.eq_ignore_ascii_case(&id)) {
        return Ok(Json(m));
    }
    let r = state
        .registry()
        .resolve(&id, &who.org)
        .ok_or_else(|| ServiceError::ModelNotFound(id.clone()))?;
    let alias = r.listed_id != r.model.id;
    Ok(Json(entry(&r.listed_id, &r.model, alias)))
}
