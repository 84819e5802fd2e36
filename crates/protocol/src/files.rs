//! The Files API's objects ([Groq's Files API](https://console.groq.com/docs/api-reference#files)):
//! `POST /files`, `GET /files`, `GET /files/{id}`, `DELETE /files/{id}`. Keys in Groq's order.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::models::ListObject;
use crate::wire::const_str;

const_str! {
    /// `"object":"file"`.
    FileObjectKind = "file"
}

const_str! {
    /// `"status":"processed"`: a stored file is whole once its upload returns. Groq's file
    /// objects omit `status`; OpenAI's typed clients require it (and its `processed`).
    FileStatus = "processed"
}

/// One stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileObject {
    /// `file_` + a lower-case ULID.
    pub id: String,
    /// Always `"file"`.
    pub object: FileObjectKind,
    /// Size in bytes.
    pub bytes: i64,
    /// Unix seconds.
    pub created_at: i64,
    pub filename: String,
    /// `batch` or `fine_tuning` (uploads), or `batch_output` (a batch's results and errors).
    pub purpose: String,
    /// Always `"processed"`; accepted missing, as Groq sends it.
    #[serde(default)]
    pub status: FileStatus,
}

/// `GET /files`: `{"object":"list","data":[...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileList {
    pub object: ListObject,
    pub data: Vec<FileObject>,
}

/// `DELETE /files/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileDeleted {
    pub id: String,
    /// Always `"file"`.
    pub object: FileObjectKind,
    pub deleted: bool,
}
