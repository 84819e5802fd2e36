//! `POST /chat/completions`: the completions service prepares the body (parse, model,
//! preparation), then the job streams as SSE or is folded into one object. Every error that
//! can be known before generation is returned before any header goes out.

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use peregrine_protocol::chat::{ChatCompletion, ChatCompletionChunk, ExecutedTool, UsageBreakdown};
use peregrine_protocol::chat::{
    ChoiceLogprobs, ChunkChoice, Delta, FunctionCallDelta, ToolCallDelta, XGroq,
};
use peregrine_runtime::{AdmissionError, ServiceTier};
use peregrine_runtime::{Event, Finished, Rejection, TokenLogprob, UsageStats};
use peregrine_service::agent::{self, AgentEvent, AgentJob, Style};
use peregrine_service::chat_wire::{self, call_id, chunk};
use peregrine_service::completions::rejected;
use peregrine_service::limits::RateHeaders;
use peregrine_service::metrics::Rejections;
use peregrine_service::responses_wire::{self, Echo};
use peregrine_service::{
    ChatRun, CompletionError, Grant, Principal, Priority, RateLimiter, ResponseMeta, ServiceError,
};
use std::sync::Arc;
use tokio::sync::mpsc;

use crate::access_log::LogLine;
use crate::error::ApiError;
use crate::middleware::RequestId;
use crate::responses::ResponsesSse;
use crate::state::SharedState;

/// Largest request body accepted, in bytes [20 MiB] (Groq allows 20 MB image URLs).
pub const BODY_LIMIT: usize = 20 * 1024 * 1024;

/// A JSON route's body, or Groq's error for it (413 over [`BODY_LIMIT`]).
pub(crate) fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ServiceError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ServiceError::PayloadTooLarge(BODY_LIMIT),
        _ => ServiceError::BadRequest(e.body_text()),
    })
}

/// The request header that selects a compound system version.
const MODEL_VERSION: &str = "groq-model-version";

pub async fn create(
    State(state): State<SharedState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(principal): Extension<Principal>,
    Extension(log): Extension<LogLine>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = read_body(body)?;
    let version = match headers.get(MODEL_VERSION) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| ServiceError::InvalidParam {
            message: "`Groq-Model-Version` must be ASCII text".into(),
            param: "Groq-Model-Version",
        })?),
    };
    let run = (state.completions)
        .prepare_chat(&body, request_id, version, &principal.org)
        .await?;
    respond(&state, &principal, log, run, Wire::Chat).await
}

/// The wire format an answer goes out in: chat completions, or the Responses API's
/// objects and events made from them.
pub(crate) enum Wire {
    Chat,
    Responses(Box<Echo>),
}

impl Wire {
    fn object(&self, c: ChatCompletion) -> Response {
        match self {
            Wire::Chat => Json(c).into_response(),
            Wire::Responses(echo) => Json(responses_wire::response(c, echo)).into_response(),
        }
    }

    fn sink(self) -> Box<dyn StreamSink> {
        match self {
            Wire::Chat => Box::<ChatSse>::default(),
            Wire::Responses(echo) => Box::new(ResponsesSse::new(*echo)),
        }
    }
}

/// Admits a prepared chat request, runs it, and answers in `wire`'s format.
pub(crate) async fn respond(
    state: &SharedState,
    principal: &Principal,
    log: LogLine,
    run: ChatRun,
    wire: Wire,
) -> Result<Response, ApiError> {
    let completions = &state.completions;
    let limiter = &state.limiter;
    let mut job = match run {
        ChatRun::Plain(job) => *job,
        ChatRun::Agent(job) => return agent_response(state, principal, log, job, wire).await,
    };
    let grant = (limiter.admit(
        &principal.org,
        &job.meta.model,
        job.request.service_tier,
        job.reserved_tokens(),
    ))
    .await?;
    job.set_tier(grant.tier);
    log.model(&job.meta.model, grant.tier.as_str());
    let mut settle = Settlement {
        limiter: limiter.clone(),
        grant,
        rejections: state.metrics.rejections.clone(),
        model: job.meta.model.clone(),
        log,
    };
    let model_id = job.model.id.clone();
    let mut resp = if job.stream() {
        let (meta, rx) = match completions.start(job, Priority::Interactive) {
            Ok(started) => started,
            Err(e) => return Err(settle.refund(e).await),
        };
        let headers = settle.grant.headers();
        let mut settle = Some(settle);
        let mut resp = sse_response(meta, rx, wire.sink(), move |ev| {
            if let Some(Event::Finished(f)) = ev {
                if let Some(s) = settle.take() {
                    s.spawn(&f.usage);
                }
            }
        });
        put_rate_headers(&mut resp, &headers);
        resp
    } else {
        let done = match completions.complete(job, Priority::Interactive).await {
            Ok(done) => done,
            Err(CompletionError::Refused(e)) => return Err(settle.refund(e).await),
            Err(e) => return Err(ApiError::from(e)),
        };
        settle.settle(&done.finished.usage).await;
        let mut resp = wire.object(chat_wire::chat_completion(done));
        put_rate_headers(&mut resp, &settle.grant.headers());
        resp
    };
    if let Ok(v) = HeaderValue::from_str(&model_id) {
        resp.headers_mut().insert("x-peregrine-model", v);
    }
    Ok(resp)
}

