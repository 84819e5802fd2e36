//! A deterministic engine for tests: byte-level vocabulary, ChatML specials, and a fixed reply.
//!
//! The mock "model" answers every prompt with the same script, one byte per token, then EOS.
//! A script of several replies separated by [`REPLY_SEPARATOR`] answers a conversation's
//! first assistant turn with the first, its second with the second, and so on (the last
//! repeats): tool loops are tested with it.
//! It finds its place in the script from the sequence's own KV history (the bytes after the
//! last `<|im_start|>assistant\n`), so it behaves like a real model under continuous batching:
//! sequences at different positions get different rows in one batch, and a cleared sequence
//! forgets everything.

use std::collections::HashMap;
use std::time::Duration;

use crate::{
    is_image_placeholder, AdapterId, Batch, ContextSettings, Engine, EngineError, ImageError,
    ModelInfo, ModelSource, PreparedImage, SeqId, TokenId, Vision, Vocab,
};

const IM_START: TokenId = 256;
const IM_END: TokenId = 257;
const ENDOFTEXT: TokenId = 258;
const N_VOCAB: usize = 259;
const SPECIALS: [(&str, TokenId); 3] = [
    ("<|im_start|>", IM_START),
    ("<|im_end|>", IM_END),
    ("<|endoftext|>", ENDOFTEXT),
];

/// Separates the replies of a multi-turn script (ASCII record separator).
pub const REPLY_SEPARATOR: char = '\u{1e}';

/// A ChatML template for the mock model.
pub const MOCK_CHAT_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The mock as a [`ModelSource`]: every engine it makes answers with `script`, sized by the
/// context settings (sequence length and slots), sleeping `delay` in each decode.
#[derive(Clone, Debug)]
pub struct MockModel {
    pub script: String,
    pub delay: Duration,
    /// The engine panics in its decode after this many decodes (tests of a dead engine
    /// thread).
    pub panic_after: Option<usize>,
    /// Forward passes its engines ran, readable while they run on their own thread.
    pub decodes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// How long a pass of `i + 1` batch rows takes, by index (past the end: `delay`), so
    /// tests can give passes the cost curve of a real CPU.
    pub row_delays: Vec<Duration>,
    /// A vision model: every image takes this many positions ([`MockVision`]).
    pub image_tokens: Option<u32>,
    /// Sequences its engines copied out of the cache, and put back ([`Engine::save_seq`]).
    pub saves: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub restores: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl MockModel {
    pub fn new(script: &str) -> Self {
        Self {
            script: script.to_string(),
            delay: Duration::ZERO,
            panic_after: None,
            decodes: Default::default(),
            row_delays: Vec::new(),
            image_tokens: None,
            saves: Default::default(),
            restores: Default::default(),
        }
    }

    /// The same mock as a vision model whose images take `n` positions each.
    pub fn with_vision(mut self, n: u32) -> Self {
        self.image_tokens = Some(n);
        self
    }
}

/// The mock's projector: reads PNGs' sizes from their header (nothing else is decoded) and
/// gives every image the same number of positions.
pub struct MockVision {
    n_tokens: u32,
}

impl Vision for MockVision {
    fn prepare(&self, bytes: &[u8], max_pixels: u64) -> Result<PreparedImage, ImageError> {
        const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
        if bytes.len() < 24 || !bytes.starts_with(PNG) {
            return Err(ImageError::Decode("not a PNG image".into()));
        }
        let be = |at: usize| {
            u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let (width, height) = (be(16), be(20));
        if u64::from(width) * u64::from(height) > max_pixels {
            return Err(ImageError::TooLarge {
                width,
                height,
                max: max_pixels,
            });
        }
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        Ok(PreparedImage {
            n_tokens: self.n_tokens,
            hash: h.finish(),
            width,
            height,
            data: std::sync::Arc::new(()),
        })
    }
}

impl ModelSource for MockModel {
    type Engine = MockEngine;

    fn info(&self, ctx: &ContextSettings) -> ModelInfo {
        MockEngine::new(&self.script, ctx.n_ctx_seq, ctx.n_seq_max)
            .info
            .clone()
    }

    fn vocab(&self) -> std::sync::Arc<dyn Vocab> {
        std::sync::Arc::new(MockVocab)
    }

    fn engine(&self, ctx: &ContextSettings) -> Result<MockEngine, EngineError> {
        let mut engine =
            MockEngine::new(&self.script, ctx.n_ctx_seq, ctx.n_seq_max).with_delay(self.delay);
        engine.panic_after = self.panic_after;
        engine.decodes = self.decodes.clone();
        engine.row_delays = self.row_delays.clone();
        engine.vision = self.image_tokens.is_some();
        engine.saves = self.saves.clone();
        engine.restores = self.restores.clone();
        Ok(engine)
    }

