//! Speculative decoding on the mock engine: drafts looked up in the prompt are fed with the
//! sampled token and checked row by row. The answer never changes, sampled or greedy; passes
//! are saved only where a bigger pass costs little more than a small one.

use crate::support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use peregrine_engine::MockModel;
use peregrine_protocol::parse::parse_chat_request;
use peregrine_runtime::{
    prepare, BuiltModel, Event, FinishReason, MaskStats, RuntimeConfig, Speculation,
};
use serde_json::{json, Value};

const ORIGINAL: &str = "def area(width, height):\n    return width * height\n\n\
def perimeter(width, height):\n    return 2 * (width + height)\n\n\
def describe(width, height):\n    return f\"{width} by {height}\"\n";

/// What the mock writes: the code with one change (the mock's tokens are bytes, so most of
/// it can be drafted from the prompt).
const CHANGED: &str = "def area(width, height):\n    return width * height\n\n\
def perimeter(width, height):\n    return 2 * width + 2 * height\n\n\
def describe(width, height):\n    return f\"{width} by {height}\"\n";

/// A pass costs 10 ms and each row 0.1 ms more: a CPU where verifying drafts is nearly
/// free. (Milliseconds, not less: the costs are measured with the machine's own clock, and a
/// busy test machine adds its scheduling delays to every pass.)
fn flat() -> Vec<Duration> {
    (0..8)
        .map(|r| Duration::from_micros(10_000 + 100 * r))
        .collect()
}

/// Each row costs as much as a pass: drafts can never pay.
fn linear() -> Vec<Duration> {
    (1..=8).map(|r| Duration::from_millis(10 * r)).collect()
}

struct Run {
    text: String,
    tokens: u32,
    reason: FinishReason,
    logprobs: usize,
    passes: usize,
    stats: MaskStats,
}

