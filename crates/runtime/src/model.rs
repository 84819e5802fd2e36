//! The one model builder: a loaded model ([`ModelSource`]) and its [`ModelSettings`] become a
//! running engine thread ([`Runtime`]) and the [`ModelContext`] that request preparation
//! reads. `peregrine serve`, `peregrine bench` and every test tier build models here, so a
//! model is set up the same way wherever it runs.

use std::sync::Arc;

use peregrine_engine::TokenId;
use peregrine_engine::{ContextSettings, EngineError, ModelInfo, ModelSource, Vision, Vocab};
use peregrine_grammar::{CallSyntax, GrammarLimits, Grammars};
use peregrine_text::control::ControlTexts;
use peregrine_text::reasoning::{EffortControl, ReasoningSyntax};
use peregrine_text::template::ChatTemplate;
use peregrine_text::tools::ToolFormat;

use crate::handle::{Runtime, RuntimeConfig};

/// ChatML, for GGUFs that carry no chat template.
pub const FALLBACK_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// What preparation needs to know about the model a request resolved to.
pub struct ModelContext {
    pub template: ChatTemplate,
    pub vocab: Arc<dyn Vocab>,
    pub info: ModelInfo,
    /// Most completion tokens one request may ask for.
    pub max_completion_tokens: u32,
    /// Grammar compiler for this model's tokenizer (`response_format`, tool calls).
    pub grammars: Arc<Grammars>,
    /// How this model writes tool calls.
    pub tool_syntax: CallSyntax,
    /// What the prompt step needs of the vocabulary beyond tokenizing.
    pub prompt_text: PromptText,
    /// How the model reasons, when it does [detected from its chat template].
    pub reasoning: Option<ReasoningInfo>,
    /// Served as a Llama Guard (content moderation): requests become the guard's prompt.
    pub guard: bool,
    /// The image projector of a vision model (`None`: images are refused).
    pub vision: Option<Arc<dyn Vision>>,
}

/// A reasoning model's family, resolved against its template and vocabulary.
#[derive(Clone, Debug)]
pub struct ReasoningInfo {
    pub syntax: ReasoningSyntax,
    /// Which `reasoning_effort` values the template understands.
    pub effort: EffortControl,
    /// The syntax's tags that are single control tokens (their pieces are empty), with their
    /// text for the parser.
    pub markers: Arc<[(TokenId, String)]>,
}

impl ReasoningInfo {
    /// The family a template reasons in, if any.
    pub fn detect(template_source: &str, vocab: &dyn Vocab) -> Option<Self> {
        let syntax = ReasoningSyntax::detect(template_source)?;
        let markers: Vec<(TokenId, String)> = syntax
            .tags()
            .iter()
            .filter_map(|tag| match vocab.tokenize_piece(tag, true).as_slice() {
                [id] if vocab.token_bytes(*id).is_empty() => Some((*id, tag.to_string())),
                _ => None,
            })
            .collect();
        Some(ReasoningInfo {
            syntax,
            effort: syntax.effort_control(template_source),
            markers: markers.into(),
        })
    }
}

/// Facts of the vocabulary read once at build: its control-token texts (read as text in
/// client strings) and its longest token (a byte bound on the prompt before tokenizing).
#[derive(Clone, Debug)]
pub struct PromptText {
    pub controls: ControlTexts,
    pub max_token_bytes: usize,
}

impl PromptText {
    pub fn of(vocab: &dyn Vocab) -> Self {
        let controls = vocab.control_texts();
        // A control token stands for its whole text in a rendered prompt, though its piece
        // is empty: the bound must count it at that length.
        let longest_control = controls.iter().map(String::len).max().unwrap_or(0);
        PromptText {
            controls: ControlTexts::new(controls),
            max_token_bytes: vocab.max_token_bytes().max(longest_control).max(1),
        }
    }
}

