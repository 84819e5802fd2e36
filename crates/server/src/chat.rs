//! `POST /chat/completions`: parse -> resolve model -> validate -> submit -> stream or fold.
//! Every error that can be known before generation is returned before any header goes out.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use peregrine_protocol::chat::{
    AssistantMessage, ChatCompletion, ChatCompletionChunk, Choice, ChoiceLogprobs, ChunkChoice,
    Delta, FunctionCall, FunctionCallDelta, TokenLogprob, ToolCall, ToolCallDelta, TopLogprob,
    Usage, XGroq,
};
use peregrine_protocol::parse::parse_chat_request;
use peregrine_runtime::{validate, Event, Rejection, ServiceTier, UsageStats, ValidRequest};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::middleware::RequestId;
use crate::state::{AppState, ServedModel, SharedState};

/// What every response of one request shares.
struct Meta {
    id: String,
    created: i64,
    model: String,
    fingerprint: String,
    request_id: String,
    seed: i64,
    service_tier: &'static str,
    include_usage: bool,
    logprobs: bool,
    /// Keep the streamed text (for a rejection's `failed_generation`).
    track_text: bool,
}

pub async fn create(
    State(state): State<SharedState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(crate::BODY_LIMIT),
        _ => ApiError::BadRequest(e.body_text()),
    })?;
    let (meta, valid, model) = prepare(&state, &body, request_id).await?;
    let stream = valid.stream;
    let flex = valid.service_tier == ServiceTier::Flex;
    let rx = model
        .runtime
        .submit(valid)
        .map_err(|e| ApiError::Admission(e, flex))?;
    let mut resp = if stream {
        sse_response(meta, rx)
    } else {
        Json(fold(&meta, rx).await?).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&model.id) {
        resp.headers_mut().insert("x-peregrine-model", v);
    }
    Ok(resp)
}

/// One batch line's request (spec §8.2): the live endpoint's non-streaming answer, run as
/// background work. `ApiError::Preempted` means it gave way to interactive work and should
/// run again.
pub(crate) async fn complete_background(
    state: &AppState,
    body: &[u8],
    request_id: String,
) -> Result<ChatCompletion, ApiError> {
    let (meta, valid, model) = prepare(state, body, request_id).await?;
    if valid.stream {
        return Err(ApiError::BadRequest(
            "`stream` is not supported in batch requests".into(),
        ));
    }
    let rx = model
        .runtime
        .submit_background(valid)
        .map_err(|e| ApiError::Admission(e, false))?;
    fold(&meta, rx).await
}

/// Parses, resolves the model and validates: everything known before generation.
async fn prepare(
    state: &AppState,
    body: &[u8],
    request_id: String,
) -> Result<(Meta, ValidRequest, Arc<ServedModel>), ApiError> {
    let req = parse_chat_request(body).map_err(|e| ApiError::BadRequest(e.message()))?;
    let resolved = state
        .registry
        .resolve(&req.model)
        .ok_or_else(|| ApiError::ModelNotFound(req.model.clone()))?;
    let model = resolved.model.clone();
    // Groq's generated seeds are 31-bit; keep ours in the same range.
    let random_seed = u64::from(rand::random::<u32>() >> 1);
    let model_name = req.model.clone();
    // Rendering, tokenizing and compiling a schema are CPU work: off the async workers.
    let ctx = model.ctx.clone();
    let valid = tokio::task::spawn_blocking(move || validate(&req, &ctx, random_seed))
        .await
        .map_err(|e| ApiError::Internal(format!("validation task: {e}")))??;
    let meta = Meta {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4()),
        created: now_unix(),
        model: model_name,
        fingerprint: model.fingerprint.clone(),
        request_id,
        seed: valid.sampling.seed as i64,
        service_tier: valid.service_tier.as_str(),
        include_usage: valid.include_usage,
        logprobs: valid.sampling.logprobs.is_some(),
        track_text: valid.constraint.is_some(),
    };
    Ok((meta, valid, model))
}

/// The error for a generated text that was refused; `text` is what was generated.
fn rejected(r: Rejection, text: String) -> ApiError {
    match r {
        Rejection::Json(message) => ApiError::JsonValidateFailed {
            message,
            failed_generation: text,
        },
        Rejection::Tool {
            message,
            failed_generation,
        } => ApiError::ToolUseFailed {
            message,
            failed_generation,
        },
    }
}

