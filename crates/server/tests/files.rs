//! The Files API on a real store (SQLite in a temporary directory): upload, list, retrieve,
//! download, delete, and the limits.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use peregrine_server::AppState;
use peregrine_service::{Completions, ModelRegistry, Storage};
use peregrine_store::{LocalBlobs, SqlStore};
use serde_json::Value;
use tower::ServiceExt;

async fn app(dir: &std::path::Path) -> Router {
    let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
    let store = SqlStore::connect(&url).await.unwrap();
    let blobs = LocalBlobs::new(dir.join("files")).await.unwrap();
    peregrine_server::router(Arc::new(AppState {
        completions: Completions::new(ModelRegistry::default()),
        keys: peregrine_service::ApiKeys::new(&[], None),
        limiter: std::sync::Arc::new(peregrine_service::RateLimiter::unlimited()),
        metrics: Default::default(),
        storage: Some(Arc::new(Storage::new(Arc::new(store), Arc::new(blobs)))),
        fine_tunings: None,
        policy: Default::default(),
    }))
}

const BOUNDARY: &str = "peregrine-test-boundary";

fn multipart(purpose: Option<&str>, filename: &str, content: &[u8]) -> Request<Body> {
    let mut parts: Vec<(&str, Option<&str>, &[u8])> = Vec::new();
    if let Some(p) = purpose {
        parts.push(("purpose", None, p.as_bytes()));
    }
    parts.push(("file", Some(filename), content));
    raw_multipart(&parts, true)
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.to_vec())
}

