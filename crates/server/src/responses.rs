//! `POST /responses` (Groq's Responses API, beta): the body becomes a chat request, which is
//! prepared, admitted and run as chat completions are ([`chat::respond`]); the answer goes out
//! as a response object, or as the Responses stream events.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use peregrine_protocol::chat::ChatCompletionChunk;
use peregrine_protocol::parse::parse_request;
use peregrine_protocol::responses::{ResponsesRequest, StreamEvent, REQUEST_FIELDS};
use peregrine_service::responses_wire::{self, Echo, EventWriter};
use peregrine_service::{Principal, ServiceError};

use crate::access_log::LogLine;
use crate::chat::{self, StreamSink, Wire};
use crate::error::ApiError;
use crate::middleware::RequestId;
use crate::state::SharedState;

/// `Groq-Beta: inference-metrics` puts the timings into the response's `metadata`.
const BETA: &str = "groq-beta";

pub async fn create(
    State(state): State<SharedState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(principal): Extension<Principal>,
    Extension(log): Extension<LogLine>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = chat::read_body(body)?;
    let req: ResponsesRequest =
        parse_request(&body, REQUEST_FIELDS).map_err(|e| ServiceError::BadRequest(e.message()))?;
    let metrics = (headers.get_all(BETA).iter())
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|f| f.trim() == "inference-metrics"));
    // A reasoning model's reasoning is an output item of its own: asked for parsed.
    let reasons = (state.completions.registry())
        .resolve(&req.model, &principal.org)
        .is_some_and(|r| r.model.ctx.reasoning.is_some());
    let (chat_req, echo) = responses_wire::to_chat(req, reasons, metrics)?;
    let run = (state.completions)
        .prepare_chat_request(chat_req, request_id, None, &principal.org)
        .await
        .map_err(|e| echo.rename(e))?;
    chat::respond(
        &state,
        &principal,
        log,
        run,
        Wire::Responses(Box::new(echo)),
    )
    .await
}

/// The Responses stream: each chat chunk's events, `event:` and `data:` lines each.
pub(crate) struct ResponsesSse {
    writer: EventWriter,
    out: Vec<u8>,
}

impl ResponsesSse {
    pub(crate) fn new(echo: Echo) -> Self {
        ResponsesSse {
            writer: EventWriter::new(echo),
            out: Vec::new(),
        }
    }

    fn write(&mut self, events: Vec<StreamEvent>) {
        for ev in events {
            self.out.extend_from_slice(b"event: ");
            self.out.extend_from_slice(ev.kind.as_bytes());
            self.out.extend_from_slice(b"\ndata: ");
            serde_json::to_writer(&mut self.out, &ev).unwrap_or_default();
            self.out.extend_from_slice(b"\n\n");
        }
    }
}

impl StreamSink for ResponsesSse {
    fn chunk(&mut self, c: &ChatCompletionChunk) {
        let events = self.writer.chunk(c);
        self.write(events);
    }

    fn error(&mut self, err: &ServiceError) {
        let e = err.envelope().error;
        let code = e.code.unwrap_or(e.kind);
        let events = self.writer.failed(&code, &e.message);
        self.write(events);
    }

    /// A Responses stream ends with its last event; there is no `[DONE]`.
    fn done(&mut self) {}

    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}
