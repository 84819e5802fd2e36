//! Helpers shared by the grammar tests over the mock's byte vocabulary.

use peregrine_engine::{MockVocab, TokenId};
use peregrine_grammar::{Constraint, GrammarLimits, Grammars};

pub fn grammars() -> Grammars {
    Grammars::new(std::sync::Arc::new(MockVocab), GrammarLimits::default()).unwrap()
}

/// Feeds `text` byte by byte, checking each byte is allowed by the mask first.
pub fn feed(c: &mut Constraint, text: &str) -> Result<(), String> {
    for &b in text.as_bytes() {
        c.compute_mask().map_err(|e| e.to_string())?;
        let t = TokenId::from(b);
        if !c.allows(t) {
            return Err(format!("byte {:?} not allowed", b as char));
        }
        c.commit(t).map_err(|e| e.to_string())?;
    }
    Ok(())
}
