//! [`peregrine_engine::Engine`] over llama.cpp, through the `llama-cpp-2` crate.
//!
//! Call order: [`LoadedModel::load`] (once per GGUF) -> [`LoadedModel::vocab`] (shared with
//! request validation) and [`LoadedModel::engine`] (one context, owned by the engine thread).
//!
//! This is the only crate that talks to C. The unsafe code itself lives in `llama-cpp-2`,
//! but for loading LoRA adapters into a shared model ([`adapter`], where the reason is);
//! what this crate must get right is lifetimes: a context borrows its model, so the engine
//! keeps both together in a self-referential cell.

mod adapter;
pub mod peft;
mod vision;

pub use vision::LlamaVision;

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaLoraAdapter, LlamaModel};
use llama_cpp_2::token::LlamaToken;
pub use peregrine_engine::ContextSettings;
use peregrine_engine::{
    AdapterId, Batch, Engine, EngineError, ModelInfo, ModelSource, PreparedImage, SeqId,
    SeqSnapshot, TokenId, Vision, Vocab,
};

/// llama.cpp keeps process-wide backend state and refuses a second initialisation, so the
/// handle is made once and shared read-only.
fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| EngineError::Load(e.clone()))
}

/// A GGUF loaded into memory, shareable between threads.
#[derive(Clone)]
pub struct LoadedModel {
    model: Arc<LlamaModel>,
    /// The image projector, for a vision model ([`LoadedModel::with_projector`]).
    vision: Option<Arc<LlamaVision>>,
}

impl LoadedModel {
    /// What a LoRA adapter's conversion needs of this model ([`peft::convert`]).
    pub fn base_shape(&self) -> peft::BaseShape {
        let m = &self.model;
        peft::BaseShape {
            arch: m.meta_val_str("general.architecture").unwrap_or_default(),
            n_layer: m.n_layer(),
            n_head: m.n_head(),
            n_head_kv: m.n_head_kv(),
        }
    }

    /// Loads a GGUF file (memory-mapped).
    pub fn load(path: &Path, n_gpu_layers: u32) -> Result<Self, EngineError> {
        let backend = backend()?;
        let params = LlamaModelParams::default().with_n_gpu_layers(n_gpu_layers);
        let model = LlamaModel::load_from_file(backend, path, &params)
            .map_err(|e| EngineError::Load(format!("{}: {e}", path.display())))?;
        Ok(Self {
            model: Arc::new(model),
            vision: None,
        })
    }

    /// Loads the image projector (`mmproj` GGUF) that makes this a vision model.
    pub fn with_projector(mut self, mmproj: &Path, n_threads: i32) -> Result<Self, EngineError> {
        self.vision = Some(Arc::new(LlamaVision::load(mmproj, &self.model, n_threads)?));
        Ok(self)
    }

    /// The tokenizer, cheap to clone and share.
    pub fn vocab(&self) -> LlamaVocab {
        LlamaVocab::new(self.model.clone())
    }

    /// Static facts, for a context of the given shape.
    pub fn info(&self, ctx: &ContextSettings) -> ModelInfo {
        let m = &self.model;
        let vocab = m.vocab();
        let piece = |t: LlamaToken| {
            String::from_utf8_lossy(&vocab.token_to_piece(t, true, None)).into_owned()
        };
        ModelInfo {
            arch: m.meta_val_str("general.architecture").unwrap_or_default(),
            n_vocab: usize::try_from(m.n_vocab()).unwrap_or(0),
            n_ctx_train: m.n_ctx_train(),
            n_ctx_seq: ctx.n_ctx_seq,
            n_seq_max: ctx.n_seq_max,
            n_batch: ctx.n_batch,
            chat_template: m.meta_val_str("tokenizer.chat_template").ok(),
            bos_text: piece(vocab.bos()),
            eos_text: piece(vocab.eos()),
            n_params: m.n_params(),
            size_bytes: m.size(),
        }
    }

