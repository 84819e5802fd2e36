//! The Batch API on the mock engine and a real store: a batch's lines get the live endpoint's
//! bodies, and batch work gives way to interactive work (preempted for a slot, paused while
//! interactive sequences run).

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{send, state, Setup};
use peregrine_protocol::parse::parse_chat_request;
use peregrine_runtime::{prepare, Event};
use peregrine_server::SharedState;
use peregrine_service::batch_worker::{self, WorkerConfig};
use peregrine_service::Storage;
use peregrine_store::{LocalBlobs, SqlStore};
use serde_json::{json, Value};
use tokio::sync::mpsc;

async fn files(dir: &std::path::Path) -> Storage {
    let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
    let store = SqlStore::connect(&url).await.unwrap();
    let blobs = LocalBlobs::new(dir.join("files")).await.unwrap();
    Storage::new(Arc::new(store), Arc::new(blobs))
}

/// The batch worker over the state's completions and storage.
fn spawn_worker(st: &SharedState, cfg: WorkerConfig) -> batch_worker::BatchWorker {
    let storage = st.storage.clone().expect("storage");
    batch_worker::spawn(st.completions.clone(), storage, cfg)
}

/// A server whose mock answers take ~1 s (50 tokens, 20 ms each), and an uploaded batch file
/// of `n` such lines: (state, app, the File object).
async fn slow_lines(dir: &std::path::Path, n: usize) -> (SharedState, axum::Router, Value) {
    let script: &'static str = Box::leak("y".repeat(60).into_boxed_str());
    let st = state(
        Setup {
            script,
            delay: Duration::from_millis(20),
            ..Setup::default()
        },
        Some(files(dir).await),
    );
    let app = peregrine_server::router(st.clone());
    let lines: Vec<String> = (0..n)
        .map(|i| {
            let body = json!({"model": "mock-model", "max_tokens": 50,
                              "messages": [{"role": "user", "content": format!("q{i}")}]});
            json!({"custom_id": format!("r{i}"), "method": "POST",
                   "url": "/v1/chat/completions", "body": body})
            .to_string()
        })
        .collect();
    let (_, _, text) = send(&app, upload(&lines.join("\n"))).await;
    let file: Value = serde_json::from_str(&text).unwrap();
    (st, app, file)
}

fn upload(content: &str) -> Request<Body> {
    const B: &str = "peregrine-test-boundary";
    let body = format!(
        "--{B}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
         --{B}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.jsonl\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n{content}\r\n--{B}--\r\n"
    );
    Request::post("/openai/v1/files")
        .header("content-type", format!("multipart/form-data; boundary={B}"))
        .body(Body::from(body))
        .unwrap()
}

fn json_req(method: &str, path: &str, body: Option<Value>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap()
}

fn chat_body(i: usize) -> Value {
    json!({
        "model": "llama-3.3-70b-versatile",
        "messages": [{"role": "user", "content": format!("question {i}")}],
        "max_tokens": 6 + i,
        "temperature": 0,
    })
}

/// The keys of a JSON object, recursively, with volatile values dropped: two bodies with the
/// same shape compare equal.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::Number(_) => json!(0),
        Value::String(_) => json!(""),
        other => other.clone(),
    }
}

