//! Nothing left behind: a periodic pass that deletes files past their retention (Groq keeps
//! batch inputs and outputs up to 30 days) and removes blobs no file row points to (an
//! upload whose row was never written, a removal that failed, a crashed upload's partial
//! file).
//!
//! A blob is only collected once it is older than a grace period, so an upload that has
//! committed its contents but not yet its row is never taken.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peregrine_store::BatchStatus;

use crate::error::ServiceError;
use crate::files::{store_err, Storage};

/// Groq's retention of files [30 days].
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Age below which an unreferenced blob is left alone [1 hour].
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
/// Time between passes [1 hour].
pub const DEFAULT_EVERY: Duration = Duration::from_secs(3600);

/// What the collector removes and how often it looks.
#[derive(Clone, Copy, Debug)]
pub struct CollectorConfig {
    /// Files older than this are deleted; `None` keeps them.
    pub retention: Option<Duration>,
    pub grace: Duration,
    pub every: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            retention: Some(DEFAULT_RETENTION),
            grace: DEFAULT_GRACE,
            every: DEFAULT_EVERY,
        }
    }
}

/// What one pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Collected {
    pub expired_files: usize,
    pub orphan_blobs: usize,
}

impl Storage {
    /// One pass at time `now`.
    pub async fn collect(
        &self,
        now: SystemTime,
        cfg: &CollectorConfig,
    ) -> Result<Collected, ServiceError> {
        let mut done = Collected::default();
        // Blobs first: one written after this listing is not looked at in this pass.
        let blobs = self.blobs.list().await.map_err(store_err)?;
        let files = self.store.files(None).await.map_err(store_err)?;
        let now_secs = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let in_use = self.inputs_in_use(now_secs).await?;
        // Every file row's id: its blob is the file's (an expired file's goes with it).
        let mut rows = HashSet::with_capacity(files.len());
        for f in files {
            let expired = cfg.retention.is_some_and(|r| {
                let keep = i64::try_from(r.as_secs()).unwrap_or(i64::MAX);
                f.created_at.saturating_add(keep) <= now_secs
            });
            if expired
                && !in_use.contains(&f.id)
                && self.delete_file(&f.org_id, &f.id).await.is_ok()
            {
                done.expired_files += 1;
            }
            rows.insert(f.id);
        }
        for b in blobs {
            let old = now
                .duration_since(b.modified)
                .is_ok_and(|age| age >= cfg.grace);
            if !old || (!b.partial && rows.contains(&b.id)) {
                continue;
            }
            let removed = match b.partial {
                true => self.blobs.remove_partial(&b.id).await,
                false => self.blobs.remove(&b.id).await,
            };
            match removed {
                Ok(()) => done.orphan_blobs += 1,
                Err(e) => tracing::warn!(blob = %b.id, error = %e, "could not remove a blob"),
            }
        }
        Ok(done)
    }
}

/// How far back batches can still be running: the longest completion window (7 days) and
/// a day of slack.
const LONGEST_BATCH: i64 = 8 * 24 * 3600;

/// Batches a page when looking for running ones.
const PAGE: i64 = 100;

impl Storage {
    /// The input files of batches not yet finished: kept past their retention until their
    /// batch ends. Only batches young enough to be running are read (newest first).
    async fn inputs_in_use(&self, now_secs: i64) -> Result<HashSet<String>, ServiceError> {
        let mut in_use = HashSet::new();
        let mut before: Option<String> = None;
        loop {
            let page = (self.store.batches(None, &[], before.as_deref(), PAGE).await)
                .map_err(store_err)?;
            let young: Vec<_> = (page.iter())
                .take_while(|b| b.created_at >= now_secs - LONGEST_BATCH)
                .collect();
            let running = young.iter().filter(|b| {
                !matches!(
                    b.status,
                    BatchStatus::Failed
                        | BatchStatus::Completed
                        | BatchStatus::Expired
                        | BatchStatus::Cancelled
                )
            });
            in_use.extend(running.map(|b| b.input_file_id.clone()));
            if young.len() < PAGE as usize {
                break;
            }
            before = page.last().map(|b| b.id.clone());
        }
        Ok(in_use)
    }
}

