//! Managed API keys over HTTP: a key acts for its organization, another organization's
//! files and batches are 404s and absent from its lists, and a revoked key gets 401 within
//! the lookup cache's lifetime.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use peregrine_server::AppState;
use peregrine_service::keys::{create, KEY_CACHE_TTL};
use peregrine_service::{ApiKeys, Completions, ModelRegistry, Storage};
use peregrine_store::{LocalBlobs, SqlStore, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn app(dir: &std::path::Path) -> (Router, Arc<SqlStore>) {
    let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
    let blobs = LocalBlobs::new(dir.join("files")).await.unwrap();
    let app = peregrine_server::router(Arc::new(AppState {
        completions: Completions::new(ModelRegistry::default()),
        keys: ApiKeys::new(&["static-key".into()], Some(store.clone())),
        limiter: std::sync::Arc::new(peregrine_service::RateLimiter::unlimited()),
        metrics: Default::default(),
        storage: Some(Arc::new(Storage::new(store.clone(), Arc::new(blobs)))),
        fine_tunings: None,
        policy: Default::default(),
    }));
    (app, store)
}

async fn call(
    app: &Router,
    key: &str,
    req: axum::http::request::Builder,
    body: Body,
) -> (StatusCode, Value) {
    let req = req
        .header("authorization", format!("Bearer {key}"))
        .body(body)
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn get(path: &str) -> axum::http::request::Builder {
    Request::get(path)
}

async fn upload(app: &Router, key: &str) -> (StatusCode, Value) {
    let b = "peregrine-keys-boundary";
    let body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n\
         Content-Type: application/jsonl\r\n\r\n{{\"custom_id\": \"a\"}}\n\r\n--{b}--\r\n"
    );
    let req = Request::post("/openai/v1/files")
        .header("content-type", format!("multipart/form-data; boundary={b}"));
    call(app, key, req, Body::from(body)).await
}

#[tokio::test]
async fn keys_act_for_their_organization_only() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = app(dir.path()).await;
    let a = create(store.as_ref(), "alice", "org_a").await.unwrap();
    let b = create(store.as_ref(), "bob", "org_b").await.unwrap();
    assert!(
        a.secret.starts_with("gsk_") && a.secret.len() == 56,
        "{}",
        a.secret
    );
    assert_ne!(a.secret, b.secret);
    // Only the hash is stored.
    let stored = store
        .key_by_hash(&a.record.secret_hash)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(stored.secret_hash, a.secret);
    assert!(!stored.hint.contains(&a.secret[8..a.secret.len() - 4]));

    let (status, file) = upload(&app, &a.secret).await;
    assert_eq!(status, StatusCode::OK, "{file}");
    let id = file["id"].as_str().unwrap().to_string();
    let (_, mine) = call(&app, &a.secret, get("/openai/v1/files"), Body::empty()).await;
    assert_eq!(mine["data"][0]["id"], id.as_str());
    // Bob's organization neither sees nor reaches Alice's file.
    let (_, theirs) = call(&app, &b.secret, get("/openai/v1/files"), Body::empty()).await;
    assert_eq!(theirs["data"], json!([]));
    for path in [
        format!("/openai/v1/files/{id}"),
        format!("/openai/v1/files/{id}/content"),
    ] {
        let (status, err) = call(&app, &b.secret, get(&path), Body::empty()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {err}");
    }
    let del = Request::delete(format!("/openai/v1/files/{id}"));
    let (status, _) = call(&app, &b.secret, del, Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nor can it run a batch over it.
    let batch = json!({"input_file_id": id, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let post = || Request::post("/openai/v1/batches").header("content-type", "application/json");
    let (status, err) = call(&app, &b.secret, post(), Body::from(batch.to_string())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["param"], "input_file_id");
    let (status, created) = call(&app, &a.secret, post(), Body::from(batch.to_string())).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let bid = created["id"].as_str().unwrap();
    let (status, _) = call(
        &app,
        &b.secret,
        get(&format!("/openai/v1/batches/{bid}")),
        Body::empty(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let cancel = Request::post(format!("/openai/v1/batches/{bid}/cancel"));
    let (status, _) = call(&app, &b.secret, cancel, Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, listed) = call(&app, &b.secret, get("/openai/v1/batches"), Body::empty()).await;
    assert_eq!(listed["data"], json!([]));
    let (_, listed) = call(&app, &a.secret, get("/openai/v1/batches"), Body::empty()).await;
    assert_eq!(listed["data"][0]["id"], bid);
    // The static key acts for the default organization, which owns neither.
    let (_, listed) = call(&app, "static-key", get("/openai/v1/files"), Body::empty()).await;
    assert_eq!(listed["data"], json!([]));
}

#[tokio::test]
async fn wrong_missing_and_revoked_keys_are_401() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = app(dir.path()).await;
    let a = create(store.as_ref(), "alice", "org_a").await.unwrap();
    let (status, _) = call(&app, &a.secret, get("/openai/v1/files"), Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    let mut wrong = a.secret.clone();
    wrong.pop();
    wrong.push('!');
    for key in [wrong.as_str(), "", "static-key2", "gsk_"] {
        let (status, err) = call(&app, key, get("/openai/v1/files"), Body::empty()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{key:?}");
        assert_eq!(err["error"]["code"], "invalid_api_key");
    }
    let resp = app
        .clone()
        .oneshot(get("/openai/v1/files").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "no Authorization header"
    );

    assert!(store.revoke_key(&a.record.id, 1).await.unwrap());
    tokio::time::sleep(KEY_CACHE_TTL + std::time::Duration::from_millis(100)).await;
    let (status, err) = call(&app, &a.secret, get("/openai/v1/files"), Body::empty()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
}

#[tokio::test]
async fn creating_a_managed_key_turns_authentication_on() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let store = Arc::new(SqlStore::connect(&url).await.unwrap());
    let keys = ApiKeys::new(&[], Some(store.clone()));
    assert!(
        keys.authenticate(None).await.is_ok(),
        "no key anywhere: open"
    );
    let k = create(store.as_ref(), "first", "org_a").await.unwrap();
    tokio::time::sleep(KEY_CACHE_TTL + std::time::Duration::from_millis(100)).await;
    assert!(keys.authenticate(None).await.is_err());
    let who = keys.authenticate(Some(&k.secret)).await.unwrap();
    assert_eq!(who.org, "org_a");
    assert_eq!(who.key_id.as_deref(), Some(k.record.id.as_str()));
}
