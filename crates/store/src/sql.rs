//! [`Store`] over sqlx's Any driver: the same queries on SQLite and PostgreSQL (`$n`
//! placeholders, which both accept).

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::{
    BatchRecord, BatchStatus, FileRecord, FineTuningRecord, KeyRecord, LineCounts, LineResult,
    LineState, LineTask, NewLine, Store, StoreError,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The SQL store.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    /// PostgreSQL: line claims add `FOR UPDATE SKIP LOCKED` so replicas never wait on each
    /// other's rows. (SQLite has one writer; its single connection serialises claims.)
    postgres: bool,
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
        Ok(Self {
            pool,
            postgres: !sqlite,
        })
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
        org_id: row.try_get("org_id")?,
    })
}

const FILE_COLUMNS: &str = "id, bytes, lines, created_at, filename, purpose, org_id";

const KEY_COLUMNS: &str = "id, name, org_id, secret_hash, hint, created_at, revoked_at";

fn key_of(row: &AnyRow) -> Result<KeyRecord, sqlx::Error> {
    Ok(KeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        org_id: row.try_get("org_id")?,
        secret_hash: row.try_get("secret_hash")?,
        hint: row.try_get("hint")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

const FINE_TUNING_COLUMNS: &str =
    "id, org_id, name, base_model, kind, input_file_id, created_at, fine_tuned_model";

fn fine_tuning_of(row: &AnyRow) -> Result<FineTuningRecord, sqlx::Error> {
    Ok(FineTuningRecord {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        name: row.try_get("name")?,
        base_model: row.try_get("base_model")?,
        kind: row.try_get("kind")?,
        input_file_id: row.try_get("input_file_id")?,
        created_at: row.try_get("created_at")?,
        fine_tuned_model: row.try_get("fine_tuned_model")?,
    })
}

const BATCH_COLUMNS: &str = "id, input_file_id, endpoint, completion_window, status, metadata, \
    errors, output_file_id, error_file_id, created_at, expires_at, in_progress_at, finalizing_at, \
    completed_at, failed_at, expired_at, cancelling_at, cancelled_at, org_id";

fn batch_of(row: &AnyRow) -> Result<BatchRecord, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(BatchRecord {
        id: row.try_get("id")?,
        input_file_id: row.try_get("input_file_id")?,
        endpoint: row.try_get("endpoint")?,
        completion_window: row.try_get("completion_window")?,
        status: BatchStatus::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown batch status {status}").into()))?,
        metadata: row.try_get("metadata")?,
        errors: row.try_get("errors")?,
        output_file_id: row.try_get("output_file_id")?,
        error_file_id: row.try_get("error_file_id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        in_progress_at: row.try_get("in_progress_at")?,
        finalizing_at: row.try_get("finalizing_at")?,
        completed_at: row.try_get("completed_at")?,
        failed_at: row.try_get("failed_at")?,
        expired_at: row.try_get("expired_at")?,
        cancelling_at: row.try_get("cancelling_at")?,
        cancelled_at: row.try_get("cancelled_at")?,
        org_id: row.try_get("org_id")?,
    })
}

fn insert_file(f: &FileRecord) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    sqlx::query(
        "INSERT INTO files (id, bytes, lines, created_at, filename, purpose, org_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&f.id)
    .bind(f.bytes)
    .bind(f.lines)
    .bind(f.created_at)
    .bind(&f.filename)
    .bind(&f.purpose)
    .bind(&f.org_id)
}

fn task_of(row: &AnyRow) -> Result<LineTask, sqlx::Error> {
    Ok(LineTask {
        batch_id: row.try_get("batch_id")?,
        line_no: row.try_get("line_no")?,
        custom_id: row.try_get("custom_id")?,
        body: row.try_get("body")?,
    })
}

#[async_trait::async_trait]
impl Store for SqlStore {
    async fn insert_file(&self, f: &FileRecord) -> Result<(), StoreError> {
        insert_file(f).execute(&self.pool).await?;
        Ok(())
    }

    async fn file(&self, id: &str) -> Result<Option<FileRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {FILE_COLUMNS} FROM files WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(file_of).transpose()?)
    }

    async fn files(&self, org: Option<&str>) -> Result<Vec<FileRecord>, StoreError> {
        let filter = if org.is_some() {
            "WHERE org_id = $1"
        } else {
            ""
        };
        let sql =
            format!("SELECT {FILE_COLUMNS} FROM files {filter} ORDER BY created_at DESC, id DESC");
        let mut q = sqlx::query(&sql);
        if let Some(o) = org {
            q = q.bind(o);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows.iter().map(file_of).collect::<Result<_, _>>()?)
    }

    async fn delete_file(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM files WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_batch(&self, b: &BatchRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO batches (id, input_file_id, endpoint, completion_window, status, metadata, \
             created_at, expires_at, org_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&b.id)
        .bind(&b.input_file_id)
        .bind(&b.endpoint)
        .bind(&b.completion_window)
        .bind(b.status.as_str())
        .bind(&b.metadata)
        .bind(b.created_at)
        .bind(b.expires_at)
        .bind(&b.org_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn batch(&self, id: &str) -> Result<Option<BatchRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {BATCH_COLUMNS} FROM batches WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(batch_of).transpose()?)
    }

    async fn batches(
        &self,
        org: Option<&str>,
        ids: &[String],
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<BatchRecord>, StoreError> {
        // Ids are ULIDs: ordering by id is ordering by creation.
        let mut sql = format!("SELECT {BATCH_COLUMNS} FROM batches WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if org.is_some() {
            sql.push_str(&format!(" AND org_id = {}", next()));
        }
        if before.is_some() {
            sql.push_str(&format!(" AND id < {}", next()));
        }
        if !ids.is_empty() {
            let marks: Vec<String> = ids.iter().map(|_| next()).collect();
            sql.push_str(&format!(" AND id IN ({})", marks.join(", ")));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", next()));
        let mut q = sqlx::query(&sql);
        if let Some(o) = org {
            q = q.bind(o);
        }
        if let Some(b) = before {
            q = q.bind(b);
        }
        for id in ids {
            q = q.bind(id);
        }
        let rows = q.bind(limit).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(batch_of).collect::<Result<_, _>>()?)
    }

    async fn line_counts(&self, batch_id: &str) -> Result<LineCounts, StoreError> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM batch_lines WHERE batch_id = $1 GROUP BY state",
        )
        .bind(batch_id)
        .fetch_all(&self.pool)
        .await?;
        let mut c = LineCounts::default();
        for row in rows {
            let state: String = row.try_get("state")?;
            let n: i64 = row.try_get("n")?;
            c.total += n;
            match LineState::parse(&state) {
                Some(LineState::Done) => c.completed += n,
                Some(LineState::Pending | LineState::Running) => c.open += n,
                _ => c.failed += n,
            }
        }
        Ok(c)
    }

    async fn claim_batch(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> Result<Option<BatchRecord>, StoreError> {
        let now = now_ms / 1000;
        let candidates = sqlx::query(
            "SELECT id FROM batches b WHERE (lease_until IS NULL OR lease_until < $1) AND ( \
               status IN ('validating', 'finalizing', 'cancelling') \
               OR (status = 'in_progress' AND (expires_at <= $2 OR NOT EXISTS ( \
                 SELECT 1 FROM batch_lines l WHERE l.batch_id = b.id \
                 AND l.state IN ('pending', 'running'))))) \
             ORDER BY id LIMIT 8",
        )
        .bind(now_ms)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        for row in candidates {
            let id: String = row.try_get("id")?;
            // Whoever moves the lease first has the batch.
            let taken = sqlx::query(
                "UPDATE batches SET lease_owner = $1, lease_until = $2 \
                 WHERE id = $3 AND (lease_until IS NULL OR lease_until < $4)",
            )
            .bind(owner)
            .bind(now_ms + lease_ms)
            .bind(&id)
            .bind(now_ms)
            .execute(&self.pool)
            .await?
            .rows_affected()
                == 1;
            if taken {
                return self.batch(&id).await;
            }
        }
        Ok(None)
    }

    async fn release_batch(&self, id: &str, owner: &str, until_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE batches SET lease_owner = NULL, lease_until = $1 \
             WHERE id = $2 AND lease_owner = $3",
        )
        .bind(until_ms)
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn start_batch(&self, id: &str, lines: &[NewLine], now: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // Only from `validating`: a second validator (after a lapsed lease) changes nothing.
        let moved = sqlx::query(
            "UPDATE batches SET status = 'in_progress', in_progress_at = $1 \
             WHERE id = $2 AND status = 'validating'",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(());
        }
        for chunk in lines.chunks(200) {
            let mut sql = String::from(
                "INSERT INTO batch_lines (batch_id, line_no, custom_id, body, state) VALUES ",
            );
            for (i, _) in chunk.iter().enumerate() {
                let b = i * 4;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, 'pending')",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4
                ));
            }
            let mut q = sqlx::query(&sql);
            for l in chunk {
                q = q.bind(id).bind(l.line_no).bind(&l.custom_id).bind(&l.body);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn fail_batch(&self, id: &str, errors: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE batches SET status = 'failed', failed_at = $1, errors = $2 \
             WHERE id = $3 AND status = 'validating'",
        )
        .bind(now)
        .bind(errors)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn begin_finalizing(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE batches SET status = 'finalizing', finalizing_at = $1 \
             WHERE id = $2 AND status = 'in_progress' AND NOT EXISTS ( \
               SELECT 1 FROM batch_lines l WHERE l.batch_id = $3 \
               AND l.state IN ('pending', 'running'))",
        )
        .bind(now)
        .bind(id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn cancel_batch(&self, id: &str, now: i64) -> Result<Option<BatchRecord>, StoreError> {
        sqlx::query(
            "UPDATE batches SET status = 'cancelling', cancelling_at = $1 \
             WHERE id = $2 AND status IN ('validating', 'in_progress', 'finalizing')",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.batch(id).await
    }

    async fn close_pending(
        &self,
        id: &str,
        state: LineState,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        // Lines whose worker died will not be claimed again: close them too.
        sqlx::query(
            "UPDATE batch_lines SET state = $1, claimed_by = NULL, lease_until = NULL \
             WHERE batch_id = $2 AND (state = 'pending' OR (state = 'running' AND lease_until < $3))",
        )
        .bind(state.as_str())
        .bind(id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM batch_lines WHERE batch_id = $1 AND state = 'running'",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    async fn line_results(&self, batch_id: &str) -> Result<Vec<LineResult>, StoreError> {
        let rows = sqlx::query(
            "SELECT line_no, custom_id, state, result FROM batch_lines \
             WHERE batch_id = $1 AND state NOT IN ('pending', 'running') ORDER BY line_no",
        )
        .bind(batch_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                Ok(LineResult {
                    line_no: row.try_get("line_no")?,
                    custom_id: row.try_get("custom_id")?,
                    state: LineState::parse(&state).ok_or_else(|| {
                        sqlx::Error::Decode(format!("unknown line state {state}").into())
                    })?,
                    result: row.try_get("result")?,
                })
            })
            .collect()
    }

    async fn finish_batch(
        &self,
        id: &str,
        status: BatchStatus,
        now: i64,
        output: Option<&FileRecord>,
        error: Option<&FileRecord>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        for f in [output, error].into_iter().flatten() {
            insert_file(f).execute(&mut *tx).await?;
        }
        let done = sqlx::query(&format!(
            "UPDATE batches SET status = $1, {} = $2, output_file_id = $3, error_file_id = $4, \
             lease_owner = NULL, lease_until = NULL \
             WHERE id = $5 AND status IN ('in_progress', 'finalizing', 'cancelling')",
            status.timestamp_column()
        ))
        .bind(status.as_str())
        .bind(now)
        .bind(output.map(|f| f.id.clone()))
        .bind(error.map(|f| f.id.clone()))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            // Another worker ended it first: keep its files, not these.
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn claim_lines(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<LineTask>, StoreError> {
        let lock = if self.postgres {
            " FOR UPDATE OF l SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE batch_lines SET state = 'running', claimed_by = $1, lease_until = $2, \
               attempts = attempts + 1 \
             WHERE (batch_id, line_no) IN ( \
               SELECT l.batch_id, l.line_no FROM batch_lines l JOIN batches b ON b.id = l.batch_id \
               WHERE b.status = 'in_progress' AND b.expires_at > $3 \
               AND (l.state = 'pending' OR (l.state = 'running' AND l.lease_until < $4)) \
               ORDER BY l.batch_id, l.line_no LIMIT $5{lock}) \
             RETURNING batch_id, line_no, custom_id, body"
        );
        let rows = sqlx::query(&sql)
            .bind(owner)
            .bind(now_ms + lease_ms)
            .bind(now_ms / 1000)
            .bind(now_ms)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut tasks: Vec<LineTask> = rows.iter().map(task_of).collect::<Result<_, _>>()?;
        tasks.sort_by(|a, b| (&a.batch_id, a.line_no).cmp(&(&b.batch_id, b.line_no)));
        Ok(tasks)
    }

    async fn renew_lines(&self, owner: &str, until_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE batch_lines SET lease_until = $1 WHERE claimed_by = $2 AND state = 'running'",
        )
        .bind(until_ms)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn finish_line(
        &self,
        t: &LineTask,
        owner: &str,
        state: LineState,
        result: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE batch_lines SET state = $1, result = $2, lease_until = NULL \
             WHERE batch_id = $3 AND line_no = $4 AND claimed_by = $5 AND state = 'running'",
        )
        .bind(state.as_str())
        .bind(result)
        .bind(&t.batch_id)
        .bind(t.line_no)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_line(&self, t: &LineTask, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE batch_lines SET state = 'pending', claimed_by = NULL, lease_until = NULL \
             WHERE batch_id = $1 AND line_no = $2 AND claimed_by = $3 AND state = 'running'",
        )
        .bind(&t.batch_id)
        .bind(t.line_no)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn release_lines(&self, owner: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE batch_lines SET state = 'pending', claimed_by = NULL, lease_until = NULL \
             WHERE claimed_by = $1 AND state = 'running'",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn insert_key(&self, k: &KeyRecord) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&k.id)
        .bind(&k.name)
        .bind(&k.org_id)
        .bind(&k.secret_hash)
        .bind(&k.hint)
        .bind(k.created_at)
        .bind(k.revoked_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn key_by_hash(&self, secret_hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE secret_hash = $1"
        ))
        .bind(secret_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(key_of).transpose()?)
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at DESC, id DESC"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(key_of).collect::<Result<_, _>>()?)
    }

    async fn any_active_key(&self) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT id FROM api_keys WHERE revoked_at IS NULL LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn revoke_key(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_fine_tuning(&self, f: &FineTuningRecord) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO fine_tunings ({FINE_TUNING_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&f.id)
        .bind(&f.org_id)
        .bind(&f.name)
        .bind(&f.base_model)
        .bind(&f.kind)
        .bind(&f.input_file_id)
        .bind(f.created_at)
        .bind(&f.fine_tuned_model)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn fine_tuning(&self, id: &str) -> Result<Option<FineTuningRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {FINE_TUNING_COLUMNS} FROM fine_tunings WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(fine_tuning_of).transpose()?)
    }

    async fn fine_tunings(&self, org: Option<&str>) -> Result<Vec<FineTuningRecord>, StoreError> {
        let filter = if org.is_some() {
            "WHERE org_id = $1"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {FINE_TUNING_COLUMNS} FROM fine_tunings {filter} ORDER BY created_at DESC, id DESC"
        );
        let mut q = sqlx::query(&sql);
        if let Some(o) = org {
            q = q.bind(o);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(rows.iter().map(fine_tuning_of).collect::<Result<_, _>>()?)
    }

    async fn delete_fine_tuning(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM fine_tunings WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

/// Rate-limit buckets in the database: one transaction per draw. On PostgreSQL the bucket
/// rows are locked (in key order, so two draws cannot deadlock) until the draw commits, so
/// replicas drawing from the same bucket take turns and never admit more than it holds.
/// On SQLite the single connection serialises draws.
#[async_trait::async_trait]
impl crate::Counters for SqlStore {
    async fn draw(&self, draws: &[crate::Draw], now: f64) -> Result<crate::Drawn, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Buckets used for the first time start full.
        let values = (0..draws.len())
            .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
            .collect::<Vec<_>>()
            .join(", ");
        // `$n` values, not literals: keys hold organization and model ids.
        let sql = format!(
            "INSERT INTO rate_buckets (key, level, at) VALUES {values} ON CONFLICT (key) DO NOTHING"
        );
        let mut insert = sqlx::query(&sql);
        for d in draws {
            insert = insert.bind(&d.key).bind(d.capacity).bind(now);
        }
        insert.execute(&mut *tx).await?;
        let mut found = std::collections::HashMap::new();
        let mut sorted: Vec<&crate::Draw> = draws.iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        let lock = if self.postgres { " FOR UPDATE" } else { "" };
        for d in sorted {
            let row = sqlx::query(&format!(
                "SELECT level, at FROM rate_buckets WHERE key = $1{lock}"
            ))
            .bind(&d.key)
            .fetch_one(&mut *tx)
            .await?;
            let (level, at): (f64, f64) = (row.try_get("level")?, row.try_get("at")?);
            found.insert(d.key.as_str(), (level, at));
        }
        let levels: Vec<f64> = draws
            .iter()
            .map(|d| {
                let (level, at) = found[d.key.as_str()];
                crate::counters::refill(level, at, now, d.capacity, d.per_sec)
            })
            .collect();
        let admitted = crate::counters::admits(draws, &levels);
        if admitted {
            for (d, l) in draws.iter().zip(&levels) {
                sqlx::query("UPDATE rate_buckets SET level = $1, at = $2 WHERE key = $3")
                    .bind(l - d.cost)
                    .bind(now)
                    .bind(&d.key)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(crate::Drawn { admitted, levels })
    }

    async fn credit(&self, d: &crate::Draw, amount: f64, now: f64) -> Result<f64, StoreError> {
        // One statement: the refill, the amount and the cap computed by the database, so
        // concurrent credits and draws on other replicas cannot interleave with it.
        let (min, max) = if self.postgres {
            ("LEAST", "GREATEST")
        } else {
            ("MIN", "MAX")
        };
        let sql = format!(
            "UPDATE rate_buckets SET \
             level = {min}($1, {min}($1, level + {max}(0.0, $2 - at) * $3) + $4), at = $2 \
             WHERE key = $5 RETURNING level"
        );
        let row = sqlx::query(&sql)
            .bind(d.capacity)
            .bind(now)
            .bind(d.per_sec)
            .bind(amount)
            .bind(&d.key)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(row) => Ok(row.try_get("level")?),
            // Never drawn from (or dropped): it starts full.
            None => Ok(d.capacity),
        }
    }
}
