//! The Batch API's handlers: create, retrieve, list, cancel, over the storage service
//! (docs/wire-contract.md, "Batch API"). The work itself is done by
//! `peregrine_service::batch_worker`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, RawQuery, State};
use axum::{Extension, Json};
use peregrine_protocol::batches::{Batch, BatchList, CreateBatchRequest};
use peregrine_service::batches::{decode_cursor, ListQuery, MAX_PAGE};
use peregrine_service::{Principal, ServiceError};

use crate::error::ApiError;
use crate::files::storage;
use crate::state::SharedState;
use crate::BODY_LIMIT;

/// `POST /batches`.
pub async fn create(
    State(state): State<SharedState>,
    Extension(who): Extension<Principal>,
    body: Result<Json<CreateBatchRequest>, JsonRejection>,
) -> Result<Json<Batch>, ApiError> {
    let Json(req) = body.map_err(|e| match e.status() {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => ServiceError::PayloadTooLarge(BODY_LIMIT),
        _ => ServiceError::BadRequest(e.body_text()),
    })?;
    Ok(Json(storage(&state)?.create_batch(&who.org, &req).await?))
}

/// `GET /batches/{id}`.
pub async fn retrieve(
    State(state): State<SharedState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Batch>, ApiError> {
    Ok(Json(storage(&state)?.batch(&who.org, &id).await?))
}

/// `POST /batches/{id}/cancel`.
pub async fn cancel(
    State(state): State<SharedState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Batch>, ApiError> {
    Ok(Json(storage(&state)?.cancel_batch(&who.org, &id).await?))
}

/// The query of `GET /batches`: repeated `id`, `cursor`, `limit` (1 to 100).
fn list_query(query: Option<String>) -> Result<ListQuery, ServiceError> {
    let mut q = ListQuery::default();
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "id" => q.ids.push(v.into_owned()),
            "cursor" => q.cursor = Some(decode_cursor(&v)?),
            "limit" => {
                let n = v.parse::<i64>().ok().filter(|n| (1..=MAX_PAGE).contains(n));
                q.limit = Some(n.ok_or_else(|| ServiceError::InvalidParam {
                    message: format!("`limit` must be an integer from 1 to {MAX_PAGE}"),
                    param: "limit",
                })?);
            }
            _ => {}
        }
    }
    Ok(q)
}

/// `GET /batches`: newest first, `limit` per page (default 20), `cursor` from the previous
/// page's `paging.next_cursor`, or only the batches named by repeated `id` parameters.
pub async fn list(
    State(state): State<SharedState>,
    Extension(who): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Json<BatchList>, ApiError> {
    let fs = storage(&state)?;
    Ok(Json(fs.list_batches(&who.org, list_query(query)?).await?))
}