/// A fresh tool-call id: `call_` and 24 random alphanumerics (ids are opaque to clients).
fn call_id() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!(
        "call_{}",
        Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
    )
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Seconds at nanosecond precision, as Groq reports them.
fn secs(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

pub(crate) fn usage(u: &UsageStats) -> Usage {
    let (prompt_time, completion_time) = (secs(u.prompt_time), secs(u.completion_time));
    Usage {
        queue_time: secs(u.queue_time),
        prompt_tokens: u64::from(u.prompt_tokens),
        prompt_time,
        completion_tokens: u64::from(u.completion_tokens),
        completion_time,
        total_tokens: u64::from(u.prompt_tokens + u.completion_tokens),
        total_time: secs(prompt_time + completion_time),
        prompt_tokens_details: (u.cached_tokens > 0).then_some(
            peregrine_protocol::chat::PromptTokensDetails {
                cached_tokens: u64::from(u.cached_tokens),
            },
        ),
        completion_tokens_details: None,
    }
}

fn wire_logprobs(lps: Vec<peregrine_runtime::TokenLogprob>) -> Vec<TokenLogprob> {
    lps.into_iter()
        .map(|t| TokenLogprob {
            token: t.token,
            logprob: f64::from(t.logprob),
            bytes: Some(t.bytes),
            top_logprobs: t
                .top
                .into_iter()
                .map(|x| TopLogprob {
                    token: x.token,
                    logprob: f64::from(x.logprob),
                    bytes: Some(x.bytes),
                })
                .collect(),
        })
        .collect()
}

/// The non-streaming response: the same event stream, folded.
async fn fold(meta: &Meta, mut rx: mpsc::Receiver<Event>) -> Result<ChatCompletion, ApiError> {
    let mut content = String::new();
    let mut logprobs = Vec::new();
    let mut calls = Vec::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Delta { text, logprobs: lp } => {
                content.push_str(&text);
                logprobs.extend(wire_logprobs(lp));
            }
            Event::ToolCall { name, arguments } => calls.push(ToolCall {
                id: call_id(),
                kind: "function".into(),
                function: FunctionCall { name, arguments },
            }),
            Event::Finished(f) => {
                // A turn that only calls tools has `content: null`.
                let content = if !calls.is_empty() && content.trim().is_empty() {
                    None
                } else {
                    Some(std::mem::take(&mut content))
                };
                return Ok(ChatCompletion {
                    id: meta.id.clone(),
                    object: Default::default(),
                    created: meta.created,
                    model: meta.model.clone(),
                    choices: vec![Choice {
                        index: 0,
                        message: AssistantMessage {
                            content,
                            tool_calls: (!calls.is_empty()).then(|| std::mem::take(&mut calls)),
                            ..Default::default()
                        },
                        logprobs: meta
                            .logprobs
                            .then_some(ChoiceLogprobs { content: logprobs }),
                        finish_reason: f.reason.as_str().to_string(),
                    }],
                    usage: usage(&f.usage),
                    usage_breakdown: None,
                    system_fingerprint: meta.fingerprint.clone(),
                    x_groq: XGroq {
                        id: meta.request_id.clone(),
                        seed: Some(meta.seed),
                        ..Default::default()
                    },
                    service_tier: Some(meta.service_tier.to_string()),
                });
            }
            Event::Failed(why) => return Err(ApiError::Internal(why)),
            Event::Rejected(r) => return Err(rejected(r, content)),
            Event::Preempted => return Err(ApiError::Preempted),
        }
    }
    Err(ApiError::Internal("the engine dropped the request".into()))
}

impl Meta {
    fn chunk(&self, choices: Vec<ChunkChoice>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: Default::default(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: self.fingerprint.clone(),
            choices,
            x_groq: None,
            usage: None,
            service_tier: None,
        }
    }
}

fn sse(out: &mut Vec<u8>, chunk: &impl serde::Serialize) {
    out.extend_from_slice(b"data: ");
    // Serialising plain data structs cannot fail.
    serde_json::to_writer(&mut *out, chunk).unwrap_or_default();
    out.extend_from_slice(b"\n\n");
}

/// What a stream has sent so far.
#[derive(Default)]
struct Sent {
    /// The text (the `failed_generation` of a JSON rejection), when tracked.
    text: String,
    /// Tool calls sent (the next call's `index`).
    calls: u32,
}