fn body(extra: Value) -> Value {
    let mut body = json!({
        "model": "m",
        "temperature": 0,
        "messages": [{"role": "user", "content": format!("Repeat this code with one change:\n{ORIGINAL}")}],
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

async fn collect(m: &BuiltModel, body: &Value) -> (String, u32, FinishReason, usize) {
    let req = parse_chat_request(body.to_string().as_bytes()).unwrap();
    let valid = prepare(&req, &m.ctx, 1).expect("validates");
    let mut rx = m.runtime.submit(valid).expect("admitted");
    let (mut text, mut logprobs) = (String::new(), 0);
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Delta {
                text: t,
                logprobs: l,
            } => {
                text.push_str(&t);
                logprobs += l.len();
            }
            Event::Finished(f) => return (text, f.usage.completion_tokens, f.reason, logprobs),
            other => panic!("unexpected event: {other:?}"),
        }
    }
    panic!("no finish event");
}

/// One request on a fresh model whose passes cost `row_delays`; the passes counted are those
/// after calibration (the first request waits for it).
async fn run(speculation: Speculation, row_delays: Vec<Duration>, extra: Value) -> Run {
    let model = MockModel {
        row_delays,
        ..MockModel::new(CHANGED)
    };
    let runtime = RuntimeConfig {
        speculation,
        ..RuntimeConfig::default()
    };
    let m = support::start(&model, 1024, runtime);
    let warm = body(json!({"max_tokens": 1}));
    collect(&m, &warm).await;
    m.runtime.reset_mask_stats();
    let before = model.decodes.load(Ordering::Relaxed);
    let (text, tokens, reason, logprobs) = collect(&m, &body(extra)).await;
    Run {
        text,
        tokens,
        reason,
        logprobs,
        passes: model.decodes.load(Ordering::Relaxed) - before,
        stats: m.runtime.mask_stats(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn drafts_from_the_prompt_save_passes_and_change_nothing() {
    let off = run(Speculation::Off, flat(), json!({})).await;
    let on = run(Speculation::Auto, flat(), json!({})).await;
    assert_eq!(off.text, CHANGED);
    assert_eq!(on.text, CHANGED, "same answer with drafts");
    assert_eq!(
        on.tokens, off.tokens,
        "accepted drafts count as completion tokens"
    );
    assert_eq!(off.stats.drafted_tokens, 0);
    assert!(
        on.stats.accepted_tokens > CHANGED.len() as u64 / 2,
        "{:?}",
        on.stats
    );
    assert!(
        (on.passes as f64) < 0.5 * off.passes as f64,
        "{} passes with drafts, {} without",
        on.passes,
        off.passes
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_drafts_where_a_bigger_pass_costs_as_much_as_several() {
    let on = run(Speculation::Auto, linear(), json!({})).await;
    assert_eq!(on.text, CHANGED);
    assert_eq!(on.stats.drafted_tokens, 0, "{:?}", on.stats);
    // Measuring them anyway: drafts are checked whatever they cost.
    let always = run(Speculation::Always, linear(), json!({})).await;
    assert_eq!(always.text, CHANGED);
    assert!(always.stats.drafted_tokens > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn sampled_output_is_the_same_token_for_token() {
    // At temperature 2 the mock's scripted token has ~60% of the mass: the text wanders, and
    // every token is drawn from the seeded RNG. Drafts must not change a single draw.
    let extra = json!({"temperature": 2, "top_p": 1, "seed": 42, "max_tokens": 150});
    let off = run(Speculation::Off, flat(), extra.clone()).await;
    let on = run(Speculation::Always, flat(), extra).await;
    assert_ne!(off.text, CHANGED, "the sample wandered from the script");
    assert_eq!(on.text, off.text);
    assert_eq!(on.tokens, off.tokens);
    assert!(on.stats.drafted_tokens > 0, "{:?}", on.stats);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_token_keeps_its_logprobs() {
    let on = run(Speculation::Always, flat(), json!({"logprobs": true})).await;
    assert_eq!(on.text, CHANGED);
    assert!(on.stats.accepted_tokens > 0);
    assert_eq!(
        on.logprobs, on.tokens as usize,
        "one entry per completion token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn budgets_and_stops_cut_inside_a_draft_as_without() {
    for extra in [
        json!({"max_tokens": 70}),
        json!({"stop": ["2 * width"]}),
        json!({"stop": ["by"], "max_tokens": 200}),
    ] {
        let off = run(Speculation::Off, flat(), extra.clone()).await;
        let on = run(Speculation::Always, flat(), extra.clone()).await;
        assert_eq!(
            (&on.text, on.tokens, on.reason),
            (&off.text, off.tokens, off.reason),
            "{extra}"
        );
        assert!(on.stats.drafted_tokens > 0, "{extra}");
    }
    let cut = run(Speculation::Always, flat(), json!({"max_tokens": 70})).await;
    assert_eq!(
        (cut.text.as_str(), cut.reason),
        (&CHANGED[..70], FinishReason::Length)
    );
}

/// A prompt that does not hold the answer, so the draft model has the guessing to do.
fn write_body(extra: Value) -> Value {
    let mut body = json!({
        "model": "m",
        "temperature": 0,
        "messages": [{"role": "user", "content": "Write three small geometry functions."}],
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

/// A pass of the draft model: a tenth of the model's.
fn cheap() -> Vec<Duration> {
    (0..8)
        .map(|r| Duration::from_micros(1_000 + 10 * r))
        .collect()
}

/// Like [`run`], on a model with a draft model that writes `draft_script`; also counts the
/// draft model's passes after calibration, and the pass sizes calibration measured of it.
async fn run_with_draft(
    speculation: Speculation,
    row_delays: Vec<Duration>,
    draft_script: &str,
    extra: Value,
) -> (Run, usize, usize) {
    let model = MockModel {
        row_delays,
        ..MockModel::new(CHANGED)
    };
    let draft = MockModel {
        row_delays: cheap(),
        ..MockModel::new(draft_script)
    };
    let runtime = RuntimeConfig {
        speculation,
        ..RuntimeConfig::default()
    };
    let m = support::start_with_draft(&model, &draft, 1024, runtime);
    collect(&m, &write_body(json!({"max_tokens": 1}))).await;
    m.runtime.reset_mask_stats();
    let (before, draft_before) = (
        model.decodes.load(Ordering::Relaxed),
        draft.decodes.load(Ordering::Relaxed),
    );
    let (text, tokens, reason, logprobs) = collect(&m, &write_body(extra)).await;
    let run = Run {
        text,
        tokens,
        reason,
        logprobs,
        passes: model.decodes.load(Ordering::Relaxed) - before,
        stats: m.runtime.mask_stats(),
    };
    let passes = draft.decodes.load(Ordering::Relaxed) - draft_before;
    (run, passes, m.runtime.draft_step_costs().len())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draft_model_that_agrees_saves_passes_and_changes_nothing() {
    let (off, ..) = run_with_draft(Speculation::Off, flat(), CHANGED, json!({})).await;
    let (on, draft_passes, _) = run_with_draft(Speculation::Auto, flat(), CHANGED, json!({})).await;
    assert_eq!(off.text, CHANGED);
    assert_eq!((on.text.as_str(), on.tokens), (CHANGED, off.tokens));
    assert!(
        on.stats.accepted_tokens > CHANGED.len() as u64 / 2,
        "{:?}",
        on.stats
    );
    assert!(draft_passes > 0);
    assert!(
        (on.passes as f64) < 0.5 * off.passes as f64,
        "{} passes with drafts, {} without",
        on.passes,
        off.passes
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draft_model_that_guesses_wrong_changes_nothing_and_is_asked_less() {
    let wrong = "class Shape:\n    pass\n";
    let (always, ..) = run_with_draft(Speculation::Always, flat(), wrong, json!({})).await;
    let (auto, ..) = run_with_draft(Speculation::Auto, flat(), wrong, json!({})).await;
    assert_eq!(always.text, CHANGED);
    assert_eq!(auto.text, CHANGED);
    assert!(always.stats.drafted_tokens > 0);
    assert!(
        auto.stats.drafted_tokens * 2 < always.stats.drafted_tokens,
        "auto {:?}, always {:?}",
        auto.stats,
        always.stats
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draft_model_is_never_run_where_drafts_cannot_pay() {
    let (on, draft_passes, measured) =
        run_with_draft(Speculation::Auto, linear(), CHANGED, json!({})).await;
    assert_eq!(
        measured, 2,
        "passes of one row and of both slots' rows measured at load"
    );
    assert_eq!(on.text, CHANGED);
    assert_eq!(on.stats.drafted_tokens, 0, "{:?}", on.stats);
    assert_eq!(draft_passes, 0, "the draft model only loaded");
}

#[tokio::test(flavor = "multi_thread")]
async fn sampled_output_with_a_draft_model_is_the_same_token_for_token() {
    let extra = json!({"temperature": 2, "top_p": 1, "seed": 42, "max_tokens": 150});
    let (off, ..) = run_with_draft(Speculation::Off, flat(), CHANGED, extra.clone()).await;
    let (on, ..) = run_with_draft(Speculation::Always, flat(), CHANGED, extra.clone()).await;
    assert_ne!(off.text, CHANGED, "the sample wandered from the script");
    assert_eq!((&on.text, on.tokens), (&off.text, off.tokens));
    assert!(on.stats.accepted_tokens > 0, "{:?}", on.stats);
    // Cut inside a draft, as without.
    let extra = json!({"max_tokens": 70, "stop": ["by"]});
    let (off, ..) = run_with_draft(Speculation::Off, flat(), CHANGED, extra.clone()).await;
    let (on, ..) = run_with_draft(Speculation::Always, flat(), CHANGED, extra).await;
    assert_eq!(
        (&on.text, on.tokens, on.reason),
        (&off.text, off.tokens, off.reason)
    );
}
