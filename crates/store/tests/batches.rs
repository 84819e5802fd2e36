//! Batch storage: the status machine's transitions, line claims and leases, exactly-once
//! results. Runs on SQLite, and on PostgreSQL when `PEREGRINE_TEST_POSTGRES` is set.

use crate::common;

use common::stores;
use peregrine_store::{
    new_id, BatchRecord, BatchStatus, FileRecord, LineState, NewLine, SqlStore, Store,
};

const T0: i64 = 1_700_000_000;
const MS: i64 = T0 * 1000;

async fn batch(store: &SqlStore, lines: usize, window: i64) -> BatchRecord {
    let b = BatchRecord::new(
        new_id("batch"),
        new_id("file"),
        "/v1/chat/completions".into(),
        "24h".into(),
        window,
        Some(r#"{"k":"v"}"#.into()),
        T0,
    );
    store.insert_batch(&b).await.unwrap();
    let new: Vec<NewLine> = (1..=lines as i64)
        .map(|n| NewLine {
            line_no: n,
            custom_id: format!("req-{n}"),
            body: format!(r#"{{"n":{n}}}"#),
        })
        .collect();
    let claimed = store.claim_batch("w", MS, 10_000).await.unwrap().unwrap();
    assert_eq!(claimed.id, b.id);
    assert_eq!(claimed.status, BatchStatus::Validating);
    store.start_batch(&b.id, &new, T0 + 1).await.unwrap();
    store.release_batch(&b.id, "w", 0).await.unwrap();
    store.batch(&b.id).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_batch_runs_every_line_once_and_finishes() {
    for (backend, store, _dir) in stores().await {
        let b = batch(&store, 5, 86_400).await;
        assert_eq!(b.status, BatchStatus::InProgress, "{backend}");
        assert_eq!(b.in_progress_at, Some(T0 + 1));
        assert_eq!(b.metadata.as_deref(), Some(r#"{"k":"v"}"#));
        let counts = store.line_counts(&b.id).await.unwrap();
        assert_eq!((counts.total, counts.open), (5, 5), "{backend}");

        // Two workers split the lines; nobody gets a line twice.
        let a = store.claim_lines("a", MS, 5_000, 3).await.unwrap();
        let c = store.claim_lines("c", MS, 5_000, 3).await.unwrap();
        assert_eq!(a.len(), 3, "{backend}");
        assert_eq!(c.len(), 2, "{backend}");
        let mut seen: Vec<i64> = a.iter().chain(&c).map(|t| t.line_no).collect();
        seen.sort();
        assert_eq!(seen, vec![1, 2, 3, 4, 5], "{backend}");
        assert!(store
            .claim_lines("d", MS, 5_000, 3)
            .await
            .unwrap()
            .is_empty());
        // Nothing to finalize while lines run.
        assert!(store.claim_batch("w", MS, 1_000).await.unwrap().is_none());

        for t in &a {
            assert!(store
                .finish_line(t, "a", LineState::Done, "ok")
                .await
                .unwrap());
        }
        // Another worker cannot write a result for a line it does not hold.
        assert!(!store
            .finish_line(&c[0], "a", LineState::Done, "x")
            .await
            .unwrap());
        assert!(store
            .finish_line(&c[0], "c", LineState::Failed, "bad")
            .await
            .unwrap());
        // Released (preempted) lines go back to pending and are claimed again.
        store.release_line(&c[1], "c").await.unwrap();
        let again = store.claim_lines("d", MS, 5_000, 10).await.unwrap();
        assert_eq!(again, vec![c[1].clone()], "{backend}");
        assert!(store
            .finish_line(&again[0], "d", LineState::Done, "ok")
            .await
            .unwrap());

        let counts = store.line_counts(&b.id).await.unwrap();
        assert_eq!(
            (counts.total, counts.completed, counts.failed, counts.open),
            (5, 4, 1, 0),
            "{backend}"
        );
        let claimed = store.claim_batch("w", MS, 1_000).await.unwrap().unwrap();
        assert_eq!(claimed.status, BatchStatus::InProgress);
        assert!(store.begin_finalizing(&b.id, T0 + 5).await.unwrap());
        let results = store.line_results(&b.id).await.unwrap();
        assert_eq!(results.len(), 5);
        assert_eq!(results[1].result.as_deref(), Some("ok"));
        let out = FileRecord {
            id: new_id("file"),
            bytes: 2,
            lines: 4,
            created_at: T0 + 6,
            filename: "batch_output.jsonl".into(),
            purpose: "batch_output".into(),
            org_id: peregrine_store::DEFAULT_ORG.into(),
        };
        assert!(store
            .finish_batch(&b.id, BatchStatus::Completed, T0 + 6, Some(&out), None)
            .await
            .unwrap());
        // A second finalizer (after a lapsed lease) writes nothing.
        let late = FileRecord {
            id: new_id("file"),
            ..out.clone()
        };
        assert!(!store
            .finish_batch(&b.id, BatchStatus::Completed, T0 + 7, Some(&late), None)
            .await
            .unwrap());
        assert_eq!(store.file(&late.id).await.unwrap(), None);
        let done = store.batch(&b.id).await.unwrap().unwrap();
        assert_eq!(done.status, BatchStatus::Completed, "{backend}");
        assert_eq!(done.finalizing_at, Some(T0 + 5));
        assert_eq!(done.completed_at, Some(T0 + 6));
        assert_eq!(done.output_file_id.as_deref(), Some(out.id.as_str()));
        assert_eq!(done.error_file_id, None);
        assert_eq!(store.file(&out.id).await.unwrap(), Some(out));
        // Terminal batches are not claimed again.
        assert!(store
            .claim_batch("w", MS + 60_000, 1_000)
            .await
            .unwrap()
            .is_none());
    }
}

#[tokio::test]
async fn a_lapsed_lease_lets_another_worker_take_the_line() {
    for (backend, store, _dir) in stores().await {
        let b = batch(&store, 1, 86_400).await;
        let first = store.claim_lines("dead", MS, 1_000, 1).await.unwrap();
        assert_eq!(first.len(), 1);
        // Still leased: nobody else takes it.
        assert!(store
            .claim_lines("b", MS + 500, 1_000, 1)
            .await
            .unwrap()
            .is_empty());
        // A renewal keeps it.
        store.renew_lines("dead", MS + 2_000).await.unwrap();
        assert!(store
            .claim_lines("b", MS + 1_500, 1_000, 1)
            .await
            .unwrap()
            .is_empty());
        let taken = store.claim_lines("b", MS + 2_500, 1_000, 1).await.unwrap();
        assert_eq!(taken, first, "{backend}");
        // The first worker comes back too late: its result is dropped.
        assert!(!store
            .finish_line(&first[0], "dead", LineState::Done, "late")
            .await
            .unwrap());
        assert!(store
            .finish_line(&taken[0], "b", LineState::Done, "ok")
            .await
            .unwrap());
        let results = store.line_results(&b.id).await.unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].result.as_deref(), Some("ok"), "{backend}");
    }
}

#[tokio::test]
async fn cancelling_and_expiry_close_the_pending_lines() {
    for (backend, store, _dir) in stores().await {
        let b = batch(&store, 3, 100).await;
        let running = store.claim_lines("a", MS, 5_000, 1).await.unwrap();
        let c = store.cancel_batch(&b.id, T0 + 2).await.unwrap().unwrap();
        assert_eq!(c.status, BatchStatus::Cancelling, "{backend}");
        assert_eq!(c.cancelling_at, Some(T0 + 2));
        // No more lines are handed out.
        assert!(store
            .claim_lines("a", MS, 5_000, 5)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store
                .close_pending(&b.id, LineState::Cancelled, MS)
                .await
                .unwrap(),
            1
        );
        assert!(store
            .finish_line(&running[0], "a", LineState::Done, "ok")
            .await
            .unwrap());
        assert_eq!(
            store
                .close_pending(&b.id, LineState::Cancelled, MS)
                .await
                .unwrap(),
            0
        );
        let counts = store.line_counts(&b.id).await.unwrap();
        assert_eq!((counts.completed, counts.failed, counts.open), (1, 2, 0));
        assert!(store
            .finish_batch(&b.id, BatchStatus::Cancelled, T0 + 3, None, None)
            .await
            .unwrap());
        let done = store.batch(&b.id).await.unwrap().unwrap();
        assert_eq!(done.status, BatchStatus::Cancelled, "{backend}");
        assert_eq!(done.cancelled_at, Some(T0 + 3));
        // Cancelling a finished batch changes nothing.
        let again = store.cancel_batch(&b.id, T0 + 9).await.unwrap().unwrap();
        assert_eq!(again.status, BatchStatus::Cancelled);

        // Expiry: past `expires_at`, lines are no longer claimed and the batch is claimable.
        let e = batch(&store, 2, 100).await;
        let late = (T0 + 100) * 1000;
        assert!(store
            .claim_lines("a", late, 5_000, 5)
            .await
            .unwrap()
            .is_empty());
        let claimed = store.claim_batch("w", late, 1_000).await.unwrap().unwrap();
        assert_eq!(claimed.id, e.id, "{backend}");
        assert_eq!(
            store
                .close_pending(&e.id, LineState::Expired, late)
                .await
                .unwrap(),
            0
        );
        let results = store.line_results(&e.id).await.unwrap();
        assert!(results.iter().all(|r| r.state == LineState::Expired));
        assert_eq!(store.cancel_batch("batch_nope", T0).await.unwrap(), None);
    }
}

#[tokio::test]
async fn listing_pages_newest_first_and_filters_by_id() {
    for (backend, store, _dir) in stores().await {
        let mut ids = Vec::new();
        for _ in 0..5 {
            let b = BatchRecord::new(
                new_id("batch"),
                new_id("file"),
                "/v1/chat/completions".into(),
                "24h".into(),
                86_400,
                None,
                T0,
            );
            store.insert_batch(&b).await.unwrap();
            ids.push(b.id);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let page = store.batches(None, &[], None, 2).await.unwrap();
        let got: Vec<&str> = page.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(got, vec![ids[4].as_str(), ids[3].as_str()], "{backend}");
        let next = store.batches(None, &[], Some(&ids[3]), 2).await.unwrap();
        let got: Vec<&str> = next.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(got, vec![ids[2].as_str(), ids[1].as_str()], "{backend}");
        let picked = store
            .batches(
                None,
                &[ids[0].clone(), ids[2].clone(), "batch_x".into()],
                None,
                10,
            )
            .await
            .unwrap();
        let got: Vec<&str> = picked.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(got, vec![ids[2].as_str(), ids[0].as_str()], "{backend}");
        // A failed validation keeps its errors.
        let claimed = store.claim_batch("w", MS, 1_000).await.unwrap().unwrap();
        store
            .fail_batch(&claimed.id, r#"{"object":"list","data":[]}"#, T0 + 1)
            .await
            .unwrap();
        let failed = store.batch(&claimed.id).await.unwrap().unwrap();
        assert_eq!(failed.status, BatchStatus::Failed, "{backend}");
        assert_eq!(failed.failed_at, Some(T0 + 1));
        assert!(failed.errors.is_some());
    }
}
