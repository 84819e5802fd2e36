//! The seam between Peregrine's runtime and a model backend.
//!
//! Key types, in call order:
//! - [`ModelInfo`]: what the runtime needs to know about a loaded model (context, vocabulary
//!   size, special tokens, chat template).
//! - [`Vocab`]: tokenizer and detokenizer, shared (`Send + Sync`) so request validation can
//!   tokenize on the async side without touching the engine thread.
//! - [`Engine`]: owned by the engine thread. [`Engine::decode`] runs one forward pass over a
//!   [`Batch`] of tokens from several sequences; [`Engine::logits`] reads the rows that asked
//!   for logits; [`Engine::clear_seq`] frees a sequence's KV cache.
//! - [`ModelSource`]: a loaded model that makes engines of a [`ContextSettings`] shape; the
//!   one model builder (`peregrine_runtime::model::build`) takes any source.
//! - [`Vision`]: a vision model's projector, shared like the vocabulary: it turns an image's
//!   bytes into a [`PreparedImage`], which [`Engine::decode_image`] computes into a
//!   sequence's cache. In a prompt an image stands as placeholder tokens
//!   ([`PreparedImage::placeholders`]) that never reach [`Engine::decode`].
//! - [`MockEngine`] / [`MockVocab`] / [`MockModel`]: a deterministic backend for tests.
//!
//! No tokio, no HTTP, no JSON here: the engine sees token ids, positions and prepared
//! images only.

mod mock;

pub use mock::{MockEngine, MockModel, MockVision, MockVocab, MOCK_CHAT_TEMPLATE, REPLY_SEPARATOR};

/// A token id in the model's vocabulary.
pub type TokenId = u32;

/// Set in every image placeholder token and in no vocabulary's token (no vocabulary has
/// 2^31 entries).
pub const IMAGE_PLACEHOLDER: TokenId = 1 << 31;

/// Whether `t` stands for an image position rather than a vocabulary token.
pub fn is_image_placeholder(t: TokenId) -> bool {
    t & IMAGE_PLACEHOLDER != 0
}

/// An image made ready for one model's projector ([`Vision::prepare`]).
#[derive(Clone)]
pub struct PreparedImage {
    /// Prompt positions the image fills: its embeddings and any tokens the projector wraps
    /// it in.
    pub n_tokens: u32,
    /// Of the decoded pixels: equal images get equal placeholders, so a cached prompt
    /// prefix holding an image is reused for that image only.
    pub hash: u64,
    /// The decoded size, in pixels.
    pub width: u32,
    pub height: u32,
    /// The backend's own form of it, for its engine's [`Engine::decode_image`].
    pub data: std::sync::Arc<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for PreparedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedImage")
            .field("n_tokens", &self.n_tokens)
            .field("hash", &self.hash)
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

impl PreparedImage {
    /// The tokens that stand for the image in a prompt: derived from its hash, so two
    /// prompts agree on them exactly when they hold the same image at the same place.
    pub fn placeholders(&self) -> impl Iterator<Item = TokenId> + '_ {
        (0..u64::from(self.n_tokens)).map(move |i| {
            // splitmix64 of (hash, i): placeholders of different images differ at every
            // position but for 2^-31 chances.
            let mut z = self.hash ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            IMAGE_PLACEHOLDER | (((z ^ (z >> 31)) as TokenId) & !IMAGE_PLACEHOLDER)
        })
    }
}

/// Why an image was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("the image could not be decoded: {0}")]
    Decode(String),
    #[error("the image is {width}x{height} pixels, more than the {max} pixels allowed")]
    TooLarge { width: u32, height: u32, max: u64 },
    #[error("the model's projector could not prepare the image: {0}")]
    Prepare(String),
}

/// A vision model's projector, on the request side: decodes and prepares images.
pub trait Vision: Send + Sync {
    /// Decodes `bytes` (PNG, JPEG, ...) and prepares the image for the projector; refuses
    /// images of more than `max_pixels` pixels before preparing them.
    fn prepare(&self, bytes: &[u8], max_pixels: u64) -> Result<PreparedImage, ImageError>;
}

/// A sequence slot in the engine's KV cache, `0..ModelInfo::n_seq_max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u32);

/// Static facts about a loaded model.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// Architecture name from the GGUF (`qwen2`, `llama`, ...).
    pub arch: String,
    /// Vocabulary size: the length of every logits row.
    pub n_vocab: usize,
    /// Context length the model was trained with.
    pub n_ctx_train: u32,
    /// Tokens of KV cache available to one sequence (prompt + completion).
    pub n_ctx_seq: u32,
    /// Number of sequences the engine can hold at once.
    pub n_seq_max: u32,
    /// Most tokens one [`Engine::decode`] call accepts.
    pub n_batch: u32,
    /// The `tokenizer.chat_template` Jinja source, when the model has one.
    pub chat_template: Option<String>,
    /// Text of the BOS token (templates refer to it as `bos_token`).
    pub bos_text: String,
    /// Text of the EOS token (templates refer to it as `eos_token`).
    pub eos_text: String,
    /// Parameter count.
    pub n_params: u64,
    /// Size of the weights in bytes.
    pub size_bytes: u64,
}

