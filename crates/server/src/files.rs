//! The Files API's handlers: multipart uploads streamed into the storage service, list,
//! retrieve, download, delete (docs/wire-contract.md, "Files API").

use axum::body::Body;
use axum::extract::{Multipart, Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use peregrine_protocol::files::{FileDeleted, FileList, FileObject};
use peregrine_service::files::{Purpose, Upload};
use peregrine_service::{Principal, ServiceError, Storage};

use crate::error::ApiError;
use crate::state::SharedState;

pub(crate) fn storage(state: &SharedState) -> Result<&Storage, ApiError> {
    state.storage.as_deref().ok_or_else(|| {
        ServiceError::BadRequest("the Files API is not enabled on this server".into()).into()
    })
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    ServiceError::BadRequest(e.body_text()).into()
}

/// Longest `purpose` field read, in bytes [64]: the accepted values are `batch` and
/// `fine_tuning`, so a longer one is refused without being held in memory.
pub const MAX_PURPOSE_BYTES: usize = 64;

/// A short text field, refused past [`MAX_PURPOSE_BYTES`].
async fn small_text(mut field: axum::extract::multipart::Field<'_>) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > MAX_PURPOSE_BYTES {
            let message = format!(
                "`purpose` must be 'batch' or 'fine_tuning' (at most {MAX_PURPOSE_BYTES} bytes)"
            );
            return Err(ServiceError::BadRequest(message).into());
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes)
        .map_err(|_| ServiceError::BadRequest("`purpose` must be UTF-8 text".into()).into())
}

/// `POST /files`: a `purpose` field and one `file` field, in either order.
pub async fn upload(
    State(state): State<SharedState>,
    Extension(who): Extension<Principal>,
    mut form: Multipart,
) -> Result<Json<FileObject>, ApiError> {
    let fs = storage(&state)?;
    let mut purpose: Option<String> = None;
    let mut upload: Option<Upload> = None;
    while let Some(mut field) = form.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("purpose") => purpose = Some(small_text(field).await?),
            Some("file") if upload.is_some() => {
                return Err(
                    ServiceError::BadRequest("only one `file` may be uploaded".into()).into(),
                )
            }
            Some("file") => {
                let name = field.file_name().unwrap_or("upload.jsonl").to_string();
                // A known purpose lets a batch file's line limit stop the upload early.
                let known = purpose.as_deref().and_then(|p| Purpose::parse(p).ok());
                let mut up = fs.begin_upload(&who.org, &name, known).await?;
                while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                    up.write(&chunk).await?;
                }
                up.end()?;
                upload = Some(up);
            }
            _ => {}
        }
    }
    let Some(upload) = upload else {
        return Err(ServiceError::BadRequest("`file` is required".into()).into());
    };
    Ok(Json(fs.finish_upload(upload, purpose.as_deref()).await?))
}

/// `GET /files`.
pub async fn list(
    State(state): State<SharedState>,
    Extension(who): Extension<Principal>,
) -> Result<Json<FileList>, ApiError> {
    Ok(Json(storage(&state)?.list_files(&who.org).await?))
}

/// `GET /files/{id}`.
pub async fn retrieve(
    State(state): State<SharedState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<FileObject>, ApiError> {
    Ok(Json(storage(&state)?.file(&who.org, &id).await?))
}

/// `GET /files/{id}/content`: the bytes, streamed from storage.
pub async fn content(
    State(state): State<SharedState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (bytes, reader) = storage(&state)?.content(&who.org, &id).await?;
    let mut resp = Body::from_stream(tokio_util::io::ReaderStream::new(reader)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&bytes.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    Ok(resp)
}

/// `DELETE /files/{id}`.
pub async fn delete(
    State(state): State<SharedState>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<FileDeleted>, ApiError> {
    Ok(Json(storage(&state)?.delete_file(&who.org, &id).await?))
}
