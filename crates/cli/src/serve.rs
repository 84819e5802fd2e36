//! `peregrine serve`: pull what is missing, load and build every model (one engine thread
//! each), open the file and batch storage, start the batch worker, and serve the HTTP API
//! until Ctrl-C / SIGTERM.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use peregrine_llama::LoadedModel;
use peregrine_runtime::{EngineFamilies, ModelSettings};
use peregrine_server::listen::Timeouts;
use peregrine_server::{AppState, HttpPolicy};
use peregrine_service::batch_worker::{self, WorkerConfig};
use peregrine_service::fine_tunings::SYNC_EVERY;
use peregrine_service::{
    AdapterConverter, ApiKeys, Completions, FineTunings, Metrics, ModelMeta, ModelRegistry,
    RateLimiter, ServedModel, Storage,
};
use peregrine_tools::search::LocalIndex;
use peregrine_tools::{SearchBackend, ToolKit};
use sha2::{Digest, Sha256};

use crate::catalog;
use crate::pull;
use crate::settings::{CommonArgs, LimitStore, ModelSpec, SearchSource, ServeSettings};

/// A model file and how to present it.
pub struct Located {
    pub path: PathBuf,
    pub id: String,
    pub name: String,
    pub owned_by: String,
}

/// Finds (pulling if needed) the GGUF for a catalogue id or a path.
pub fn locate(common: &CommonArgs, source: &str) -> Result<Located> {
    let p = Path::new(source);
    if p.is_file() {
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model")
            .to_lowercase();
        return Ok(Located {
            path: p.to_path_buf(),
            name: stem.clone(),
            id: stem,
            owned_by: "local".into(),
        });
    }
    let Some(m) = catalog::find(source) else {
        bail!(
            "`{source}` is neither a GGUF file nor a catalogue model (known: {})",
            catalog::CATALOG
                .iter()
                .map(|m| m.id)
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let path = pull::pull(&common.home(), m, &common.python)?;
    Ok(Located {
        path,
        id: m.id.to_string(),
        name: m.name.to_string(),
        owned_by: m.owned_by.to_string(),
    })
}

fn fingerprint(id: &str, loaded: &peregrine_engine::ModelInfo) -> String {
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    h.update(loaded.size_bytes.to_le_bytes());
    h.update(loaded.n_params.to_le_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    format!("fp_{}", &hex::encode(h.finalize())[..10])
}

/// Loads one model and builds it (engine thread, template, grammars) with the one model
/// builder.
pub fn start_model(
    common: &CommonArgs,
    spec: &ModelSpec,
    families: &EngineFamilies,
) -> Result<ServedModel> {
    let loc = locate(common, &spec.source)?;
    tracing::info!(model = %loc.id, path = %loc.path.display(), "loading");
    let mut loaded = LoadedModel::load(&loc.path, spec.settings.context.n_gpu_layers)?;
    if let Some(mmproj) = &spec.mmproj {
        tracing::info!(model = %loc.id, mmproj = %mmproj.display(), "loading the image projector");
        loaded = loaded.with_projector(mmproj, spec.settings.context.n_threads)?;
    }
    let draft = load_draft(common, spec)?;
    serve_loaded(loc, &loaded, draft.as_ref(), spec, families)
}

/// Loads the draft model `spec` names, if it names one (pulling a catalogue model first).
pub fn load_draft(common: &CommonArgs, spec: &ModelSpec) -> Result<Option<LoadedModel>> {
    let Some(source) = &spec.draft else {
        return Ok(None);
    };
    let loc = locate(common, source)?;
    tracing::info!(draft = %loc.id, path = %loc.path.display(), "loading the draft model");
    let loaded = LoadedModel::load(&loc.path, spec.settings.context.n_gpu_layers)
        .with_context(|| format!("loading the draft model {}", loc.id))?;
    Ok(Some(loaded))
}

/// Builds an already loaded model (with its draft model, if any) under the id `spec` gives
/// it (or its own), its series in `families`.
pub fn serve_loaded(
    loc: Located,
    loaded: &LoadedModel,
    draft: Option<&LoadedModel>,
    spec: &ModelSpec,
    families: &EngineFamilies,
) -> Result<ServedModel> {
    let id = spec.id.clone().unwrap_or(loc.id);
    let settings = ModelSettings {
        metrics: families.for_model(&id),
        ..spec.settings.clone()
    };
    let built = peregrine_runtime::build_with_draft(loaded, draft, &settings)
        .with_context(|| format!("starting {id}"))?;
    let meta = ModelMeta {
        fingerprint: fingerprint(&id, &built.ctx.info),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        name: loc.name,
        owned_by: loc.owned_by,
        id,
    };
    let shape = loaded.base_shape();
    let convert: AdapterConverter = Arc::new(move |zip: &[u8]| {
        (peregrine_llama::peft::convert(zip, &shape))
            .map(|c| c.gguf)
            .map_err(|e| e.to_string())
    });
    Ok(ServedModel::new(meta, built).with_converter(convert))
}

/// The file and batch storage: SQLite under the data directory unless a database URL is
/// given, file contents on local disk; the store again, for rate-limit counters; and the
/// data directory.
async fn open_storage(
    common: &CommonArgs,
    s: &ServeSettings,
) -> Result<(Storage, Arc<peregrine_store::SqlStore>, PathBuf)> {
    let (data_dir, url) =
        crate::keys::database_url(common, s.database_url.clone(), s.data_dir.clone());
    tokio::fs::create_dir_all(&data_dir)
        .await
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let store = peregrine_store::SqlStore::connect(&url)
        .await
        .context("opening the database")?;
    let blobs = peregrine_store::LocalBlobs::new(data_dir.join("files"))
        .await
        .context("opening the file store")?;
    let store = Arc::new(store);
    Ok((
        Storage::new(store.clone(), Arc::new(blobs)),
        store,
        data_dir,
    ))
}

/// The rate limiter, its counters where the settings put them.
async fn rate_limiter(
    s: &ServeSettings,
    store: Arc<peregrine_store::SqlStore>,
) -> Result<RateLimiter> {
    let counters: Arc<dyn peregrine_store::Counters> = match &s.limit_store {
        LimitStore::Memory => Arc::new(peregrine_store::MemoryCounters::new()),
        LimitStore::Database => store,
        LimitStore::Redis(url) => Arc::new(
            peregrine_store::RedisCounters::connect(url)
                .await
                .context("connecting to Redis for the rate-limit counters")?,
        ),
    };
    Ok(RateLimiter::new(s.limits.clone(), counters))
}

/// The built-in tools, with the web search backend built (a local index is read now).
async fn tool_kit(common: &CommonArgs, s: &ServeSettings) -> Result<ToolKit> {
    use peregrine_tools::search::api::{Brave, SearxNg, Tavily};
    let mut kit = s.tools.clone();
    let backend: Arc<dyn SearchBackend> = match s.search.clone() {
        SearchSource::Off => return Ok(kit),
        SearchSource::HomeIndex => {
            let dir = common.home().join("search");
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            local_index(dir).await?
        }
        SearchSource::Local(dir) => local_index(dir).await?,
        SearchSource::SearxNg(base) => Arc::new(SearxNg { base }),
        SearchSource::Tavily { endpoint, key } => Arc::new(Tavily {
            endpoint,
            api_key: key,
        }),
        SearchSource::Brave { endpoint, key } => Arc::new(Brave {
            endpoint,
            api_key: key,
        }),
    };
    kit.search = Ok(backend);
    Ok(kit)
}

/// The local search index over `dir`, built off the async workers.
async fn local_index(dir: PathBuf) -> Result<Arc<dyn SearchBackend>> {
    let index = tokio::task::spawn_blocking(move || LocalIndex::build(&dir)).await??;
    tracing::info!(documents = index.documents, root = %index.root.display(), "search index built");
    Ok(Arc::new(index))
}

pub async fn run(common: CommonArgs, s: ServeSettings) -> Result<()> {
    // Bound first, so a load balancer's probes get `/ready` 503 `loading` (not a refused
    // connection) while the models load.
    let listener = tokio::net::TcpListener::bind((s.host.as_str(), s.port))
        .await
        .with_context(|| format!("binding {}:{}", s.host, s.port))?;
    tracing::info!(addr = %listener.local_addr()?, "bound; loading models");
    let loaded = tokio::select! {
        app = build_app(&common, &s) => app?,
        () = peregrine_server::listen::refuse_while_loading(&listener, s.http.header_timeout) => {
            unreachable!("answering while loading runs until dropped")
        }
    };
    let (app, worker) = loaded;
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to find a port-0 server: it comes once it is ready.
    println!("peregrine listening on http://{addr}");
    std::io::stdout().flush()?;
    let timeouts = Timeouts {
        header: s.http.header_timeout,
        drain: s.http.drain,
    };
    let signal = async {
        shutdown().await;
        // Batch lines go back to the other replicas at once; streams keep draining.
        worker.stop().await;
    };
    peregrine_server::listen::serve(listener, app, timeouts, signal).await?;
    Ok(())
}

/// Loads a model's LoRA adapters into its engine: each served under its own id.
async fn load_adapters(
    base: &ServedModel,
    adapters: &[(String, std::path::PathBuf)],
) -> Result<Vec<ServedModel>> {
    let mut out = Vec::new();
    for (id, path) in adapters {
        let (runtime, p) = (base.runtime.clone(), path.clone());
        let adapter = tokio::task::spawn_blocking(move || runtime.load_adapter(&p))
            .await?
            .with_context(|| format!("loading adapter `{id}` over {}", base.id))?;
        tracing::info!(model = %id, base = %base.id, "serving LoRA adapter");
        out.push(base.with_adapter(id.clone(), adapter));
    }
    Ok(out)
}

/// Loads the models, opens the storage and starts the batch worker: the app to serve.
async fn build_app(
    common: &CommonArgs,
    s: &ServeSettings,
) -> Result<(axum::Router, batch_worker::BatchWorker)> {
    let metrics = Arc::new(Metrics::new());
    let mut registry = ModelRegistry::default();
    for spec in &s.models {
        let (c, sp, f) = (common.clone(), spec.clone(), metrics.engine.clone());
        let served = tokio::task::spawn_blocking(move || start_model(&c, &sp, &f)).await??;
        tracing::info!(model = %served.id, aliases = spec.aliases.len(), "serving");
        let adapters = load_adapters(&served, &spec.adapters).await?;
        registry.add(served, spec.aliases.clone());
        for a in adapters {
            registry.add(a, Vec::new());
        }
    }
    let (storage, store, data_dir) = open_storage(common, s).await?;
    let storage = Arc::new(storage);
    let limiter =
        Arc::new((rate_limiter(s, store).await?).with_metrics(metrics.rejections.clone()));
    let completions = Completions::with_limits(
        registry,
        s.http.max_preparing,
        peregrine_service::completions::DEFAULT_MAX_WAITING,
    )
    .with_tools(tool_kit(common, s).await?);
    if let Err(why) = &completions.tool_kit().python {
        tracing::warn!(%why, "code execution is off");
    }
    let mut worker = WorkerConfig::new(completions.registry().batch_slots());
    worker.lease = std::time::Duration::from_secs(s.batch_lease_secs.max(1));
    worker.lines = metrics.batch_lines.clone();
    let worker = batch_worker::spawn(completions.clone(), storage.clone(), worker);
    peregrine_service::collector::spawn(storage.clone(), s.collector);
    let fine_tunings = Arc::new(FineTunings::new(
        completions.clone(),
        storage.clone(),
        data_dir.join("adapters"),
    ));
    // Adapters registered before a restart, or on another replica, are served before the
    // server says it is listening; later ones within SYNC_EVERY.
    let restored = fine_tunings.sync().await?;
    if restored > 0 {
        tracing::info!(adapters = restored, "fine-tuned LoRA adapters restored");
    }
    fine_tunings.clone().spawn_sync(SYNC_EVERY);
    let app = peregrine_server::router(Arc::new(AppState {
        completions,
        keys: ApiKeys::new(&s.api_keys, Some(storage.store.clone())),
        limiter,
        metrics,
        storage: Some(storage),
        fine_tunings: Some(fine_tunings),
        policy: HttpPolicy {
            cors_origins: s.http.cors_origins.clone(),
            allowed_hosts: s.http.allowed_hosts.clone(),
            body_timeout: s.http.body_timeout,
        },
    }));
    Ok((app, worker))
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
