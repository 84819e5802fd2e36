//! Jump-forward on the mock engine: the tokens a schema forces (keys, punctuation) are fed in
//! one forward pass with the sampled token before them. Same answer, fewer passes.

use std::sync::atomic::Ordering;

use crate::support;

use peregrine_engine::MockModel;
use peregrine_runtime::{BuiltModel, RuntimeConfig};
use serde_json::json;

/// What the mock writes: a value of [`schema`] whose keys are long and fixed.
const ANSWER: &str = r#"{"customer_identifier": 7, "is_priority_customer": true, "preferred_contact_channel": "email"}"#;

fn schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {
            "customer_identifier": {"type": "integer"},
            "is_priority_customer": {"type": "boolean"},
            "preferred_contact_channel": {"type": "string", "enum": ["email", "phone"]}
        },
        "required": ["customer_identifier", "is_priority_customer", "preferred_contact_channel"],
        "additionalProperties": false
    })
}

/// The text of one greedy request, and its completion token count (`None` when the value
/// was refused as unfinished).
async fn answer(m: &BuiltModel, extra: serde_json::Value) -> (String, Option<u32>) {
    let mut body = json!({
        "model": "m",
        "messages": [{"role": "user", "content": "A customer, as JSON."}],
        "temperature": 0,
        "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema()}},
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    support::complete(m, &body).await
}

/// Runs one request on a fresh model; returns its answer and the forward passes it took.
async fn run(jump_forward: bool, extra: serde_json::Value) -> (String, Option<u32>, usize, u64) {
    let model = MockModel::new(ANSWER);
    let runtime = RuntimeConfig {
        jump_forward,
        ..RuntimeConfig::default()
    };
    let m = support::start(&model, 2048, runtime);
    let (text, tokens) = answer(&m, extra).await;
    let passes = model.decodes.load(Ordering::Relaxed);
    (text, tokens, passes, m.runtime.mask_stats().forced_tokens)
}

#[tokio::test]
async fn forced_keys_are_fed_together_and_the_answer_is_unchanged() {
    let (plain, plain_tokens, plain_passes, none) = run(false, json!({})).await;
    let (jumped, jumped_tokens, jumped_passes, forced) = run(true, json!({})).await;
    assert_eq!(plain, ANSWER);
    assert_eq!(jumped, ANSWER, "same answer with jump-forward");
    assert_eq!(none, 0);
    // Every key, quote and colon is forced: most of the answer (the mock's vocabulary is
    // bytes, so one token per character).
    assert!(forced >= 60, "{forced} forced tokens");
    assert_eq!(plain_tokens, Some(ANSWER.len() as u32));
    assert_eq!(
        plain_tokens, jumped_tokens,
        "forced tokens count as completion tokens"
    );
    assert!(
        jumped_passes + forced as usize <= plain_passes + 1,
        "{jumped_passes} passes with jump-forward, {plain_passes} without, {forced} forced"
    );
}

#[tokio::test]
async fn a_request_for_logprobs_samples_every_token() {
    let (text, _, _, forced) = run(true, json!({"logprobs": true})).await;
    assert_eq!(text, ANSWER);
    assert_eq!(
        forced, 0,
        "forced tokens have no log-probabilities of their own"
    );
}

#[tokio::test]
async fn max_tokens_cuts_a_forced_run() {
    // 10 tokens end inside the first key, which is forced after `{`: the text stops there,
    // and the unfinished value is refused.
    let (text, tokens, _, forced) = run(true, json!({"max_tokens": 10})).await;
    assert_eq!(tokens, None);
    assert_eq!(text, ANSWER[..10]);
    assert_eq!(forced, 9, "the run is cut at the budget");
}
