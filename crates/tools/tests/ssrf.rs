//! The SSRF suite of `visit_website`'s fetcher: internal targets are refused in every
//! spelling, before any connection, and again on every redirect hop; allow-listed loopback
//! pages are fetched and turned into text; size, time and redirect caps hold.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use peregrine_tools::{FetchConfig, FetchError, Fetcher};

const PAGE: &str = "<html><head><title>Peregrine test page</title><script>steal()</script></head>\
<body><h1>Falcons</h1><p>The peregrine falcon is the fastest bird.</p></body></html>";

/// A loopback server; counts the requests it gets.
async fn server() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/page",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }),
        )
        .route("/text", get(|| async { "plain words" }))
        .route("/big", get(|| async { "x".repeat(3 << 20) }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route("/loop", get(|| async { redirect("/loop") }))
        .route(
            "/redirect",
            get(|Query(q): Query<HashMap<String, String>>| async move { redirect(&q["to"]) }),
        )
        .layer(axum::middleware::from_fn_with_state(
            hits.clone(),
            |State(h): State<Arc<AtomicUsize>>, req, next: axum::middleware::Next| async move {
                h.fetch_add(1, Ordering::SeqCst);
                next.run(req).await
            },
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("127.0.0.1:{}", addr.port()), hits)
}

fn redirect(to: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to.to_string())]).into_response()
}

fn fetcher(allow: &[&str]) -> Fetcher {
    Fetcher::new(FetchConfig {
        allow_hosts: allow.iter().map(|s| s.to_string()).collect(),
        timeout: Duration::from_secs(3),
        ..FetchConfig::default()
    })
}

fn is_refusal(e: &FetchError) -> bool {
    matches!(
        e,
        FetchError::Refused { .. } | FetchError::Scheme(_) | FetchError::Credentials
    )
}

#[tokio::test]
async fn internal_targets_are_refused_in_every_spelling() {
    let (host, hits) = server().await;
    let port = host.rsplit(':').next().unwrap();
    let f = fetcher(&[]);
    let urls = [
        format!("http://{host}/page"),
        format!("http://localhost:{port}/page"),
        format!("http://LocalHost:{port}/page"),
        format!("http://[::1]:{port}/page"),
        format!("http://2130706433:{port}/page"),
        format!("http://0x7f000001:{port}/page"),
        format!("http://0x7f.1:{port}/page"),
        format!("http://0177.0.0.1:{port}/page"),
        format!("http://127.1:{port}/page"),
        format!("http://0.0.0.0:{port}/page"),
        format!("http://0:{port}/page"),
        format!("http://[::ffff:127.0.0.1]:{port}/page"),
        format!("http://[::ffff:7f00:1]:{port}/page"),
        format!("http://[0:0:0:0:0:ffff:127.0.0.1]:{port}/page"),
        format!("http://[::]:{port}/page"),
        "http://169.254.169.254/latest/meta-data/".into(),
        "http://[fd00:ec2::254]/latest/meta-data/".into(),
        "http://10.0.0.1/".into(),
        "http://172.16.5.4/".into(),
        "http://192.168.1.1/".into(),
        "http://100.64.0.1/".into(),
        "http://[fe80::1]/".into(),
        "http://224.0.0.1/".into(),
        "http://[ff02::1]/".into(),
        "http://[64:ff9b::7f00:1]/".into(),
        "http://[2002:7f00:1::]/".into(),
        "http://255.255.255.255/".into(),
        "file:///etc/passwd".into(),
        "gopher://127.0.0.1:70/".into(),
        "ftp://127.0.0.1/".into(),
        format!("http://user:pass@{host}/page"),
    ];
    for url in &urls {
        let e = f.fetch(url).await.expect_err(url);
        assert!(is_refusal(&e), "{url}: {e}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "no refused URL reached the server"
    );
}

#[tokio::test]
async fn an_allow_listed_loopback_page_is_fetched_as_text() {
    let (host, hits) = server().await;
    let f = fetcher(&[&host]);
    let page = f.fetch(&format!("http://{host}/page")).await.unwrap();
    assert_eq!(page.status, 200);
    assert_eq!(page.title.as_deref(), Some("Peregrine test page"));
    assert!(
        page.text
            .contains("The peregrine falcon is the fastest bird."),
        "{}",
        page.text
    );
    assert!(!page.text.contains("steal"), "{}", page.text);
    let text = f.fetch(&format!("http://{host}/text")).await.unwrap();
    assert_eq!(text.text, "plain words");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_allow_list_is_by_host_and_port() {
    let (a, _) = server().await;
    let (b, b_hits) = server().await;
    let f = fetcher(&[&a]);
    let e = f.fetch(&format!("http://{b}/page")).await.unwrap_err();
    assert!(matches!(e, FetchError::Refused { .. }), "{e}");
    assert_eq!(b_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn every_redirect_hop_is_vetted_again() {
    let (a, _) = server().await;
    let (b, b_hits) = server().await;
    let b_port = b.rsplit(':').next().unwrap();
    let f = fetcher(&[&a]);
    let targets = [
        format!("http://{b}/page"),
        format!("http://localhost:{b_port}/page"),
        format!("http://[::1]:{b_port}/page"),
        format!("http://2130706433:{b_port}/page"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::ffff:169.254.169.254]/".to_string(),
        "file:///etc/passwd".to_string(),
    ];
    for to in &targets {
        let url = format!(
            "http://{a}/redirect?to={}",
            form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>()
        );
        let e = f.fetch(&url).await.expect_err(to);
        assert!(is_refusal(&e), "{to}: {e}");
    }
    // A chain that stays on the allowed host is followed to its page.
    let chain = format!(
        "http://{a}/redirect?to={}",
        form_urlencoded::byte_serialize(b"/redirect?to=%2Fpage").collect::<String>()
    );
    let page = f.fetch(&chain).await.unwrap();
    assert_eq!(page.title.as_deref(), Some("Peregrine test page"));
    assert!(page.url.ends_with("/page"), "{}", page.url);
    assert_eq!(b_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn redirect_loops_size_and_time_are_capped() {
    let (a, _) = server().await;
    let f = fetcher(&[&a]);
    let e = f.fetch(&format!("http://{a}/loop")).await.unwrap_err();
    assert_eq!(e, FetchError::Redirects(5));
    let big = f.fetch(&format!("http://{a}/big")).await.unwrap();
    assert!(big.truncated);
    assert_eq!(big.text.len(), 2 << 20);
    let started = std::time::Instant::now();
    let e = f.fetch(&format!("http://{a}/slow")).await.unwrap_err();
    assert_eq!(e, FetchError::Timeout(3));
    assert!(started.elapsed() < Duration::from_secs(5));
}
