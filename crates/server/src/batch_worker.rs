//! The batch worker: one per server. It validates new batches, runs their lines as
//! background work on the same path as live requests, and finalizes batches into output and
//! error files, all through the store, so any number of replicas can share the work.
//!
//! Durability: a line is claimed with a lease (renewed while it runs) and its result is
//! written only while the lease is held, in the same statement that closes it. A replica
//! that dies leaves its lines' leases to lapse; another (or the same one, restarted) claims
//! them again. Each line therefore ends with exactly one result, and the files are written
//! from those results.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peregrine_protocol::parse::parse_chat_request;
use peregrine_store::{
    new_id, BatchRecord, BatchStatus, FileRecord, LineResult, LineState, LineTask, NewLine,
    StoreError,
};
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::batches::ENDPOINT;
use crate::chat::complete_background;
use crate::error::ApiError;
use crate::files::FilesState;
use crate::middleware::new_request_id;
use crate::state::SharedState;

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
}

impl WorkerConfig {
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            owner: new_id("replica"),
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            max_in_flight: max_in_flight.max(1),
        }
    }
}

/// Most validation errors reported for one file.
const MAX_ERRORS: usize = 1000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs the worker until the task is dropped. Store failures are logged and retried.
pub async fn run(state: SharedState, cfg: WorkerConfig) {
    let Some(fs) = state.files.as_ref() else {
        return;
    };
    let lease_ms = cfg.lease.as_millis() as i64;
    let mut lines: JoinSet<()> = JoinSet::new();
    let mut last_renew = std::time::Instant::now();
    info!(owner = %cfg.owner, "batch worker started");
    loop {
        if let Err(e) = step(&state, fs, &cfg, &mut lines).await {
            warn!(error = %e, "batch worker: storage error");
        }
        if last_renew.elapsed() >= cfg.lease / 3 {
            last_renew = std::time::Instant::now();
            if let Err(e) = fs.store.renew_lines(&cfg.owner, now_ms() + lease_ms).await {
                warn!(error = %e, "batch worker: cannot renew line leases");
            }
        }
        let wait = cfg.poll.min(cfg.lease / 3);
        tokio::select! {
            _ = fs.wake.notified() => {}
            Some(_) = lines.join_next(), if !lines.is_empty() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn step(
    state: &SharedState,
    fs: &FilesState,
    cfg: &WorkerConfig,
    lines: &mut JoinSet<()>,
) -> Result<(), StoreError> {
    let lease_ms = cfg.lease.as_millis() as i64;
    while let Some(b) = fs.store.claim_batch(&cfg.owner, now_ms(), lease_ms).await? {
        let id = b.id.clone();
        let res = advance(state, fs, b).await;
        // Not again before the next poll: a batch waiting on running lines would otherwise
        // be claimed over and over.
        let until = now_ms() + cfg.poll.as_millis() as i64;
        fs.store.release_batch(&id, &cfg.owner, until).await?;
        res?;
    }
    while lines.try_join_next().is_some() {}
    let free = cfg.max_in_flight.saturating_sub(lines.len());
    if free == 0 {
        return Ok(());
    }
    let tasks = fs
        .store
        .claim_lines(&cfg.owner, now_ms(), lease_ms, free as i64)
        .await?;
    for task in tasks {
        debug!(batch = %task.batch_id, line = task.line_no, "batch line claimed");
        lines.spawn(run_line(state.clone(), cfg.owner.clone(), task));
    }
    Ok(())
}

/// Moves one claimed batch along its status machine as far as it can go now.
async fn advance(state: &SharedState, fs: &FilesState, b: BatchRecord) -> Result<(), StoreError> {
    let now = now_ms() / 1000;
    match b.status {
        BatchStatus::Validating => validate_batch(state, fs, &b).await,
        BatchStatus::InProgress if b.expires_at <= now => {
            close_and_finalize(fs, &b, LineState::Expired, BatchStatus::Expired).await
        }
        BatchStatus::InProgress => {
            if fs.store.begin_finalizing(&b.id, now).await? {
                finalize(fs, &b, BatchStatus::Completed).await?;
            }
            Ok(())
        }
        BatchStatus::Finalizing => finalize(fs, &b, BatchStatus::Completed).await,
        BatchStatus::Cancelling => {
            close_and_finalize(fs, &b, LineState::Cancelled, BatchStatus::Cancelled).await
        }
        _ => Ok(()),
    }
}

/// Closes the lines that will not run (`lines`), and ends the batch in `status` once none
/// is running any more.
async fn close_and_finalize(
    fs: &FilesState,
    b: &BatchRecord,
    lines: LineState,
    status: BatchStatus,
) -> Result<(), StoreError> {
    if fs.store.close_pending(&b.id, lines, now_ms()).await? == 0 {
        finalize(fs, b, status).await?;
    }
    Ok(())
}

/// One validation error, in the form of the Batch object's `errors.data`.
fn line_error(line: i64, code: &str, message: String, param: Option<&str>) -> Value {
    json!({"code": code, "message": message, "param": param, "line": line})
}

/// Checks every line of the input file (spec §8.2). Returns the lines or the errors.
fn check_lines(state: &SharedState, text: &str) -> Result<Vec<NewLine>, Vec<Value>> {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let mut seen: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for (i, raw) in text.split('\n').enumerate() {
        let n = i as i64 + 1;
        if raw.trim().is_empty() {
            continue;
        }
        if errors.len() >= MAX_ERRORS {
            break;
        }
        let v: Value = match serde_json::from_str(raw) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                errors.push(line_error(
                    n,
                    "invalid_json_line",
                    "The line is not a JSON object.".into(),
                    None,
                ));
                continue;
            }
            Err(e) => {
                errors.push(line_error(
                    n,
                    "invalid_json_line",
                    format!("The line is not valid JSON: {e}"),
                    None,
                ));
                continue;
            }
        };
        let custom_id = match v.get("custom_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                errors.push(line_error(
                    n,
                    "missing_required_parameter",
                    "`custom_id` is required and must be a non-empty string.".into(),
                    Some("custom_id"),
                ));
                continue;
            }
        };
        if let Some(first) = seen.get(&custom_id) {
            errors.push(line_error(
                n,
                "duplicate_custom_id",
                format!(
                    "The custom_id '{custom_id}' is already used on line {first}; custom_id values must be unique within a batch."
                ),
                Some("custom_id"),
            ));
            continue;
        }
        seen.insert(custom_id.clone(), n);
        let method = v.get("method").and_then(Value::as_str).unwrap_or("");
        if method != "POST" {
            errors.push(line_error(
                n,
                "invalid_method",
                format!("Invalid value: '{method}'. Supported values are: 'POST'"),
                Some("method"),
            ));
            continue;
        }
        let url = v.get("url").and_then(Value::as_str).unwrap_or("");
        if url != ENDPOINT {
            errors.push(line_error(
                n,
                "invalid_url",
                format!("Invalid value: '{url}'. Supported values are: '{ENDPOINT}'"),
                Some("url"),
            ));
            continue;
        }
        let Some(body @ Value::Object(_)) = v.get("body") else {
            errors.push(line_error(
                n,
                "missing_required_parameter",
                "`body` is required and must be a JSON object.".into(),
                Some("body"),
            ));
            continue;
        };
        let body_text = body.to_string();
        match parse_chat_request(body_text.as_bytes()) {
            Err(e) => errors.push(line_error(n, "invalid_request", e.message(), Some("body"))),
            Ok(req) if req.stream == Some(true) => errors.push(line_error(
                n,
                "invalid_request",
                "`stream` is not supported in batch requests.".into(),
                Some("body.stream"),
            )),
            Ok(req) if state.registry.resolve(&req.model).is_none() => errors.push(line_error(
                n,
                "model_not_found",
                ApiError::ModelNotFound(req.model.clone()).to_string(),
                Some("body.model"),
            )),
            Ok(_) => lines.push(NewLine {
                line_no: n,
                custom_id,
                body: body_text,
            }),
        }
    }
    if lines.is_empty() && errors.is_empty() {
        errors.push(line_error(
            1,
            "empty_file",
            "The input file has no requests.".into(),
            None,
        ));
    }
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(errors)
    }
}