    /// Creates an engine (a llama.cpp context) over this model.
    pub fn engine(&self, ctx: &ContextSettings) -> Result<LlamaEngine, EngineError> {
        let info = self.info(ctx);
        let backend = backend()?;
        let n_ctx = ctx
            .n_ctx_seq
            .checked_mul(ctx.n_seq_max)
            .and_then(NonZeroU32::new)
            .ok_or_else(|| EngineError::Load("context size must be positive".into()))?;
        let params = LlamaContextParams::default()
            .with_n_ctx(Some(n_ctx))
            .with_n_seq_max(ctx.n_seq_max)
            .with_n_batch(ctx.n_batch)
            .with_n_ubatch(ctx.n_batch)
            .with_n_threads(ctx.n_threads)
            .with_n_threads_batch(ctx.n_threads)
            // One unified KV cache: llama.cpp then packs any mix of sequences (decode tokens
            // and prefill chunks) into one ubatch. With per-sequence streams it only groups
            // consecutive sequence ids with equal token counts, which serialises continuous
            // batching (docs/decisions/0004). The per-sequence limit is enforced by
            // validation (prompt + max_tokens <= n_ctx_seq), so the total cannot overflow.
            .with_kv_unified(true);
        let cell = ModelContext::try_new(self.model.clone(), |model| {
            model
                .new_context(backend, params)
                .map_err(|e| EngineError::Load(e.to_string()))
        })?;
        Ok(LlamaEngine {
            cell,
            info,
            batch: LlamaBatch::new(ctx.n_batch as usize, 1),
            adapters: Vec::new(),
            applied: None,
            vision: self.vision.clone(),
        })
    }
}

impl ModelSource for LoadedModel {
    type Engine = LlamaEngine;

    fn info(&self, ctx: &ContextSettings) -> ModelInfo {
        LoadedModel::info(self, ctx)
    }

    fn vocab(&self) -> Arc<dyn Vocab> {
        Arc::new(LoadedModel::vocab(self))
    }

    fn engine(&self, ctx: &ContextSettings) -> Result<LlamaEngine, EngineError> {
        LoadedModel::engine(self, ctx)
    }

    fn vision(&self) -> Option<Arc<dyn Vision>> {
        self.vision.clone().map(|v| v as Arc<dyn Vision>)
    }
}

self_cell::self_cell!(
    struct ModelContext {
        owner: Arc<LlamaModel>,
        #[covariant]
        dependent: LlamaContext,
    }
);

/// A llama.cpp context: the KV cache for `n_seq_max` sequences and the forward pass.
pub struct LlamaEngine {
    cell: ModelContext,
    info: ModelInfo,
    batch: LlamaBatch<'static>,
    /// LoRA adapters loaded for this engine, by [`AdapterId`].
    adapters: Vec<LlamaLoraAdapter>,
    /// The adapter the context applies now.
    applied: Option<AdapterId>,
    vision: Option<Arc<LlamaVision>>,
}

