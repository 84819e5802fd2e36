//! Durable state for the Files and Batch APIs.
//!
//! - [`Store`]: the metadata, behind a trait; [`SqlStore`] implements it with sqlx's Any
//!   driver over one portable schema (crates/store/migrations), on SQLite (a file under the
//!   data directory, the default) or PostgreSQL (`postgres://...`, shared by replicas).
//! - [`Blobs`]: file contents, on local disk by default; the trait leaves room for an object
//!   store.
//!
//! Call order: [`SqlStore::connect`] (runs the migrations) once at start, then the trait's
//! methods from handlers.

mod blobs;
mod sql;

pub use blobs::{Blobs, LocalBlobs};
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
}

/// File and batch metadata.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    async fn insert_file(&self, file: &FileRecord) -> Result<(), StoreError>;
    async fn file(&self, id: &str) -> Result<Option<FileRecord>, StoreError>;
    /// Every file, newest first.
    async fn files(&self) -> Result<Vec<FileRecord>, StoreError>;
    /// Whether a file with this id existed.
    async fn delete_file(&self, id: &str) -> Result<bool, StoreError>;
}