async fn validate_batch(
    state: &SharedState,
    fs: &FilesState,
    b: &BatchRecord,
) -> Result<(), StoreError> {
    let now = now_ms() / 1000;
    let text = match fs.store.file(&b.input_file_id).await? {
        Some(_) => tokio::fs::read(fs.blobs.path(&b.input_file_id))
            .await
            .ok()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
        None => None,
    };
    let checked = match text {
        // Parsing up to 50,000 request bodies is CPU work: off the async workers.
        Some(t) => {
            let st = state.clone();
            tokio::task::spawn_blocking(move || check_lines(&st, &t))
                .await
                .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?
        }
        None => Err(vec![json!({
            "code": "invalid_file",
            "message": format!("The input file `{}` no longer exists.", b.input_file_id),
            "param": "input_file_id",
            "line": null,
        })]),
    };
    match checked {
        Ok(lines) => {
            info!(batch = %b.id, lines = lines.len(), "batch validated");
            fs.store.start_batch(&b.id, &lines, now).await
        }
        Err(errors) => {
            info!(batch = %b.id, errors = errors.len(), "batch failed validation");
            let errors = json!({"object": "list", "data": errors}).to_string();
            fs.store.fail_batch(&b.id, &errors, now).await
        }
    }
}

/// Runs one line to its result. Preempted runs are submitted again; the lease is renewed by
/// the worker loop meanwhile.
async fn run_line(state: SharedState, owner: String, task: LineTask) {
    let Some(fs) = state.files.as_ref() else {
        return;
    };
    let request_id = new_request_id();
    let outcome = loop {
        match complete_background(&state, task.body.as_bytes(), request_id.clone()).await {
            Err(ApiError::Preempted) => tokio::time::sleep(Duration::from_millis(100)).await,
            other => break other,
        }
    };
    let out_id = new_id("batch_req_out");
    let (line_state, line) = match outcome {
        Ok(body) => (
            LineState::Done,
            json!({
                "id": out_id,
                "custom_id": task.custom_id,
                "response": {"status_code": 200, "request_id": request_id, "body": body},
                "error": null,
            }),
        ),
        Err(e) => (
            LineState::Failed,
            json!({
                "id": out_id,
                "custom_id": task.custom_id,
                "response": {
                    "status_code": e.status().as_u16(),
                    "request_id": request_id,
                    "body": e.envelope(),
                },
                "error": null,
            }),
        ),
    };
    match fs
        .store
        .finish_line(&task, &owner, line_state, &line.to_string())
        .await
    {
        Ok(true) => debug!(batch = %task.batch_id, line = task.line_no, "batch line done"),
        Ok(false) => warn!(
            batch = %task.batch_id,
            line = task.line_no,
            "batch line lease lapsed: another worker has it; result dropped"
        ),
        Err(e) => warn!(error = %e, "batch worker: cannot store a line's result"),
    }
    fs.wake.notify_one();
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
    json!({
        "id": new_id("batch_req_out"),
        "custom_id": r.custom_id,
        "response": null,
        "error": {"code": code, "message": message},
    })
    .to_string()
}

