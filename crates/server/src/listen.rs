//! The accept loop: HTTP/1.1 connections served by hyper with a header read timeout, and a
//! graceful drain with a deadline on shutdown.
//!
//! Why not `axum::serve`: it gives no way to set hyper's header read timeout (100 stalled
//! connections were all still held after 35 s) and drains without a deadline (one stalled
//! connection kept a SIGTERM'd server alive for over a minute).

use std::future::Future;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use peregrine_service::ServiceError;
use tokio::net::TcpListener;

/// Seconds a connection may take to send a request's headers [10].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Seconds in-flight requests get to finish after a shutdown signal [30].
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// How long reads and the drain may take.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From a connection's first byte (or the end of its previous request) to the end of
    /// the request's headers; past it hyper closes the connection.
    pub header: Duration,
    /// After the shutdown signal: how long open connections may finish their requests.
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: DEFAULT_HEADER_TIMEOUT,
            drain: DEFAULT_DRAIN,
        }
    }
}

/// Serves `app` on `listener` until `signal` resolves; then lets open connections finish
/// their requests for at most `t.drain` while new connections get 503 (Groq's envelope,
/// `connection: close`), so a client or load balancer learns at once to go elsewhere, and
/// returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    t: Timeouts,
    signal: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(t.header)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(app.clone());
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut signal => break,
        }
    }
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(t.drain) => {
            tracing::warn!(seconds = t.drain.as_secs(), "drain deadline passed; closing the connections left");
        }
        () = refuse_new(&listener, &builder) => {}
    }
    Ok(())
}

/// 503 in Groq's envelope, closing the connection.
fn unavailable(why: ServiceError) -> Response {
    let mut resp = crate::error::ApiError(why).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    resp
}

/// While draining: answers every request on a new connection with 503 and closes it.
async fn refuse_new(listener: &TcpListener, builder: &http1::Builder) {
    let refuse = Router::new().fallback(|| async { unavailable(ServiceError::ShuttingDown) });
    refuse_with(listener, builder, refuse).await
}

/// While the models load (the listener is bound first, so probes get an answer): `/ready`
/// and `/health` say `loading` with 503, every other request gets Groq's 503 envelope.
/// Runs until dropped.
pub async fn refuse_while_loading(listener: &TcpListener, header_timeout: Duration) {
    let loading = || async {
        let mut resp = axum::Json(serde_json::json!({"status": "loading"})).into_response();
        *resp.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
        resp
    };
    let refuse = Router::new()
        .route("/ready", axum::routing::get(loading))
        .route("/health", axum::routing::get(loading))
        .fallback(|| async { unavailable(ServiceError::Loading) });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    refuse_with(listener, &builder, refuse).await
}

async fn refuse_with(listener: &TcpListener, builder: &http1::Builder, refuse: Router) {
    let mut builder = builder.clone();
    builder.keep_alive(false);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let service = TowerToHyperService::new(refuse.clone());
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}
