//! The browser and slow-client policy (docs/decisions/0009-threat-model.md): which origins
//! and `Host` names may call, which bodies are accepted, how long a body may stall, and the
//! CORS answer for allowed origins.
//!
//! Why: with no key configured (the default), any web page the local user opens could
//! otherwise drive the server. Browsers send `Origin` on every cross-origin request and on
//! same-origin POSTs, so refusing a foreign `Origin` stops cross-site requests that need no
//! preflight (`text/plain`, form and multipart bodies); JSON-only bodies make every other
//! cross-site call preflighted; and the `Host` check stops DNS rebinding, where a foreign
//! name resolves to 127.0.0.1 and the page becomes "same-origin" with the server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use peregrine_service::ServiceError;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::ApiError;
use crate::state::SharedState;

/// Most bytes of request headers, names and values together [32 KiB]; more is answered
/// 431 in Groq's envelope. (A header block past hyper's own buffer, ~400 KiB, is refused by
/// hyper itself with an empty 431.)
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Seconds a request body may go without a byte before the request gets 408 [30].
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Who may call the server, and how long a body may stall.
#[derive(Clone, Debug)]
pub struct HttpPolicy {
    /// Origins (`https://app.example.com`) that may call cross-origin; `*` allows any.
    /// Same-origin requests (the playground) are always allowed.
    pub cors_origins: Vec<String>,
    /// `Host` names (without port) that are served; `None` serves any. Set to the loopback
    /// names when bound to loopback, against DNS rebinding.
    pub allowed_hosts: Option<Vec<String>>,
    /// How long a request body may go without data.
    pub body_timeout: Duration,
}

impl Default for HttpPolicy {
    /// No cross-origin caller, any `Host` (a router without a socket), 30 s body stalls.
    fn default() -> Self {
        HttpPolicy {
            cors_origins: Vec::new(),
            allowed_hosts: None,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// The names a loopback-bound server answers to.
pub const LOOPBACK_HOSTS: &[&str] = &["localhost", "127.0.0.1", "[::1]"];

impl HttpPolicy {
    fn any_origin(&self) -> bool {
        self.cors_origins.iter().any(|o| o == "*")
    }

    /// Whether `origin` is on the allow-list. Exact (after a trailing `/`), as tower-http
    /// compares it for the CORS headers, so the guard and the CORS answer agree.
    fn origin_listed(&self, origin: &str) -> bool {
        self.any_origin() || (self.cors_origins.iter()).any(|o| o.trim_end_matches('/') == origin)
    }

    /// Whether `host` (a `Host` header, or none) is served. With a list, a request without
    /// a readable `Host` is refused: fail closed.
    fn host_allowed(&self, host: Option<&str>) -> bool {
        let Some(allowed) = &self.allowed_hosts else {
            return true;
        };
        let Some(name) = host.and_then(host_name) else {
            return false;
        };
        // A listed entry may carry a port (`box.lan:8000`); names are compared without.
        let listed = |a: &String| host_name(a).unwrap_or(a).eq_ignore_ascii_case(name);
        allowed.iter().any(listed)
            || (allowed.iter().any(|a| a == "localhost")
                && name.to_ascii_lowercase().ends_with(".localhost"))
    }

    /// CORS answers (preflights and headers) for the listed origins; none when the list is
    /// empty, so browsers keep cross-origin pages out.
    pub fn cors(&self) -> Option<CorsLayer> {
        if self.cors_origins.is_empty() {
            return None;
        }
        let origin = if self.any_origin() {
            AllowOrigin::any()
        } else {
            let list = (self.cors_origins.iter())
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok());
            AllowOrigin::list(list)
        };
        Some(
            CorsLayer::new()
                .allow_origin(origin)
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
                .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
                .expose_headers([
                    HeaderName::from_static("x-request-id"),
                    HeaderName::from_static("retry-after"),
                ])
                .max_age(Duration::from_secs(600)),
        )
    }
}

/// `host[:port]` without the port (IPv6 literals keep their brackets); `None` when what
/// follows the name is not `:digits`.
fn host_name(host: &str) -> Option<&str> {
    let (name, rest) = match host.strip_prefix('[') {
        Some(_) => host.split_at(host.find(']')? + 1),
        None => host.split_at(host.find(':').unwrap_or(host.len())),
    };
    let port_ok = match rest.strip_prefix(':') {
        Some(port) => !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()),
        None => rest.is_empty(),
    };
    (port_ok && !name.is_empty()).then_some(name)
}

/// Whether `origin` (`scheme://host[:port]`) names the server the request was sent to.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let authority = origin.split_once("://").map(|(_, rest)| rest);
    matches!((authority, host), (Some(a), Some(h)) if a.eq_ignore_ascii_case(h))
}

fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

/// Refuses oversized header blocks, foreign `Host` names and foreign origins, before any
/// other work.
pub async fn guard(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    match check(&state.policy, &req) {
        Ok(()) => next.run(req).await,
        Err(e) => ApiError(e).into_response(),
    }
}

fn check(policy: &HttpPolicy, req: &Request) -> Result<(), ServiceError> {
    let headers = req.headers();
    let size = header_bytes(headers);
    if size > MAX_HEADER_BYTES {
        return Err(ServiceError::HeadersTooLarge(MAX_HEADER_BYTES));
    }
    let host = (headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if !policy.host_allowed(host) {
        return Err(ServiceError::HostNotAllowed(host.unwrap_or("").to_string()));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        if !same_origin(origin, host) && !policy.origin_listed(origin) {
            return Err(ServiceError::OriginNotAllowed(origin.to_string()));
        }
    }
    Ok(())
}

/// Chat and batch bodies are JSON: any other content type (a form, `text/plain`, none) is
/// 415, so a browser cannot send one cross-site without a preflight.
pub async fn require_json(req: Request, next: Next) -> Response {
    let ct = (req.headers().get(header::CONTENT_TYPE)).and_then(|v| v.to_str().ok());
    let essence = ct
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if essence == "application/json" {
        return next.run(req).await;
    }
    ApiError(ServiceError::UnsupportedMediaType(
        ct.unwrap_or("none").to_string(),
    ))
    .into_response()
}

/// Gives up on a body that sends nothing for the policy's timeout: the read fails, and the
/// answer, whatever the handler made of the failed read, is 408 in Groq's envelope.
pub async fn body_timeout(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let timeout = state.policy.body_timeout;
    let stalled = Arc::new(AtomicBool::new(false));
    let flag = stalled.clone();
    let (parts, body) = req.into_parts();
    let stream = body.into_data_stream();
    let timed = tokio_stream::StreamExt::timeout(stream, timeout).map(move |item| match item {
        Ok(chunk) => chunk.map_err(axum::BoxError::from),
        Err(_) => {
            flag.store(true, Ordering::Relaxed);
            Err(axum::BoxError::from("request body timed out"))
        }
    });
    let req = Request::from_parts(parts, Body::from_stream(timed));
    let resp = next.run(req).await;
    if stalled.load(Ordering::Relaxed) {
        return ApiError(ServiceError::RequestTimeout(timeout.as_secs())).into_response();
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("localhost:8000"), Some("localhost"));
        assert_eq!(host_name("[::1]:8000"), Some("[::1]"));
        assert_eq!(host_name("example.com"), Some("example.com"));
        for bad in ["[::1]junk", "localhost:80x", "localhost:", ":8000", "[::1"] {
            assert_eq!(host_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn loopback_policy_serves_loopback_names_only() {
        let p = HttpPolicy {
            allowed_hosts: Some(LOOPBACK_HOSTS.iter().map(|s| s.to_string()).collect()),
            ..HttpPolicy::default()
        };
        for ok in [
            "localhost:8000",
            "127.0.0.1:1",
            "[::1]:80",
            "app.localhost:3",
            "LOCALHOST",
        ] {
            assert!(p.host_allowed(Some(ok)), "{ok}");
        }
        let refused = [
            "evil.example",
            "evil.example:8000",
            "127.0.0.1.evil.example",
            "localhost.evil",
            "localhost.",
            "[::1]junk",
        ];
        for bad in refused {
            assert!(!p.host_allowed(Some(bad)), "{bad}");
        }
        assert!(!p.host_allowed(None), "no Host with a list is refused");
        assert!(HttpPolicy::default().host_allowed(None));
        let listed = HttpPolicy {
            allowed_hosts: Some(vec!["box.lan:8000".into()]),
            ..HttpPolicy::default()
        };
        assert!(listed.host_allowed(Some("box.lan:9000")));
    }

    #[test]
    fn same_origin_compares_the_authority() {
        assert!(same_origin("http://127.0.0.1:8000", Some("127.0.0.1:8000")));
        assert!(!same_origin(
            "http://127.0.0.1:8001",
            Some("127.0.0.1:8000")
        ));
        assert!(!same_origin("null", Some("127.0.0.1:8000")));
        assert!(!same_origin("https://evil.example", None));
    }
}