/// Errors a backend can report.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("failed to load model: {0}")]
    Load(String),
    #[error("batch of {got} tokens exceeds the engine's batch size {max}")]
    BatchTooLarge { got: usize, max: usize },
    #[error("the KV cache has no room for this batch")]
    NoKvSpace,
    #[error("decode failed: {0}")]
    Decode(String),
}

/// Tokenizer and detokenizer for one model. Cheap to share.
pub trait Vocab: Send + Sync {
    /// Vocabulary size.
    fn n_vocab(&self) -> usize;
    /// Tokenizes a rendered prompt. Special-token text (`<|im_start|>`) becomes special tokens;
    /// a BOS is added when the model asks for one and the text does not already start with it.
    fn tokenize(&self, text: &str) -> Vec<TokenId>;
    /// Tokenizes one piece of a prompt, never adding BOS. With `parse_special = false`,
    /// control-token text (`<|im_end|>`) is read as ordinary text: for client text that
    /// must not open or close turns.
    fn tokenize_piece(&self, text: &str, parse_special: bool) -> Vec<TokenId>;
    /// The BOS token [`Vocab::tokenize`] puts first, when the model asks for one.
    fn leading_bos(&self) -> Option<TokenId> {
        None
    }
    /// The texts of the control tokens (those [`Vocab::tokenize`] reads as one special
    /// token and [`Vocab::token_bytes`] renders as nothing).
    fn control_texts(&self) -> Vec<String> {
        (0..self.n_vocab() as TokenId)
            .filter_map(|t| self.special_text(t))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect()
    }
    /// The most bytes one token stands for: a prompt of `n` bytes has at least
    /// `n / max_token_bytes()` tokens.
    fn max_token_bytes(&self) -> usize {
        (0..self.n_vocab() as TokenId)
            .map(|t| self.token_bytes(t).len())
            .max()
            .unwrap_or(1)
            .max(1)
    }
    /// The bytes a token contributes to output text (may be part of a UTF-8 character).
    /// Control tokens render as nothing.
    fn token_bytes(&self, token: TokenId) -> Vec<u8>;
    /// Whether the token ends generation (EOS, EOT, `<|im_end|>`, ...).
    fn is_eog(&self, token: TokenId) -> bool;
    /// The text of a control token that renders as nothing (`<|im_end|>`), so grammars can
    /// name it; `None` for ordinary tokens.
    fn special_text(&self, _token: TokenId) -> Option<Vec<u8>> {
        None
    }
}

/// One token placed in a [`Batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchToken {
    pub token: TokenId,
    /// Position of the token in its sequence, from 0.
    pub pos: u32,
    pub seq: SeqId,
    /// Whether logits are wanted for this token after the decode.
    pub logits: bool,
}

/// The tokens of one forward pass, from any number of sequences.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub tokens: Vec<BatchToken>,
}

impl Batch {
    pub fn clear(&mut self) {
        self.tokens.clear();
    }

