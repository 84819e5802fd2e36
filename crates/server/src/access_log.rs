//! One log line per request, written when its answer has been sent in full (a stream's last
//! chunk included, or the client gone): request id, key id, method, path, status, and for
//! chat completions the model, service tier, tokens and the engine's queue, prompt and
//! completion times. Target `peregrine::request`, level info (the server's default), so
//! operators get it without turning logging up; `--log-format json` makes it JSON.
//!
//! Handlers add what they learn to the request's [`LogLine`]; the line is emitted when the
//! response body is dropped.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use peregrine_runtime::UsageStats;

use crate::middleware::RequestId;

#[derive(Default)]
struct Fields {
    key_id: Option<String>,
    model: Option<String>,
    tier: Option<&'static str>,
    usage: Option<UsageStats>,
}

/// What the line of one request will say beyond its method, path and status.
#[derive(Clone, Default)]
pub struct LogLine(Arc<Mutex<Fields>>);

impl LogLine {
    fn with(&self, f: impl FnOnce(&mut Fields)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The managed key the request authenticated with (none for static keys).
    pub fn key(&self, key_id: Option<&str>) {
        self.with(|f| f.key_id = key_id.map(str::to_string));
    }

    /// The model asked for, and the tier the request was admitted in.
    pub fn model(&self, model: &str, tier: &'static str) {
        self.with(|f| {
            f.model = Some(model.to_string());
            f.tier = Some(tier);
        });
    }

    /// Tokens and engine times, when the completion finished.
    pub fn usage(&self, usage: &UsageStats) {
        self.with(|f| f.usage = Some(usage.clone()));
    }
}

/// Emits the line when dropped: with the response body, once it was sent or abandoned.
struct Emit {
    line: LogLine,
    request_id: String,
    method: String,
    path: String,
    status: u16,
    started: Instant,
}

impl Drop for Emit {
    fn drop(&mut self) {
        let f = self.line.0.lock().unwrap_or_else(|p| p.into_inner());
        let u = f.usage.clone().unwrap_or_default();
        tracing::info!(
            target: "peregrine::request",
            request_id = %self.request_id,
            key_id = f.key_id.as_deref().unwrap_or("-"),
            method = %self.method,
            path = %self.path,
            status = self.status,
            model = f.model.as_deref().unwrap_or("-"),
            tier = f.tier.unwrap_or("-"),
            prompt_tokens = u.prompt_tokens,
            cached_tokens = u.cached_tokens,
            completion_tokens = u.completion_tokens,
            queue_s = u.queue_time,
            prompt_s = u.prompt_time,
            completion_s = u.completion_time,
            total_s = self.started.elapsed().as_secs_f64(),
            "request"
        );
    }
}

/// The response body, carrying the line until it is dropped.
struct Logged {
    inner: Body,
    _emit: Emit,
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Gives the request a [`LogLine`] and writes it once the answer is done. Runs inside
/// `request_id`, so the id is known.
pub async fn access_log(mut req: Request, next: Next) -> Response {
    let line = LogLine::default();
    req.extensions_mut().insert(line.clone());
    let request_id = (req.extensions().get::<RequestId>())
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let started = Instant::now();
    let resp = next.run(req).await;
    let emit = Emit {
        line,
        request_id,
        method,
        path,
        status: resp.status().as_u16(),
        started,
    };
    resp.map(|inner| Body::new(Logged { inner, _emit: emit }))
}