    fn vision(&self) -> Option<std::sync::Arc<dyn Vision>> {
        let n_tokens = self.image_tokens?;
        Some(std::sync::Arc::new(MockVision { n_tokens }))
    }
}

/// Byte-level tokenizer with ChatML special tokens.
#[derive(Clone, Debug, Default)]
pub struct MockVocab;

impl Vocab for MockVocab {
    fn n_vocab(&self) -> usize {
        N_VOCAB
    }

    fn tokenize(&self, text: &str) -> Vec<TokenId> {
        self.tokenize_piece(text, true)
    }

    fn tokenize_piece(&self, text: &str, parse_special: bool) -> Vec<TokenId> {
        if !parse_special {
            return text.bytes().map(TokenId::from).collect();
        }
        let mut out = Vec::with_capacity(text.len());
        let mut rest = text;
        'outer: while !rest.is_empty() {
            for (s, id) in SPECIALS {
                if let Some(r) = rest.strip_prefix(s) {
                    out.push(id);
                    rest = r;
                    continue 'outer;
                }
            }
            let ch = rest.chars().next().map_or(1, char::len_utf8);
            out.extend(rest.as_bytes()[..ch].iter().map(|&b| TokenId::from(b)));
            rest = &rest[ch..];
        }
        out
    }

    fn token_bytes(&self, token: TokenId) -> Vec<u8> {
        match u8::try_from(token) {
            Ok(b) => vec![b],
            Err(_) => Vec::new(),
        }
    }

    fn is_eog(&self, token: TokenId) -> bool {
        token == IM_END || token == ENDOFTEXT
    }

