//! The Batch API over the store: create, retrieve, list (cursor pages or repeated ids),
//! cancel. The work itself is done by [`crate::batch_worker`]; these only read and move the
//! stored state.

use base64::Engine as _;
use peregrine_protocol::batches::{
    Batch, BatchErrors, BatchList, CreateBatchRequest, Paging, RequestCounts,
};
use peregrine_store::{new_id, BatchRecord, BatchStatus, LineCounts};
use serde_json::Value;

use crate::completions::now_unix;
use crate::error::ServiceError;
use crate::files::{store_err, Storage};

/// The one endpoint batch lines may call.
pub const ENDPOINT: &str = "/v1/chat/completions";
/// Shortest and longest completion windows (Groq: 24h to 7d).
const MIN_WINDOW_SECS: i64 = 24 * 3600;
const MAX_WINDOW_SECS: i64 = 7 * 24 * 3600;
/// Most ids in one `GET /batches?id=...` (Groq: 200).
pub const MAX_LIST_IDS: usize = 200;
/// Batches per page unless `limit` says otherwise, and the most `limit` may ask for.
pub const DEFAULT_PAGE: i64 = 20;
pub const MAX_PAGE: i64 = 100;

/// What `GET /batches` asks for.
#[derive(Debug, Default)]
pub struct ListQuery {
    /// Only these batches (repeated `id`).
    pub ids: Vec<String>,
    /// `paging.next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

pub(crate) fn required_str<'a>(
    v: &'a Option<Value>,
    param: &'static str,
) -> Result<&'a str, ServiceError> {
    match v {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(ServiceError::InvalidParam {
            message: format!("`{param}` is required"),
            param,
        }),
        Some(_) => Err(ServiceError::InvalidParam {
            message: format!("`{param}` must be a string"),
            param,
        }),
    }
}

/// `24h`, `48h`, `7d`, ...: seconds, when within Groq's 24h..7d.
pub fn parse_window(w: &str) -> Result<i64, ServiceError> {
    let bad = || {
        ServiceError::InvalidParam {
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

/// Limits on a batch's `metadata` (OpenAI's, which Groq's Batch API follows): at most 16
/// pairs, keys of at most 64 characters, values of at most 512.
pub const MAX_METADATA_PAIRS: usize = 16;
pub const MAX_METADATA_KEY_CHARS: usize = 64;
pub const MAX_METADATA_VALUE_CHARS: usize = 512;

/// `metadata`: an object of at most 16 short strings, kept as its JSON text.
fn metadata_text(v: &Option<Value>) -> Result<Option<String>, ServiceError> {
    let bad = |message: String| ServiceError::InvalidParam {
        message,
        param: "metadata",
    };
    let m = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(m)) if m.values().all(Value::is_string) => m,
        Some(_) => return Err(bad("`metadata` must be an object of string values".into())),
    };
    if m.len() > MAX_METADATA_PAIRS {
        return Err(bad(format!(
            "`metadata` may have at most {MAX_METADATA_PAIRS} keys, got {}",
            m.len()
        )));
    }
    let long_key = m.keys().any(|k| k.chars().count() > MAX_METADATA_KEY_CHARS);
    let long_value = (m.values().filter_map(Value::as_str))
        .any(|v| v.chars().count() > MAX_METADATA_VALUE_CHARS);
    if long_key || long_value {
        return Err(bad(format!(
            "`metadata` keys may be at most {MAX_METADATA_KEY_CHARS} characters and values at most {MAX_METADATA_VALUE_CHARS}"
        )));
    }
    Ok(Some(Value::Object(m.clone()).to_string()))
}

/// Groq's Batch object; `request_counts` from the lines.
pub fn batch_object(b: &BatchRecord, c: LineCounts) -> Batch {
    Batch {
        id: b.id.clone(),
        object: Default::default(),
        endpoint: b.endpoint.clone(),
        errors: b
            .errors
            .as_deref()
            .and_then(|t| serde_json::from_str::<BatchErrors>(t).ok()),
        input_file_id: b.input_file_id.clone(),
        completion_window: b.completion_window.clone(),
        status: b.status.as_str().to_string(),
        output_file_id: b.output_file_id.clone(),
        error_file_id: b.error_file_id.clone(),
        created_at: b.created_at,
        in_progress_at: b.in_progress_at,
        expires_at: b.expires_at,
        finalizing_at: b.finalizing_at,
        completed_at: b.completed_at,
        failed_at: b.failed_at,
        expired_at: b.expired_at,
        cancelling_at: b.cancelling_at,
        cancelled_at: b.cancelled_at,
        request_counts: RequestCounts {
            total: c.total,
            completed: c.completed,
            failed: c.failed,
        },
        metadata: b
            .metadata
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok()),
    }
}

