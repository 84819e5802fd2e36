//! The fine-tuning API over HTTP on the mock engine and a real store: an adapter ZIP uploaded
//! with purpose `fine_tuning` is registered, hot-loaded and served to its organization only;
//! bad requests are 400s naming the field; a restart or another replica serves what the
//! store holds; a deleted adapter stops being served without cutting a running request.
//!
//! The mock engine's adapter file is the script its sequences answer, so the test converter
//! turns "ZIP" bytes (the ZIP signature, then a script) into that file. The real conversion
//! (PEFT safetensors to llama.cpp's GGUF) is tested in crates/llama and end to end.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use common::Setup;
use http_body_util::BodyExt;
use peregrine_server::AppState;
use peregrine_service::keys::create;
use peregrine_service::{
    AdapterConverter, ApiKeys, Completions, FineTunings, ModelRegistry, Storage,
};
use peregrine_store::{LocalBlobs, SqlStore};
use serde_json::{json, Value};
use tower::ServiceExt;

const ZIP_MAGIC: &[u8] = b"PK\x03\x04";
const ADAPTER_SCRIPT: &str = "Adapted answer.";

/// The mock's "conversion": the script after the ZIP signature; `bad...` is refused.
fn mock_converter() -> AdapterConverter {
    Arc::new(|zip: &[u8]| {
        let script = zip.strip_prefix(ZIP_MAGIC).ok_or("not a ZIP")?;
        if script.starts_with(b"bad") {
            return Err("`adapter_config.json`: `r` must be one of 8, 16, 32 or 64, got 3".into());
        }
        Ok(script.to_vec())
    })
}

/// One replica: its app and state, over a store and a data directory replicas share.
struct Replica {
    app: Router,
    state: Arc<AppState>,
}

impl Replica {
    async fn start(dir: &Path, setup: Setup) -> Self {
        let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
        let store = Arc::new(SqlStore::connect(&url).await.unwrap());
        let blobs = LocalBlobs::new(dir.join("files")).await.unwrap();
        let storage = Arc::new(Storage::new(store.clone(), Arc::new(blobs)));
        let mut registry = ModelRegistry::default();
        registry.add(
            common::served_model(&setup).with_converter(mock_converter()),
            vec!["llama-3.3-70b-versatile".into()],
        );
        let completions = Completions::new(registry);
        let fine_tunings = Arc::new(FineTunings::new(
            completions.clone(),
            storage.clone(),
            adapters_dir(dir),
        ));
        fine_tunings.sync().await.unwrap();
        let state = Arc::new(AppState {
            completions,
            keys: ApiKeys::new(&[], Some(store)),
            limiter: Arc::new(peregrine_service::RateLimiter::unlimited()),
            metrics: Default::default(),
            storage: Some(storage),
            fine_tunings: Some(fine_tunings),
            policy: Default::default(),
        });
        Self {
            app: peregrine_server::router(state.clone()),
            state,
        }
    }

    async fn sync(&self) {
        self.state
            .fine_tunings
            .as_ref()
            .unwrap()
            .sync()
            .await
            .unwrap();
    }

