//! Property tests: however the stream is cut, the decoder and the stop matcher produce the
//! same text as processing it in one piece.

use peregrine_text::{IncrementalDecoder, StopMatcher};
use proptest::prelude::*;

/// Cuts `len` into pieces at the given (sorted, deduplicated) points.
fn cut_points(len: usize, mut cuts: Vec<usize>) -> Vec<(usize, usize)> {
    cuts.retain(|&c| c > 0 && c < len);
    cuts.sort_unstable();
    cuts.dedup();
    let mut bounds = vec![0];
    bounds.extend(cuts);
    bounds.push(len);
    bounds.windows(2).map(|w| (w[0], w[1])).collect()
}

fn decode_in_pieces(bytes: &[u8], cuts: Vec<usize>) -> String {
    let mut decoder = IncrementalDecoder::new();
    let mut out = String::new();
    for (start, end) in cut_points(bytes.len(), cuts) {
        let piece = decoder.push(&bytes[start..end]);
        out.push_str(&piece);
    }
    out.push_str(&decoder.flush());
    out
}

/// Text from a small alphabet with multi-byte characters, so stop strings actually occur.
fn alphabet_text(max_len: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![Just('a'), Just('b'), Just('é'), Just('€')],
        0..max_len,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn expected_truncation(text: &str, stops: &[String]) -> (String, bool) {
    match stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
    {
        Some(at) => (text[..at].to_owned(), true),
        None => (text.to_owned(), false),
    }
}

/// Pushes `text` cut at the given char positions; returns the emitted text (plus the flush
/// when no stop was seen) and whether a stop was seen.
fn run_matcher(text: &str, stops: &[String], cuts: Vec<usize>) -> (String, bool) {
    let chars: Vec<char> = text.chars().collect();
    let mut matcher = StopMatcher::new(stops.to_vec());
    let mut out = String::new();
    let mut stopped = false;
    for (start, end) in cut_points(chars.len(), cuts) {
        let piece: String = chars[start..end].iter().collect();
        let step = matcher.push(&piece);
        assert!(!stopped || step.emit.is_empty(), "emitted after a stop");
        out.push_str(&step.emit);
        stopped |= step.stopped;
    }
    if !stopped {
        out.push_str(&matcher.flush());
    }
    (out, stopped)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoder_reassembles_any_string(text in any::<String>(), cuts in proptest::collection::vec(0usize..64, 0..16)) {
        prop_assert_eq!(decode_in_pieces(text.as_bytes(), cuts), text);
    }

    #[test]
    fn decoder_matches_lossy_decoding_of_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..48), cuts in proptest::collection::vec(0usize..48, 0..16)) {
        prop_assert_eq!(decode_in_pieces(&bytes, cuts), String::from_utf8_lossy(&bytes).into_owned());
    }

    #[test]
    fn decoder_never_emits_partial_characters(text in "[a-zé€🦀]{0,16}") {
        // One byte at a time: every emitted piece is whole characters of the original.
        let mut decoder = IncrementalDecoder::new();
        let mut out = String::new();
        for b in text.as_bytes() {
            let piece = decoder.push(std::slice::from_ref(b));
            prop_assert!(!piece.contains(char::REPLACEMENT_CHARACTER), "replacement in {:?}", piece);
            out.push_str(&piece);
            prop_assert!(text.starts_with(&out));
        }
        prop_assert_eq!(decoder.flush(), "");
        prop_assert_eq!(out, text);
    }

    #[test]
    fn stop_matcher_truncates_at_the_earliest_stop_of_a_single_stop_string(
        text in alphabet_text(40),
        stop in alphabet_text(4),
        cuts in proptest::collection::vec(0usize..40, 0..12),
    ) {
        let stops = vec![stop];
        let (out, stopped) = run_matcher(&text, &stops, cuts);
        prop_assert_eq!((out, stopped), expected_truncation(&text, &stops));
    }

    #[test]
    fn stop_matcher_in_one_push_truncates_at_the_earliest_stop(
        text in alphabet_text(40),
        stops in proptest::collection::vec(alphabet_text(4), 0..4),
    ) {
        let (out, stopped) = run_matcher(&text, &stops, vec![]);
        prop_assert_eq!((out, stopped), expected_truncation(&text, &stops));
    }

    #[test]
    fn stop_matcher_stops_at_the_first_push_that_completes_a_stop(
        text in alphabet_text(40),
        stops in proptest::collection::vec(alphabet_text(4), 0..4),
        cuts in proptest::collection::vec(0usize..40, 0..12),
    ) {
        // With several stop strings, generation ends as soon as any of them has appeared:
        // the text is cut at the earliest stop in the text seen so far, even if a longer stop
        // string starting earlier could still have completed with later tokens (those tokens
        // are never generated). With stops ["€", "é€a"] and pushes "é€", "a", the output is
        // "é", not "".
        let chars: Vec<char> = text.chars().collect();
        let pieces = cut_points(chars.len(), cuts.clone());
        let mut want = (text.clone(), false);
        for &(_, end) in &pieces {
            let seen: String = chars[..end].iter().collect();
            let (cut, stopped) = expected_truncation(&seen, &stops);
            if stopped {
                want = (cut, true);
                break;
            }
        }
        prop_assert_eq!(run_matcher(&text, &stops, cuts), want);
    }

    #[test]
    fn stop_matcher_emits_only_text_that_cannot_start_a_stop(
        text in alphabet_text(30),
        stops in proptest::collection::vec(alphabet_text(4), 1..4),
    ) {
        // Char by char: at every point, what is emitted so far plus what is held back is
        // the input so far, and no emitted suffix overlaps a stop string that could still
        // complete with later text.
        let mut matcher = StopMatcher::new(stops.clone());
        let mut emitted = String::new();
        for (i, c) in text.char_indices() {
            let step = matcher.push(c.encode_utf8(&mut [0; 4]));
            emitted.push_str(&step.emit);
            if step.stopped {
                break;
            }
            let seen = &text[..i + c.len_utf8()];
            prop_assert!(seen.starts_with(&emitted));
            let held = &seen[emitted.len()..];
            prop_assert!(held.is_empty() || stops.iter().any(|s| s.starts_with(held)));
        }
    }
}