    fn special_text(&self, token: TokenId) -> Option<Vec<u8>> {
        SPECIALS
            .iter()
            .find(|(_, id)| *id == token)
            .map(|(s, _)| s.as_bytes().to_vec())
    }
}

/// The deterministic test engine. See the module docs.
pub struct MockEngine {
    info: ModelInfo,
    script: Vec<u8>,
    delay: Duration,
    panic_after: Option<usize>,
    kv: HashMap<SeqId, Vec<TokenId>>,
    rows: Vec<Vec<f32>>,
    /// Number of `decode` calls so far (tests use it to observe batching).
    pub decode_calls: usize,
    /// Largest number of distinct sequences seen in one batch.
    pub max_seqs_in_batch: usize,
    /// `decode_calls`, shared with the [`MockModel`] that made this engine.
    decodes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// See [`MockModel::row_delays`].
    row_delays: Vec<Duration>,
    /// Loaded adapters: each a script of its own (the adapter file's contents), answered by
    /// the sequences decoded under it.
    adapters: Vec<Vec<u8>>,
    applied: Option<AdapterId>,
    /// The adapter each cached token was computed under, by sequence: a pass that feeds a
    /// sequence whose cache holds another adapter's cells fails, as it would be wrong on a
    /// real model (tests of the engine loop's grouping and its prefix cache).
    kv_adapter: HashMap<SeqId, Vec<Option<AdapterId>>>,
    /// Whether it computes images ([`MockModel::with_vision`]).
    vision: bool,
    /// Images computed so far.
    pub images_decoded: usize,
    /// See [`MockModel::saves`].
    saves: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    restores: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl MockEngine {
    /// A mock that answers every prompt with `script`, then EOS.
    pub fn new(script: &str, n_ctx_seq: u32, n_seq_max: u32) -> Self {
        Self {
            info: ModelInfo {
                arch: "mock".into(),
                n_vocab: N_VOCAB,
                n_ctx_train: n_ctx_seq,
                n_ctx_seq,
                n_seq_max,
                n_batch: 64,
                chat_template: Some(MOCK_CHAT_TEMPLATE.into()),
                bos_text: "<|endoftext|>".into(),
                eos_text: "<|im_end|>".into(),
                n_params: 0,
                size_bytes: 0,
            },
            script: script.as_bytes().to_vec(),
            delay: Duration::ZERO,
            panic_after: None,
            kv: HashMap::new(),
            rows: Vec::new(),
            decode_calls: 0,
            max_seqs_in_batch: 0,
            decodes: Default::default(),
            row_delays: Vec::new(),
            adapters: Vec::new(),
            applied: None,
            kv_adapter: HashMap::new(),
            vision: false,
            images_decoded: 0,
            saves: Default::default(),
            restores: Default::default(),
        }
    }

    /// Sleeps this long in every decode, to stand in for real compute in timing tests.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the batch size (tokens per decode).
    pub fn with_n_batch(mut self, n_batch: u32) -> Self {
        self.info.n_batch = n_batch;
        self
    }

    /// Assistant turns opened in `history` before the current one.
    fn assistant_turns(history: &[TokenId], marker: &[TokenId]) -> usize {
        let opened = (0..history.len())
            .filter(|&i| history[i] == IM_START && history[i + 1..].starts_with(marker))
            .count();
        opened.saturating_sub(1)
    }

    /// Reply `turn` of the script (the last one for later turns): the applied adapter's
    /// script, or the model's.
    fn reply(&self, turn: usize) -> &[u8] {
        let sep = REPLY_SEPARATOR as u8;
        let script = match self.applied {
            Some(a) => &self.adapters[a.0 as usize],
            None => &self.script,
        };
        let replies: Vec<&[u8]> = script.split(|&b| b == sep).collect();
        replies[turn.min(replies.len() - 1)]
    }

    fn next_logits(&self, history: &[TokenId]) -> Vec<f32> {
        let marker: Vec<TokenId> = b"assistant\n".iter().map(|&b| TokenId::from(b)).collect();
        let start = history
            .iter()
            .rposition(|&t| t == IM_START)
            .map(|i| i + 1)
            .filter(|&i| history[i..].starts_with(&marker))
            .map(|i| i + marker.len());
        let target = match start {
            Some(s) => {
                let done = history.len() - s;
                let turn = Self::assistant_turns(&history[..s], &marker);
                self.reply(turn)
                    .get(done)
                    .map_or(IM_END, |&b| TokenId::from(b))
            }
            None => IM_END,
        };
        let mut row = vec![0.0; N_VOCAB];
        row[target as usize] = 12.0;
        // A clear runner-up, so top_logprobs and sampling have something to show.
        row[(target as usize + 1) % N_VOCAB] = 6.0;
        row
    }
}

impl Engine for MockEngine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn decode(&mut self, batch: &Batch) -> Result<(), EngineError> {
        if batch.len() > self.info.n_batch as usize {
            return Err(EngineError::BatchTooLarge {
                got: batch.len(),
                max: self.info.n_batch as usize,
            });
        }
        let mut seqs: Vec<SeqId> = batch.tokens.iter().map(|t| t.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let delay = (batch.len())
            .checked_sub(1)
            .and_then(|i| self.row_delays.get(i))
            .copied()
            .unwrap_or(self.delay);
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        if self.panic_after.is_some_and(|n| self.decode_calls >= n) {
            panic!("the mock engine was told to crash");
        }
        self.decode_calls += 1;
        self.decodes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.max_seqs_in_batch = self.max_seqs_in_batch.max(seqs.len());
        self.rows.clear();
        for t in &batch.tokens {
            let tags = self.kv_adapter.entry(t.seq).or_default();
            if let Some(other) = tags.iter().find(|&&a| a != self.applied) {
                return Err(EngineError::Decode(format!(
                    "sequence {:?} fed under adapter {:?} but its cache holds cells of {other:?}",
                    t.seq, self.applied
                )));
            }
            tags.push(self.applied);
            if is_image_placeholder(t.token) {
                return Err(EngineError::Decode(format!(
                    "sequence {:?}: an image placeholder fed as a token at position {}",
                    t.seq, t.pos
                )));
            }
            let hist = self.kv.entry(t.seq).or_default();
            if t.pos as usize != hist.len() {
                return Err(EngineError::Decode(format!(
                    "sequence {:?}: position {} but {} tokens cached",
                    t.seq,
                    t.pos,
                    hist.len()
                )));
            }
            if hist.len() >= self.info.n_ctx_seq as usize {
                return Err(EngineError::NoKvSpace);
            }
            hist.push(t.token);
            let row = if t.logits {
                let hist = &self.kv[&t.seq];
                self.next_logits(hist)
            } else {
                Vec::new()
            };
            self.rows.push(row);
        }
        Ok(())
    }

    fn decode_image(
        &mut self,
        image: &PreparedImage,
        seq: SeqId,
        pos: u32,
    ) -> Result<(), EngineError> {
        if !self.vision {
            return Err(EngineError::Decode(
                "this model has no image projector".into(),
            ));
        }
        let hist = self.kv.entry(seq).or_default();
        if pos as usize != hist.len() {
            return Err(EngineError::Decode(format!(
                "sequence {seq:?}: image at position {pos} but {} tokens cached",
                hist.len()
            )));
        }
        if hist.len() + image.n_tokens as usize > self.info.n_ctx_seq as usize {
            return Err(EngineError::NoKvSpace);
        }
        hist.extend(image.placeholders());
        let tags = self.kv_adapter.entry(seq).or_default();
        tags.extend(std::iter::repeat_n(self.applied, image.n_tokens as usize));
        self.images_decoded += 1;
        Ok(())
    }