    async fn call(
        &self,
        key: &str,
        req: axum::http::request::Builder,
        body: Body,
    ) -> (StatusCode, Value) {
        let req = req
            .header("authorization", format!("Bearer {key}"))
            .body(body)
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn upload(&self, key: &str, purpose: &str, content: &[u8]) -> String {
        let b = "peregrine-ft-boundary";
        let mut body = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"adapter.zip\"\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(content);
        body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
        let req = Request::post("/openai/v1/files")
            .header("content-type", format!("multipart/form-data; boundary={b}"));
        let (status, file) = self.call(key, req, Body::from(body)).await;
        assert_eq!(status, StatusCode::OK, "{file}");
        file["id"].as_str().unwrap().to_string()
    }

    async fn register(&self, key: &str, body: Value) -> (StatusCode, Value) {
        let req = Request::post("/v1/fine_tunings").header("content-type", "application/json");
        self.call(key, req, Body::from(body.to_string())).await
    }

    async fn chat(&self, key: &str, model: &str) -> (StatusCode, Value) {
        // Greedy: at the default temperature the mock's script is only the likeliest reply,
        // and one token in a few hundred strays from it.
        let body = json!({"model": model, "messages": [{"role": "user", "content": "Hi"}], "temperature": 0});
        let req =
            Request::post("/openai/v1/chat/completions").header("content-type", "application/json");
        self.call(key, req, Body::from(body.to_string())).await
    }
}

fn adapters_dir(dir: &Path) -> PathBuf {
    dir.join("adapters")
}

fn adapter_zip(script: &str) -> Vec<u8> {
    [ZIP_MAGIC, script.as_bytes()].concat()
}

fn registration(file_id: &str, name: &str) -> Value {
    json!({"input_file_id": file_id, "name": name, "type": "lora", "base_model": "llama-3.3-70b-versatile"})
}

fn content(v: &Value) -> &str {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
}

fn ids(list: &Value) -> Vec<String> {
    (list["data"].as_array().unwrap().iter())
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

/// Two organizations' keys, written to the store the replicas share.
async fn keys(dir: &Path) -> (String, String) {
    let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
    let store = SqlStore::connect(&url).await.unwrap();
    let a = create(&store, "alice", "org_a").await.unwrap().secret;
    let b = create(&store, "bob", "org_b").await.unwrap().secret;
    (a, b)
}

#[tokio::test]
async fn upload_register_chat_list_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = keys(dir.path()).await;
    let r = Replica::start(dir.path(), Setup::default()).await;
    let file = r
        .upload(&a, "fine_tuning", &adapter_zip(ADAPTER_SCRIPT))
        .await;
    let (status, ft) = r.register(&a, registration(&file, "my-adapter")).await;
    assert_eq!(status, StatusCode::OK, "{ft}");
    let id = ft["id"].as_str().unwrap().to_string();
    let model = ft["data"]["fine_tuned_model"].as_str().unwrap().to_string();
    assert!(id.starts_with("ft_"), "{id}");
    assert_eq!(ft["object"], "fine_tuning");
    assert_eq!(ft["data"]["id"], id.as_str());
    assert_eq!(ft["data"]["name"], "my-adapter");
    assert_eq!(ft["data"]["type"], "lora");
    assert_eq!(ft["data"]["base_model"], "llama-3.3-70b-versatile");
    assert_eq!(ft["data"]["input_file_id"], file.as_str());
    assert!(ft["data"]["created_at"].as_i64().unwrap() > 1_700_000_000);
    let prefix = "ft:llama-3.3-70b-versatile:org_a/my-adapter-";
    let hex = model
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{model}"));
    assert!(
        hex.len() == 12 && hex.bytes().all(|c| c.is_ascii_hexdigit()),
        "{model}"
    );

    // The adapter answers with its own script, the base with its own.
    let (status, answer) = r.chat(&a, &model).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(content(&answer), ADAPTER_SCRIPT);
    assert_eq!(answer["model"], model.as_str());
    let (_, base) = r.chat(&a, "mock-model").await;
    assert_eq!(content(&base), common::SCRIPT);

    // Listed and retrievable for its organization only.
    let (_, list) = r
        .call(&a, Request::get("/v1/fine_tunings"), Body::empty())
        .await;
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"], json!([ft["data"]]));
    let (_, one) = r
        .call(
            &a,
            Request::get(format!("/v1/fine_tunings/{id}")),
            Body::empty(),
        )
        .await;
    assert_eq!(one, ft);
    let (_, models) = r
        .call(&a, Request::get("/openai/v1/models"), Body::empty())
        .await;
    assert!(ids(&models).contains(&model));
    let (_, models) = r
        .call(&b, Request::get("/openai/v1/models"), Body::empty())
        .await;
    assert!(!ids(&models).contains(&model));
    let (_, list) = r
        .call(&b, Request::get("/v1/fine_tunings"), Body::empty())
        .await;
    assert_eq!(list["data"], json!([]));
    for req in [
        Request::get(format!("/v1/fine_tunings/{id}")),
        Request::delete(format!("/v1/fine_tunings/{id}")),
    ] {
        let (status, err) = r.call(&b, req, Body::empty()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    }
    let (status, err) = r.chat(&b, &model).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(err["error"]["code"], "model_not_found");
    let (status, _) = r
        .call(
            &b,
            Request::get(format!("/openai/v1/models/{model}")),
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Groq serves the API under /v1 only.
    let (status, _) = r
        .call(&a, Request::get("/openai/v1/fine_tunings"), Body::empty())
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Deleted: no longer served, listed or kept on disk.
    let (status, gone) = r
        .call(
            &a,
            Request::delete(format!("/v1/fine_tunings/{id}")),
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{gone}");
    assert_eq!(
        gone,
        json!({"id": id, "object": "fine_tuning", "deleted": true})
    );
    let (status, _) = r.chat(&a, &model).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = r
        .call(&a, Request::get("/v1/fine_tunings"), Body::empty())
        .await;
    assert_eq!(list["data"], json!([]));
    assert!(!adapters_dir(dir.path()).join(format!("{id}.gguf")).exists());
}

#[tokio::test]
async fn bad_registrations_are_400s_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = keys(dir.path()).await;
    let r = Replica::start(dir.path(), Setup::default()).await;
    let zip = r
        .upload(&a, "fine_tuning", &adapter_zip(ADAPTER_SCRIPT))
        .await;
    let bad_zip = r.upload(&a, "fine_tuning", &adapter_zip("bad")).await;
    let batch = r.upload(&a, "batch", b"{}\n").await;
    let theirs = r
        .upload(&b, "fine_tuning", &adapter_zip(ADAPTER_SCRIPT))
        .await;
    let with = |k: &str, v: Value| {
        let mut body = registration(&zip, "n");
        body[k] = v;
        body
    };
    let without = |k: &str| {
        let mut body = registration(&zip, "n");
        body.as_object_mut().unwrap().remove(k);
        body
    };
    let cases = [
        (
            without("input_file_id"),
            Some("input_file_id"),
            "`input_file_id` is required",
        ),
        (without("name"), Some("name"), "`name` is required"),
        (without("type"), Some("type"), "`type` is required"),
        (
            without("base_model"),
            Some("base_model"),
            "`base_model` is required",
        ),
        (
            with("name", json!(7)),
            Some("name"),
            "`name` must be a string",
        ),
        (
            with("type", json!("full")),
            Some("type"),
            "Supported values are: 'lora'",
        ),
        (with("name", json!("a/b")), Some("name"), "letters, digits"),
        (
            with("base_model", json!("no-such-model")),
            Some("base_model"),
            "not a model this server serves",
        ),
        (
            with("input_file_id", json!(batch)),
            Some("input_file_id"),
            "purpose 'fine_tuning'",
        ),
        (
            with("input_file_id", json!(theirs)),
            Some("input_file_id"),
            "not found",
        ),
        (
            with("input_file_id", json!("file_nope")),
            Some("input_file_id"),
            "not found",
        ),
        (
            with("input_file_id", json!(bad_zip)),
            Some("input_file_id"),
            "Invalid adapter file: `adapter_config.json`: `r` must be one of",
        ),
        (with("epochs", json!(3)), None, "unknown field `epochs`"),
    ];
    for (body, param, words) in cases {
        let (status, err) = r.register(&a, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(msg.contains(words), "{body}: {msg}");
        if let Some(p) = param {
            assert_eq!(err["error"]["param"], p, "{body}");
        }
    }
    // A fine-tuned model cannot be the base of another adapter.
    let (_, ft) = r.register(&a, registration(&zip, "first")).await;
    let model = ft["data"]["fine_tuned_model"].as_str().unwrap();
    let (status, err) = r.register(&a, with("base_model", json!(model))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("cannot take LoRA adapters"));
    // Nothing half-registered: one fine tuning, one converted file.
    let (_, list) = r
        .call(&a, Request::get("/v1/fine_tunings"), Body::empty())
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        std::fs::read_dir(adapters_dir(dir.path())).unwrap().count(),
        1
    );
}

#[tokio::test]
async fn a_restart_or_another_replica_serves_what_the_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = keys(dir.path()).await;
    let first = Replica::start(dir.path(), Setup::default()).await;
    let file = first
        .upload(&a, "fine_tuning", &adapter_zip(ADAPTER_SCRIPT))
        .await;
    let (_, kept) = first.register(&a, registration(&file, "kept")).await;
    let kept_model = kept["data"]["fine_tuned_model"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, moved) = first.register(&a, registration(&file, "moved")).await;
    let moved_model = moved["data"]["fine_tuned_model"]
        .as_str()
        .unwrap()
        .to_string();
    // One converted file is lost (a replica with a data directory of its own): that one is
    // converted again from the uploaded ZIP.
    let moved_id = moved["id"].as_str().unwrap();
    std::fs::remove_file(adapters_dir(dir.path()).join(format!("{moved_id}.gguf"))).unwrap();

    // A second replica (or the same server restarted) serves both from the start.
    let second = Replica::start(dir.path(), Setup::default()).await;
    for model in [&kept_model, &moved_model] {
        let (status, answer) = second.chat(&a, model).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(content(&answer), ADAPTER_SCRIPT);
    }
    // Deleted on the first, the second stops serving it at its next sync.
    let kept_id = kept["id"].as_str().unwrap();
    let (status, _) = first
        .call(
            &a,
            Request::delete(format!("/v1/fine_tunings/{kept_id}")),
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    second.sync().await;
    let (status, _) = second.chat(&a, &kept_model).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = second.chat(&a, &moved_model).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn deleting_an_adapter_does_not_cut_a_running_request() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = keys(dir.path()).await;
    let slow = Setup {
        delay: Duration::from_millis(30),
        ..Setup::default()
    };
    let r = Replica::start(dir.path(), slow).await;
    let file = r
        .upload(&a, "fine_tuning", &adapter_zip(ADAPTER_SCRIPT))
        .await;
    let (_, ft) = r.register(&a, registration(&file, "busy")).await;
    let model = ft["data"]["fine_tuned_model"].as_str().unwrap().to_string();
    let id = ft["id"].as_str().unwrap().to_string();
    let body = json!({"model": model, "stream": true, "temperature": 0, "messages": [{"role": "user", "content": "Hi"}]});
    let req = Request::post("/openai/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {a}"))
        .body(Body::from(body.to_string()))
        .unwrap();
    let stream = r.app.clone().oneshot(req).await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let (status, _) = r
        .call(
            &a,
            Request::delete(format!("/v1/fine_tunings/{id}")),
            Body::empty(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(
        stream
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let said: String = common::sse_events(&text)
        .iter()
        .filter(|e| e.as_str() != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(said, ADAPTER_SCRIPT, "the stream ran to its end");
    let (status, _) = r.chat(&a, &model).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
