//! `POST /chat/completions`: the completions service prepares the body (parse, model,
//! preparation), then the job streams as SSE or is folded into one object. Every error that
//! can be known before generation is returned before any header goes out.

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use peregrine_protocol::chat::{
    ChoiceLogprobs, ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta, XGroq,
};
use peregrine_runtime::{Event, Finished, Rejection, TokenLogprob};
use peregrine_service::chat_wire::{self, call_id, chunk};
use peregrine_service::completions::rejected;
use peregrine_service::{Priority, ResponseMeta, ServiceError};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::middleware::RequestId;
use crate::state::SharedState;

/// Largest request body accepted, in bytes [20 MiB] (Groq allows 20 MB image URLs).
pub const BODY_LIMIT: usize = 20 * 1024 * 1024;

pub async fn create(
    State(state): State<SharedState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ServiceError::PayloadTooLarge(BODY_LIMIT),
        _ => ServiceError::BadRequest(e.body_text()),
    })?;
    let completions = &state.completions;
    let job = completions
        .prepare_body(&body, request_id, Priority::Interactive)
        .await?;
    let model_id = job.model.id.clone();
    let mut resp = if job.stream() {
        let (meta, rx) = completions.start(job, Priority::Interactive)?;
        sse_response(meta, rx)
    } else {
        let done = completions.complete(job, Priority::Interactive).await?;
        Json(chat_wire::chat_completion(done)).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&model_id) {
        resp.headers_mut().insert("x-peregrine-model", v);
    }
    Ok(resp)
}

