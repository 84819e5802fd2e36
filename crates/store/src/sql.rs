//! [`Store`] over sqlx's Any driver: the same queries on SQLite and PostgreSQL (`$n`
//! placeholders, which both accept).

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::{FileRecord, Store, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The SQL store.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
}

impl SqlStore {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://...`) and brings the schema
    /// up to date.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let pool = AnyPoolOptions::new()
            // SQLite has one writer: one connection serialises writes without busy errors.
            .max_connections(if sqlite { 1 } else { 8 })
            .connect(url)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }
}

fn file_of(row: &AnyRow) -> Result<FileRecord, sqlx::Error> {
    Ok(FileRecord {
        id: row.try_get("id")?,
        bytes: row.try_get("bytes")?,
        lines: row.try_get("lines")?,
        created_at: row.try_get("created_at")?,
        filename: row.try_get("filename")?,
        purpose: row.try_get("purpose")?,
    })
}

const FILE_COLUMNS: &str = "id, bytes, lines, created_at, filename, purpose";

#[async_trait::async_trait]
impl Store for SqlStore {
    async fn insert_file(&self, f: &FileRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO files (id, bytes, lines, created_at, filename, purpose) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&f.id)
        .bind(f.bytes)
        .bind(f.lines)
        .bind(f.created_at)
        .bind(&f.filename)
        .bind(&f.purpose)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn file(&self, id: &str) -> Result<Option<FileRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(file_of).transpose()?)
    }

    async fn files(&self) -> Result<Vec<FileRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {FILE_COLUMNS} FROM files ORDER BY created_at DESC, id DESC"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(file_of).collect::<Result<_, _>>()?)
    }

    async fn delete_file(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM files WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
