//! Incremental, UTF-8-safe detokenization.
//!
//! A token's bytes need not be whole characters: byte-level BPE splits an emoji or a CJK
//! character across tokens. [`IncrementalDecoder`] turns the stream of token bytes into text
//! without ever emitting half a character, and without stalling on bytes that can never
//! become one.
//!
//! ```
//! use peregrine_text::detok::IncrementalDecoder;
//!
//! let mut decoder = IncrementalDecoder::new();
//! let euro = "€".as_bytes(); // 3 bytes
//! assert_eq!(decoder.push(b"1 "), "1 ");
//! assert_eq!(decoder.push(&euro[..2]), ""); // held back
//! assert_eq!(decoder.push(&euro[2..]), "€");
//! assert_eq!(decoder.flush(), "");
//! ```

/// Decodes a stream of byte chunks into UTF-8 text.
///
/// Output is the same as `String::from_utf8_lossy` of all the bytes at once, however they are
/// split: each invalid sequence becomes one U+FFFD as soon as it is known to be invalid, and
/// at most 3 bytes (an incomplete character at the end) are ever held back.
#[derive(Debug, Clone, Default)]
pub struct IncrementalDecoder {
    /// The trailing bytes of an incomplete character (at most 3).
    pending: Vec<u8>,
}

impl IncrementalDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token's bytes; returns the text they complete.
    pub fn push(&mut self, token_bytes: &[u8]) -> String {
        if self.pending.is_empty() {
            // Common case: whole characters, no copy into `pending`.
            let (text, rest) = decode_prefix(token_bytes);
            self.pending.extend_from_slice(rest);
            return text;
        }
        self.pending.extend_from_slice(token_bytes);
        let bytes = std::mem::take(&mut self.pending);
        let (text, rest) = decode_prefix(&bytes);
        self.pending = rest.to_vec();
        text
    }

    /// Ends the stream: returns what was held back, an incomplete character as U+FFFD.
    pub fn flush(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }

    /// Whether bytes are held back waiting for the rest of a character.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Decodes `bytes` up to an incomplete character at the very end, which is returned as the
/// rest. Invalid sequences become U+FFFD, one per maximal invalid subpart (as
/// `from_utf8_lossy` does).
fn decode_prefix(mut bytes: &[u8]) -> (String, &[u8]) {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                out.push_str(text);
                return (out, &[]);
            }
            Err(err) => {
                let (valid, after) = bytes.split_at(err.valid_up_to());
                // The first `valid_up_to` bytes are UTF-8 by definition; no unsafe needed.
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                match err.error_len() {
                    // An incomplete character at the end: it may still be completed.
                    None => return (out, after),
                    Some(len) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        bytes = &after[len..];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_chunks(chunks: &[&[u8]]) -> Vec<String> {
        let mut d = IncrementalDecoder::new();
        let mut out: Vec<String> = chunks.iter().map(|c| d.push(c)).collect();
        out.push(d.flush());
        out
    }

    #[test]
    fn splits_a_four_byte_character_one_byte_at_a_time() {
        let crab = "🦀".as_bytes();
        let out = decode_chunks(&[&crab[..1], &crab[1..2], &crab[2..3], &crab[3..]]);
        assert_eq!(out, ["", "", "", "🦀", ""]);
    }

    #[test]
    fn invalid_bytes_in_the_middle_become_replacement_and_do_not_stall() {
        let out = decode_chunks(&[b"a\xffb", b"\xe2\x82", b"c"]);
        assert_eq!(out, ["a\u{FFFD}b", "", "\u{FFFD}c", ""]);
    }

    #[test]
    fn an_incomplete_character_at_the_end_flushes_as_replacement() {
        let out = decode_chunks(&[b"ok\xf0\x9f"]);
        assert_eq!(out, ["ok", "\u{FFFD}"]);
        let mut d = IncrementalDecoder::new();
        d.push(b"\xe2");
        assert!(d.has_pending());
        d.flush();
        assert!(!d.has_pending());
        assert_eq!(d.push(b"x"), "x");
    }

    #[test]
    fn a_lone_continuation_byte_is_replaced_immediately() {
        assert_eq!(decode_chunks(&[b"\x80", b"z"]), ["\u{FFFD}", "z", ""]);
    }
}