fn sse(out: &mut Vec<u8>, payload: &impl serde::Serialize) {
    out.extend_from_slice(b"data: ");
    // Serialising plain data structs cannot fail.
    serde_json::to_writer(&mut *out, payload).unwrap_or_default();
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

/// One choice with `delta` and nothing else.
fn delta_choice(delta: Delta, logprobs: Option<ChoiceLogprobs>) -> Vec<ChunkChoice> {
    vec![ChunkChoice {
        index: 0,
        delta,
        logprobs,
        finish_reason: None,
    }]
}

/// Turns one event into SSE bytes. Returns `true` when the stream is over.
fn encode(meta: &ResponseMeta, ev: Option<Event>, sent: &mut Sent, out: &mut Vec<u8>) -> bool {
    match ev {
        Some(Event::Delta { text, logprobs }) => delta_chunk(meta, text, logprobs, sent, out),
        Some(Event::ToolCall { name, arguments }) => {
            tool_call_chunk(meta, name, arguments, sent, out)
        }
        Some(Event::Finished(f)) => finish_chunks(meta, f, out),
        Some(Event::Rejected(r)) => rejected_chunks(meta, r, sent, out),
        Some(Event::Failed(_) | Event::Preempted) | None => failed_chunks(meta, out),
    }
}

fn delta_chunk(
    meta: &ResponseMeta,
    text: String,
    logprobs: Vec<TokenLogprob>,
    sent: &mut Sent,
    out: &mut Vec<u8>,
) -> bool {
    if meta.track_text {
        sent.text.push_str(&text);
    }
    let logprobs = meta.logprobs.then(|| ChoiceLogprobs {
        content: chat_wire::logprobs(logprobs),
    });
    let delta = Delta {
        content: Some(text),
        ..Default::default()
    };
    sse(out, &chunk(meta, delta_choice(delta, logprobs)));
    false
}

/// Groq sends each call whole, in one delta.
fn tool_call_chunk(
    meta: &ResponseMeta,
    name: String,
    arguments: String,
    sent: &mut Sent,
    out: &mut Vec<u8>,
) -> bool {
    let call = ToolCallDelta {
        id: Some(call_id()),
        kind: Some("function".into()),
        function: Some(FunctionCallDelta {
            name: Some(name),
            arguments: Some(arguments),
        }),
        index: sent.calls,
    };
    let delta = Delta {
        tool_calls: Some(vec![call]),
        ..Default::default()
    };
    sent.calls += 1;
    sse(out, &chunk(meta, delta_choice(delta, None)));
    false
}

/// The finish chunk (with `x_groq.usage`), the usage chunk when asked for, and `[DONE]`.
fn finish_chunks(meta: &ResponseMeta, f: Finished, out: &mut Vec<u8>) -> bool {
    let u = chat_wire::usage(&f.usage);
    let mut c = chunk(
        meta,
        vec![ChunkChoice {
            index: 0,
            delta: Delta::default(),
            logprobs: None,
            finish_reason: Some(f.reason.as_str().to_string()),
        }],
    );
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
        let mut last = chunk(meta, vec![]);
        last.usage = Some(u);
        last.service_tier = Some(meta.service_tier.to_string());
        sse(out, &last);
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    true
}

/// An `x_groq.error` chunk, then the error event the groq and openai SDKs raise on
/// (docs/decisions/0003 and 0005).
fn error_chunks(meta: &ResponseMeta, x_groq_error: String, err: &ServiceError, out: &mut Vec<u8>) {
    let mut c = chunk(meta, vec![]);
    c.x_groq = Some(XGroq {
        id: meta.request_id.clone(),
        error: Some(x_groq_error),
        ..Default::default()
    });
    sse(out, &c);
    sse(out, &err.envelope());
}

/// A refused answer ends the stream with the error Groq would have returned.
fn rejected_chunks(meta: &ResponseMeta, r: Rejection, sent: &mut Sent, out: &mut Vec<u8>) -> bool {
    let err = rejected(r, std::mem::take(&mut sent.text));
    error_chunks(meta, err.to_string(), &err, out);
    true
}

/// A failure mid-stream: the headers are out, so the error travels in the stream.
fn failed_chunks(meta: &ResponseMeta, out: &mut Vec<u8>) -> bool {
    let err = ServiceError::Internal(String::new());
    error_chunks(meta, "internal_server_error".into(), &err, out);
    true
}

/// The first chunk: the assistant role, empty content, and the seed in `x_groq`.
fn role_chunk(meta: &ResponseMeta) -> Vec<u8> {
    let delta = Delta {
        role: Some(Default::default()),
        content: Some(String::new()),
        ..Default::default()
    };
    let mut c = chunk(meta, delta_choice(delta, None));
    c.x_groq = Some(XGroq {
        id: meta.request_id.clone(),
        seed: Some(meta.seed),
        ..Default::default()
    });
    let mut first = Vec::new();
    sse(&mut first, &c);
    first
}

/// Encodes the next event and whatever else is already waiting into one write.
async fn next_write(
    rx: &mut mpsc::Receiver<Event>,
    meta: &ResponseMeta,
    sent: &mut Sent,
) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut over = encode(meta, rx.recv().await, sent, &mut out);
    while !over {
        match rx.try_recv() {
            Ok(ev) => over = encode(meta, Some(ev), sent, &mut out),
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                over = encode(meta, None, sent, &mut out)
            }
        }
    }
    (out, over)
}

/// What the SSE body stream carries from one write to the next.
struct StreamState {
    rx: mpsc::Receiver<Event>,
    meta: ResponseMeta,
    sent: Sent,
    /// Bytes to send before the next event (the role chunk).
    head: Option<Vec<u8>>,
    done: bool,
}

fn sse_response(meta: ResponseMeta, rx: mpsc::Receiver<Event>) -> Response {
    let init = StreamState {
        head: Some(role_chunk(&meta)),
        rx,
        meta,
        sent: Sent::default(),
        done: false,
    };
    let stream = futures::stream::unfold(init, |mut st| async move {
        let bytes = match st.head.take() {
            Some(head) => head,
            None if st.done => return None,
            None => {
                let (out, over) = next_write(&mut st.rx, &st.meta, &mut st.sent).await;
                st.done = over;
                out
            }
        };
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(bytes)), st))
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
