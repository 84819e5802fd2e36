//! The fine-tuning API's handlers, served under `/v1` only (Groq has no
//! `/openai/v1/fine_tunings`): register an uploaded adapter ZIP, list, retrieve, delete.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use peregrine_protocol::fine_tunings::{
    CreateFineTuningRequest, FineTuningDeleted, FineTuningList, FineTuningResponse,
};
use peregrine_service::{FineTunings, Principal, ServiceError};

use crate::error::ApiError;
use crate::state::SharedState;
use crate::BODY_LIMIT;

fn service(state: &SharedState) -> Result<&FineTunings, ApiError> {
    state.fine_tunings.as_deref().ok_or_else(|| {
        ServiceError::BadRequest("the fine-tuning API is not enabled on this server".into()).into()
    })
}

/// `POST /v1/fine_tunings`.
pub async fn create(
    State(state): State<SharedState>,
    Extension(who): Extension<Principal>,
    body: Result<Json<CreateFineTuningRequest>, JsonRejection>,
) -> Result<Json<FineTuningResponse>, ApiError> {
    let Json(req) = body.map_err(|e| match e.status() {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => ServiceError::PayloadTooLarge(BODY_LIMIT),
        _ => ServiceError::BadRequest(e.body_text()),
    })?;
    Ok(Json(service(&state)?.create(&who.org, &req).await?))
}

/// `GET /v1/fine_tunings`.
pub async fn list(
    State(state): State<SharedState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<FineTuningList>, ApiError> {
    Ok(Json(service(&state)?.list(&who.org).await?))
}

/// `GET /v1/fine_tunings/{id}`.
pub async fn retrieve(
    State(state): State<SharedState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<FineTuningResponse>, ApiError> {
    Ok(Json(service(&state)?.get(&who.org, &id).await?))
}

/// `DELETE /v1/fine_tunings/{id}`.
pub async fn delete(
    State(state): State<SharedState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<FineTuningDeleted>, ApiError> {
    Ok(Json(service(&state)?.delete(&who.org, &id).await?))
}
