//! API keys, per-organization listing and registered fine tunings, on SQLite (and on PostgreSQL when
//! `PEREGRINE_TEST_POSTGRES` names one).

use crate::common;

use common::stores;
use peregrine_store::{new_id, FileRecord, FineTuningRecord, KeyRecord, Store};

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

#[tokio::test]
async fn fine_tunings_round_trip_per_organization() {
    for (backend, store, _dir) in stores().await {
        let (a, b) = (new_id("org"), new_id("org"));
        let ft = |org: &str, name: &str, at: i64| FineTuningRecord {
            id: new_id("ft"),
            org_id: org.into(),
            name: name.into(),
            base_model: "llama-3.1-8b-instant".into(),
            kind: "lora".into(),
            input_file_id: new_id("file"),
            created_at: at,
            fine_tuned_model: format!("ft:llama-3.1-8b-instant:{org}/{name}-{}", new_id("h")),
        };
        let (old, new, other) = (ft(&a, "x", 1), ft(&a, "y", 2), ft(&b, "z", 3));
        for f in [&old, &new, &other] {
            store.insert_fine_tuning(f).await.unwrap();
        }
        let mine = store.fine_tunings(Some(&a)).await.unwrap();
        assert_eq!(
            mine,
            vec![new.clone(), old.clone()],
            "{backend}: newest first, own org"
        );
        assert_eq!(
            store.fine_tunings(None).await.unwrap().len(),
            3,
            "{backend}"
        );
        assert_eq!(store.fine_tuning(&old.id).await.unwrap(), Some(old.clone()));
        // A model id is registered once.
        let mut dup = ft(&a, "w", 4);
        dup.fine_tuned_model = old.fine_tuned_model.clone();
        assert!(store.insert_fine_tuning(&dup).await.is_err(), "{backend}");
        assert!(store.delete_fine_tuning(&old.id).await.unwrap());
        assert!(
            !store.delete_fine_tuning(&old.id).await.unwrap(),
            "{backend}"
        );
        assert_eq!(store.fine_tuning(&old.id).await.unwrap(), None);
    }
}
