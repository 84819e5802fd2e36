//! The Batch API's objects ([Groq's Batch API](https://console.groq.com/docs/batch)): the Batch
//! object, its error list, listing pages, and the lines of a batch's output and error files.
//! Keys in Groq's order; `null` values are written, as Groq writes them.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::ToSchema;

use crate::models::ListObject;
use crate::wire::const_str;
use crate::wire::schema as s;

const_str! {
    /// `"object":"batch"`.
    BatchObjectKind = "batch"
}

/// `POST /batches`. Fields are loose JSON so a wrong type is a 400 naming the field, not a
/// parse error about the body. The OpenAPI schema describes a valid request (the checks of
/// the Batch service): the three strings required, `metadata` at most 16 short strings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CreateBatchRequest {
    /// A file uploaded with purpose `batch`.
    #[serde(default)]
    #[schema(value_type = String, required = true)]
    pub input_file_id: Option<Value>,
    /// The endpoint every line calls: `/v1/chat/completions`.
    #[serde(default)]
    #[schema(required = true, schema_with = endpoint_schema)]
    pub endpoint: Option<Value>,
    /// `24h` to `7d`, in hours (`h`) or days (`d`).
    #[serde(default)]
    #[schema(required = true, schema_with = completion_window_schema)]
    pub completion_window: Option<Value>,
    /// At most 16 string values, keys of at most 64 characters, values of at most 512.
    #[serde(default)]
    #[schema(schema_with = metadata_schema)]
    pub metadata: Option<Value>,
}

fn endpoint_schema() -> ObjectBuilder {
    s::string_enum(&["/v1/chat/completions"]).description(Some("The endpoint every line calls."))
}

fn completion_window_schema() -> ObjectBuilder {
    // 24..=168 hours or 1..=7 days.
    s::string()
        .description(Some("`24h` to `7d`, in hours (`h`) or days (`d`)."))
        .pattern(Some("^(2[4-9]|[3-9][0-9]|1[0-5][0-9]|16[0-8])h$|^[1-7]d$"))
        .examples(["24h"])
}

fn metadata_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Object, Type::Null]))
        .description(Some(
            "At most 16 string values (keys up to 64 characters, values up to 512).",
        ))
        .max_properties(Some(16))
        .property_names(Some(s::string().max_length(Some(64))))
        .additional_properties(Some(s::string().max_length(Some(512))))
}

/// One batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Batch {
    pub id: String,
    /// Always `"batch"`.
    pub object: BatchObjectKind,
    pub endpoint: String,
    /// Why the input file was refused (status `failed`).
    #[schema(required = true)]
    pub errors: Option<BatchErrors>,
    pub input_file_id: String,
    pub completion_window: String,
    /// `validating`, `in_progress`, `finalizing`, `completed`, `failed`, `expired`,
    /// `cancelling` or `cancelled`.
    #[schema(schema_with = status_schema)]
    pub status: String,
    #[schema(required = true)]
    pub output_file_id: Option<String>,
    #[schema(required = true)]
    pub error_file_id: Option<String>,
    pub created_at: i64,
    #[schema(required = true)]
    pub in_progress_at: Option<i64>,
    pub expires_at: i64,
    #[schema(required = true)]
    pub finalizing_at: Option<i64>,
    #[schema(required = true)]
    pub completed_at: Option<i64>,
    #[schema(required = true)]
    pub failed_at: Option<i64>,
    #[schema(required = true)]
    pub expired_at: Option<i64>,
    #[schema(required = true)]
    pub cancelling_at: Option<i64>,
    #[schema(required = true)]
    pub cancelled_at: Option<i64>,
    pub request_counts: RequestCounts,
    /// String values set at creation.
    #[schema(value_type = Option<HashMap<String, String>>, required = true)]
    pub metadata: Option<Value>,
}

fn status_schema() -> ObjectBuilder {
    s::string_enum(&[
        "validating",
        "in_progress",
        "finalizing",
        "completed",
        "failed",
        "expired",
        "cancelling",
        "cancelled",
    ])
    .description(Some("The batch's state."))
}

/// `{"object":"list","data":[...]}` of validation errors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchErrors {
    pub object: ListObject,
    pub data: Vec<BatchError>,
}

/// One validation error of an input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchError {
    pub code: String,
    pub message: String,
    /// The field at fault (`custom_id`, `body.model`, ...).
    #[schema(required = true)]
    pub param: Option<String>,
    /// 1-based line of the input file.
    #[schema(required = true)]
    pub line: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RequestCounts {
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
}

/// `GET /batches`: a page, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchList {
    pub object: ListObject,
    pub data: Vec<Batch>,
    pub paging: Paging,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Paging {
    /// Pass as `cursor` for the next page; `null` on the last.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// One line of a batch's output or error file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchOutputLine {
    /// `batch_req_out_` + a lower-case ULID.
    pub id: String,
    pub custom_id: String,
    /// What the endpoint answered (`null` for a line that never ran).
    #[schema(required = true)]
    pub response: Option<BatchLineResponse>,
    /// Why the line never ran (`batch_expired`, `batch_cancelled`).
    #[schema(required = true)]
    pub error: Option<BatchLineError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchLineResponse {
    pub status_code: u16,
    pub request_id: String,
    /// The endpoint's JSON body: a chat completion, or an error envelope.
    #[schema(value_type = Object)]
    pub body: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BatchLineError {
    pub code: String,
    pub message: String,
}
