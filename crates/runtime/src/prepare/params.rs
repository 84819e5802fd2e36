//! The scalar parameters of a chat request: ranges, stop sequences, log-probabilities,
//! `logit_bias`, sampling mode, service tier and the completion budget. Each function checks
//! one parameter (or a pair that goes together) and returns its resolved value.

use std::collections::BTreeMap;

use peregrine_engine::TokenId;
use peregrine_protocol::chat::{ChatCompletionRequest, StopSequences};

use super::{PrepareError, MAX_LOGIT_BIAS, MAX_STOP_BYTES, MAX_STOP_SEQUENCES, MAX_TOP_LOGPROBS};
use crate::request::ServiceTier;
use crate::sampling::Sampling;

/// Below this a temperature is treated as greedy decoding (Groq maps 0 to 1e-8).
const GREEDY_BELOW: f64 = 1e-5;

/// The checks that need no model: counts and ranges.
pub(super) fn check_basics(req: &ChatCompletionRequest) -> Result<(), PrepareError> {
    if req.messages.is_empty() {
        return Err(PrepareError::NoMessages);
    }
    if let Some(n) = req.n.filter(|&n| n != 1) {
        return Err(PrepareError::N(n));
    }
    check_range("temperature", req.temperature, 0.0, 2.0)?;
    check_range("top_p", req.top_p, 0.0, 1.0)?;
    check_range("frequency_penalty", req.frequency_penalty, -2.0, 2.0)?;
    check_range("presence_penalty", req.presence_penalty, -2.0, 2.0)
}

fn check_range(param: &'static str, v: Option<f64>, lo: f64, hi: f64) -> Result<(), PrepareError> {
    match v {
        Some(got) if !(lo..=hi).contains(&got) || got.is_nan() => {
            Err(PrepareError::OutOfRange { param, lo, hi, got })
        }
        _ => Ok(()),
    }
}

/// Parameters whose feature has not landed yet are refused rather than silently ignored.
pub(super) fn reject_unsupported(req: &ChatCompletionRequest) -> Result<(), PrepareError> {
    let unsupported = |feature| Err(PrepareError::Unsupported { feature, at: None });
    if req.functions.as_ref().is_some_and(|f| !f.is_empty()) {
        return unsupported("functions");
    }
    if req.function_call.is_some() {
        return unsupported("function_call");
    }
    if req.documents.as_ref().is_some_and(|d| !d.is_empty()) {
        return unsupported("documents");
    }
    if req.compound_custom.is_some() {
        return unsupported("compound_custom");
    }
    if req.search_settings.is_some()
        || req.include_domains.is_some()
        || req.exclude_domains.is_some()
    {
        return unsupported("search_settings");
    }
    Ok(())
}

/// `stop`: at most four sequences of at most 1 KiB; empty ones match nothing and are dropped.
pub(super) fn stops(stop: Option<&StopSequences>) -> Result<Vec<String>, PrepareError> {
    let stops: Vec<String> = match stop {
        None => Vec::new(),
        Some(StopSequences::One(s)) => vec![s.clone()],
        Some(StopSequences::Many(v)) if v.len() > MAX_STOP_SEQUENCES => {
            return Err(PrepareError::TooManyStops(v.len()))
        }
        Some(StopSequences::Many(v)) => v.clone(),
    };
    if let Some(long) = stops.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(PrepareError::StopTooLong(long.len()));
    }
    Ok(stops.into_iter().filter(|s| !s.is_empty()).collect())
}

/// `logprobs` / `top_logprobs`: `Some(n)` alternatives to report, or `None`.
pub(super) fn logprobs(
    logprobs: Option<bool>,
    top: Option<i64>,
) -> Result<Option<u8>, PrepareError> {
    match (logprobs, top) {
        (Some(true), n) => {
            let n = n.unwrap_or(0);
            if !(0..=MAX_TOP_LOGPROBS).contains(&n) {
                return Err(PrepareError::TopLogprobs(n));
            }
            Ok(Some(n as u8))
        }
        (_, Some(_)) => Err(PrepareError::TopLogprobsWithoutLogprobs),
        _ => Ok(None),
    }
}

/// `logit_bias`: token ids of this model, biases in -100..=100.
pub(super) fn logit_bias(
    map: Option<&BTreeMap<String, f64>>,
    n_vocab: usize,
) -> Result<Vec<(TokenId, f32)>, PrepareError> {
    let Some(map) = map else {
        return Ok(Vec::new());
    };
    if map.len() > MAX_LOGIT_BIAS {
        return Err(PrepareError::TooManyLogitBias(map.len()));
    }
    let mut out = Vec::with_capacity(map.len());
    for (k, &v) in map {
        let tok: TokenId = k
            .parse()
            .ok()
            .filter(|&t: &TokenId| (t as usize) < n_vocab)
            // The key is echoed: at most 32 characters of it.
            .ok_or_else(|| PrepareError::LogitBiasKey(k.chars().take(32).collect()))?;
        if !(-100.0..=100.0).contains(&v) {
            return Err(PrepareError::LogitBiasValue {
                key: k.clone(),
                value: v,
            });
        }
        out.push((tok, v as f32));
    }
    Ok(out)
}

/// Greedy at temperature ~0 or `top_p` 0, else tempered nucleus sampling.
pub(super) fn sampling_mode(req: &ChatCompletionRequest) -> Sampling {
    let temperature = req.temperature.unwrap_or(1.0);
    let top_p = req.top_p.unwrap_or(1.0);
    if temperature < GREEDY_BELOW || top_p == 0.0 {
        Sampling::Greedy
    } else {
        Sampling::Random {
            temperature: temperature as f32,
            top_p: top_p as f32,
        }
    }
}

pub(super) fn service_tier(tier: Option<&str>) -> Result<ServiceTier, PrepareError> {
    match tier {
        None => Ok(ServiceTier::OnDemand),
        Some(name) => {
            ServiceTier::from_name(name).ok_or_else(|| PrepareError::ServiceTier(name.to_string()))
        }
    }
}

/// The completion budget: `max_completion_tokens` (or the older `max_tokens`), at most the
/// model's limit, cut to what the context leaves after a prompt of `prompt_len` tokens.
pub(super) fn max_tokens(
    req: &ChatCompletionRequest,
    model_max: u32,
    context: u32,
    prompt_len: usize,
) -> Result<u32, PrepareError> {
    if prompt_len >= context as usize {
        return Err(PrepareError::ContextLengthExceeded {
            prompt: prompt_len,
            context,
        });
    }
    let requested = match (req.max_completion_tokens, req.max_tokens) {
        (Some(n), _) => Some(("max_completion_tokens", n)),
        (None, Some(n)) => Some(("max_tokens", n)),
        (None, None) => None,
    };
    let room = context - prompt_len as u32;
    match requested {
        Some((param, got)) if got < 1 => Err(PrepareError::MaxTokensTooSmall { param, got }),
        Some((param, n)) if n > i64::from(model_max) => Err(PrepareError::MaxTokensTooLarge {
            param,
            max: model_max,
        }),
        Some((_, n)) => Ok((n as u32).min(room)),
        None => Ok(model_max.min(room)),
    }
}