impl Engine for LlamaEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn decode(&mut self, batch: &Batch) -> Result<(), EngineError> {
        let max = self.info.n_batch as usize;
        if batch.len() > max {
            return Err(EngineError::BatchTooLarge {
                got: batch.len(),
                max,
            });
        }
        self.batch.clear();
        for t in &batch.tokens {
            let token = LlamaToken::new(t.token as i32);
            self.batch
                .add(token, t.pos as i32, &[t.seq.0 as i32], t.logits)
                .map_err(|e| EngineError::Decode(e.to_string()))?;
        }
        let lb = &mut self.batch;
        self.cell.with_dependent_mut(|_, ctx| {
            ctx.decode(lb).map_err(|e| match e {
                llama_cpp_2::DecodeError::NoKvCacheSlot => EngineError::NoKvSpace,
                other => EngineError::Decode(other.to_string()),
            })
        })
    }

    fn logits(&self, row: usize) -> &[f32] {
        self.cell.borrow_dependent().get_logits_ith(row as i32)
    }

    fn clear_seq(&mut self, seq: SeqId, from: u32) -> bool {
        self.cell.with_dependent_mut(|_, ctx| {
            match ctx.clear_kv_cache_seq(Some(seq.0), Some(from), None) {
                Ok(true) => true,
                // Recurrent and sliding-window memories refuse to drop only a suffix: drop
                // the whole sequence, which they always accept, and report nothing cached.
                _ => {
                    let _ = ctx.clear_kv_cache_seq(Some(seq.0), None, None);
                    from == 0
                }
            }
        })
    }

    fn save_seq(&mut self, seq: SeqId) -> Option<SeqSnapshot> {
        let ctx = self.cell.borrow_dependent();
        let id = seq.0 as i32;
        // Positions held: llama.cpp's state has no count of its own, and the engine loop
        // only needs it for its log.
        let cells = usize::try_from(ctx.kv_cache_seq_pos_max(id) + 1).unwrap_or(0);
        let state = ctx
            .state_seq_get(id, llama_cpp_2::LlamaStateSeqFlags::empty())
            .ok()?;
        Some(SeqSnapshot::new(cells, state))
    }

    fn restore_seq(&mut self, snapshot: &SeqSnapshot, seq: SeqId) -> bool {
        let Some(state) = snapshot.get::<llama_cpp_2::SeqState>() else {
            self.clear_seq(seq, 0);
            return false;
        };
        // llama.cpp empties the sequence first, and again when the cells find no room in one
        // piece.
        self.cell
            .with_dependent_mut(|_, ctx| ctx.state_seq_set(state, seq.0 as i32).is_ok())
    }

    fn share_prefix(&mut self, src: SeqId, dst: SeqId, len: u32) -> bool {
        let copied = self.cell.with_dependent_mut(|_, ctx| {
            let _ = ctx.clear_kv_cache_seq(Some(dst.0), None, None);
            // In the unified cache this tags the cells of `src` at positions `0..len` with
            // `dst` too: both sequences read them, and each writes its own cells after.
            ctx.copy_kv_cache_seq(src.0 as i32, dst.0 as i32, Some(0), Some(len))
                .is_ok()
        });
        // Recurrent memories copy a whole state, whatever the range: dropping what lies past
        // `len` is then refused and the sequence is emptied (see `clear_seq`).
        copied && self.clear_seq(dst, len)
    }

    fn load_adapter(&mut self, path: &std::path::Path) -> Result<AdapterId, EngineError> {
        let adapter = adapter::load(self.cell.borrow_owner(), path)?;
        self.adapters.push(adapter);
        Ok(AdapterId(self.adapters.len() as u32 - 1))
    }

    fn decode_image(
        &mut self,
        image: &PreparedImage,
        seq: SeqId,
        pos: u32,
    ) -> Result<(), EngineError> {
        let vision = (self.vision.clone())
            .ok_or_else(|| EngineError::Decode("this model has no image projector".into()))?;
        let n_batch = self.info.n_batch;
        self.cell
            .with_dependent_mut(|_, ctx| vision.decode(image, ctx, seq, pos, n_batch))
    }

    fn set_adapter(&mut self, adapter: Option<AdapterId>) -> Result<(), EngineError> {
        if adapter == self.applied {
            return Ok(());
        }
        let adapters = &mut self.adapters;
        let result = self.cell.with_dependent_mut(|_, ctx| match adapter {
            Some(id) => {
                let a = adapters
                    .get_mut(id.0 as usize)
                    .ok_or_else(|| EngineError::Decode(format!("no adapter {}", id.0)))?;
                // The scale multiplies the adapter's own alpha / r, as `--lora` does.
                ctx.lora_adapter_set(a, 1.0)
                    .map_err(|e| EngineError::Decode(e.to_string()))
            }
            None => match adapters.first_mut() {
                // Clears every adapter of the context (the argument is not read).
                Some(any) => ctx
                    .lora_adapter_remove(any)
                    .map_err(|e| EngineError::Decode(e.to_string())),
                None => Ok(()),
            },
        });
        if result.is_ok() {
            self.applied = adapter;
        }
        result
    }
}

/// The model's tokenizer. Token pieces are read once at load, so detokenizing is a lookup.
#[derive(Clone)]
pub struct LlamaVocab {
    model: Arc<LlamaModel>,
    pieces: Arc<Vec<Box<[u8]>>>,
    /// Text of control tokens (those whose piece is empty), by token id.
    specials: Arc<Vec<(TokenId, Box<[u8]>)>>,
    eog: Arc<Vec<bool>>,
    bos: Option<TokenId>,
    add_bos: bool,
}