#[tokio::test]
async fn batch_lines_carry_the_live_endpoints_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(Setup::default(), Some(files(dir.path()).await));
    let app = peregrine_server::router(st.clone());
    let mut cfg = WorkerConfig::new(2);
    cfg.poll = Duration::from_millis(20);
    let worker = spawn_worker(&st, cfg);

    let lines: Vec<String> = (0..5)
        .map(|i| {
            json!({"custom_id": format!("r{i}"), "method": "POST",
                   "url": "/v1/chat/completions", "body": chat_body(i)})
            .to_string()
        })
        .collect();
    let (status, _, text) = send(&app, upload(&lines.join("\n"))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let file: Value = serde_json::from_str(&text).unwrap();
    let create = json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                        "completion_window": "48h"});
    let (status, _, text) = send(&app, json_req("POST", "/openai/v1/batches", Some(create))).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let batch: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(batch["status"], "validating");
    assert_eq!(
        batch["request_counts"],
        json!({"total": 0, "completed": 0, "failed": 0})
    );
    let id = batch["id"].as_str().unwrap().to_string();

    let done = loop {
        let (_, _, text) = send(&app, json_req("GET", &format!("/v1/batches/{id}"), None)).await;
        let b: Value = serde_json::from_str(&text).unwrap();
        if b["status"] == "completed" {
            break b;
        }
        assert!(
            ["validating", "in_progress", "finalizing"].contains(&b["status"].as_str().unwrap()),
            "{b}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        done["request_counts"],
        json!({"total": 5, "completed": 5, "failed": 0})
    );
    assert_eq!(
        done["expires_at"].as_i64().unwrap() - done["created_at"].as_i64().unwrap(),
        48 * 3600
    );
    let out = done["output_file_id"].as_str().unwrap();
    let (_, _, content) = send(
        &app,
        json_req("GET", &format!("/openai/v1/files/{out}/content"), None),
    )
    .await;
    let results: Vec<Value> = content
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 5);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["custom_id"], format!("r{i}"));
        let mut body = r["response"]["body"].clone();
        // The live endpoint's answer to the same request: same shape, same text.
        let (status, mut live) = common::chat(&app, &chat_body(i).to_string()).await;
        assert_eq!(status, StatusCode::OK);
        // Either run may find the prompt in the prefix cache.
        for b in [&mut body, &mut live] {
            b["usage"]
                .as_object_mut()
                .unwrap()
                .remove("prompt_tokens_details");
        }
        assert_eq!(shape(&body), shape(&live), "line {i}");
        assert_eq!(
            body["choices"][0]["message"]["content"],
            live["choices"][0]["message"]["content"]
        );
        assert_eq!(body["usage"]["completion_tokens"], 6 + i);
    }
    worker.stop().await;
}