/// `cursor_` + base64 of `{"id": <last batch id>}`, as Groq's cursors look.
fn encode_cursor(id: &str) -> String {
    let raw = serde_json::json!({ "id": id }).to_string();
    format!(
        "cursor_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

/// The batch id a cursor points after; a bad cursor is the client's 400.
pub fn decode_cursor(c: &str) -> Result<String, ServiceError> {
    let decode = || -> Option<String> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(c.strip_prefix("cursor_")?)
            .ok()?;
        let v: Value = serde_json::from_slice(&raw).ok()?;
        v.get("id")?.as_str().map(str::to_string)
    };
    decode().ok_or_else(|| ServiceError::InvalidParam {
        message: format!("Invalid cursor: '{c}'"),
        param: "cursor",
    })
}

impl Storage {
    /// `POST /batches`, for organization `org`.
    pub async fn create_batch(
        &self,
        org: &str,
        req: &CreateBatchRequest,
    ) -> Result<Batch, ServiceError> {
        let input = required_str(&req.input_file_id, "input_file_id")?;
        let endpoint = required_str(&req.endpoint, "endpoint")?;
        let window = required_str(&req.completion_window, "completion_window")?;
        if endpoint != ENDPOINT {
            return Err(ServiceError::InvalidParam {
                message: format!("Invalid value: '{endpoint}'. Supported values are: '{ENDPOINT}'"),
                param: "endpoint",
            });
        }
        let window_secs = parse_window(window)?;
        let metadata = metadata_text(&req.metadata)?;
        self.check_input_file(org, input).await?;
        let record = BatchRecord::new(
            new_id("batch"),
            input.to_string(),
            endpoint.to_string(),
            window.to_string(),
            window_secs,
            metadata,
            now_unix(),
        )
        .owned_by(org);
        self.store.insert_batch(&record).await.map_err(store_err)?;
        self.wake.notify_one();
        Ok(batch_object(&record, LineCounts::default()))
    }

    /// A batch's input must be a file of the same organization, uploaded with purpose
    /// `batch`.
    async fn check_input_file(&self, org: &str, input: &str) -> Result<(), ServiceError> {
        let bad = |message| ServiceError::InvalidParam {
            message,
            param: "input_file_id",
        };
        let file = self.store.file(input).await.map_err(store_err)?;
        match file.filter(|f| f.org_id == org) {
            Some(f) if f.purpose == "batch" => Ok(()),
            Some(_) => Err(bad(format!(
                "File `{input}` was not uploaded with purpose 'batch'."
            ))),
            None => Err(bad(format!(
                "Invalid input file: file `{input}` not found."
            ))),
        }
    }

    async fn render(&self, b: &BatchRecord) -> Result<Batch, ServiceError> {
        let counts = self.store.line_counts(&b.id).await.map_err(store_err)?;
        Ok(batch_object(b, counts))
    }

    /// A batch of `org`; `NotFound` for another organization's (not revealed).
    async fn batch_record(&self, org: &str, id: &str) -> Result<BatchRecord, ServiceError> {
        self.store
            .batch(id)
            .await
            .map_err(store_err)?
            .filter(|b| b.org_id == org)
            .ok_or_else(|| batch_not_found(id))
    }

    /// `GET /batches/{id}`.
    pub async fn batch(&self, org: &str, id: &str) -> Result<Batch, ServiceError> {
        let b = self.batch_record(org, id).await?;
        self.render(&b).await
    }

    /// `POST /batches/{id}/cancel`.
    pub async fn cancel_batch(&self, org: &str, id: &str) -> Result<Batch, ServiceError> {
        self.batch_record(org, id).await?;
        let b = self
            .store
            .cancel_batch(id, now_unix())
            .await
            .map_err(store_err)?
            .ok_or_else(|| batch_not_found(id))?;
        if b.status != BatchStatus::Cancelling {
            return Err(ServiceError::BadRequest(format!(
                "Batch `{id}` cannot be cancelled: its status is '{}'.",
                b.status.as_str()
            )));
        }
        self.wake.notify_one();
        self.render(&b).await
    }

    /// `GET /batches`: newest first, `limit` per page, after the cursor's batch, or only the
    /// batches named by `ids`.
    pub async fn list_batches(&self, org: &str, q: ListQuery) -> Result<BatchList, ServiceError> {
        if q.ids.len() > MAX_LIST_IDS {
            return Err(ServiceError::InvalidParam {
                message: format!("at most {MAX_LIST_IDS} `id` values may be given"),
                param: "id",
            });
        }
        let limit = if q.ids.is_empty() {
            q.limit.unwrap_or(DEFAULT_PAGE)
        } else {
            MAX_LIST_IDS as i64
        };
        // One more than a page tells whether another page follows.
        let mut page = self
            .store
            .batches(Some(org), &q.ids, q.cursor.as_deref(), limit + 1)
            .await
            .map_err(store_err)?;
        let more = page.len() as i64 > limit;
        page.truncate(limit as usize);
        let mut data = Vec::with_capacity(page.len());
        for b in &page {
            data.push(self.render(b).await?);
        }
        let next_cursor = page
            .last()
            .filter(|_| more)
            .map(|last| encode_cursor(&last.id));
        Ok(BatchList {
            object: Default::default(),
            data,
            paging: Paging { next_cursor },
        })
    }
}

fn batch_not_found(id: &str) -> ServiceError {
    ServiceError::NotFound(format!("Batch `{id}` not found."))
}
