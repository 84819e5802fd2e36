//! API keys and per-organization listing, on SQLite (and on PostgreSQL when
//! `PEREGRINE_TEST_POSTGRES` names one).

mod common;

use common::stores;
use peregrine_store::{new_id, FileRecord, KeyRecord, Store};

fn key(org: &str, hash: &str) -> KeyRecord {
    KeyRecord {
        id: new_id("key"),
        name: "ci".into(),
        org_id: org.into(),
        secret_hash: hash.into(),
        hint: "gsk_abcd...wxyz".into(),
        created_at: 100,
        revoked_at: None,
    }
}

#[tokio::test]
async fn keys_are_found_by_hash_until_revoked() {
    for (backend, store, _dir) in stores().await {
        let hash = new_id("hash");
        let k = key("org_a", &hash);
        store.insert_key(&k).await.unwrap();
        assert_eq!(store.key_by_hash(&hash).await.unwrap(), Some(k.clone()));
        assert_eq!(store.key_by_hash("nope").await.unwrap(), None, "{backend}");
        assert!(store.any_active_key().await.unwrap());
        assert!(store.keys().await.unwrap().contains(&k));
        assert!(store.revoke_key(&k.id, 200).await.unwrap());
        assert!(!store.revoke_key(&k.id, 300).await.unwrap(), "{backend}");
        let revoked = store.key_by_hash(&hash).await.unwrap().unwrap();
        assert_eq!(revoked.revoked_at, Some(200));
        // The same secret cannot be stored twice.
        assert!(store.insert_key(&key("org_b", &hash)).await.is_err());
    }
}

#[tokio::test]
async fn files_are_listed_per_organization() {
    for (backend, store, _dir) in stores().await {
        let (a, b) = (new_id("org"), new_id("org"));
        let file = |org: &str| FileRecord {
            id: new_id("file"),
            bytes: 1,
            lines: 1,
            created_at: 5,
            filename: "f.jsonl".into(),
            purpose: "batch".into(),
            org_id: org.into(),
        };
        let (fa, fb) = (file(&a), file(&b));
        store.insert_file(&fa).await.unwrap();
        store.insert_file(&fb).await.unwrap();
        let of_a = store.files(Some(&a)).await.unwrap();
        assert_eq!(of_a, vec![fa.clone()], "{backend}");
        let all = store.files(None).await.unwrap();
        assert!(all.contains(&fa) && all.contains(&fb), "{backend}");
        assert_eq!(store.file(&fb.id).await.unwrap().unwrap().org_id, b);
    }
}