#[tokio::test]
async fn an_expired_batch_delivers_finished_lines_and_expires_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (st, app, file) = slow_lines(dir.path(), 4).await;
    // The API allows 24h at least: a batch with a 2-second window is made in the store.
    let fs = st.storage.as_ref().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let record = peregrine_store::BatchRecord::new(
        peregrine_store::new_id("batch"),
        file["id"].as_str().unwrap().into(),
        "/v1/chat/completions".into(),
        "24h".into(),
        2,
        None,
        now,
    );
    fs.store.insert_batch(&record).await.unwrap();
    // One line at a time, each ~1 s (50 steps of 20 ms): the window ends mid-batch.
    let mut cfg = WorkerConfig::new(1);
    cfg.poll = Duration::from_millis(20);
    let worker = spawn_worker(&st, cfg);
    let done = loop {
        let (_, _, text) = send(
            &app,
            json_req("GET", &format!("/v1/batches/{}", record.id), None),
        )
        .await;
        let b: Value = serde_json::from_str(&text).unwrap();
        if b["status"] == "expired" {
            break b;
        }
        assert!(
            ["validating", "in_progress"].contains(&b["status"].as_str().unwrap()),
            "{b}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    worker.stop().await;
    assert!(done["expired_at"].as_i64().unwrap() >= done["expires_at"].as_i64().unwrap());
    let counts = &done["request_counts"];
    assert_eq!(counts["total"], 4);
    let completed = counts["completed"].as_i64().unwrap();
    assert!((1..4).contains(&completed), "{counts}");
    assert_eq!(counts["failed"].as_i64().unwrap(), 4 - completed);
    let read = |id: &Value| {
        let app = app.clone();
        let id = id.as_str().unwrap().to_string();
        async move {
            let (_, _, text) = send(
                &app,
                json_req("GET", &format!("/v1/files/{id}/content"), None),
            )
            .await;
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        }
    };
    let out = read(&done["output_file_id"]).await;
    let errs = read(&done["error_file_id"]).await;
    assert_eq!(out.len() as i64, completed);
    let mut ids: Vec<&str> = out
        .iter()
        .chain(&errs)
        .map(|r| r["custom_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["r0", "r1", "r2", "r3"]);
    for e in &errs {
        assert_eq!(e["response"], Value::Null);
        assert_eq!(e["error"]["code"], "batch_expired");
    }
}

fn valid(st: &SharedState, tokens: u32) -> peregrine_runtime::PreparedRequest {
    let body = json!({"model": "mock-model", "max_tokens": tokens,
                      "messages": [{"role": "user", "content": "go"}]});
    let req = parse_chat_request(body.to_string().as_bytes()).unwrap();
    prepare(&req, &st.registry().models()[0].ctx, 1).unwrap()
}

/// Deltas waiting in `rx` (non-blocking); panics on anything but text.
fn drain(rx: &mut mpsc::Receiver<Event>) -> (usize, bool) {
    let (mut n, mut preempted) = (0, false);
    while let Ok(ev) = rx.try_recv() {
        match ev {
            Event::Delta { .. } => n += 1,
            Event::Preempted => preempted = true,
            Event::Finished(_) => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    (n, preempted)
}

#[tokio::test]
async fn interactive_work_preempts_and_pauses_batch_work() {
    let script: &'static str = Box::leak("x".repeat(150).into_boxed_str());
    let st = state(
        Setup {
            script,
            parallel: 2,
            delay: Duration::from_millis(2),
            ..Setup::default()
        },
        None,
    );
    let rt = st.registry().models()[0].runtime.clone();
    let mut bg: Vec<_> = (0..2)
        .map(|_| rt.submit_background(valid(&st, 140)).unwrap())
        .collect();
    // Both batch sequences run.
    for rx in &mut bg {
        assert!(matches!(rx.recv().await, Some(Event::Delta { .. })));
    }
    assert_eq!(
        rt.queue_depth(),
        0,
        "batch work is not counted in the queue"
    );
    let mut fg = rt.submit(valid(&st, 40)).unwrap();
    assert!(matches!(fg.recv().await, Some(Event::Delta { .. })));
    // The interactive request took the slot of the most recent batch sequence...
    let drained: Vec<(usize, bool)> = bg.iter_mut().map(drain).collect();
    assert_eq!(
        drained.iter().filter(|d| d.1).count(),
        1,
        "exactly one batch sequence is preempted: {drained:?}"
    );
    // ...and while it runs, the other batch sequence does not advance.
    let mut fg_tokens = 1;
    loop {
        match fg.recv().await {
            Some(Event::Delta { .. }) => fg_tokens += 1,
            Some(Event::Finished(f)) => {
                assert_eq!(f.usage.completion_tokens, 40);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(fg_tokens, 40);
    let running = drained.iter().position(|d| !d.1).unwrap();
    assert_eq!(
        drain(&mut bg[running]).0,
        0,
        "no batch token while interactive work ran"
    );
    // Then it resumes and finishes.
    let mut n = 0;
    while let Some(ev) = bg[running].recv().await {
        match ev {
            Event::Delta { .. } => n += 1,
            Event::Finished(f) => {
                assert_eq!(f.usage.completion_tokens, 140);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(n > 0);
}

#[tokio::test]
async fn batch_metadata_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(Setup::default(), Some(files(dir.path()).await));
    let app = peregrine_server::router(st.clone());
    let line = json!({"custom_id": "r0", "method": "POST", "url": "/v1/chat/completions",
                      "body": chat_body(0)});
    let (_, _, text) = send(&app, upload(&line.to_string())).await;
    let file: Value = serde_json::from_str(&text).unwrap();
    let many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    for (metadata, ok) in [
        (json!({"job": "nightly"}), true),
        (Value::Object(many), false),
        (json!({"k".repeat(65): "v"}), false),
        (json!({"job": "v".repeat(513)}), false),
        (json!({"job": 1}), false),
    ] {
        let create = json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                            "completion_window": "24h", "metadata": metadata});
        let (status, _, text) =
            send(&app, json_req("POST", "/openai/v1/batches", Some(create))).await;
        let body: Value = serde_json::from_str(&text).unwrap();
        if ok {
            assert_eq!(status, StatusCode::OK, "{text}");
            assert_eq!(body["metadata"], json!({"job": "nightly"}));
        } else {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
            assert_eq!(body["error"]["param"], "metadata", "{text}");
        }
    }
}

/// Creates a 24h batch of `file`'s lines: its id.
async fn create_batch(app: &axum::Router, file: &Value) -> String {
    let create = json!({"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                        "completion_window": "24h"});
    let (_, _, text) = send(app, json_req("POST", "/openai/v1/batches", Some(create))).await;
    serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Polls batch `id` until it completes, failing with `why` 30 s after `started`.
async fn completed(app: &axum::Router, id: &str, started: std::time::Instant, why: &str) -> Value {
    loop {
        let (_, _, text) = send(app, json_req("GET", &format!("/v1/batches/{id}"), None)).await;
        let b: Value = serde_json::from_str(&text).unwrap();
        if b["status"] == "completed" {
            return b;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{why}: {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_stopped_worker_gives_its_lines_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (st, app, file) = slow_lines(dir.path(), 3).await;
    let id = create_batch(&app, &file).await;
    // A lease far longer than the test: only giving the lines back lets the second worker
    // run them.
    let cfg = |owner: &str| {
        let mut c = WorkerConfig::new(2);
        c.poll = Duration::from_millis(20);
        c.lease = Duration::from_secs(600);
        c.owner = owner.into();
        c
    };
    let first = spawn_worker(&st, cfg("first"));
    let store = st.storage.as_ref().unwrap().store.clone();
    let started = std::time::Instant::now();
    while store.line_counts(&id).await.unwrap().total == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Two lines are running (each takes ~1 s), one waits.
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.stop().await;
    let second = spawn_worker(&st, cfg("second"));
    let done = completed(&app, &id, started, "the lines were not taken over").await;
    second.stop().await;
    assert_eq!(
        done["request_counts"],
        json!({"total": 3, "completed": 3, "failed": 0})
    );
}

#[tokio::test]
async fn a_line_whose_result_could_not_be_stored_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let (st, app, file) = slow_lines(dir.path(), 3).await;
    let id = create_batch(&app, &file).await;
    // A lease far longer than the test: a line left held with its lease renewed would never
    // run again; only giving it back lets the batch finish.
    let mut cfg = WorkerConfig::new(2);
    cfg.poll = Duration::from_millis(20);
    cfg.lease = Duration::from_secs(600);
    let worker = spawn_worker(&st, cfg);
    use sqlx::Connection;
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let started = std::time::Instant::now();
    let running = "SELECT COUNT(*) FROM batch_lines WHERE state = 'running'";
    while sqlx::query_scalar::<_, i64>(running)
        .fetch_one(&mut db)
        .await
        .unwrap()
        < 2
    {
        assert!(started.elapsed() < Duration::from_secs(10), "never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // While two lines run (~1 s each, on the mock's two slots), the store loses their
    // table, so no result can be stored; it comes back after they have ended.
    sqlx::query("ALTER TABLE batch_lines RENAME TO batch_lines_away")
        .execute(&mut db)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    sqlx::query("ALTER TABLE batch_lines_away RENAME TO batch_lines")
        .execute(&mut db)
        .await
        .unwrap();
    let done = completed(&app, &id, started, "the unstored lines never ran again").await;
    worker.stop().await;
    assert_eq!(
        done["request_counts"],
        json!({"total": 3, "completed": 3, "failed": 0})
    );
    let out = done["output_file_id"].as_str().unwrap();
    let (_, _, content) = send(
        &app,
        json_req("GET", &format!("/openai/v1/files/{out}/content"), None),
    )
    .await;
    let mut ids: Vec<String> = content
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["custom_id"].to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["\"r0\"", "\"r1\"", "\"r2\""]);
}
