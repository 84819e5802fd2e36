//! The Batch API (spec §8.2): create, retrieve, list, cancel. The work itself is done by
//! [`crate::batch_worker`]; handlers only read and move the stored state.

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use base64::Engine as _;
use peregrine_store::{new_id, BatchRecord, BatchStatus, LineCounts};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::files::{files, now, store_err};
use crate::state::SharedState;

/// The one endpoint batch lines may call.
pub const ENDPOINT: &str = "/v1/chat/completions";
/// Shortest and longest completion windows (Groq: 24h to 7d).
const MIN_WINDOW_SECS: i64 = 24 * 3600;
const MAX_WINDOW_SECS: i64 = 7 * 24 * 3600;
/// Most ids in one `GET /batches?id=...` (Groq: 200).
const MAX_LIST_IDS: usize = 200;
const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 100;

#[derive(Deserialize)]
pub struct CreateBatch {
    input_file_id: Option<Value>,
    endpoint: Option<Value>,
    completion_window: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
}

fn required_str<'a>(v: &'a Option<Value>, param: &'static str) -> Result<&'a str, ApiError> {
    match v {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(ApiError::InvalidParam {
            message: format!("`{param}` is required"),
            param,
        }),
        Some(_) => Err(ApiError::InvalidParam {
            message: format!("`{param}` must be a string"),
            param,
        }),
    }
}

/// `24h`, `48h`, `7d`, ...: seconds, when within Groq's 24h..7d.
pub fn parse_window(w: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::InvalidParam {
        message: format!(
            "Invalid value: '{w}'. `completion_window` must be a duration from 24h to 7d, such as '24h' or '7d'"
        ),
        param: "completion_window",
    }
    };
    let unit = match w.chars().last() {
        Some('h') => 3600,
        Some('d') => 86_400,
        _ => return Err(bad()),
    };
    let n: i64 = w[..w.len() - 1].parse().map_err(|_| bad())?;
    let secs = n.checked_mul(unit).ok_or_else(bad)?;
    if (MIN_WINDOW_SECS..=MAX_WINDOW_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(bad())
    }
}

/// Groq's Batch object; `request_counts` from the lines.
pub fn batch_object(b: &BatchRecord, c: LineCounts) -> Value {
    let parsed = |s: &Option<String>| -> Value {
        s.as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null)
    };
    json!({
        "id": b.id,
        "object": "batch",
        "endpoint": b.endpoint,
        "errors": parsed(&b.errors),
        "input_file_id": b.input_file_id,
        "completion_window": b.completion_window,
        "status": b.status.as_str(),
        "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id,
        "created_at": b.created_at,
        "in_progress_at": b.in_progress_at,
        "expires_at": b.expires_at,
        "finalizing_at": b.finalizing_at,
        "completed_at": b.completed_at,
        "failed_at": b.failed_at,
        "expired_at": b.expired_at,
        "cancelling_at": b.cancelling_at,
        "cancelled_at": b.cancelled_at,
        "request_counts": {"total": c.total, "completed": c.completed, "failed": c.failed},
        "metadata": parsed(&b.metadata),
    })
}

async fn render(state: &SharedState, b: &BatchRecord) -> Result<Value, ApiError> {
    let fs = files(state)?;
    let counts = fs.store.line_counts(&b.id).await.map_err(store_err)?;
    Ok(batch_object(b, counts))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("Batch `{id}` not found."))
}

async fn find(state: &SharedState, id: &str) -> Result<BatchRecord, ApiError> {
    files(state)?
        .store
        .batch(id)
        .await
        .map_err(store_err)?
        .ok_or_else(|| not_found(id))
}