/// Turns one event into SSE bytes. Returns `true` when the stream is over.
fn encode(meta: &Meta, ev: Option<Event>, sent: &mut Sent, out: &mut Vec<u8>) -> bool {
    match ev {
        Some(Event::ToolCall { name, arguments }) => {
            // Groq sends each call whole, in one delta.
            let c = meta.chunk(vec![ChunkChoice {
                index: 0,
                delta: Delta {
                    tool_calls: Some(vec![ToolCallDelta {
                        id: Some(call_id()),
                        kind: Some("function".into()),
                        function: Some(FunctionCallDelta {
                            name: Some(name),
                            arguments: Some(arguments),
                        }),
                        index: sent.calls,
                    }]),
                    ..Default::default()
                },
                logprobs: None,
                finish_reason: None,
            }]);
            sent.calls += 1;
            sse(out, &c);
            false
        }
        Some(Event::Rejected(r)) => {
            // A refused answer ends the stream with the error Groq would have returned
            // (docs/decisions/0005): an `x_groq.error` chunk, then the error event.
            let err = rejected(r, std::mem::take(&mut sent.text));
            let mut c = meta.chunk(vec![]);
            c.x_groq = Some(XGroq {
                id: meta.request_id.clone(),
                error: Some(err.to_string()),
                ..Default::default()
            });
            sse(out, &c);
            sse(out, &err.envelope());
            true
        }
        Some(Event::Delta { text, logprobs }) => {
            if meta.track_text {
                sent.text.push_str(&text);
            }
            let c = meta.chunk(vec![ChunkChoice {
                index: 0,
                delta: Delta {
                    content: Some(text),
                    ..Default::default()
                },
                logprobs: meta.logprobs.then(|| ChoiceLogprobs {
                    content: wire_logprobs(logprobs),
                }),
                finish_reason: None,
            }]);
            sse(out, &c);
            false
        }
        Some(Event::Finished(f)) => {
            let u = usage(&f.usage);
            let mut c = meta.chunk(vec![ChunkChoice {
                index: 0,
                delta: Delta::default(),
                logprobs: None,
                finish_reason: Some(f.reason.as_str().to_string()),
            }]);
            c.x_groq = Some(XGroq {
                id: meta.request_id.clone(),
                usage: Some(u.clone()),
                ..Default::default()
            });
            if meta.include_usage {
                c.usage = Some(u.clone());
            }
            sse(out, &c);
            if meta.include_usage {
                let mut last = meta.chunk(vec![]);
                last.usage = Some(u);
                last.service_tier = Some(meta.service_tier.to_string());
                sse(out, &last);
            }
            out.extend_from_slice(b"data: [DONE]\n\n");
            true
        }
        Some(Event::Failed(_) | Event::Preempted) | None => {
            // Mid-stream failure (docs/decisions/0003): Groq's `x_groq.error` chunk, then an
            // `error` event that the groq and openai SDKs raise on.
            let mut c = meta.chunk(vec![]);
            c.x_groq = Some(XGroq {
                id: meta.request_id.clone(),
                error: Some("internal_server_error".into()),
                ..Default::default()
            });
            sse(out, &c);
            let err = ApiError::Internal(String::new()).envelope();
            sse(out, &err);
            true
        }
    }
}

fn sse_response(meta: Meta, rx: mpsc::Receiver<Event>) -> Response {
    let mut first = Vec::new();
    let mut c = meta.chunk(vec![ChunkChoice {
        index: 0,
        delta: Delta {
            role: Some(Default::default()),
            content: Some(String::new()),
            ..Default::default()
        },
        logprobs: None,
        finish_reason: None,
    }]);
    c.x_groq = Some(XGroq {
        id: meta.request_id.clone(),
        seed: Some(meta.seed),
        ..Default::default()
    });
    sse(&mut first, &c);
    // State: (receiver, meta, text sent, bytes to send first, finished?)
    let init = (rx, meta, Sent::default(), Some(first), false);
    let stream = futures::stream::unfold(init, |(mut rx, meta, mut sent, head, done)| async move {
        if let Some(bytes) = head {
            return Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(bytes)),
                (rx, meta, sent, None, done),
            ));
        }
        if done {
            return None;
        }
        let mut out = Vec::new();
        let mut over = encode(&meta, rx.recv().await, &mut sent, &mut out);
        // Coalesce whatever else is already waiting into the same write.
        while !over {
            match rx.try_recv() {
                Ok(ev) => over = encode(&meta, Some(ev), &mut sent, &mut out),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    over = encode(&meta, None, &mut sent, &mut out)
                }
            }
        }
        Some((Ok(Bytes::from(out)), (rx, meta, sent, None, over)))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