    pub fn push(&mut self, token: BatchToken) {
        self.tokens.push(token);
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// A model backend, owned by one thread.
pub trait Engine {
    fn info(&self) -> &ModelInfo;
    /// Runs one forward pass. After it returns, [`Engine::logits`] is valid for every batch
    /// row whose `logits` flag was set.
    fn decode(&mut self, batch: &Batch) -> Result<(), EngineError>;
    /// The logits row for batch row `row` of the last [`Engine::decode`].
    ///
    /// # Panics
    /// When that row did not ask for logits.
    fn logits(&self, row: usize) -> &[f32];
    /// Drops the KV cache of positions `from..` of a sequence (all of it for `from = 0`).
    /// Returns `false` when the cache cannot drop only a suffix (recurrent or sliding-window
    /// memory) and dropped the whole sequence instead: nothing of it is cached then.
    fn clear_seq(&mut self, seq: SeqId, from: u32) -> bool;
    /// Replaces everything `dst` holds with positions `0..len` of `src`, so a prompt another
    /// sequence already computed is not computed again. In llama.cpp's unified cache the two
    /// sequences then share those cells (no copy). Returns `false` when the cache cannot share
    /// only a prefix; `dst` then holds nothing.
    fn share_prefix(&mut self, src: SeqId, dst: SeqId, len: u32) -> bool;
    /// Loads a LoRA adapter (llama.cpp's GGUF adapter format) for this model, without
    /// applying it. Engines that cannot refuse.
    fn load_adapter(&mut self, path: &std::path::Path) -> Result<AdapterId, EngineError> {
        Err(EngineError::Load(format!(
            "this engine cannot load LoRA adapters ({})",
            path.display()
        )))
    }
    /// Computes `image` into sequence `seq` at positions `pos..pos + image.n_tokens`
    /// (under the adapter applied now). Engines without a projector refuse.
    fn decode_image(
        &mut self,
        image: &PreparedImage,
        seq: SeqId,
        pos: u32,
    ) -> Result<(), EngineError> {
        let _ = (image, seq, pos);
        Err(EngineError::Decode(
            "this model has no image projector".into(),
        ))
    }
    /// Applies `adapter` to every forward pass from the next [`Engine::decode`] on (`None`:
    /// the base model alone). llama.cpp applies adapters per context, so one pass runs one
    /// adapter: the engine loop groups sequences by adapter.
    fn set_adapter(&mut self, adapter: Option<AdapterId>) -> Result<(), EngineError> {
        match adapter {
            None => Ok(()),
            Some(a) => Err(EngineError::Decode(format!("no adapter {}", a.0))),
        }
    }
    /// Copies what `seq` holds out of the cache (into host memory), leaving the cache as it
    /// was; `None` where the engine cannot.
    fn save_seq(&mut self, seq: SeqId) -> Option<SeqSnapshot> {
        let _ = seq;
        None
    }
    /// Replaces what `seq` holds with the cells of a snapshot this engine saved. False when
    /// they cannot be put back (no room in one piece): `seq` then holds nothing.
    fn restore_seq(&mut self, snapshot: &SeqSnapshot, seq: SeqId) -> bool {
        let _ = (snapshot, seq);
        false
    }
}

/// A sequence's cells copied out of an engine's cache ([`Engine::save_seq`]), in the form
/// that engine reads back ([`Engine::restore_seq`]).
pub struct SeqSnapshot {
    /// How many cells it holds.
    pub cells: usize,
    data: Box<dyn std::any::Any + Send>,
}

impl SeqSnapshot {
    pub fn new<T: std::any::Any + Send>(cells: usize, data: T) -> Self {
        Self {
            cells,
            data: Box::new(data),
        }
    }

    /// The engine's own form of it, if it is `T`.
    pub fn get<T: std::any::Any>(&self) -> Option<&T> {
        self.data.downcast_ref()
    }
}

impl std::fmt::Debug for SeqSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeqSnapshot")
            .field("cells", &self.cells)
            .finish_non_exhaustive()
    }
}

/// A LoRA adapter an engine loaded ([`Engine::load_adapter`]), by load order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AdapterId(pub u32);

/// How to size the context of an engine.
#[derive(Clone, Debug)]
pub struct ContextSettings {
    /// KV cache tokens per sequence (prompt + completion).
    pub n_ctx_seq: u32,
    /// Sequences decoded together.
    pub n_seq_max: u32,
    /// Most tokens per decode call (also the prefill chunk budget).
    pub n_batch: u32,
    /// CPU threads for decoding and prompt processing.
    pub n_threads: i32,
    /// Layers to offload to a GPU (0 on CPU builds).
    pub n_gpu_layers: u32,
}

/// A loaded model: what the runtime needs before the engine thread starts (facts and the
/// vocabulary), and a way to make the engine on that thread. Cheap to clone (shared weights).
pub trait ModelSource: Clone + Send + 'static {
    type Engine: Engine + 'static;
    /// Static facts, for a context of the given shape.
    fn info(&self, ctx: &ContextSettings) -> ModelInfo;
    /// The tokenizer, shared with request preparation.
    fn vocab(&self) -> std::sync::Arc<dyn Vocab>;
    /// Makes an engine; called on the engine thread, so the engine need not be `Send`.
    fn engine(&self, ctx: &ContextSettings) -> Result<Self::Engine, EngineError>;
    /// The image projector, for a vision model loaded with one.
    fn vision(&self) -> Option<std::sync::Arc<dyn Vision>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(hash: u64, n_tokens: u32) -> PreparedImage {
        PreparedImage {
            n_tokens,
            hash,
            width: 1,
            height: 1,
            data: std::sync::Arc::new(()),
        }
    }

    #[test]
    fn placeholders_are_outside_every_vocabulary_and_follow_the_image() {
        let a: Vec<TokenId> = image(1, 64).placeholders().collect();
        assert_eq!(a.len(), 64);
        assert!(a.iter().all(|&t| is_image_placeholder(t)));
        assert_eq!(a, image(1, 64).placeholders().collect::<Vec<_>>());
        let b: Vec<TokenId> = image(2, 64).placeholders().collect();
        assert!(a.iter().zip(&b).all(|(x, y)| x != y), "{a:?} {b:?}");
        // Positions within one image differ too.
        let mut sorted = a.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), a.len());
        assert!(!is_image_placeholder(151_935));
    }
}
