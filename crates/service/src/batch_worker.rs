//! The batch worker: one per server. It validates new batches, runs their lines as
//! background completions on the same path as live requests, and finalizes batches into
//! output and error files, all through the store, so any number of replicas can share the
//! work.
//!
//! Durability: a line is claimed with a lease (renewed while it runs) and its result is
//! written only while the lease is held, in the same statement that closes it. A replica
//! that dies leaves its lines' leases to lapse; another (or the same one, restarted) claims
//! them again. Each line therefore ends with exactly one result, and the files are written
//! from those results. A live replica holds a line only while a task runs it: a task that
//! panics fails its line, and a line whose result could not be stored goes back to pending
//! (`batch_in_flight`), so no lease is renewed for a line nobody runs.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peregrine_protocol::batches::{
    BatchError, BatchErrors, BatchLineError, BatchLineResponse, BatchOutputLine,
};
use peregrine_store::{
    new_id, BatchRecord, BatchStatus, FileRecord, LineResult, LineState, LineTask, StoreError,
};
use tokio::io::AsyncReadExt;
use tracing::{debug, info, warn};

use crate::batch_in_flight::{InFlight, Orphan};
use crate::batch_lines::check_lines;
use crate::chat_wire::chat_completion;
use crate::completions::{CompletionError, Completions, Priority};
use crate::error::ServiceError;
use crate::files::Storage;
use crate::metrics::BatchLines;

/// How the worker paces itself.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// This replica's name in leases.
    pub owner: String,
    /// How long a claim holds without renewal. A dead replica's lines wait this long.
    pub lease: Duration,
    /// How often to look for work when nothing wakes the worker.
    pub poll: Duration,
    /// Lines in flight at once (the engines' slots: more would only queue).
    pub max_in_flight: usize,
    /// Where lines are counted by status (`/metrics`).
    pub lines: BatchLines,
}

