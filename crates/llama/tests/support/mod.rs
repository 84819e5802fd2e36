//! What the real-model tests share: the model named by `PEREGRINE_DEFAULT_MODEL`, fixtures
//! under tests/fixtures, and a fresh runtime over the model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use peregrine_grammar::{GrammarLimits, Grammars};
use peregrine_llama::{ContextSettings, LoadedModel};
use peregrine_runtime::{ModelContext, Runtime, RuntimeConfig};
use peregrine_text::template::ChatTemplate;
use serde_json::Value;

/// The default model's path; `None` (and a note) when `PEREGRINE_DEFAULT_MODEL` is unset.
pub fn model_path(what: &str) -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("PEREGRINE_DEFAULT_MODEL").or_else(|| {
        eprintln!("PEREGRINE_DEFAULT_MODEL is not set: skipping {what}");
        None
    })?);
    assert!(
        p.is_file(),
        "PEREGRINE_DEFAULT_MODEL={} is not a file",
        p.display()
    );
    Some(p)
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

/// Loads the model and starts a fresh runtime (empty prefix cache) over it.
pub fn start(path: &Path) -> Fixture {
    let loaded = LoadedModel::load(path, 0).expect("model loads");
    let cs = ContextSettings {
        n_ctx_seq: 4096,
        n_seq_max: 4,
        n_batch: 512,
        n_threads: std::thread::available_parallelism().map_or(2, |n| n.get() as i32),
        n_gpu_layers: 0,
    };
    let info = loaded.info(&cs);
    let template = ChatTemplate::new(
        info.chat_template.as_deref().expect("chat template"),
        &info.bos_text,
        &info.eos_text,
    )
    .expect("template compiles");
    let vocab: Arc<dyn peregrine_engine::Vocab> = Arc::new(loaded.vocab());
    let grammars = Arc::new(Grammars::new(vocab.as_ref(), GrammarLimits::default()).unwrap());
    let tool_syntax = peregrine_grammar::CallSyntax::resolve(
        peregrine_text::tools::ToolFormat::detect(
            info.chat_template.as_deref().unwrap_or_default(),
        ),
        vocab.as_ref(),
    );
    let engine_model = loaded.clone();
    let (runtime, _) = Runtime::spawn(
        move || engine_model.engine(&cs),
        vocab.clone(),
        RuntimeConfig {
            max_queue: 256,
            ..RuntimeConfig::default()
        },
    )
    .expect("engine starts");
    Fixture {
        runtime,
        ctx: Arc::new(ModelContext {
            template,
            vocab,
            max_completion_tokens: 4096,
            grammars,
            tool_syntax,
            info,
        }),
    }
}
