//! Durable state for the Files and Batch APIs.
//!
//! - [`Store`]: the metadata, behind a trait; [`SqlStore`] implements it with sqlx's Any
//!   driver over one portable schema (crates/store/migrations), on SQLite (a file under the
//!   data directory, the default) or PostgreSQL (`postgres://...`, shared by replicas).
//! - [`Counters`]: rate-limit token buckets, in memory ([`MemoryCounters`]) or in the
//!   database ([`SqlStore`]), shared by replicas.
//! - [`Blobs`]: file contents, on local disk by default; the trait leaves room for an object
//!   store.
//!
//! Call order: [`SqlStore::connect`] (runs the migrations) once at start, then the trait's
//! methods from handlers.

mod batches;
mod blobs;
mod counters;
mod redis_counters;
mod sql;

pub use batches::{BatchRecord, BatchStatus, LineCounts, LineResult, LineState, LineTask, NewLine};

pub use blobs::{BlobEntry, BlobReader, BlobWriter, Blobs, LocalBlobs};
pub use counters::{Counters, Draw, Drawn, MemoryCounters};
pub use redis_counters::RedisCounters;
pub use sql::SqlStore;

/// A stored file's metadata (Groq's File object, plus the line count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    /// `file_` + a lower-case ULID.
    pub id: String,
    pub bytes: i64,
    /// Newline-terminated lines (a last line without a newline counts).
    pub lines: i64,
    /// Unix seconds.
    pub created_at: i64,
    pub filename: String,
    /// `batch` (uploads) or `batch_output` (results and errors).
    pub purpose: String,
    /// The organization whose key created it (a batch's result files: the batch's).
    pub org_id: String,
}

/// A registered LoRA adapter (Groq's fine-tuning object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FineTuningRecord {
    /// `ft_` + a lower-case ULID.
    pub id: String,
    pub org_id: String,
    pub name: String,
    /// The model id the adapter was registered over, as the client gave it.
    pub base_model: String,
    /// `lora`.
    pub kind: String,
    /// The uploaded ZIP (a file with purpose `fine_tuning`).
    pub input_file_id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The model id chat completions take: `ft:<base>:<org>/<name>-<hex>`.
    pub fine_tuned_model: String,
}

/// The organization of requests served without authentication or with a static key, and of
/// rows stored before keys had owners.
pub const DEFAULT_ORG: &str = "org_default";

/// A managed API key as stored: never the secret, only its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// `key_` + a lower-case ULID: what `keys list` shows and `keys revoke` takes.
    pub id: String,
    pub name: String,
    pub org_id: String,
    /// Hex SHA-256 of the secret.
    pub secret_hash: String,
    /// The secret's first and last characters (`gsk_ab...yz`).
    pub hint: String,
    /// Unix seconds.
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

/// A new id with Groq's shape: `<prefix>_` + a lower-case ULID.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// A storage failure. Never the client's fault: the server answers 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("file storage: {0}")]
    Io(#[from] std::io::Error),
    /// The rate-limit counters' server (Redis) failed or answered nonsense.
    #[error("rate-limit counters: {0}")]
    Counters(String),
}