/// The built-in tool loop (a compound model, built-in tools): admitted as one request whose
/// tokens, unknown until it ends, are charged then.
async fn agent_response(
    state: &SharedState,
    principal: &Principal,
    log: LogLine,
    job: AgentJob,
    wire: Wire,
) -> Result<Response, ApiError> {
    let tier = ServiceTier::from_name(job.meta.service_tier).unwrap_or(ServiceTier::OnDemand);
    let grant = (state
        .limiter
        .admit(&principal.org, &job.meta.model, tier, 0))
    .await?;
    log.model(&job.meta.model, grant.tier.as_str());
    let mut settle = Settlement {
        limiter: state.limiter.clone(),
        grant,
        rejections: state.metrics.rejections.clone(),
        model: job.meta.model.clone(),
        log,
    };
    if job.stream {
        let headers = settle.grant.headers();
        let mut settle = Some(settle);
        let mut resp = agent_sse_response(job, wire.sink(), move |ev| {
            if let Some(AgentEvent::Finished(f)) = ev {
                if let Some(s) = settle.take() {
                    s.spawn(&f.usage);
                }
            }
        });
        put_rate_headers(&mut resp, &headers);
        return Ok(resp);
    }
    let done = agent::collect(job).await?;
    settle.settle(&done.finish.usage).await;
    let mut resp = wire.object(chat_wire::agent_completion(done));
    put_rate_headers(&mut resp, &settle.grant.headers());
    Ok(resp)
}

/// An admitted request's grant, to correct once its usage is known.
struct Settlement {
    limiter: Arc<RateLimiter>,
    grant: Grant,
    /// Where a flex request refused for capacity is counted, under the model asked for.
    rejections: Rejections,
    model: String,
    /// The request's log line, which gets the usage.
    log: LogLine,
}

/// The tokens a request counts for: its prompt without the cached part, and its completion.
fn counted_tokens(u: &UsageStats) -> u64 {
    u64::from(u.prompt_tokens.saturating_sub(u.cached_tokens)) + u64::from(u.completion_tokens)
}

impl Settlement {
    async fn settle(&mut self, usage: &UsageStats) {
        self.log.usage(usage);
        let used = counted_tokens(usage);
        if let Err(e) = self.limiter.settle(&mut self.grant, used).await {
            tracing::warn!(error = %e, "rate limit correction failed");
        }
    }

    /// Corrects in the background (a stream's end: its headers are long sent).
    fn spawn(mut self, usage: &UsageStats) {
        // Before the stream's last chunk goes out, so the request's log line has it.
        self.log.usage(usage);
        let usage = usage.clone();
        tokio::spawn(async move { self.settle(&usage).await });
    }

    /// A request admitted but refused before it ran (the flex tier found no capacity):
    /// its tokens are given back; the request still counts.
    async fn refund(mut self, e: ServiceError) -> ApiError {
        if matches!(e, ServiceError::Admission(AdmissionError::NoCapacity, _)) {
            self.rejections.count(&self.model, "flex_capacity");
        }
        if let Err(err) = self.limiter.settle(&mut self.grant, 0).await {
            tracing::warn!(error = %err, "rate limit refund failed");
        }
        ApiError(e)
    }
}

