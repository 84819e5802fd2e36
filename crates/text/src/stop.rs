//! Stop strings over streamed text.
//!
//! Text arrives a token at a time and a stop string can span tokens, so text that might be
//! the start of a stop string is held back until it is known not to be one. Nothing of a stop
//! string, or after it, is ever emitted.
//!
//! ```
//! use peregrine_text::stop::StopMatcher;
//!
//! let mut m = StopMatcher::new(vec!["\nUser:".to_owned()]);
//! let step = m.push("Hi!\nUs");
//! assert_eq!((step.emit.as_str(), step.stopped), ("Hi!", false)); // "\nUs" held back
//! let step = m.push("er: more");
//! assert_eq!((step.emit.as_str(), step.stopped), ("", true));
//! ```

/// The outcome of one [`StopMatcher::push`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopStep {
    /// Text that is safe to send to the client now.
    pub emit: String,
    /// A stop string completed: `emit` is everything before it, and generation should end.
    pub stopped: bool,
}

/// Finds the earliest occurrence of any of a set of stop strings in streamed text.
///
/// Holds back at most (longest stop string − 1) bytes between pushes.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Text not yet emitted: always a proper prefix of some stop string, between pushes.
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// Empty stop strings are ignored (they would match before any text).
    pub fn new(stops: Vec<String>) -> Self {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// Whether a stop string has been seen; later pushes emit nothing.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Adds generated text; returns what can be emitted.
    pub fn push(&mut self, text: &str) -> StopStep {
        if self.stopped {
            return StopStep {
                emit: String::new(),
                stopped: true,
            };
        }
        if self.stops.is_empty() {
            return StopStep {
                emit: text.to_owned(),
                stopped: false,
            };
        }
        self.held.push_str(text);
        // Held text was a proper prefix of a stop string with no complete match, so every
        // occurrence starts in `held` and is found here, earliest first.
        if let Some(start) = self.stops.iter().filter_map(|s| self.held.find(s)).min() {
            self.held.truncate(start);
            self.stopped = true;
            return StopStep {
                emit: std::mem::take(&mut self.held),
                stopped: true,
            };
        }
        let keep_from = self.partial_match_start();
        let held = self.held.split_off(keep_from);
        let emit = std::mem::replace(&mut self.held, held);
        StopStep {
            emit,
            stopped: false,
        }
    }

    /// Ends the stream: releases held-back text (empty after a stop).
    pub fn flush(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        std::mem::take(&mut self.held)
    }

    /// Start of the longest suffix of `held` that is a proper prefix of some stop string
    /// (`held.len()` if none). It is a char boundary: a stop string starts with one, so a
    /// suffix starting mid-character cannot match.
    fn partial_match_start(&self) -> usize {
        let bytes = self.held.as_bytes();
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let earliest = bytes.len().saturating_sub(longest.saturating_sub(1));
        (earliest..bytes.len())
            .find(|&i| {
                let suffix = &bytes[i..];
                self.stops.iter().any(|s| s.as_bytes().starts_with(suffix))
            })
            .unwrap_or(bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], chunks: &[&str]) -> (Vec<StopStep>, String) {
        let mut m = StopMatcher::new(stops.iter().map(|s| (*s).to_owned()).collect());
        let steps = chunks.iter().map(|c| m.push(c)).collect();
        (steps, m.flush())
    }

    fn step(emit: &str, stopped: bool) -> StopStep {
        StopStep {
            emit: emit.to_owned(),
            stopped,
        }
    }

    #[test]
    fn holds_back_a_partial_match_and_releases_it_when_it_diverges() {
        let (steps, rest) = run(&["</s>"], &["a<", "/x", "y"]);
        assert_eq!(
            steps,
            [step("a", false), step("</x", false), step("y", false)]
        );
        assert_eq!(rest, "");
    }

    #[test]
    fn stops_on_a_match_spanning_pushes() {
        let (steps, rest) = run(&["STOP"], &["abcST", "O", "Pdef"]);
        assert_eq!(steps, [step("abc", false), step("", false), step("", true)]);
        assert_eq!(rest, "");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let (steps, _) = run(&["cd", "bcdx", "b"], &["abcd"]);
        assert_eq!(steps, [step("a", true)]);
    }

    #[test]
    fn flush_releases_an_unfinished_partial_match() {
        let (steps, rest) = run(&["###"], &["x##"]);
        assert_eq!(steps, [step("x", false)]);
        assert_eq!(rest, "##");
    }

    #[test]
    fn nothing_after_a_stop() {
        let mut m = StopMatcher::new(vec!["x".into()]);
        assert_eq!(m.push("ax"), step("a", true));
        assert!(m.is_stopped());
        assert_eq!(m.push("more"), step("", true));
        assert_eq!(m.flush(), "");
    }

    #[test]
    fn empty_stop_strings_are_ignored() {
        let (steps, rest) = run(&["", ""], &["ab", "c"]);
        assert_eq!(steps, [step("ab", false), step("c", false)]);
        assert_eq!(rest, "");
    }

    #[test]
    fn multibyte_text_and_stops() {
        let (steps, rest) = run(&["é!"], &["café", "!"]);
        assert_eq!(steps, [step("caf", false), step("", true)]);
        assert_eq!(rest, "");
    }
}
