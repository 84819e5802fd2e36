//! `peregrine serve`: pull what is missing, load every model, start one engine thread per
//! model, and serve the HTTP API until Ctrl-C / SIGTERM.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use peregrine_grammar::CallSyntax;
use peregrine_llama::{ContextSettings, LoadedModel};
use peregrine_runtime::{ModelContext, Runtime, RuntimeConfig};
use peregrine_server::batch_worker::{self, WorkerConfig};
use peregrine_server::{AppState, ModelRegistry, ServedModel};
use peregrine_text::template::ChatTemplate;
use peregrine_text::tools::ToolFormat;
use sha2::{Digest, Sha256};

use crate::catalog;
use crate::pull;
use crate::settings::{CommonArgs, ModelSpec, ServeSettings};

/// ChatML, for GGUFs that carry no chat template.
const FALLBACK_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

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

/// Loads one model and starts its engine thread.
pub fn start_model(
    common: &CommonArgs,
    spec: &ModelSpec,
    s: &ServeSettings,
) -> Result<ServedModel> {
    let loc = locate(common, &spec.source)?;
    tracing::info!(model = %loc.id, path = %loc.path.display(), "loading");
    let loaded = LoadedModel::load(&loc.path, s.gpu_layers)?;
    serve_loaded(loc, &loaded, spec, s)
}

/// Starts an engine thread over an already loaded model.
pub fn serve_loaded(
    loc: Located,
    loaded: &LoadedModel,
    spec: &ModelSpec,
    s: &ServeSettings,
) -> Result<ServedModel> {
    let cs = ContextSettings {
        n_ctx_seq: spec.ctx_size,
        n_seq_max: spec.parallel,
        n_batch: s.batch_size.max(spec.parallel),
        n_threads: s.threads,
        n_gpu_layers: s.gpu_layers,
    };
    let info = loaded.info(&cs);
    if spec.ctx_size > info.n_ctx_train {
        tracing::warn!(
            ctx = spec.ctx_size,
            trained = info.n_ctx_train,
            "context per sequence exceeds what the model was trained with"
        );
    }
    let template_source = info.chat_template.as_deref().unwrap_or(FALLBACK_TEMPLATE);
    let tool_format = spec
        .tool_format
        .unwrap_or_else(|| ToolFormat::detect(template_source));
    tracing::info!(model = %loc.id, tool_format = tool_format.name(), "tool-call syntax");
    let template = ChatTemplate::new(template_source, &info.bos_text, &info.eos_text)
        .with_context(|| format!("compiling the chat template of {}", loc.id))?;
    let vocab: Arc<dyn peregrine_engine::Vocab> = Arc::new(loaded.vocab());
    let grammars = Arc::new(
        peregrine_grammar::Grammars::new(vocab.as_ref(), s.grammar_limits())
            .map_err(|e| anyhow::anyhow!("building the grammar tokenizer of {}: {e}", loc.id))?,
    );
    let tool_syntax = CallSyntax::resolve(tool_format, vocab.as_ref());
    let engine_model = loaded.clone();
    let engine_cs = cs.clone();
    let (runtime, _join) = Runtime::spawn(
        move || engine_model.engine(&engine_cs),
        vocab.clone(),
        RuntimeConfig {
            max_queue: s.max_queue,
            busy_prefill: s.busy_prefill,
            mask_threads: s.mask_threads,
            background_rows: s.batch_rows,
        },
    )?;
    let id = spec.id.clone().unwrap_or(loc.id);
    Ok(ServedModel {
        fingerprint: fingerprint(&id, &info),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        name: loc.name,
        owned_by: loc.owned_by,
        features: Vec::new(),
        runtime,
        ctx: Arc::new(ModelContext {
            template,
            vocab,
            max_completion_tokens: spec.ctx_size,
            grammars,
            tool_syntax,
            info,
        }),
        id,
    })
}

pub async fn run(common: CommonArgs, s: ServeSettings) -> Result<()> {
    let mut registry = ModelRegistry::default();
    for spec in &s.models {
        let (c, sp, st) = (common.clone(), spec.clone(), s.clone());
        let served = tokio::task::spawn_blocking(move || start_model(&c, &sp, &st)).await??;
        tracing::info!(model = %served.id, aliases = spec.aliases.len(), "serving");
        registry.add(served, spec.aliases.clone());
    }
    let data_dir = s
        .data_dir
        .clone()
        .unwrap_or_else(|| common.home().join("data"));
    tokio::fs::create_dir_all(&data_dir)
        .await
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let url = s.database_url.clone().unwrap_or_else(|| {
        format!(
            "sqlite://{}?mode=rwc",
            data_dir.join("peregrine.db").display()
        )
    });
    let store = peregrine_store::SqlStore::connect(&url)
        .await
        .context("opening the database")?;
    let blobs = peregrine_store::LocalBlobs::new(data_dir.join("files"))
        .await
        .context("opening the file store")?;
    let state = Arc::new(AppState {
        registry,
        api_keys: s.api_keys.clone(),
        files: Some(peregrine_server::files::FilesState::new(
            Arc::new(store),
            Arc::new(blobs),
        )),
    });
    let mut worker = WorkerConfig::new(batch_worker::engine_slots(&state));
    worker.lease = std::time::Duration::from_secs(s.batch_lease_secs.max(1));
    batch_worker::spawn(state.clone(), worker);
    let app = peregrine_server::router(state);
    let listener = tokio::net::TcpListener::bind((s.host.as_str(), s.port))
        .await
        .with_context(|| format!("binding {}:{}", s.host, s.port))?;
    let addr = listener.local_addr()?;
    // Tests and scripts read this line to find a port-0 server.
    println!("peregrine listening on http://{addr}");
    std::io::stdout().flush()?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
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
