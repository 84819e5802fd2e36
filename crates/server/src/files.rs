//! The Files API (spec §8.1): upload (multipart, streamed to storage with the 200 MB and
//! 50,000-line limits checked on the way), list, retrieve, download, delete.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Multipart, Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use peregrine_store::{new_id, Blobs, FileRecord, Store};
use serde::Serialize;

use crate::error::ApiError;
use crate::state::SharedState;

/// Largest upload, in bytes (Groq: 200 MB).
pub const MAX_FILE_BYTES: u64 = 200_000_000;
/// Most lines in an upload (Groq: 50,000).
pub const MAX_FILE_LINES: u64 = 50_000;

/// Where files live.
pub struct FilesState {
    pub store: Arc<dyn Store>,
    pub blobs: Arc<dyn Blobs>,
    /// Wakes the batch worker (a batch was created or cancelled, a line finished).
    pub wake: Arc<tokio::sync::Notify>,
}

impl FilesState {
    pub fn new(store: Arc<dyn Store>, blobs: Arc<dyn Blobs>) -> Self {
        Self {
            store,
            blobs,
            wake: Arc::new(tokio::sync::Notify::new()),
        }
    }
}

/// Groq's File object; keys in its order.
#[derive(Serialize)]
struct FileObject<'a> {
    id: &'a str,
    object: &'static str,
    bytes: i64,
    created_at: i64,
    filename: &'a str,
    purpose: &'a str,
}

impl<'a> From<&'a FileRecord> for FileObject<'a> {
    fn from(f: &'a FileRecord) -> Self {
        Self {
            id: &f.id,
            object: "file",
            bytes: f.bytes,
            created_at: f.created_at,
            filename: &f.filename,
            purpose: &f.purpose,
        }
    }
}

pub(crate) fn files(state: &SharedState) -> Result<&FilesState, ApiError> {
    state
        .files
        .as_ref()
        .ok_or_else(|| ApiError::BadRequest("the Files API is not enabled on this server".into()))
}

pub(crate) fn store_err(e: peregrine_store::StoreError) -> ApiError {
    ApiError::Internal(e.to_string())
}

fn valid_id(id: &str) -> bool {
    id.strip_prefix("file_")
        .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

async fn find(fs: &FilesState, id: &str) -> Result<FileRecord, ApiError> {
    if !valid_id(id) {
        return Err(ApiError::NotFound(format!("File `{id}` not found.")));
    }
    fs.store
        .file(id)
        .await
        .map_err(store_err)?
        .ok_or_else(|| ApiError::NotFound(format!("File `{id}` not found.")))
}

/// `POST /files`.
pub async fn upload(
    State(state): State<SharedState>,
    mut form: Multipart,
) -> Result<Json<serde_json::Value>, ApiError> {
    let fs = files(&state)?;
    let bad = |e: axum::extract::multipart::MultipartError| ApiError::BadRequest(e.body_text());
    let mut purpose: Option<String> = None;
    let mut stored: Option<FileRecord> = None;
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        match field.name() {
            Some("purpose") => purpose = Some(field.text().await.map_err(bad)?),
            Some("file") => {
                if stored.is_some() {
                    return Err(ApiError::BadRequest(
                        "only one `file` may be uploaded".into(),
                    ));
                }
                let id = new_id("file");
                let filename = field.file_name().unwrap_or("upload.jsonl").to_string();
                let mut w = fs.blobs.create(&id).await.map_err(store_err)?;
                let (mut bytes, mut lines, mut last) = (0u64, 0u64, b'\n');
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    bytes += chunk.len() as u64;
                    if bytes > MAX_FILE_BYTES {
                        return Err(ApiError::PayloadTooLarge(MAX_FILE_BYTES as usize));
                    }
                    lines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
                    last = chunk.last().copied().unwrap_or(last);
                    if lines > MAX_FILE_LINES {
                        return Err(ApiError::BadRequest(format!(
                            "`file` has more than {MAX_FILE_LINES} lines, the most a batch file may have"
                        )));
                    }
                    w.write(&chunk).await.map_err(store_err)?;
                }
                if last != b'\n' {
                    lines += 1;
                }
                if bytes == 0 {
                    return Err(ApiError::BadRequest("`file` is empty".into()));
                }
                w.commit().await.map_err(store_err)?;
                stored = Some(FileRecord {
                    id,
                    bytes: bytes as i64,
                    lines: lines as i64,
                    created_at: now(),
                    filename,
                    purpose: String::new(),
                });
            }
            _ => {}
        }
    }
    let Some(mut record) = stored else {
        return Err(ApiError::BadRequest("`file` is required".into()));
    };
    match purpose.as_deref() {
        Some("batch") => record.purpose = "batch".into(),
        other => {
            let _ = fs.blobs.remove(&record.id).await;
            return Err(ApiError::BadRequest(match other {
                None => "`purpose` is required".into(),
                Some(p) => format!("`purpose` must be 'batch', got '{p}'"),
            }));
        }
    }
    if record.lines > MAX_FILE_LINES as i64 {
        let _ = fs.blobs.remove(&record.id).await;
        return Err(ApiError::BadRequest(format!(
            "`file` has more than {MAX_FILE_LINES} lines, the most a batch file may have"
        )));
    }
    if let Err(e) = fs.store.insert_file(&record).await {
        let _ = fs.blobs.remove(&record.id).await;
        return Err(store_err(e));
    }
    Ok(Json(
        serde_json::to_value(FileObject::from(&record)).unwrap_or_default(),
    ))
}

/// `GET /files`.
pub async fn list(State(state): State<SharedState>) -> Result<Json<serde_json::Value>, ApiError> {
    let fs = files(&state)?;
    let all = fs.store.files().await.map_err(store_err)?;
    let data: Vec<FileObject> = all.iter().map(FileObject::from).collect();
    Ok(Json(serde_json::json!({"object": "list", "data": data})))
}

/// `GET /files/{id}`.
pub async fn retrieve(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let f = find(files(&state)?, &id).await?;
    Ok(Json(
        serde_json::to_value(FileObject::from(&f)).unwrap_or_default(),
    ))
}

/// `GET /files/{id}/content`: the bytes, streamed from storage.
pub async fn content(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let fs = files(&state)?;
    let f = find(fs, &id).await?;
    let file = tokio::fs::File::open(fs.blobs.path(&f.id))
        .await
        .map_err(|e| ApiError::Internal(format!("opening {}: {e}", f.id)))?;
    let mut resp = Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&f.bytes.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    Ok(resp)
}

/// `DELETE /files/{id}`.
pub async fn delete(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let fs = files(&state)?;
    let f = find(fs, &id).await?;
    fs.store.delete_file(&f.id).await.map_err(store_err)?;
    fs.blobs.remove(&f.id).await.map_err(store_err)?;
    Ok(Json(
        serde_json::json!({"id": f.id, "object": "file", "deleted": true}),
    ))
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