impl WorkerConfig {
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            owner: new_id("replica"),
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            max_in_flight: max_in_flight.max(1),
            lines: BatchLines::default(),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the worker works with.
#[derive(Clone)]
struct Worker {
    completions: Completions,
    storage: Arc<Storage>,
    cfg: WorkerConfig,
}

/// A running worker: [`BatchWorker::stop`] ends it.
pub struct BatchWorker {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl BatchWorker {
    /// Stops claiming work, abandons the lines in flight and gives their leases back at once
    /// (they go back to pending), so another replica takes them without waiting for the
    /// leases to lapse; returns when that is done.
    pub async fn stop(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

/// Spawns the worker on the current runtime; it runs until stopped (or the task is
/// aborted). Store failures are logged and retried.
pub fn spawn(completions: Completions, storage: Arc<Storage>, cfg: WorkerConfig) -> BatchWorker {
    let w = Worker {
        completions,
        storage,
        cfg,
    };
    let stop = Arc::new(tokio::sync::Notify::new());
    let task = tokio::spawn(w.run(stop.clone()));
    BatchWorker { stop, task }
}

impl Worker {
    async fn run(self, stop: Arc<tokio::sync::Notify>) {
        let mut lines = InFlight::new();
        let mut last_renew = std::time::Instant::now();
        info!(owner = %self.cfg.owner, "batch worker started");
        loop {
            if let Err(e) = self.step(&mut lines).await {
                warn!(error = %e, "batch worker: storage error");
            }
            if last_renew.elapsed() >= self.cfg.lease / 3 {
                last_renew = std::time::Instant::now();
                self.renew().await;
            }
            let wait = self.cfg.poll.min(self.cfg.lease / 3);
            tokio::select! {
                _ = self.storage.wake.notified() => {}
                _ = lines.wait_any(), if !lines.is_empty() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.notified() => break,
            }
        }
        // Dropping a line's task cancels its completion; a result already stored stays.
        lines.shutdown().await;
        match self.storage.store.release_lines(&self.cfg.owner).await {
            Ok(n) => info!(owner = %self.cfg.owner, released = n, "batch worker stopped"),
            Err(e) => warn!(error = %e, "batch worker: cannot give line leases back"),
        }
    }

    fn lease_ms(&self) -> i64 {
        self.cfg.lease.as_millis() as i64
    }

    async fn renew(&self) {
        let until = now_ms() + self.lease_ms();
        if let Err(e) = self.storage.store.renew_lines(&self.cfg.owner, until).await {
            warn!(error = %e, "batch worker: cannot renew line leases");
        }
    }

    /// Moves every batch that needs it along, settles the lines whose task left them, then
    /// claims lines for the free slots.
    async fn step(&self, lines: &mut InFlight) -> Result<(), StoreError> {
        let (store, owner) = (&self.storage.store, &self.cfg.owner);
        while let Some(b) = store.claim_batch(owner, now_ms(), self.lease_ms()).await? {
            let id = b.id.clone();
            let res = self.advance(b).await;
            // Not again before the next poll: a batch waiting on running lines would
            // otherwise be claimed over and over.
            let until = now_ms() + self.cfg.poll.as_millis() as i64;
            store.release_batch(&id, owner, until).await?;
            res?;
        }
        for orphan in lines.take_orphans() {
            if let Err(e) = self.settle(&orphan).await {
                lines.keep(orphan);
                return Err(e);
            }
        }
        let free = self.cfg.max_in_flight.saturating_sub(lines.len());
        if free == 0 {
            return Ok(());
        }
        let tasks = store
            .claim_lines(owner, now_ms(), self.lease_ms(), free as i64)
            .await?;
        for task in tasks {
            debug!(batch = %task.batch_id, line = task.line_no, "batch line claimed");
            lines.spawn(task.clone(), self.clone().run_line(task));
        }
        Ok(())
    }

    /// Moves one claimed batch along its status machine as far as it can go now.
    async fn advance(&self, b: BatchRecord) -> Result<(), StoreError> {
        let now = now_ms() / 1000;
        match b.status {
            BatchStatus::Validating => self.validate(&b).await,
            BatchStatus::InProgress if b.expires_at <= now => {
                self.close_and_finalize(&b, LineState::Expired, BatchStatus::Expired)
                    .await
            }
            BatchStatus::InProgress => {
                if self.storage.store.begin_finalizing(&b.id, now).await? {
                    self.finalize(&b, BatchStatus::Completed).await?;
                }
                Ok(())
            }
            BatchStatus::Finalizing => self.finalize(&b, BatchStatus::Completed).await,
            BatchStatus::Cancelling => {
                self.close_and_finalize(&b, LineState::Cancelled, BatchStatus::Cancelled)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Closes the lines that will not run (`lines`), and ends the batch in `status` once none
    /// is running any more.
    async fn close_and_finalize(
        &self,
        b: &BatchRecord,
        lines: LineState,
        status: BatchStatus,
    ) -> Result<(), StoreError> {
        let running = self
            .storage
            .store
            .close_pending(&b.id, lines, now_ms())
            .await?;
        if running == 0 {
            self.finalize(b, status).await?;
        }
        Ok(())
    }

    /// The input file's text; `None` when it is gone or cannot be read (the batch then
    /// fails with `invalid_file` rather than waiting on a file that will not come back).
    async fn input_text(&self, file_id: &str) -> Result<Option<String>, StoreError> {
        if self.storage.store.file(file_id).await?.is_none() {
            return Ok(None);
        }
        let read = async {
            let Some(mut reader) = self.storage.blobs.open(file_id).await? else {
                return Ok(None);
            };
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes).await?;
            Ok::<_, StoreError>(Some(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok(read.await.unwrap_or_else(|e| {
            warn!(file = file_id, error = %e, "cannot read a batch's input file");
            None
        }))
    }

    /// Checks every line of a new batch's input: starts the batch, or fails it with the
    /// line-numbered errors.
    async fn validate(&self, b: &BatchRecord) -> Result<(), StoreError> {
        let now = now_ms() / 1000;
        let checked = match self.input_text(&b.input_file_id).await? {
            // Parsing up to 50,000 request bodies is CPU work: off the async workers.
            Some(t) => {
                let (completions, org) = (self.completions.clone(), b.org_id.clone());
                tokio::task::spawn_blocking(move || check_lines(completions.registry(), &org, &t))
                    .await
                    .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?
            }
            None => Err(vec![BatchError {
                code: "invalid_file".into(),
                message: format!("The input file `{}` no longer exists.", b.input_file_id),
                param: Some("input_file_id".into()),
                line: None,
            }]),
        };
        let store = &self.storage.store;
        match checked {
            Ok(lines) => {
                info!(batch = %b.id, lines = lines.len(), "batch validated");
                store.start_batch(&b.id, &lines, now).await
            }
            Err(data) => {
                info!(batch = %b.id, errors = data.len(), "batch failed validation");
                let errors = BatchErrors {
                    object: Default::default(),
                    data,
                };
                let text = serde_json::to_string(&errors).unwrap_or_default();
                store.fail_batch(&b.id, &text, now).await
            }
        }
    }

    /// The organization a batch belongs to: its lines run as its requests (its fine-tuned
    /// models resolve). A batch gone from the store runs as the default organization; its
    /// line's result is dropped anyway.
    async fn batch_org(&self, batch_id: &str) -> String {
        match self.storage.store.batch(batch_id).await {
            Ok(Some(b)) => b.org_id,
            Ok(None) => peregrine_store::DEFAULT_ORG.to_string(),
            Err(e) => {
                warn!(batch = batch_id, error = %e, "cannot read a batch's organization");
                peregrine_store::DEFAULT_ORG.to_string()
            }
        }
    }

    /// Runs one line to its result; false when the result could not be stored. Preempted runs
    /// are submitted again; the lease is renewed by the worker loop meanwhile.
    async fn run_line(self, task: LineTask) -> bool {
        let request_id = crate::new_request_id();
        let org = self.batch_org(&task.batch_id).await;
        let outcome = loop {
            match self.complete_line(&task.body, &request_id, &org).await {
                Err(CompletionError::Preempted) => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => break other.map_err(ServiceError::from),
            }
        };
        let (state, response) = match outcome {
            Ok(body) => (LineState::Done, body_response(200, &request_id, &body)),
            Err(e) => (
                LineState::Failed,
                body_response(e.status(), &request_id, &e.envelope()),
            ),
        };
        self.store_line(&task, state, response).await.is_ok()
    }

    /// Settles a line its task left: a panicked one fails with a server error, an unstored
    /// one goes back to pending.
    async fn settle(&self, orphan: &Orphan) -> Result<(), StoreError> {
        match orphan {
            Orphan::Panicked(task) => {
                warn!(batch = %task.batch_id, line = task.line_no, "batch line's task panicked");
                let e = ServiceError::Internal("the server failed while running this line".into());
                let response = body_response(e.status(), &crate::new_request_id(), &e.envelope());
                self.store_line(task, LineState::Failed, response).await
            }
            Orphan::Unstored(task) => {
                let released = self.storage.store.release_line(task, &self.cfg.owner).await;
                self.storage.wake.notify_one();
                released
            }
        }
    }

    /// One line's request: the live endpoint's non-streaming answer, as background work.
    async fn complete_line(
        &self,
        body: &str,
        request_id: &str,
        org: &str,
    ) -> Result<peregrine_protocol::ChatCompletion, CompletionError> {
        let job = self
            .completions
            .prepare_body(
                body.as_bytes(),
                request_id.to_string(),
                Priority::Background,
                org,
            )
            .await?;
        if job.stream() {
            return Err(CompletionError::Refused(ServiceError::BadRequest(
                "`stream` is not supported in batch requests".into(),
            )));
        }
        let done = self.completions.complete(job, Priority::Background).await?;
        Ok(chat_completion(done))
    }

    /// Stores a line's result while this worker holds it; Ok when the line is settled (stored,
    /// or found taken over by another worker).
    async fn store_line(
        &self,
        task: &LineTask,
        state: LineState,
        response: BatchLineResponse,
    ) -> Result<(), StoreError> {
        let line = BatchOutputLine {
            id: new_id("batch_req_out"),
            custom_id: task.custom_id.clone(),
            response: Some(response),
            error: None,
        };
        let text = serde_json::to_string(&line).unwrap_or_default();
        let store = &self.storage.store;
        let finished = store.finish_line(task, &self.cfg.owner, state, &text).await;
        self.storage.wake.notify_one();
        match finished {
            Ok(true) => {
                let status = match state {
                    LineState::Done => "completed",
                    _ => "failed",
                };
                self.cfg.lines.count(status);
                debug!(batch = %task.batch_id, line = task.line_no, "batch line done")
            }
            Ok(false) => {
                self.cfg.lines.count("lease_lost");
                warn!(
                    batch = %task.batch_id,
                    line = task.line_no,
                    "batch line lease lapsed: another worker has it; result dropped"
                )
            }
            Err(ref e) => warn!(error = %e, "batch worker: cannot store a line's result"),
        }
        finished.map(drop)
    }

    /// Writes `lines` as a result file of batch `b` named `name`; `None` when there are none.
    async fn write_file(
        &self,
        b: &BatchRecord,
        name: String,
        lines: &[String],
    ) -> Result<Option<FileRecord>, StoreError> {
        if lines.is_empty() {
            return Ok(None);
        }
        let id = new_id("file");
        let mut w = self.storage.blobs.create(&id).await?;
        let mut bytes = 0;
        for l in lines {
            w.write(l.as_bytes()).await?;
            w.write(b"\n").await?;
            bytes += l.len() + 1;
        }
        w.commit().await?;
        Ok(Some(FileRecord {
            id,
            bytes: bytes as i64,
            lines: lines.len() as i64,
            created_at: now_ms() / 1000,
            filename: name,
            purpose: "batch_output".into(),
            org_id: b.org_id.clone(),
        }))
    }

    /// Writes the output and error files from the lines' results and ends the batch in
    /// `status`. Run again after a crash, it writes them anew: only the batch's final record
    /// names files, in the same transaction that ends it.
    async fn finalize(&self, b: &BatchRecord, status: BatchStatus) -> Result<(), StoreError> {
        let store = &self.storage.store;
        let (out, err) = split_results(&store.line_results(&b.id).await?);
        let output = self
            .write_file(b, format!("{}_output.jsonl", b.id), &out)
            .await?;
        let error = self
            .write_file(b, format!("{}_errors.jsonl", b.id), &err)
            .await?;
        let now = now_ms() / 1000;
        let ended = store
            .finish_batch(&b.id, status, now, output.as_ref(), error.as_ref())
            .await?;
        if !ended {
            for f in output.iter().chain(&error) {
                self.storage.blobs.remove(&f.id).await?;
            }
            return Ok(());
        }
        info!(
            batch = %b.id,
            status = status.as_str(),
            completed = out.len(),
            failed = err.len(),
            "batch finished"
        );
        Ok(())
    }
}

fn body_response(
    status_code: u16,
    request_id: &str,
    body: &impl serde::Serialize,
) -> BatchLineResponse {
    BatchLineResponse {
        status_code,
        request_id: request_id.to_string(),
        body: serde_json::to_value(body).unwrap_or_default(),
    }
}

/// The output file's lines (done) and the error file's (failed, expired, cancelled).
fn split_results(results: &[LineResult]) -> (Vec<String>, Vec<String>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for r in results {
        match (r.state, &r.result) {
            (LineState::Done, Some(line)) => out.push(line.clone()),
            (LineState::Failed, Some(line)) => err.push(line.clone()),
            _ => err.push(closed_line(r)),
        }
    }
    (out, err)
}

/// The error-file line of a line that never ran.
fn closed_line(r: &LineResult) -> String {
    let (code, message) = match r.state {
        LineState::Expired => (
            "batch_expired",
            "This request could not be executed before the completion window expired.",
        ),
        _ => (
            "batch_cancelled",
            "This request was not executed because the batch was cancelled.",
        ),
    };
    let line = BatchOutputLine {
        id: new_id("batch_req_out"),
        custom_id: r.custom_id.clone(),
        response: None,
        error: Some(BatchLineError {
            code: code.into(),
            message: message.into(),
        }),
    };
    serde_json::to_string(&line).unwrap_or_default()
}
