//! Speculative decoding on a real GGUF (SmolLM2-135M in CI): greedy answers to 20 prompts are
//! the same token for token with drafts checked on every step (`always`) as without them.
//! This proves the verify path (draft rows, sampling row by row, dropping the cells of wrong
//! drafts) on llama.cpp's real cache; whether drafts pay is the benchmark's question
//! (`peregrine bench --speculation`). The same holds with a draft model (the same GGUF loaded
//! a second time: it proves the draft model's own cache following each sequence, not the
//! quality of a smaller model's guesses), and a draft model of another vocabulary is refused.

mod support;

use std::path::PathBuf;

use peregrine_runtime::{MaskStats, RuntimeConfig, Speculation};
use serde_json::json;
use support::Fixture;

fn model_path() -> Option<PathBuf> {
    support::model_from_env("PEREGRINE_TEST_MODEL", "the speculation test")
}

const CODE: &str = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n";

fn prompts() -> Vec<String> {
    let mut p: Vec<String> = [
        "Repeat this code exactly:",
        "Repeat this code, renaming add to plus:",
        "Repeat this code, renaming sub to minus:",
        "Add a docstring to each function in this code:",
        "Rewrite this code with type hints:",
        "Repeat this code twice:",
    ]
    .iter()
    .map(|q| format!("{q}\n\n{CODE}"))
    .collect();
    p.extend(
        [
            "List the days of the week, one per line.",
            "Count from 1 to 20, separated by commas.",
            "Write the alphabet in capital letters, separated by spaces.",
            "Repeat the word falcon ten times.",
            "What is the capital of France?",
            "Write a haiku about the sea.",
            "Name three colors.",
            "Write a short story about a cat.",
            "Explain what a variable is in programming.",
            "Write a Python function that reverses a string.",
            "Write a JSON object with keys name and age.",
            "List the first ten prime numbers.",
            "Say hello in five languages.",
            "Write the months of the year, one per line.",
        ]
        .map(String::from),
    );
    p
}

async fn greedy(f: &Fixture, prompt: &str) -> (String, u32) {
    let body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": 64,
    });
    let (text, done) = support::complete(f, &body.to_string()).await;
    (text, done.usage.completion_tokens)
}

/// The greedy answers to every prompt, in order, on a fresh server with `speculation` (and the
/// draft model at `draft`, if any), and the drafting counters. Each mode gets its own server
/// that starts empty: with the same requests in the same order, both modes then reuse the same
/// cached prefixes, so the prefill passes have the same shapes and the only difference left is
/// the drafts. (On one server, the second mode would find other prefixes cached; a prefill of
/// another shape rounds otherwise and can flip a near-tie between two tokens.)
async fn answers(
    path: &std::path::Path,
    draft: Option<&std::path::Path>,
    speculation: Speculation,
) -> (Vec<(String, u32)>, MaskStats) {
    let runtime = RuntimeConfig {
        speculation,
        ..RuntimeConfig::default()
    };
    let s = support::settings(1024, 2, 256, 2, runtime);
    let f = match draft {
        Some(d) => support::start_with_draft(path, d, &s),
        None => support::start_with(path, &s),
    };
    let mut out = Vec::new();
    for p in prompts() {
        out.push(greedy(&f, &p).await);
    }
    (out, f.runtime.mask_stats())
}

fn assert_same(got: &[(String, u32)], expected: &[(String, u32)]) {
    for ((p, got), expected) in prompts().iter().zip(got).zip(expected) {
        assert_eq!(got, expected, "prompt {p:?}");
    }
}

#[tokio::test]
async fn greedy_answers_are_the_same_with_drafts_checked_every_step() {
    let Some(path) = model_path() else { return };
    let (plain, _) = answers(&path, None, Speculation::Off).await;
    let (drafted, stats) = answers(&path, None, Speculation::Always).await;
    assert_same(&drafted, &plain);
    assert!(
        stats.accepted_tokens > 50 && stats.drafted_tokens > stats.accepted_tokens,
        "drafts were checked, some right and some wrong: {stats:?}"
    );
}

#[tokio::test]
async fn greedy_answers_are_the_same_with_a_draft_model() {
    let Some(path) = model_path() else { return };
    let (plain, _) = answers(&path, Some(&path), Speculation::Off).await;
    // `always` drafts with the draft model on every step it has one.
    let (drafted, stats) = answers(&path, Some(&path), Speculation::Always).await;
    assert_same(&drafted, &plain);
    // The same weights guess (nearly) every token right: a drafted token is wrong only where
    // a batched pass rounds otherwise than the draft model's one-row pass, or past the end.
    assert!(
        stats.accepted_tokens * 10 > stats.drafted_tokens * 7,
        "the draft model's guesses were checked and mostly right: {stats:?}"
    );
}

#[test]
fn a_draft_model_of_another_vocabulary_is_refused() {
    let Some(path) = model_path() else { return };
    let Some(other) = support::model_path("the draft-model vocabulary test") else {
        return;
    };
    let target = peregrine_llama::LoadedModel::load(&path, 0).expect("model loads");
    let draft = peregrine_llama::LoadedModel::load(&other, 0).expect("model loads");
    let s = support::settings(256, 1, 64, 1, RuntimeConfig::default());
    match peregrine_runtime::build_with_draft(&target, Some(&draft), &s) {
        Err(peregrine_runtime::BuildError::Draft(why)) => {
            assert!(
                why.contains("vocabulary") || why.contains("differs"),
                "{why}"
            )
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a draft model of another vocabulary was accepted"),
    }
}