impl LlamaVocab {
    fn new(model: Arc<LlamaModel>) -> Self {
        let v = model.vocab();
        let n = usize::try_from(v.n_tokens()).unwrap_or(0);
        let mut pieces = Vec::with_capacity(n);
        let mut eog = Vec::with_capacity(n);
        let mut specials = Vec::new();
        for id in 0..n {
            let t = LlamaToken::new(id as i32);
            // `special = false`: control tokens (`<|im_end|>`) render as nothing, while
            // user-defined added tokens (`<tool_call>`) still render as their text.
            let piece = v.token_to_piece(t, false, None);
            if piece.is_empty() {
                let text = v.token_to_piece(t, true, None);
                if !text.is_empty() {
                    specials.push((id as TokenId, text.into_boxed_slice()));
                }
            }
            pieces.push(piece.into_boxed_slice());
            eog.push(v.is_eog(t));
        }
        let bos = v.bos().0;
        let bos = u32::try_from(bos).ok();
        let add_bos = v.should_add_bos();
        Self {
            model,
            pieces: Arc::new(pieces),
            specials: Arc::new(specials),
            eog: Arc::new(eog),
            bos,
            add_bos,
        }
    }
}

impl Vocab for LlamaVocab {
    fn n_vocab(&self) -> usize {
        self.pieces.len()
    }

    fn tokenize(&self, text: &str) -> Vec<TokenId> {
        let toks = self.tokenize_piece(text, true);
        let mut out: Vec<TokenId> = Vec::with_capacity(toks.len() + 1);
        if let Some(bos) = self.leading_bos() {
            // Templates that spell out the BOS text already produced it.
            if toks.first() != Some(&bos) {
                out.push(bos);
            }
        }
        out.extend(toks);
        out
    }

    fn tokenize_piece(&self, text: &str, parse_special: bool) -> Vec<TokenId> {
        let v = self.model.vocab();
        let toks = v.tokenize(text.as_bytes(), false, parse_special);
        toks.iter().map(|t| t.0 as u32).collect()
    }

    fn leading_bos(&self) -> Option<TokenId> {
        self.bos.filter(|_| self.add_bos)
    }

    fn control_texts(&self) -> Vec<String> {
        (self.specials.iter())
            .map(|(_, text)| String::from_utf8_lossy(text).into_owned())
            .collect()
    }

    fn max_token_bytes(&self) -> usize {
        self.pieces
            .iter()
            .map(|p| p.len())
            .max()
            .unwrap_or(1)
            .max(1)
    }

    fn token_bytes(&self, token: TokenId) -> Vec<u8> {
        self.pieces
            .get(token as usize)
            .map(|p| p.to_vec())
            .unwrap_or_default()
    }

    fn is_eog(&self, token: TokenId) -> bool {
        self.eog.get(token as usize).copied().unwrap_or(false)
    }

    fn special_text(&self, token: TokenId) -> Option<Vec<u8>> {
        self.specials
            .binary_search_by_key(&token, |(t, _)| *t)
            .ok()
            .map(|i| self.specials[i].1.to_vec())
    }
}

#[cfg(test)]
mod tests {
    /// llama.cpp is built without its AMX kernels (`.cargo/config.toml`): on CPUs that have
    /// AMX, ggml's AMX matrix multiply crashed the first decode of the default and test
    /// models (llama.cpp issue 20824). On such a CPU this fails when the flag is dropped.
    #[test]
    fn llama_cpp_is_built_without_amx() {
        // SAFETY: llama.cpp returns a pointer to its own static, NUL-terminated buffer.
        let info = unsafe { std::ffi::CStr::from_ptr(llama_cpp_sys_2::llama_print_system_info()) };
        let info = info.to_string_lossy();
        assert!(info.contains("CPU :"), "{info}");
        assert!(!info.contains("AMX_INT8 = 1"), "{info}");
    }
}