async fn json(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let (s, b) = send(app, req).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

const JSONL: &[u8] = b"{\"custom_id\": \"a\"}\n{\"custom_id\": \"b\"}\n";

#[tokio::test]
async fn upload_list_retrieve_download_delete() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let (status, file) = json(&app, multipart(Some("batch"), "batch_file.jsonl", JSONL)).await;
    assert_eq!(status, StatusCode::OK, "{file}");
    let id = file["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("file_") && id.len() == 5 + 26, "{id}");
    assert_eq!(file["object"], "file");
    assert_eq!(file["bytes"], JSONL.len());
    assert_eq!(file["filename"], "batch_file.jsonl");
    assert_eq!(file["purpose"], "batch");
    assert!(file["created_at"].as_i64().unwrap() > 1_700_000_000);
    let keys: Vec<&str> = file
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "object",
            "bytes",
            "created_at",
            "filename",
            "purpose",
            "status"
        ]
    );
    assert_eq!(file["status"], "processed");

    let (status, list) = json(&app, get("/openai/v1/files")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], id.as_str());

    let (status, one) = json(&app, get(&format!("/openai/v1/files/{id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one, file);

    let (status, bytes) = send(&app, get(&format!("/openai/v1/files/{id}/content"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, JSONL);

    let (status, del) = json(
        &app,
        Request::delete(format!("/openai/v1/files/{id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        del,
        serde_json::json!({"id": id, "object": "file", "deleted": true})
    );
    let (status, err) = json(&app, get(&format!("/openai/v1/files/{id}"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(err["error"]["type"], "invalid_request_error");
    assert_eq!(
        std::fs::read_dir(dir.path().join("files")).unwrap().count(),
        0,
        "contents removed with the file"
    );
}

#[tokio::test]
async fn bad_uploads_are_400s_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    for (req, needle) in [
        (multipart(None, "a.jsonl", JSONL), "`purpose` is required"),
        (
            multipart(Some("fine-tune"), "a.jsonl", JSONL),
            "`purpose` must be 'batch' or 'fine_tuning'",
        ),
        (
            multipart(Some("fine_tuning"), "a.zip", JSONL),
            "must be a ZIP archive",
        ),
        (multipart(Some("batch"), "a.jsonl", b""), "`file` is empty"),
        (
            multipart(Some("batch"), "a.jsonl", "{}\n".repeat(50_001).as_bytes()),
            "more than 50000 lines",
        ),
    ] {
        let (status, err) = json(&app, req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg}");
    }
    let (_, list) = json(&app, get("/openai/v1/files")).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    assert_eq!(
        std::fs::read_dir(dir.path().join("files")).unwrap().count(),
        0
    );
    // Exactly 50,000 lines is allowed.
    let (status, file) = json(
        &app,
        multipart(Some("batch"), "a.jsonl", "{}\n".repeat(50_000).as_bytes()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{file}");
}

#[tokio::test]
async fn an_upload_over_200_mb_is_413_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{BOUNDARY}--\r\n");
    // 201 MB streamed in 1 MB chunks, never held whole.
    let chunk = bytes::Bytes::from(vec![b'x'; 1_000_000]);
    let parts = std::iter::once(bytes::Bytes::from(head))
        .chain(std::iter::repeat_n(chunk, 201))
        .chain(std::iter::once(bytes::Bytes::from(tail)))
        .map(Ok::<_, std::io::Error>);
    let req = Request::post("/openai/v1/files")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from_stream(futures::stream::iter(parts)))
        .unwrap();
    let (status, err) = json(&app, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
    assert_eq!(err["error"]["type"], "invalid_request_error");
    let (_, list) = json(&app, get("/openai/v1/files")).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    assert_eq!(
        std::fs::read_dir(dir.path().join("files")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn unknown_ids_are_404s() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    for path in [
        "/openai/v1/files/file_01jh6x76wtemjr74t1fh0faj5t",
        "/openai/v1/files/..%2Fetc",
        "/openai/v1/files/file_nope/content",
    ] {
        let (status, err) = json(&app, get(path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {err}");
        assert_eq!(err["error"]["code"], "not_found");
    }
}

/// A multipart body from raw parts, closed or cut off after them.
fn raw_multipart(parts: &[(&str, Option<&str>, &[u8])], closed: bool) -> Request<Body> {
    let mut body = Vec::new();
    for (name, filename, content) in parts {
        let disposition = match filename {
            Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
            None => format!("form-data; name=\"{name}\""),
        };
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    if closed {
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    }
    Request::post("/openai/v1/files")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn rejected_multipart_bodies_leave_no_blob() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let long_purpose = "b".repeat(200);
    let cases = [
        // A second file after a complete one.
        raw_multipart(
            &[
                ("purpose", None, b"batch"),
                ("file", Some("a.jsonl"), JSONL),
                ("file", Some("b.jsonl"), JSONL),
            ],
            true,
        ),
        // The body ends after a complete file part, without its closing boundary.
        raw_multipart(
            &[
                ("purpose", None, b"batch"),
                ("file", Some("a.jsonl"), JSONL),
            ],
            false,
        ),
        // A purpose far longer than any valid one is not read whole.
        raw_multipart(
            &[
                ("file", Some("a.jsonl"), JSONL),
                ("purpose", None, long_purpose.as_bytes()),
            ],
            true,
        ),
    ];
    for req in cases {
        let (status, err) = json(&app, req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
    let (_, list) = json(&app, get("/openai/v1/files")).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    assert_eq!(
        std::fs::read_dir(dir.path().join("files")).unwrap().count(),
        0,
        "no blob, finished or partial, is left behind"
    );
}

#[tokio::test]
async fn a_fine_tuning_zip_has_no_line_limit_whichever_field_comes_first() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    // A binary ZIP may hold any number of newline bytes.
    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend(std::iter::repeat_n(b'\n', 60_000));
    let purpose_first = raw_multipart(
        &[
            ("purpose", None, b"fine_tuning"),
            ("file", Some("a.zip"), &zip),
        ],
        true,
    );
    let file_first = raw_multipart(
        &[
            ("file", Some("a.zip"), &zip),
            ("purpose", None, b"fine_tuning"),
        ],
        true,
    );
    for req in [purpose_first, file_first] {
        let (status, file) = json(&app, req).await;
        assert_eq!(status, StatusCode::OK, "{file}");
        assert_eq!(file["purpose"], "fine_tuning");
        assert_eq!(file["bytes"], zip.len());
    }
    // The same lines as a batch file are refused, the purpose given after the file too.
    let batch_last = raw_multipart(
        &[("file", Some("a.jsonl"), &zip), ("purpose", None, b"batch")],
        true,
    );
    let (status, err) = json(&app, batch_last).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("more than 50000 lines"));
}
