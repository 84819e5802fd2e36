//! The model's vocabulary as llguidance sees it: a token trie of byte strings, with control
//! tokens (`<|im_end|>`) written as `\xFF` + their text so no grammar can produce them as text,
//! and every end-of-generation token marked as EOS.

use std::sync::Arc;

use peregrine_engine::{TokenId, Vocab};
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenizerEnv};

/// The trie, and the model's own tokenizer for text the grammar forces.
struct ModelTokEnv {
    trie: TokTrie,
    vocab: Arc<dyn Vocab>,
}

impl TokenizerEnv for ModelTokEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// The model's tokenization of `s`, so forced tokens are the ones the model would have
    /// been shown for that text (jump-forward appends them). Where that does not spell `s`
    /// byte for byte (a SentencePiece space prefix, bytes that are not UTF-8), the trie's
    /// greedy tokenization, which always does.
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        if let Ok(text) = std::str::from_utf8(s) {
            let tokens = self.vocab.tokenize_piece(text, false);
            if self.trie.decode_raw(&tokens) == s {
                return tokens;
            }
        }
        self.trie.greedy_tokenize(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        true
    }
}

/// Builds the llguidance tokenizer environment of `vocab`.
pub fn tok_env(vocab: Arc<dyn Vocab>) -> TokEnv {
    let n = vocab.n_vocab();
    let mut words = Vec::with_capacity(n);
    let mut eos: Vec<TokenId> = Vec::new();
    for id in 0..n as TokenId {
        if vocab.is_eog(id) {
            eos.push(id);
        }
        let bytes = vocab.token_bytes(id);
        if bytes.is_empty() {
            match vocab.special_text(id) {
                Some(text) => {
                    let mut marked = Vec::with_capacity(text.len() + 1);
                    marked.push(TokTrie::SPECIAL_TOKEN_MARKER);
                    marked.extend(text);
                    words.push(marked);
                }
                None => words.push(Vec::new()),
            }
        } else {
            words.push(bytes);
        }
    }
    let tok_eos = eos.first().copied().unwrap_or(0);
    let info = TokRxInfo::new(n as u32, tok_eos);
    let mut trie = TokTrie::from(&info, &words);
    if !eos.is_empty() {
        trie = trie.with_eos_tokens(&eos);
    }
    Arc::new(ModelTokEnv { trie, vocab })
}

#[cfg(test)]
mod tests {
    use super::*;
    use peregrine_engine::MockVocab;

    #[test]
    fn control_tokens_are_special_and_eog_tokens_are_eos() {
        let env = tok_env(Arc::new(MockVocab));
        let trie = env.tok_trie();
        assert_eq!(trie.vocab_size(), MockVocab.n_vocab());
        assert_eq!(trie.token(u32::from(b'a')), b"a");
        assert!(trie.is_special_token(257));
        assert!(trie.eos_token_set().is_allowed(257));
        assert!(trie.eos_token_set().is_allowed(258));
        assert!(!trie.eos_token_set().is_allowed(u32::from(b'a')));
    }
}
