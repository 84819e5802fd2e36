//! The model's vocabulary as llguidance sees it: a token trie of byte strings, with control
//! tokens (`<|im_end|>`) written as `\xFF` + their text so no grammar can produce them as text,
//! and every end-of-generation token marked as EOS.

use std::sync::Arc;

use peregrine_engine::{TokenId, Vocab};
use toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};

/// Builds the llguidance tokenizer environment of `vocab`.
///
/// Tokenization inside llguidance (only used for forced text) is the trie's greedy one, not the
/// model's: Peregrine samples every token itself and never splices forced tokens.
pub fn tok_env(vocab: &dyn Vocab) -> TokEnv {
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
    Arc::new(ApproximateTokEnv::new(trie))
}

#[cfg(test)]
mod tests {
    use super::*;
    use peregrine_engine::MockVocab;

    #[test]
    fn control_tokens_are_special_and_eog_tokens_are_eos() {
        let env = tok_env(&MockVocab);
        let trie = env.tok_trie();
        assert_eq!(trie.vocab_size(), MockVocab.n_vocab());
        assert_eq!(trie.token(u32::from(b'a')), b"a");
        assert!(trie.is_special_token(257));
        assert!(trie.eos_token_set().is_allowed(257));
        assert!(trie.eos_token_set().is_allowed(258));
        assert!(!trie.eos_token_set().is_allowed(u32::from(b'a')));
    }
}