/// Runs [`Storage::collect`] every `cfg.every`, from now on, in the background.
pub fn spawn(storage: Arc<Storage>, cfg: CollectorConfig) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(cfg.every);
        loop {
            tick.tick().await;
            match storage.collect(SystemTime::now(), &cfg).await {
                Ok(c) if c != Collected::default() => tracing::info!(
                    expired_files = c.expired_files,
                    orphan_blobs = c.orphan_blobs,
                    "collected storage"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "storage collection failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use peregrine_store::{BatchRecord, FileRecord, LocalBlobs, SqlStore};

    use super::*;

    const DAY: u64 = 24 * 3600;

    async fn storage(dir: &Path) -> Storage {
        let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
        let store = SqlStore::connect(&url).await.unwrap();
        let blobs = LocalBlobs::new(dir.join("files")).await.unwrap();
        Storage::new(Arc::new(store), Arc::new(blobs))
    }

    /// A blob file named `name` last written `age` before `now`.
    fn blob(dir: &Path, name: &str, now: SystemTime, age: Duration) {
        let path = dir.join("files").join(name);
        std::fs::write(&path, b"{}\n").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(now - age).unwrap();
    }

    async fn file(s: &Storage, dir: &Path, id: &str, now: SystemTime, age: Duration) {
        blob(dir, id, now, age);
        let created = now.duration_since(UNIX_EPOCH).unwrap() - age;
        let record = FileRecord {
            id: id.into(),
            bytes: 3,
            lines: 1,
            created_at: created.as_secs() as i64,
            filename: "in.jsonl".into(),
            purpose: "batch".into(),
            org_id: peregrine_store::DEFAULT_ORG.into(),
        };
        s.store.insert_file(&record).await.unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join("files"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn expired_files_and_old_orphans_go_and_the_rest_stays() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage(dir.path()).await;
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        file(
            &s,
            dir.path(),
            "file_old",
            now,
            Duration::from_secs(31 * DAY),
        )
        .await;
        file(
            &s,
            dir.path(),
            "file_recent",
            now,
            Duration::from_secs(29 * DAY),
        )
        .await;
        // Past retention, but the input of a batch still running: kept until it ends.
        let month = Duration::from_secs(31 * DAY);
        file(&s, dir.path(), "file_used", now, month).await;
        let now_secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let batch = BatchRecord::new(
            "batch_running".into(),
            "file_used".into(),
            "/v1/chat/completions".into(),
            "24h".into(),
            DAY as i64,
            None,
            now_secs - 60,
        );
        s.store.insert_batch(&batch).await.unwrap();
        blob(dir.path(), "file_orphan", now, 2 * hour);
        blob(
            dir.path(),
            "file_fresh_orphan",
            now,
            Duration::from_secs(60),
        );
        blob(dir.path(), ".file_crashed.partial", now, 2 * hour);
        blob(
            dir.path(),
            ".file_uploading.partial",
            now,
            Duration::from_secs(60),
        );

        let done = s.collect(now, &CollectorConfig::default()).await.unwrap();
        assert_eq!(
            done,
            Collected {
                expired_files: 1,
                orphan_blobs: 2
            }
        );
        assert_eq!(
            names(dir.path()),
            [
                ".file_uploading.partial",
                "file_fresh_orphan",
                "file_recent",
                "file_used"
            ]
        );
        assert!(s.store.file("file_old").await.unwrap().is_none());
        assert!(s.store.file("file_recent").await.unwrap().is_some());

        // Without retention, files stay whatever their age.
        let keep = CollectorConfig {
            retention: None,
            ..CollectorConfig::default()
        };
        let later = now + Duration::from_secs(365 * DAY);
        let done = s.collect(later, &keep).await.unwrap();
        assert_eq!(done.expired_files, 0);
        assert!(s.store.file("file_recent").await.unwrap().is_some());
    }
}
