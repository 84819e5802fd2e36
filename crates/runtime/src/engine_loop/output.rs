//! A sequence's output, token by token: detokenize, stop strings, tool calls, events; and
//! how it ends (finished, or refused).

use std::time::Instant;

use peregrine_engine::{TokenId, Vocab};
use peregrine_grammar::OutputError;
use tracing::debug;

use super::tools::ToolOutput;
use super::{Active, Outcome};
use crate::events::{
    Event, FinishReason, Finished, Rejection, TokenLogprob, TopLogprob, UsageStats,
};

/// The log-probabilities of a sampled token, as reported (empty when not asked for).
fn token_logprobs(vocab: &dyn Vocab, sampled: &crate::sampling::Sampled) -> Vec<TokenLogprob> {
    let Some((lp, top)) = &sampled.logprobs else {
        return Vec::new();
    };
    let tok = sampled.token;
    vec![TokenLogprob {
        token: piece(vocab, tok),
        bytes: vocab.token_bytes(tok),
        logprob: *lp,
        top: top
            .iter()
            .map(|&(t, l)| TopLogprob {
                token: piece(vocab, t),
                bytes: vocab.token_bytes(t),
                logprob: l,
            })
            .collect(),
    }]
}

/// Takes one sampled token (see [`take_token`]).
pub(super) fn process_token(
    a: &mut Active,
    sampled: crate::sampling::Sampled,
    vocab: &dyn Vocab,
    n_ctx_seq: u32,
) -> Outcome {
    a.first_token.get_or_insert(Instant::now());
    let logprobs = token_logprobs(vocab, &sampled);
    take_token(a, sampled.token, logprobs, vocab, n_ctx_seq)
}

/// Jump-forward: the tokens the grammar forces after the one just taken go through the same
/// path now, without sampling, and are fed to the model with it in the next step: one
/// forward pass for the whole run instead of one per token. Returns the outcome and how many
/// forced tokens were taken.
pub(super) fn take_forced(a: &mut Active, vocab: &dyn Vocab, n_ctx_seq: u32) -> (Outcome, usize) {
    let Some(c) = &mut a.constraint else {
        return (Outcome::Continue, 0);
    };
    let forced = c.forced_tokens();
    let mut taken = 0;
    for tok in forced.into_iter().take(a.jump) {
        taken += 1;
        let outcome = take_token(a, tok, Vec::new(), vocab, n_ctx_seq);
        if !matches!(outcome, Outcome::Continue) {
            return (outcome, taken);
        }
    }
    (Outcome::Continue, taken)
}

/// Takes one token: the grammar commits it, its text goes through the detokenizer, the stop
/// matcher and (with tools) the call parser, what is released is sent, and the token waits
/// in `pending` to be fed.
fn take_token(
    a: &mut Active,
    tok: TokenId,
    logprobs: Vec<TokenLogprob>,
    vocab: &dyn Vocab,
    n_ctx_seq: u32,
) -> Outcome {
    a.generated += 1;
    if vocab.is_eog(tok) {
        // The end-of-turn token is not part of the answer: no text, no logprobs entry, and
        // not counted in completion_tokens (so logprobs and usage line up with content).
        a.generated -= 1;
        return Outcome::Finish(FinishReason::Stop);
    }
    if let Some(c) = &mut a.constraint {
        if let Err(e) = c.commit(tok) {
            return Outcome::Reject(e);
        }
    }
    let bytes = output_bytes(a, vocab, tok);
    let text = a.detok.push(&bytes);
    let text = if a.reasoning.is_none() {
        record(a, tok, &bytes);
        text
    } else {
        match reason(a, tok, &text) {
            Ok(answer) => answer,
            Err(outcome) => return outcome,
        }
    };
    let step = a.stop.push(&text);
    if let Some(outcome) = emit(a, step.emit, logprobs) {
        return outcome;
    }
    if step.stopped {
        a.hit_stop = true;
        return Outcome::Finish(FinishReason::Stop);
    }
    if a.generated >= a.max_tokens || a.kv.len() + a.pending.len() + 1 >= n_ctx_seq as usize {
        return Outcome::Finish(FinishReason::Length);
    }
    a.pending.push(tok);
    Outcome::Continue
}

