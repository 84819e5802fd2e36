//! `peregrine bench-limits`: what authentication and rate limiting add to a request, p50 and
//! p99, with the counters in the process, in the database the replicas share or in Redis, against no
//! keys and no limits measured in the same run. Each request is what the chat handler does
//! around the model: the key looked up (a managed key, through its 2 s cache), one draw
//! from four buckets (RPM, RPD, TPM, TPD of one organization and model) and the token
//! correction at its end. Concurrent clients all draw from the same buckets: the worst case
//! for the database's row locks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use peregrine_runtime::ServiceTier;
use peregrine_service::limits::{LimitPolicy, Limits};
use peregrine_service::{ApiKeys, RateLimiter};
use peregrine_store::{Counters, MemoryCounters, SqlStore, Store};

#[derive(clap::Args, Debug)]
pub struct LimitsBenchArgs {
    /// A PostgreSQL server to measure the shared counters on (a scratch database is best:
    /// a key and the bench's buckets are written to it).
    #[arg(long, env = "PEREGRINE_DATABASE_URL")]
    database_url: Option<String>,
    /// A Redis server to measure the shared counters on (keys under `peregrine:rl:`).
    #[arg(long, env = "PEREGRINE_REDIS_URL")]
    redis_url: Option<String>,
    /// Requests per client.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Concurrent clients, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    clients: Vec<usize>,
}

/// One way of serving: its keys and its limiter, and a key to send.
struct Setup {
    name: String,
    keys: Arc<ApiKeys>,
    limiter: Arc<RateLimiter>,
    secret: Option<String>,
}

fn unlimited_policy() -> LimitPolicy {
    let huge = Limits {
        rpm: Some(1 << 40),
        rpd: Some(1 << 40),
        tpm: Some(1 << 40),
        tpd: Some(1 << 40),
    };
    let mut p = LimitPolicy::default();
    p.models.insert("*".into(), huge);
    p
}

async fn keyed(name: &str, store: Arc<SqlStore>, counters: Arc<dyn Counters>) -> Result<Setup> {
    let key = peregrine_service::keys::create(store.as_ref(), "bench", "org_bench")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Setup {
        name: name.into(),
        keys: Arc::new(ApiKeys::new(&[], Some(store as Arc<dyn Store>))),
        limiter: Arc::new(RateLimiter::new(unlimited_policy(), counters)),
        secret: Some(key.secret),
    })
}

/// One request's work around the model; its duration.
async fn one(s: &Setup) -> Result<Duration> {
    let t = Instant::now();
    let who = (s.keys.authenticate(s.secret.as_deref()))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut grant = (s
        .limiter
        .admit(&who.org, "llama-3.1-8b-instant", ServiceTier::OnDemand, 300))
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    // The correction at the end (a non-streamed answer waits for it before its headers).
    (s.limiter.settle(&mut grant, 250))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(t.elapsed())
}

/// Every request's duration with `clients` concurrent clients.
async fn measure(s: Arc<Setup>, clients: usize, requests: usize) -> Result<Vec<Duration>> {
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(requests);
                for _ in 0..requests {
                    out.push(one(&s).await?);
                }
                anyhow::Ok(out)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    Ok(all)
}

fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

pub fn run(args: LimitsBenchArgs) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run_async(args))
}

async fn run_async(args: LimitsBenchArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sqlite_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    let sqlite = Arc::new(SqlStore::connect(&sqlite_url).await?);
    let mut setups = vec![
        Setup {
            name: "no keys, no limits".into(),
            keys: Arc::new(ApiKeys::new(&[], None)),
            limiter: Arc::new(RateLimiter::unlimited()),
            secret: None,
        },
        keyed(
            "managed key + limits in memory",
            sqlite.clone(),
            Arc::new(MemoryCounters::new()),
        )
        .await?,
        keyed(
            "managed key + limits in SQLite",
            sqlite.clone(),
            sqlite.clone(),
        )
        .await?,
    ];
    if let Some(url) = &args.database_url {
        let pg = Arc::new(SqlStore::connect(url).await.context("opening PostgreSQL")?);
        setups.push(keyed("managed key + limits in PostgreSQL", pg.clone(), pg).await?);
    }
    if let Some(url) = &args.redis_url {
        let redis = peregrine_store::RedisCounters::connect(url)
            .await
            .context("connecting to Redis")?;
        setups.push(
            keyed(
                "managed key + limits in Redis",
                sqlite.clone(),
                Arc::new(redis),
            )
            .await?,
        );
    }
    println!(
        "{:<38} {:>7} {:>10} {:>10} {:>12}",
        "setup", "clients", "p50 µs", "p99 µs", "requests/s"
    );
    for s in setups {
        let s = Arc::new(s);
        // Warm the key cache and the connections.
        for _ in 0..20 {
            one(&s).await?;
        }
        for &c in &args.clients {
            let started = Instant::now();
            let d = measure(s.clone(), c, args.requests).await?;
            let rate = d.len() as f64 / started.elapsed().as_secs_f64();
            println!(
                "{:<38} {:>7} {:>10.1} {:>10.1} {:>12.0}",
                s.name,
                c,
                quantile(&d, 0.5),
                quantile(&d, 0.99),
                rate
            );
        }
    }
    Ok(())
}