    fn logits(&self, row: usize) -> &[f32] {
        let r = &self.rows[row];
        assert!(!r.is_empty(), "row {row} did not ask for logits");
        r
    }

    fn clear_seq(&mut self, seq: SeqId, from: u32) -> bool {
        if let Some(h) = self.kv.get_mut(&seq) {
            h.truncate(from as usize);
        }
        if let Some(h) = self.kv_adapter.get_mut(&seq) {
            h.truncate(from as usize);
        }
        true
    }

    fn save_seq(&mut self, seq: SeqId) -> Option<crate::SeqSnapshot> {
        let kv = self.kv.get(&seq).cloned().unwrap_or_default();
        let tags = self.kv_adapter.get(&seq).cloned().unwrap_or_default();
        self.saves
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(crate::SeqSnapshot::new(kv.len(), (kv, tags)))
    }

    fn restore_seq(&mut self, snapshot: &crate::SeqSnapshot, seq: SeqId) -> bool {
        type Saved = (Vec<TokenId>, Vec<Option<AdapterId>>);
        let Some((kv, tags)) = snapshot.get::<Saved>() else {
            self.kv.remove(&seq);
            self.kv_adapter.remove(&seq);
            return false;
        };
        self.kv.insert(seq, kv.clone());
        self.kv_adapter.insert(seq, tags.clone());
        self.restores
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        true
    }

    fn share_prefix(&mut self, src: SeqId, dst: SeqId, len: u32) -> bool {
        let prefix: Vec<TokenId> = self
            .kv
            .get(&src)
            .map_or_else(Vec::new, |h| h[..(len as usize).min(h.len())].to_vec());
        let tags: Vec<Option<AdapterId>> = (self.kv_adapter.get(&src))
            .map_or_else(Vec::new, |h| h[..(len as usize).min(h.len())].to_vec());
        let ok = prefix.len() == len as usize;
        self.kv.insert(dst, if ok { prefix } else { Vec::new() });
        self.kv_adapter
            .insert(dst, if ok { tags } else { Vec::new() });
        ok
    }

    /// An adapter for the mock is a file holding the script its sequences answer.
    fn load_adapter(&mut self, path: &std::path::Path) -> Result<AdapterId, EngineError> {
        let script = std::fs::read(path)
            .map_err(|e| EngineError::Load(format!("adapter {}: {e}", path.display())))?;
        self.adapters.push(script);
        Ok(AdapterId(self.adapters.len() as u32 - 1))
    }

    fn set_adapter(&mut self, adapter: Option<AdapterId>) -> Result<(), EngineError> {
        if adapter.is_some_and(|a| a.0 as usize >= self.adapters.len()) {
            return Err(EngineError::Decode(format!("no adapter {adapter:?}")));
        }
        self.applied = adapter;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BatchToken;

    fn argmax(row: &[f32]) -> TokenId {
        let mut best = 0;
        for (i, v) in row.iter().enumerate() {
            if *v > row[best] {
                best = i;
            }
        }
        best as TokenId
    }

    #[test]
    fn tokenizes_specials_and_bytes() {
        let v = MockVocab;
        let t = v.tokenize("<|im_start|>hé<|im_end|>");
        assert_eq!(t, vec![IM_START, 104, 0xc3, 0xa9, IM_END]);
        assert!(v.is_eog(IM_END));
        assert!(v.token_bytes(IM_END).is_empty());
    }

    #[test]
    fn follows_script_per_sequence() {
        let v = MockVocab;
        let mut e = MockEngine::new("ok", 64, 2);
        let prompt = v.tokenize("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
        let mut b = Batch::default();
        for (i, &t) in prompt.iter().enumerate() {
            b.push(BatchToken {
                token: t,
                pos: i as u32,
                seq: SeqId(0),
                logits: i + 1 == prompt.len(),
            });
        }
        e.decode(&b).unwrap();
        let last = b.len() - 1;
        assert_eq!(argmax(e.logits(last)), TokenId::from(b'o'));
        b.clear();
        b.push(BatchToken {
            token: TokenId::from(b'o'),
            pos: prompt.len() as u32,
            seq: SeqId(0),
            logits: true,
        });
        e.decode(&b).unwrap();
        assert_eq!(argmax(e.logits(0)), TokenId::from(b'k'));
        e.clear_seq(SeqId(0), 0);
        let err = e.decode(&b).unwrap_err();
        assert!(matches!(err, EngineError::Decode(_)));
    }
}