/// The bytes `tok` adds to the output; a control token of the call or reasoning syntax
/// counts as its text, so the parsers see it.
fn output_bytes(a: &Active, vocab: &dyn Vocab, tok: TokenId) -> Vec<u8> {
    let bytes = vocab.token_bytes(tok);
    if !bytes.is_empty() {
        return bytes;
    }
    let marker = (a.tools.as_ref().and_then(|t| t.marker_text(tok)))
        .or_else(|| a.reasoning.as_ref().and_then(|r| r.marker_text(tok)));
    marker.map_or(bytes, |m| m.as_bytes().to_vec())
}

/// Records the answer bytes of `tok` for the lazy tool grammar.
fn record(a: &mut Active, tok: TokenId, bytes: &[u8]) {
    if let Some(t) = &mut a.tools {
        t.record(tok, bytes);
    }
}

/// Splits a reasoning model's text: reasoning goes out (or is dropped) here, the answer is
/// returned for the stop matcher and tool calls; the answer's grammar starts with it.
/// `Err` when the sequence ends here.
fn reason(a: &mut Active, tok: TokenId, text: &str) -> Result<String, Outcome> {
    let Some(r) = &mut a.reasoning else {
        return Ok(text.to_string());
    };
    let split = r.push(text);
    let in_answer = r.in_answer();
    record(a, tok, split.answer.as_bytes());
    deliver(a, split.reasoning, split.calls)?;
    if in_answer && a.answer_at.is_none() {
        a.answer_at = Some(a.generated);
        if let Some(mut c) = a.deferred.take() {
            if let Err(e) = c.feed(split.answer.as_bytes(), &[]) {
                return Err(Outcome::Reject(e));
            }
            a.constraint = Some(c);
        }
    }
    Ok(split.answer)
}

/// Sends reasoning text, and calls written in the reasoning syntax (Harmony) through the
/// request's tool checks.
fn deliver(a: &mut Active, reasoning: String, calls: Vec<(String, String)>) -> Result<(), Outcome> {
    if !reasoning.is_empty() && !send(a, Event::Reasoning { text: reasoning }) {
        return Err(Outcome::Gone);
    }
    for (name, arguments) in calls {
        let Some(t) = &mut a.tools else {
            debug!(parent: &a.span, %name, "a call without tools offered is dropped");
            continue;
        };
        let outputs = t.push_call(name, &arguments).map_err(Outcome::RejectTool)?;
        if !send_outputs(a, outputs, Vec::new()) {
            return Err(Outcome::Gone);
        }
    }
    Ok(())
}

/// Sends text the stop matcher released (through the call parser when tools are on).
/// `Some` when the sequence ends here.
fn emit(a: &mut Active, text: String, logprobs: Vec<TokenLogprob>) -> Option<Outcome> {
    let Some(t) = &mut a.tools else {
        if a.constraint.is_some() {
            a.text.push_str(&text);
        }
        return (!send_text(a, text, logprobs)).then_some(Outcome::Gone);
    };
    match t.push(&text, &mut a.constraint) {
        Ok(outputs) => {
            let repeated = t.repeated;
            if !send_outputs(a, outputs, logprobs) {
                return Some(Outcome::Gone);
            }
            repeated.then_some(Outcome::Finish(FinishReason::Stop))
        }
        Err(message) => Some(Outcome::RejectTool(message)),
    }
}