/// File and batch metadata.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    async fn insert_file(&self, file: &FileRecord) -> Result<(), StoreError>;
    async fn file(&self, id: &str) -> Result<Option<FileRecord>, StoreError>;
    /// Every file of `org` (of every organization when `None`), newest first.
    async fn files(&self, org: Option<&str>) -> Result<Vec<FileRecord>, StoreError>;
    /// Whether a file with this id existed.
    async fn delete_file(&self, id: &str) -> Result<bool, StoreError>;

    async fn insert_batch(&self, batch: &BatchRecord) -> Result<(), StoreError>;
    async fn batch(&self, id: &str) -> Result<Option<BatchRecord>, StoreError>;
    /// Batches newest first: of `org` (of every organization when `None`), those listed in
    /// `ids` (all when empty), older than the batch `before` when given, at most `limit`.
    async fn batches(
        &self,
        org: Option<&str>,
        ids: &[String],
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<BatchRecord>, StoreError>;
    async fn line_counts(&self, batch_id: &str) -> Result<LineCounts, StoreError>;

    /// Takes the lease on one batch that needs work of its own (validation, expiry,
    /// cancellation or finalization) and whose lease is free, for `lease_ms`.
    async fn claim_batch(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<BatchRecord>, StoreError>;
    /// Gives the lease on a batch back; nobody claims it again before `until_ms` (when it
    /// waits on running lines, it is looked at again then, not at once).
    async fn release_batch(&self, id: &str, owner: &str, until_ms: i64) -> Result<(), StoreError>;
    /// A validated batch: stores its lines and moves it to `in_progress`, in one transaction.
    async fn start_batch(&self, id: &str, lines: &[NewLine], now: i64) -> Result<(), StoreError>;
    /// A batch whose file failed validation: `failed`, with `errors` (JSON).
    async fn fail_batch(&self, id: &str, errors: &str, now: i64) -> Result<(), StoreError>;
    /// `in_progress` -> `finalizing`, when no line is left to run.
    async fn begin_finalizing(&self, id: &str, now: i64) -> Result<bool, StoreError>;
    /// Any non-terminal status -> `cancelling`. The batch as it now is, or `None` if unknown.
    async fn cancel_batch(&self, id: &str, now: i64) -> Result<Option<BatchRecord>, StoreError>;
    /// Marks the pending lines of a batch `state` (expired or cancelled), and the running
    /// ones whose lease lapsed before `now_ms`. Returns how many lines are still running.
    async fn close_pending(
        &self,
        id: &str,
        state: LineState,
        now_ms: i64,
    ) -> Result<i64, StoreError>;
    /// Every line of a batch that has an outcome, in line order.
    async fn line_results(&self, batch_id: &str) -> Result<Vec<LineResult>, StoreError>;
    /// Writes the result files' records and moves the batch to its terminal `status`, in
    /// one transaction. False (and nothing written) when the batch had already ended.
    async fn finish_batch(
        &self,
        id: &str,
        status: BatchStatus,
        now: i64,
        output: Option<&FileRecord>,
        error: Option<&FileRecord>,
    ) -> Result<bool, StoreError>;

    /// Claims up to `limit` lines to run, from `in_progress` batches not yet expired at
    /// `now_ms`: pending lines, or running ones whose lease lapsed (their worker died).
    async fn claim_lines(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<LineTask>, StoreError>;
    /// Extends the lease on every line `owner` is running.
    async fn renew_lines(&self, owner: &str, until_ms: i64) -> Result<(), StoreError>;
    /// Records the outcome of a line `owner` holds. False when it no longer holds it (the
    /// lease lapsed and another worker took it): the result is then dropped, so each line has
    /// exactly one.
    async fn finish_line(
        &self,
        task: &LineTask,
        owner: &str,
        state: LineState,
        result: &str,
    ) -> Result<bool, StoreError>;
    /// Puts a line `owner` holds back to pending (it was preempted or the server stops).
    async fn release_line(&self, task: &LineTask, owner: &str) -> Result<(), StoreError>;
    /// Puts every line `owner` is running back to pending (the replica stops); how many.
    async fn release_lines(&self, owner: &str) -> Result<u64, StoreError>;

    async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError>;
    /// The key whose secret hashes to `secret_hash`, revoked or not.
    async fn key_by_hash(&self, secret_hash: &str) -> Result<Option<KeyRecord>, StoreError>;
    /// Every key, newest first.
    async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError>;
    /// Whether any key is not revoked: with one, requests must authenticate.
    async fn any_active_key(&self) -> Result<bool, StoreError>;
    /// Marks a key revoked at `now`. False when no key has this id or it was revoked already.
    async fn revoke_key(&self, id: &str, now: i64) -> Result<bool, StoreError>;

    async fn insert_fine_tuning(&self, f: &FineTuningRecord) -> Result<(), StoreError>;
    async fn fine_tuning(&self, id: &str) -> Result<Option<FineTuningRecord>, StoreError>;
    /// Every fine tuning of `org` (of every organization when `None`), newest first.
    async fn fine_tunings(&self, org: Option<&str>) -> Result<Vec<FineTuningRecord>, StoreError>;
    /// Whether a fine tuning with this id existed.
    async fn delete_fine_tuning(&self, id: &str) -> Result<bool, StoreError>;
}