/// Groq's `x-ratelimit-*` headers on an answer.
pub(crate) fn put_rate_headers(resp: &mut Response, headers: &RateHeaders) {
    for (name, value) in headers.pairs() {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
}

fn sse(out: &mut Vec<u8>, payload: &impl serde::Serialize) {
    out.extend_from_slice(b"data: ");
    // Serialising plain data structs cannot fail.
    serde_json::to_writer(&mut *out, payload).unwrap_or_default();
    out.extend_from_slice(b"\n\n");
}

/// Where a stream's pieces go: the chat wire's SSE bytes ([`ChatSse`]), or another wire's
/// events made from the same chunks ([`ResponsesSse`]). One encoder of engine and tool-loop
/// events for both.
pub(crate) trait StreamSink: Send {
    /// One chunk.
    fn chunk(&mut self, c: &ChatCompletionChunk);
    /// The error that ends a failed stream (after its `x_groq.error` chunk).
    fn error(&mut self, err: &ServiceError);
    /// The end of a stream that finished.
    fn done(&mut self);
    /// The bytes written since the last call.
    fn take(&mut self) -> Vec<u8>;
}

/// The chat wire: `data: {chunk}`, the error envelope, `data: [DONE]`.
#[derive(Default)]
pub(crate) struct ChatSse(Vec<u8>);

impl StreamSink for ChatSse {
    fn chunk(&mut self, c: &ChatCompletionChunk) {
        sse(&mut self.0, c);
    }

    fn error(&mut self, err: &ServiceError) {
        sse(&mut self.0, &err.envelope());
    }

    fn done(&mut self) {
        self.0.extend_from_slice(b"data: [DONE]\n\n");
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
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
fn encode(
    meta: &ResponseMeta,
    ev: Option<Event>,
    sent: &mut Sent,
    out: &mut dyn StreamSink,
) -> bool {
    match ev {
        Some(Event::Delta { text, logprobs }) => delta_chunk(meta, text, logprobs, sent, out),
        Some(Event::Reasoning { text }) => reasoning_chunk(meta, text, out),
        Some(Event::ToolCall { name, arguments }) => {
            tool_call_chunk(meta, name, arguments, sent, out)
        }
        Some(Event::Finished(Finished { reason, usage })) => {
            finish_chunks(meta, reason.as_str(), &usage, None, out)
        }
        Some(Event::Rejected(r)) => rejected_chunks(meta, r, sent, out),
        Some(Event::Failed(_) | Event::Preempted) | None => failed_chunks(meta, out),
    }
}

fn delta_chunk(
    meta: &ResponseMeta,
    text: String,
    logprobs: Vec<TokenLogprob>,
    sent: &mut Sent,
    out: &mut dyn StreamSink,
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
    out.chunk(&chunk(meta, delta_choice(delta, logprobs)));
    false
}

/// Parsed reasoning, as `delta.reasoning`.
fn reasoning_chunk(meta: &ResponseMeta, text: String, out: &mut dyn StreamSink) -> bool {
    let delta = Delta {
        reasoning: Some(text),
        ..Default::default()
    };
    out.chunk(&chunk(meta, delta_choice(delta, None)));
    false
}

/// Groq sends each call whole, in one delta.
fn tool_call_chunk(
    meta: &ResponseMeta,
    name: String,
    arguments: String,
    sent: &mut Sent,
    out: &mut dyn StreamSink,
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
    out.chunk(&chunk(meta, delta_choice(delta, None)));
    false
}

/// The finish chunk (with `x_groq.usage`, and compound's `x_groq.usage_breakdown`), the
/// usage chunk when asked for, and `[DONE]`.
fn finish_chunks(
    meta: &ResponseMeta,
    reason: &str,
    usage: &UsageStats,
    usage_breakdown: Option<UsageBreakdown>,
    out: &mut dyn StreamSink,
) -> bool {
    let u = chat_wire::usage(usage);
    let mut c = chunk(
        meta,
        vec![ChunkChoice {
            index: 0,
            delta: Delta::default(),
            logprobs: None,
            finish_reason: Some(reason.to_string()),
        }],
    );
    c.x_groq = Some(XGroq {
        id: meta.request_id.clone(),
        usage: Some(u.clone()),
        usage_breakdown,
        ..Default::default()
    });
    if meta.include_usage {
        c.usage = Some(u.clone());
    }
    out.chunk(&c);
    if meta.include_usage {
        let mut last = chunk(meta, vec![]);
        last.usage = Some(u);
        last.service_tier = Some(meta.service_tier.to_string());
        out.chunk(&last);
    }
    out.done();
    true
}

/// An `x_groq.error` chunk, then the error event the groq and openai SDKs raise on
/// (docs/decisions/0003 and 0005).
fn error_chunks(
    meta: &ResponseMeta,
    x_groq_error: String,
    err: &ServiceError,
    out: &mut dyn StreamSink,
) {
    let mut c = chunk(meta, vec![]);
    c.x_groq = Some(XGroq {
        id: meta.request_id.clone(),
        error: Some(x_groq_error),
        ..Default::default()
    });
    out.chunk(&c);
    out.error(err);
}

/// A refused answer ends the stream with the error Groq would have returned.
fn rejected_chunks(
    meta: &ResponseMeta,
    r: Rejection,
    sent: &mut Sent,
    out: &mut dyn StreamSink,
) -> bool {
    let err = rejected(r, std::mem::take(&mut sent.text));
    error_chunks(meta, err.to_string(), &err, out);
    true
}

/// A failure mid-stream: the headers are out, so the error travels in the stream.
fn failed_chunks(meta: &ResponseMeta, out: &mut dyn StreamSink) -> bool {
    let err = ServiceError::Internal(String::new());
    error_chunks(meta, "internal_server_error".into(), &err, out);
    true
}

/// The first chunk: the assistant role, empty content, and the seed in `x_groq`.
fn role_chunk(meta: &ResponseMeta, out: &mut dyn StreamSink) {
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
    out.chunk(&c);
}

/// Encodes the next event and whatever else is already waiting into one write; `encode`
/// returns `true` once the stream is over.
async fn next_write<E>(
    rx: &mut mpsc::Receiver<E>,
    encode: &mut impl FnMut(Option<E>, &mut dyn StreamSink) -> bool,
    sink: &mut dyn StreamSink,
) -> (Vec<u8>, bool) {
    let mut over = encode(rx.recv().await, sink);
    while !over {
        match rx.try_recv() {
            Ok(ev) => over = encode(Some(ev), sink),
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => over = encode(None, sink),
        }
    }
    (sink.take(), over)
}

/// What the SSE body stream carries from one write to the next.
struct StreamState<E, F> {
    rx: mpsc::Receiver<E>,
    encode: F,
    sink: Box<dyn StreamSink>,
    /// Bytes to send before the next event (the role chunk).
    head: Option<Vec<u8>>,
    done: bool,
}

/// An SSE response: the role chunk, then each event as `encode` writes it into `sink`.
fn sse_stream<E, F>(
    meta: &ResponseMeta,
    rx: mpsc::Receiver<E>,
    mut sink: Box<dyn StreamSink>,
    encode: F,
) -> Response
where
    E: Send + 'static,
    F: FnMut(Option<E>, &mut dyn StreamSink) -> bool + Send + 'static,
{
    role_chunk(meta, sink.as_mut());
    let init = StreamState {
        head: Some(sink.take()),
        rx,
        encode,
        sink,
        done: false,
    };
    let stream = futures::stream::unfold(init, |mut st| async move {
        let bytes = match st.head.take() {
            Some(head) => head,
            None if st.done => return None,
            None => {
                let (out, over) = next_write(&mut st.rx, &mut st.encode, st.sink.as_mut()).await;
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

/// A completion's stream; `seen` looks at each event before it is encoded.
fn sse_response(
    meta: ResponseMeta,
    rx: mpsc::Receiver<Event>,
    sink: Box<dyn StreamSink>,
    mut seen: impl FnMut(Option<&Event>) + Send + 'static,
) -> Response {
    let mut sent = Sent::default();
    let head = meta.clone();
    sse_stream(&head, rx, sink, move |ev, out| {
        seen(ev.as_ref());
        encode(&meta, ev, &mut sent, out)
    })
}

/// The tool loop as a stream: the transcript as `delta.reasoning`, each finished tool as
/// `delta.executed_tools`, the answer as `delta.content`, and on compound
/// `x_groq.usage_breakdown` in the finish chunk.
fn agent_sse_response(
    job: AgentJob,
    sink: Box<dyn StreamSink>,
    mut seen: impl FnMut(Option<&AgentEvent>) + Send + 'static,
) -> Response {
    let AgentJob {
        meta,
        style,
        events,
        ..
    } = job;
    let mut sent = Sent::default();
    let head = meta.clone();
    sse_stream(&head, events, sink, move |ev, out| {
        seen(ev.as_ref());
        encode_agent(&meta, style, ev, &mut sent, out)
    })
}

fn encode_agent(
    meta: &ResponseMeta,
    style: Style,
    ev: Option<AgentEvent>,
    sent: &mut Sent,
    out: &mut dyn StreamSink,
) -> bool {
    match ev {
        Some(AgentEvent::Reasoning(text)) => reasoning_chunk(meta, text, out),
        Some(AgentEvent::Executed(tool)) => executed_chunk(meta, tool, out),
        Some(AgentEvent::Content { text, logprobs }) => {
            delta_chunk(meta, text, logprobs, sent, out)
        }
        Some(AgentEvent::ToolCall(c)) => tool_call_chunk(meta, c.name, c.arguments, sent, out),
        Some(AgentEvent::Finished(f)) => {
            let breakdown =
                matches!(style, Style::Compound { .. }).then(|| chat_wire::usage_breakdown(&f));
            finish_chunks(meta, f.reason.as_str(), &f.usage, breakdown, out)
        }
        Some(AgentEvent::Failed(e)) if e.status() < 500 => {
            error_chunks(meta, e.to_string(), &e, out);
            true
        }
        Some(AgentEvent::Failed(_)) | None => failed_chunks(meta, out),
    }
}

fn executed_chunk(meta: &ResponseMeta, tool: ExecutedTool, out: &mut dyn StreamSink) -> bool {
    let delta = Delta {
        executed_tools: Some(vec![tool]),
        ..Default::default()
    };
    out.chunk(&chunk(meta, delta_choice(delta, None)));
    false
}