pub(super) fn finish(a: &mut Active, mut reason: FinishReason) {
    // A stop string ends the text where it began: nothing held back is released then.
    let mut rest = String::new();
    if !a.hit_stop {
        let mut tail = a.detok.flush();
        if let Some(r) = &mut a.reasoning {
            let split = r.finish(&tail);
            tail = split.answer;
            match deliver(a, split.reasoning, split.calls) {
                Ok(()) => {}
                Err(Outcome::RejectTool(message)) => return reject_tool(a, message),
                Err(_) => return,
            }
        }
        let step = a.stop.push(&tail);
        rest = step.emit;
        if !step.stopped {
            rest.push_str(&a.stop.flush());
        }
    }
    if let Some(mut t) = a.tools.take() {
        let length = reason == FinishReason::Length;
        let outputs = t.push(&rest, &mut None).and_then(|mut o| {
            o.extend(t.finish(length)?);
            Ok(o)
        });
        let ok = match outputs {
            Ok(o) => send_outputs(a, o, vec![]),
            Err(message) => {
                a.tools = Some(t);
                reject_tool(a, message);
                return;
            }
        };
        if !ok {
            return;
        }
        if t.calls > 0 && !length {
            reason = FinishReason::ToolCalls;
        }
    } else {
        if a.constraint.is_some() {
            a.text.push_str(&rest);
        }
        if !send_text(a, rest, vec![]) {
            return;
        }
        if let Some(c) = &mut a.constraint {
            if let Err(e) = c.check_output(&a.text) {
                reject(a, &e);
                return;
            }
        }
    }
    let now = Instant::now();
    let first = a.first_token.unwrap_or(now);
    let usage = UsageStats {
        prompt_tokens: a.prompt.len() as u32,
        cached_tokens: a.cached as u32,
        completion_tokens: a.generated,
        reasoning_tokens: a.reasoning.as_ref().map(|r| r.tokens),
        queue_time: (a.started - a.submitted).as_secs_f64(),
        prompt_time: (first - a.started).as_secs_f64(),
        completion_time: (now - first).as_secs_f64(),
    };
    send(a, Event::Finished(Finished { reason, usage }));
}

/// Ends a constrained request whose text is not an acceptable answer: a JSON format's
/// `json_validate_failed`, or a call grammar's `tool_use_failed`.
pub(super) fn reject(a: &Active, e: &OutputError) {
    debug!(parent: &a.span, slot = a.slot.0, error = %e, "constrained output rejected");
    if a.tools.is_some() {
        reject_tool(a, crate::request::FAILED_CALL.to_string());
        return;
    }
    send(a, Event::Rejected(Rejection::Json(e.to_string())));
}

/// Ends a request whose tool calls were refused.
pub(super) fn reject_tool(a: &Active, message: String) {
    debug!(parent: &a.span, slot = a.slot.0, %message, "tool call rejected");
    let failed_generation = a.tools.as_ref().map(|t| t.text.clone()).unwrap_or_default();
    send(
        a,
        Event::Rejected(Rejection::Tool {
            message,
            failed_generation,
        }),
    );
}

/// Sends output in order; the token's logprobs ride on the first piece of content (or an
/// empty delta). Empty text alone sends nothing.
fn send_outputs(a: &Active, outputs: Vec<ToolOutput>, logprobs: Vec<TokenLogprob>) -> bool {
    let mut logprobs = Some(logprobs).filter(|l| !l.is_empty());
    for o in outputs {
        let ev = match o {
            ToolOutput::Content(text) if text.is_empty() => continue,
            ToolOutput::Content(text) => Event::Delta {
                text,
                logprobs: logprobs.take().unwrap_or_default(),
            },
            ToolOutput::Call { name, arguments } => Event::ToolCall { name, arguments },
        };
        if !send(a, ev) {
            return false;
        }
    }
    match logprobs {
        Some(logprobs) => send(
            a,
            Event::Delta {
                text: String::new(),
                logprobs,
            },
        ),
        None => true,
    }
}

/// Sends answer text (and the token's logprobs); nothing when both are empty. The plain
/// (no tools) path: no allocation beyond the event.
fn send_text(a: &Active, text: String, logprobs: Vec<TokenLogprob>) -> bool {
    if text.is_empty() && logprobs.is_empty() {
        return true;
    }
    send(a, Event::Delta { text, logprobs })
}

fn send(a: &Active, ev: Event) -> bool {
    // The channel is sized for every event a request can produce, so `Full` cannot happen;
    // `Closed` means the client left.
    a.events.try_send(ev).is_ok()
}

fn piece(vocab: &dyn Vocab, t: TokenId) -> String {
    String::from_utf8_lossy(&vocab.token_bytes(t)).into_owned()
}
