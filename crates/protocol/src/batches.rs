//! The Batch API's objects ([Groq's Batch API](https://console.groq.com/docs/batch)): the Batch
//! object, its error list, listing pages, and the lines of a batch's output and error files.
//! Keys in Groq's order; `null` values are written, as Groq writes them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::models::ListObject;
use crate::wire::const_str;

const_str! {
    /// `"object":"batch"`.
    BatchObjectKind = "batch"
}

/// `POST /batches`. Fields are loose JSON so a wrong type is a 400 naming the field, not a
/// parse error about the body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateBatchRequest {
    #[serde(default)]
    pub input_file_id: Option<Value>,
    #[serde(default)]
    pub endpoint: Option<Value>,
    #[serde(default)]
    pub completion_window: Option<Value>,
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// One batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub id: String,
    /// Always `"batch"`.
    pub object: BatchObjectKind,
    pub endpoint: String,
    /// Why the input file was refused (status `failed`).
    pub errors: Option<BatchErrors>,
    pub input_file_id: String,
    pub completion_window: String,
    /// `validating`, `in_progress`, `finalizing`, `completed`, `failed`, `expired`,
    /// `cancelling` or `cancelled`.
    pub status: String,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub created_at: i64,
    pub in_progress_at: Option<i64>,
    pub expires_at: i64,
    pub finalizing_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub expired_at: Option<i64>,
    pub cancelling_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub request_counts: RequestCounts,
    /// String values set at creation.
    pub metadata: Option<Value>,
}

/// `{"object":"list","data":[...]}` of validation errors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchErrors {
    pub object: ListObject,
    pub data: Vec<BatchError>,
}

/// One validation error of an input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchError {
    pub code: String,
    pub message: String,
    /// The field at fault (`custom_id`, `body.model`, ...).
    pub param: Option<String>,
    /// 1-based line of the input file.
    pub line: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
}

/// `GET /batches`: a page, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchList {
    pub object: ListObject,
    pub data: Vec<Batch>,
    pub paging: Paging,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paging {
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// One line of a batch's output or error file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchOutputLine {
    /// `batch_req_out_` + a lower-case ULID.
    pub id: String,
    pub custom_id: String,
    /// What the endpoint answered (`null` for a line that never ran).
    pub response: Option<BatchLineResponse>,
    /// Why the line never ran (`batch_expired`, `batch_cancelled`).
    pub error: Option<BatchLineError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchLineResponse {
    pub status_code: u16,
    pub request_id: String,
    /// The endpoint's JSON body: a chat completion, or an error envelope.
    pub body: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchLineError {
    pub code: String,
    pub message: String,
}
