//! Shared by the store suites: the stores to run them against.

use peregrine_store::SqlStore;

/// A fresh SQLite store, and a fresh PostgreSQL database when `PEREGRINE_TEST_POSTGRES`
/// names a server (`postgres://user@host:port/db`): workers claim from every batch in a
/// database, so each test gets its own.
pub async fn stores() -> Vec<(String, SqlStore, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let mut out = vec![(
        "sqlite".to_string(),
        SqlStore::connect(&url).await.unwrap(),
        dir,
    )];
    if let Ok(pg) = std::env::var("PEREGRINE_TEST_POSTGRES") {
        let dir = tempfile::tempdir().unwrap();
        out.push((
            "postgres".into(),
            SqlStore::connect(&fresh_postgres(&pg).await).await.unwrap(),
            dir,
        ));
    }
    out
}

/// Creates an empty database on the server of `url` and returns its URL.
pub async fn fresh_postgres(url: &str) -> String {
    sqlx::any::install_default_drivers();
    let name = format!(
        "peregrine_test_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let admin = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    format!("{base}/{name}")
}
