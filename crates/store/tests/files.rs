//! The store suite on SQLite (and on PostgreSQL when `PEREGRINE_TEST_POSTGRES` names one).

use crate::common;

use common::stores;
use peregrine_store::{new_id, Blobs, FileRecord, LocalBlobs, SqlStore, Store};

fn record(name: &str, created_at: i64) -> FileRecord {
    FileRecord {
        id: new_id("file"),
        bytes: 10,
        lines: 2,
        created_at,
        filename: name.into(),
        purpose: "batch".into(),
        org_id: peregrine_store::DEFAULT_ORG.into(),
    }
}

#[tokio::test]
async fn files_round_trip() {
    for (backend, store, _dir) in stores().await {
        let a = record("a.jsonl", 100);
        let b = record("b.jsonl", 200);
        store.insert_file(&a).await.unwrap();
        store.insert_file(&b).await.unwrap();
        assert_eq!(
            store.file(&a.id).await.unwrap(),
            Some(a.clone()),
            "{backend}"
        );
        let listed = store.files(None).await.unwrap();
        let ids: Vec<&str> = listed.iter().map(|f| f.id.as_str()).collect();
        let (pa, pb) = (
            ids.iter().position(|i| *i == a.id).unwrap(),
            ids.iter().position(|i| *i == b.id).unwrap(),
        );
        assert!(pb < pa, "{backend}: newest first");
        assert!(store.delete_file(&a.id).await.unwrap());
        assert!(!store.delete_file(&a.id).await.unwrap());
        assert_eq!(store.file(&a.id).await.unwrap(), None);
    }
}

#[tokio::test]
async fn reconnecting_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let a = record("a.jsonl", 1);
    SqlStore::connect(&url)
        .await
        .unwrap()
        .insert_file(&a)
        .await
        .unwrap();
    let again = SqlStore::connect(&url).await.unwrap();
    assert_eq!(again.file(&a.id).await.unwrap(), Some(a));
}

#[tokio::test]
async fn blobs_appear_only_when_committed() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = LocalBlobs::new(dir.path()).await.unwrap();
    let mut w = blobs.create("file_x").await.unwrap();
    w.write(b"{}\n").await.unwrap();
    assert!(!blobs.path("file_x").exists());
    w.commit().await.unwrap();
    assert_eq!(std::fs::read(blobs.path("file_x")).unwrap(), b"{}\n");
    let mut w = blobs.create("file_y").await.unwrap();
    w.write(b"partial").await.unwrap();
    drop(w);
    assert!(!blobs.path("file_y").exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no partial left"
    );
    blobs.remove("file_x").await.unwrap();
    blobs.remove("file_x").await.unwrap();
}
