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
    #[error("the draft model cannot draft for this model: {0}")]
    Draft(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Why `draft` cannot draft for `target`, if it cannot: its tokens must be the target's,
/// id for id, since drafts are token ids the target verifies.
pub fn draft_mismatch(target: &dyn Vocab, draft: &dyn Vocab) -> Option<String> {
    // A family's sizes differ in padding rows past the last real token (Qwen2.5's 0.5B and
    // 1.5B both have 151,936 rows), so the real tokens are compared: every id below the
    // smaller size, with their bytes.
    let n = target.n_vocab().min(draft.n_vocab());
    if n == 0 || target.n_vocab().abs_diff(draft.n_vocab()) > 1024 {
        return Some(format!(
            "its vocabulary has {} tokens and the model's {}",
            draft.n_vocab(),
            target.n_vocab()
        ));
    }
    (0..n as TokenId)
        .find(|&t| {
            target.token_bytes(t) != draft.token_bytes(t) || target.is_eog(t) != draft.is_eog(t)
        })
        .map(|t| format!("token {t} differs between the two vocabularies"))
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
    build_with_draft(source, None, s)
}

/// [`build`], with a draft model for speculative decoding: a smaller model of the same
/// vocabulary whose engine gets the same context settings (one sequence per slot).
pub fn build_with_draft<S: ModelSource>(
    source: &S,
    draft: Option<&S>,
    s: &ModelSettings,
) -> Result<BuiltModel, BuildError> {
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
    if let Some(d) = draft {
        if let Some(why) = draft_mismatch(vocab.as_ref(), d.vocab().as_ref()) {
            return Err(BuildError::Draft(why));
        }
    }
    let (engine_source, engine_cs) = (source.clone(), s.context.clone());
    let draft_source = draft.cloned();
    let (runtime, join) = Runtime::spawn(
        move || {
            let engine = engine_source.engine(&engine_cs)?;
            let draft = draft_source.map(|d| d.engine(&engine_cs)).transpose()?;
            Ok((engine, draft))
        },
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

#[cfg(test)]
mod tests {
    use super::*;
    use peregrine_engine::MockVocab;

    /// The mock's vocabulary with one token spelled otherwise, or more rows.
    struct Other {
        swapped: Option<TokenId>,
        extra_rows: usize,
    }

    impl Vocab for Other {
        fn n_vocab(&self) -> usize {
            MockVocab.n_vocab() + self.extra_rows
        }
        fn tokenize(&self, text: &str) -> Vec<TokenId> {
            MockVocab.tokenize(text)
        }
        fn tokenize_piece(&self, text: &str, parse_special: bool) -> Vec<TokenId> {
            MockVocab.tokenize_piece(text, parse_special)
        }
        fn token_bytes(&self, token: TokenId) -> Vec<u8> {
            if Some(token) == self.swapped {
                b"??".to_vec()
            } else {
                MockVocab.token_bytes(token)
            }
        }
        fn is_eog(&self, token: TokenId) -> bool {
            MockVocab.is_eog(token)
        }
    }

    #[test]
    fn a_draft_model_must_spell_every_token_as_the_model_does() {
        let same = Other {
            swapped: None,
            extra_rows: 0,
        };
        assert_eq!(draft_mismatch(&MockVocab, &same), None);
        // Padding rows past the real tokens differ between a family's sizes.
        let padded = Other {
            swapped: None,
            extra_rows: 128,
        };
        assert_eq!(draft_mismatch(&MockVocab, &padded), None);
        let swapped = Other {
            swapped: Some(b'a'.into()),
            extra_rows: 0,
        };
        let why = draft_mismatch(&MockVocab, &swapped).expect("refused");
        assert!(why.contains("token 97"), "{why}");
        let other_family = Other {
            swapped: None,
            extra_rows: 30_000,
        };
        assert!(draft_mismatch(&MockVocab, &other_family).is_some());
    }
}
