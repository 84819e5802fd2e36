//! `peregrine keys create|list|revoke`: managed API keys in the same database `serve` uses
//! (the same `--config`, `--database-url` and `--data-dir`, or their `PEREGRINE_*`
//! variables). A key's secret is printed once, by `create`; the database keeps its hash.

use std::path::PathBuf;

use anyhow::{Context, Result};
use peregrine_store::{SqlStore, Store, DEFAULT_ORG};

use crate::settings::{load_file, CommonArgs};

/// Where the keys are kept.
#[derive(clap::Args, Debug)]
pub struct KeysArgs {
    /// The `serve` config file whose `database_url` / `data_dir` to use.
    #[arg(long, env = "PEREGRINE_CONFIG")]
    config: Option<PathBuf>,
    /// `sqlite://PATH?mode=rwc` or `postgres://...` [default: SQLite at `<data-dir>/peregrine.db`].
    #[arg(long, env = "PEREGRINE_DATABASE_URL")]
    database_url: Option<String>,
    /// Directory of the default database [default: `<home>/data`].
    #[arg(long, env = "PEREGRINE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    action: KeysCmd,
}

#[derive(clap::Subcommand, Debug)]
enum KeysCmd {
    /// Create a key and print its secret (shown this once only).
    Create {
        /// A name to recognise the key by in `keys list`.
        #[arg(long)]
        name: String,
        /// The organization the key acts for: its files, batches and limits.
        #[arg(long, default_value = DEFAULT_ORG)]
        org: String,
    },
    /// List the keys (ids, names, organizations, hints; never secrets).
    List,
    /// Revoke a key by id: every replica refuses it within seconds.
    Revoke {
        /// The key's id (`key_...`, from `keys list`).
        id: String,
    },
}

/// The database URL `serve` would use with the same settings.
pub fn database_url(
    common: &CommonArgs,
    url: Option<String>,
    data_dir: Option<PathBuf>,
) -> (PathBuf, String) {
    let data_dir = data_dir.unwrap_or_else(|| common.home().join("data"));
    let url = url.unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            data_dir.join("peregrine.db").display()
        )
    });
    (data_dir, url)
}

pub async fn run(common: &CommonArgs, args: KeysArgs) -> Result<()> {
    let file = match &args.config {
        Some(p) => load_file(p)?,
        None => Default::default(),
    };
    let (data_dir, url) = database_url(
        common,
        args.database_url.or(file.database_url),
        args.data_dir.or(file.data_dir),
    );
    if url.starts_with("sqlite:") {
        tokio::fs::create_dir_all(&data_dir)
            .await
            .with_context(|| format!("creating {}", data_dir.display()))?;
    }
    let store = SqlStore::connect(&url)
        .await
        .context("opening the database")?;
    match args.action {
        KeysCmd::Create { name, org } => {
            let key = peregrine_service::keys::create(&store, &name, &org)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "created {} ({}) for {}; the secret is shown only now:",
                key.record.id, key.record.name, key.record.org_id
            );
            println!("{}", key.secret);
        }
        KeysCmd::List => {
            for k in store.keys().await? {
                let state = match k.revoked_at {
                    Some(t) => format!("revoked at {t}"),
                    None => "active".into(),
                };
                println!(
                    "{}  {:<20} {:<20} {}  created {}  {}",
                    k.id, k.name, k.org_id, k.hint, k.created_at, state
                );
            }
        }
        KeysCmd::Revoke { id } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs() as i64;
            if !store.revoke_key(&id, now).await? {
                anyhow::bail!("no active key `{id}` (see `peregrine keys list`)");
            }
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}