/// `POST /batches`.
pub async fn create(
    State(state): State<SharedState>,
    body: Result<Json<CreateBatch>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let fs = files(&state)?;
    let input = required_str(&req.input_file_id, "input_file_id")?;
    let endpoint = required_str(&req.endpoint, "endpoint")?;
    let window = required_str(&req.completion_window, "completion_window")?;
    if endpoint != ENDPOINT {
        return Err(ApiError::InvalidParam {
            message: format!("Invalid value: '{endpoint}'. Supported values are: '{ENDPOINT}'"),
            param: "endpoint",
        });
    }
    let window_secs = parse_window(window)?;
    let metadata = match &req.metadata {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) if m.values().all(Value::is_string) => {
            Some(Value::Object(m.clone()).to_string())
        }
        Some(_) => {
            return Err(ApiError::InvalidParam {
                message: "`metadata` must be an object of string values".into(),
                param: "metadata",
            })
        }
    };
    let file = fs.store.file(input).await.map_err(store_err)?;
    match file {
        Some(f) if f.purpose == "batch" => {}
        Some(_) => {
            return Err(ApiError::InvalidParam {
                message: format!("File `{input}` was not uploaded with purpose 'batch'."),
                param: "input_file_id",
            })
        }
        None => {
            return Err(ApiError::InvalidParam {
                message: format!("Invalid input file: file `{input}` not found."),
                param: "input_file_id",
            })
        }
    }
    let record = BatchRecord::new(
        new_id("batch"),
        input.to_string(),
        endpoint.to_string(),
        window.to_string(),
        window_secs,
        metadata,
        now(),
    );
    fs.store.insert_batch(&record).await.map_err(store_err)?;
    fs.wake.notify_one();
    Ok(Json(batch_object(&record, LineCounts::default())))
}

/// `GET /batches/{id}`.
pub async fn retrieve(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let b = find(&state, &id).await?;
    Ok(Json(render(&state, &b).await?))
}

/// `POST /batches/{id}/cancel`.
pub async fn cancel(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let fs = files(&state)?;
    let b = fs
        .store
        .cancel_batch(&id, now())
        .await
        .map_err(store_err)?
        .ok_or_else(|| not_found(&id))?;
    if b.status != BatchStatus::Cancelling {
        return Err(ApiError::BadRequest(format!(
            "Batch `{id}` cannot be cancelled: its status is '{}'.",
            b.status.as_str()
        )));
    }
    fs.wake.notify_one();
    Ok(Json(render(&state, &b).await?))
}

/// `cursor_` + base64 of `{"id": <last batch id>}`, as Groq's cursors look.
fn encode_cursor(id: &str) -> String {
    let raw = json!({ "id": id }).to_string();
    format!(
        "cursor_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

fn decode_cursor(c: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c.strip_prefix("cursor_")?)
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    v.get("id")?.as_str().map(str::to_string)
}

/// `GET /batches`: newest first, `limit` per page (default 20), `cursor` from the previous
/// page's `paging.next_cursor`, or only the batches named by repeated `id` parameters.
pub async fn list(
    State(state): State<SharedState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let fs = files(&state)?;
    let (mut ids, mut cursor, mut limit) = (Vec::new(), None, DEFAULT_PAGE);
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "id" => ids.push(v.into_owned()),
            "cursor" => {
                cursor = Some(decode_cursor(&v).ok_or_else(|| ApiError::InvalidParam {
                    message: format!("Invalid cursor: '{v}'"),
                    param: "cursor",
                })?)
            }
            "limit" => {
                limit = v
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_PAGE).contains(n))
                    .ok_or_else(|| ApiError::InvalidParam {
                        message: format!("`limit` must be an integer from 1 to {MAX_PAGE}"),
                        param: "limit",
                    })?
            }
            _ => {}
        }
    }
    if ids.len() > MAX_LIST_IDS {
        return Err(ApiError::InvalidParam {
            message: format!("at most {MAX_LIST_IDS} `id` values may be given"),
            param: "id",
        });
    }
    let limit = if ids.is_empty() {
        limit
    } else {
        MAX_LIST_IDS as i64
    };
    // One more than a page tells whether another page follows.
    let mut page = fs
        .store
        .batches(&ids, cursor.as_deref(), limit + 1)
        .await
        .map_err(store_err)?;
    let more = page.len() as i64 > limit;
    page.truncate(limit as usize);
    let mut data = Vec::with_capacity(page.len());
    for b in &page {
        data.push(render(&state, b).await?);
    }
    let next = match page.last() {
        Some(last) if more => Value::String(encode_cursor(&last.id)),
        _ => Value::Null,
    };
    Ok(Json(
        json!({"object": "list", "data": data, "paging": {"next_cursor": next}}),
    ))
}
