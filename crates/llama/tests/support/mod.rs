//! What the real-model tests share: the model files named by the environment, fixtures under
//! tests/fixtures, and a fresh runtime over a model, built by the one model builder.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use peregrine_engine::ContextSettings;
use peregrine_grammar::GrammarLimits;
use peregrine_llama::LoadedModel;
use peregrine_protocol::parse::parse_chat_request;
use peregrine_runtime::{
    build, prepare, Event, Finished, ModelContext, ModelSettings, Runtime, RuntimeConfig,
};
use serde_json::Value;

/// The file named by `var`; `None` (and a note) when it is unset.
pub fn model_from_env(var: &str, what: &str) -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os(var).or_else(|| {
        eprintln!("{var} is not set: skipping {what}");
        None
    })?);
    assert!(p.is_file(), "{var}={} is not a file", p.display());
    Some(p)
}

/// The default model's path (`PEREGRINE_DEFAULT_MODEL`).
pub fn model_path(what: &str) -> Option<PathBuf> {
    model_from_env("PEREGRINE_DEFAULT_MODEL", what)
}

/// `tests/fixtures/<dir>/<name>`, parsed.
pub fn fixture(dir: &str, name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(dir)
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).expect("fixture")).expect("fixture JSON")
}

pub struct Fixture {
    pub runtime: Runtime,
    pub ctx: Arc<ModelContext>,
}

/// Settings of a test model: `n_ctx_seq` tokens per sequence, `n_seq_max` slots, the
/// runtime's `cfg`; the tool syntax is detected from the chat template.
pub fn settings(
    n_ctx_seq: u32,
    n_seq_max: u32,
    n_batch: u32,
    n_threads: i32,
    runtime: RuntimeConfig,
) -> ModelSettings {
    ModelSettings {
        context: ContextSettings {
            n_ctx_seq,
            n_seq_max,
            n_batch,
            n_threads,
            n_gpu_layers: 0,
        },
        runtime,
        grammar: GrammarLimits::default(),
        tool_format: None,
        guard: false,
        metrics: Default::default(),
    }
}

/// Loads the model and builds it with `s` (a fresh runtime: empty prefix cache).
pub fn start_with(path: &Path, s: &ModelSettings) -> Fixture {
    let loaded = LoadedModel::load(path, 0).expect("model loads");
    let built = build(&loaded, s).expect("the model builds");
    Fixture {
        runtime: built.runtime,
        ctx: built.ctx,
    }
}

/// [`start_with`], with the GGUF at `draft` as the draft model.
pub fn start_with_draft(path: &Path, draft: &Path, s: &ModelSettings) -> Fixture {
    let loaded = LoadedModel::load(path, 0).expect("model loads");
    let draft = LoadedModel::load(draft, 0).expect("draft model loads");
    let built =
        peregrine_runtime::build_with_draft(&loaded, Some(&draft), s).expect("the model builds");
    Fixture {
        runtime: built.runtime,
        ctx: built.ctx,
    }
}

/// [`start_with`] 4096-token sequences, 4 slots, a deep queue, every core.
pub fn start(path: &Path) -> Fixture {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get() as i32);
    let runtime = RuntimeConfig {
        max_queue: 256,
        ..RuntimeConfig::default()
    };
    start_with(path, &settings(4096, 4, 512, threads, runtime))
}

/// Runs one chat request (JSON text) to its end: its text and how it finished. Panics on any
/// other ending (tools, rejection, failure), which these tests never expect.
pub async fn complete(f: &Fixture, body: &str) -> (String, Finished) {
    let req = parse_chat_request(body.as_bytes()).expect("valid request");
    let valid = prepare(&req, &f.ctx, 1).expect("validates");
    let mut rx = f.runtime.submit(valid).expect("admitted");
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Delta { text: t, .. } => text.push_str(&t),
            Event::Finished(done) => return (text, done),
            Event::Failed(e) => panic!("generation failed: {e}"),
            Event::Preempted => panic!("interactive work is never preempted"),
            Event::ToolCall { .. } => panic!("no tools were offered"),
            Event::Reasoning { .. } => panic!("the test models do not reason"),
            Event::Rejected(r) => panic!("output rejected: {r:?}"),
        }
    }
    panic!("stream ended without a finish event");
}