async fn write_file(
    fs: &FilesState,
    name: String,
    lines: &[String],
) -> Result<Option<FileRecord>, StoreError> {
    if lines.is_empty() {
        return Ok(None);
    }
    let id = new_id("file");
    let mut w = fs.blobs.create(&id).await?;
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
    }))
}

/// Writes the output and error files from the lines' results and ends the batch in
/// `status`. Run again after a crash, it writes them anew: only the batch's final record
/// names files, in the same transaction that ends it.
async fn finalize(fs: &FilesState, b: &BatchRecord, status: BatchStatus) -> Result<(), StoreError> {
    let results = fs.store.line_results(&b.id).await?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for r in &results {
        match (r.state, &r.result) {
            (LineState::Done, Some(line)) => out.push(line.clone()),
            (LineState::Failed, Some(line)) => err.push(line.clone()),
            _ => err.push(closed_line(r)),
        }
    }
    let output = write_file(fs, format!("{}_output.jsonl", b.id), &out).await?;
    let error = write_file(fs, format!("{}_errors.jsonl", b.id), &err).await?;
    let ended = fs
        .store
        .finish_batch(
            &b.id,
            status,
            now_ms() / 1000,
            output.as_ref(),
            error.as_ref(),
        )
        .await?;
    if !ended {
        for f in output.iter().chain(&error) {
            fs.blobs.remove(&f.id).await?;
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

/// Spawns the worker on the current runtime.
pub fn spawn(state: SharedState, cfg: WorkerConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(state, cfg))
}

/// Lines worth having in flight: the served models' slots, less one per model so that an
/// interactive request usually finds a free slot without preempting batch work.
pub fn engine_slots(state: &SharedState) -> usize {
    state
        .registry
        .models()
        .iter()
        .map(|m| {
            (m.runtime.info().n_seq_max as usize)
                .saturating_sub(1)
                .max(1)
        })
        .sum()
}