/// Everything that shapes one served model, resolved (defaults in brackets are the CLI's).
#[derive(Clone, Debug)]
pub struct ModelSettings {
    /// The engine's context: tokens per sequence, slots, batch size, threads, GPU layers.
    pub context: ContextSettings,
    /// Queue, prefill and background limits of the engine thread.
    pub runtime: RuntimeConfig,
    /// Fuel and cache limits of the grammar compiler.
    pub grammar: GrammarLimits,
    /// How the model writes tool calls [detected from its chat template].
    pub tool_format: Option<ToolFormat>,
    /// Serve it as a Llama Guard: the conversation becomes the guard's task prompt and the
    /// answer follows the guard's format [false].
    pub guard: bool,
    /// Its series in `/metrics` (registered nowhere by default).
    pub metrics: crate::metrics::EngineMetrics,
}

/// A model whose engine thread is running.
pub struct BuiltModel {
    pub runtime: Runtime,
    pub ctx: Arc<ModelContext>,
}

/// Why a model could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("compiling the chat template: {0}")]
    Template(String),
    #[error("building the grammar tokenizer: {0}")]
    Grammar(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The engine threads [`build`] started, for [`join_engine_threads`].
static ENGINE_THREADS: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> =
    std::sync::Mutex::new(Vec::new());

/// Waits up to `within` for every engine thread [`build`] started to end; false when one
/// has not. Call it once everything holding a [`Runtime`] is dropped (the async runtime shut
/// down): each thread then finishes its forward pass, frees its sequences and returns.
/// A process that exits with an engine thread still inside llama.cpp runs the C++ static
/// destructors under it, and shutting down mid-batch then crashed now and then (SIGSEGV).
pub fn join_engine_threads(within: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    let mut threads =
        std::mem::take(&mut *ENGINE_THREADS.lock().unwrap_or_else(|e| e.into_inner()));
    while !threads.is_empty() && std::time::Instant::now() < deadline {
        let (ended, running): (Vec<_>, Vec<_>) = threads.into_iter().partition(|t| t.is_finished());
        for t in ended {
            // A thread that panicked has ended too; its panic was already reported.
            let _ = t.join();
        }
        threads = running;
        if !threads.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    threads.is_empty()
}

/// Builds the template, grammars and tool syntax for `source`, and starts its engine thread.
pub fn build<S: ModelSource>(source: &S, s: &ModelSettings) -> Result<BuiltModel, BuildError> {
    let info = source.info(&s.context);
    if s.context.n_ctx_seq > info.n_ctx_train {
        tracing::warn!(
            ctx = s.context.n_ctx_seq,
            trained = info.n_ctx_train,
            "context per sequence exceeds what the model was trained with"
        );
    }
    let template_source = info.chat_template.as_deref().unwrap_or(FALLBACK_TEMPLATE);
    let tool_format = s
        .tool_format
        .unwrap_or_else(|| ToolFormat::detect(template_source));
    tracing::info!(tool_format = tool_format.name(), "tool-call syntax");
    let template = ChatTemplate::new(template_source, &info.bos_text, &info.eos_text)
        .map_err(|e| BuildError::Template(e.to_string()))?;
    let vocab = source.vocab();
    let grammars =
        Grammars::new(vocab.clone(), s.grammar).map_err(|e| BuildError::Grammar(e.to_string()))?;
    let tool_syntax = CallSyntax::resolve(tool_format, vocab.as_ref());
    let prompt_text = PromptText::of(vocab.as_ref());
    let reasoning = ReasoningInfo::detect(template_source, vocab.as_ref());
    if let Some(r) = &reasoning {
        tracing::info!(syntax = r.syntax.name(), "reasoning model");
    }
    let (engine_source, engine_cs) = (source.clone(), s.context.clone());
    let (runtime, join) = Runtime::spawn(
        move || engine_source.engine(&engine_cs),
        vocab.clone(),
        s.runtime,
        s.metrics.clone(),
    )?;
    ENGINE_THREADS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(join);
    Ok(BuiltModel {
        runtime,
        ctx: Arc::new(ModelContext {
            template,
            vocab,
            // A completion may use the whole context (less its prompt, checked per request).
            max_completion_tokens: s.context.n_ctx_seq,
            grammars: Arc::new(grammars),
            tool_syntax,
            prompt_text,
            reasoning,
            guard: s.guard,
            vision: source.vision(),
            info,
        }),
    })
}
