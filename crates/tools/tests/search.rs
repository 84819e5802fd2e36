//! Web search backends: the local tantivy index ranks the operator's documents and honours
//! the domain lists; the API adapters speak each API's documented request and response
//! shapes (checked against loopback servers that answer like the real ones).

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::Query;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use peregrine_tools::search::api::{Brave, SearxNg, Tavily};
use peregrine_tools::search::LocalIndex;
use peregrine_tools::{SearchBackend, SearchError, SearchQuery, SearchSettings};
use serde_json::{json, Value};

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn corpus() -> (tempfile::TempDir, LocalIndex) {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write(r, "example.com/falcons.md", "# Peregrine falcons\n\nThe peregrine falcon is the fastest animal: it dives at over 300 km/h.");
    write(
        r,
        "example.com/birds/owls.md",
        "# Owls\n\nOwls hunt at night. A falcon hunts by day.",
    );
    write(r, "cs.mit.edu/raptors.html", "<html><head><title>Raptors at MIT</title></head><body><p>The peregrine falcon nests on the Green Building.</p></body></html>");
    write(
        r,
        "notes.txt",
        "Unrelated notes about databases and indexes.",
    );
    write(r, "image.png", "not indexed");
    let index = LocalIndex::build(r).unwrap();
    (dir, index)
}

fn query(q: &str, settings: SearchSettings) -> SearchQuery {
    SearchQuery {
        query: q.into(),
        max_results: 5,
        settings,
    }
}

#[tokio::test]
async fn the_local_index_ranks_documents_and_maps_urls() {
    let (_dir, index) = corpus();
    assert_eq!(index.documents, 4);
    let hits = index
        .search(&query("peregrine falcon", SearchSettings::default()))
        .await
        .unwrap();
    let urls: Vec<&str> = hits.iter().map(|h| h.url.as_str()).collect();
    assert_eq!(hits.len(), 3, "{urls:?}");
    assert_eq!(urls[0], "https://example.com/falcons.md", "{urls:?}");
    assert!(
        urls.contains(&"https://cs.mit.edu/raptors.html"),
        "{urls:?}"
    );
    assert_eq!(hits[0].title, "Peregrine falcons");
    assert!(hits[0].content.contains("fastest"), "{}", hits[0].content);
    assert!(
        hits.windows(2).all(|w| w[0].score >= w[1].score),
        "best first"
    );
    assert!(hits.iter().all(|h| h.score > 0.0));
    let html = hits.iter().find(|h| h.url.contains("mit.edu")).unwrap();
    assert_eq!(html.title, "Raptors at MIT");
    // A file outside a domain folder keeps its path.
    let notes = index
        .search(&query("databases", SearchSettings::default()))
        .await
        .unwrap();
    assert!(notes[0].url.starts_with("file:///"), "{}", notes[0].url);
}

#[tokio::test]
async fn the_local_index_honours_the_domain_lists() {
    let (_dir, index) = corpus();
    let only_edu = SearchSettings {
        include_domains: vec!["*.edu".into()],
        ..Default::default()
    };
    let hits = index.search(&query("falcon", only_edu)).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].url, "https://cs.mit.edu/raptors.html");
    let no_example = SearchSettings {
        exclude_domains: vec!["example.com".into()],
        ..Default::default()
    };
    let hits = index.search(&query("falcon", no_example)).await.unwrap();
    assert!(
        hits.iter().all(|h| !h.url.contains("example.com")),
        "{hits:?}"
    );
    assert_eq!(hits.len(), 1);
    // Settings it cannot honour are refused, not ignored.
    let country = SearchSettings {
        country: Some("germany".into()),
        ..Default::default()
    };
    assert!(matches!(
        index.check(&country),
        Err(SearchError::Unsupported("country", _))
    ));
}

/// What a fake API saw.
type Seen = Arc<Mutex<Vec<Value>>>;

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn searxng_json_api() {
    let seen: Seen = Default::default();
    let s = seen.clone();
    let app = Router::new().route(
        "/search",
        get(move |Query(q): Query<Value>| async move {
            s.lock().unwrap().push(q);
            // SearXNG's `format=json` answer (trimmed to what matters).
            Json(json!({"query": "falcon", "number_of_results": 0, "results": [
                {"url": "https://a.example.org/1", "title": "One", "content": "first", "engine": "x", "score": 2.5},
                {"url": "https://b.test/2", "title": "Two", "content": "second", "engine": "y", "score": 1.0}
            ], "answers": [], "suggestions": []}))
        }),
    );
    let base = serve(app).await;
    let backend = SearxNg { base };
    let settings = SearchSettings {
        exclude_domains: vec!["b.test".into()],
        ..Default::default()
    };
    let hits = backend.search(&query("falcon", settings)).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!((hits[0].title.as_str(), hits[0].score), ("One", 2.5));
    assert_eq!(
        seen.lock().unwrap()[0],
        json!({"q": "falcon", "format": "json"})
    );
    assert!(backend
        .check(&SearchSettings {
            country: Some("france".into()),
            ..Default::default()
        })
        .is_err());
}

#[tokio::test]
async fn tavily_search_api() {
    let seen: Seen = Default::default();
    let s = seen.clone();
    let app = Router::new().route(
        "/search",
        post(move |headers: HeaderMap, Json(body): Json<Value>| async move {
            let auth = headers["authorization"].to_str().unwrap().to_string();
            s.lock().unwrap().push(json!({"auth": auth, "body": body}));
            // Tavily's documented response.
            Json(json!({"query": "falcon", "follow_up_questions": null, "answer": null, "images": [],
                "results": [{"title": "Falcon", "url": "https://www.nature.edu/falcon", "content": "fast bird",
                             "score": 0.81, "raw_content": null}],
                "response_time": 1.2}))
        }),
    );
    let base = serve(app).await;
    let backend = Tavily {
        endpoint: format!("{base}/search"),
        api_key: "tvly-test".into(),
    };
    let settings = SearchSettings {
        include_domains: vec!["*.edu".into()],
        country: Some("united states".into()),
        ..Default::default()
    };
    let hits = backend.search(&query("falcon", settings)).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].score, 0.81);
    let got = seen.lock().unwrap()[0].clone();
    assert_eq!(got["auth"], "Bearer tvly-test");
    assert_eq!(got["body"]["query"], "falcon");
    assert_eq!(got["body"]["include_domains"], json!(["edu"]));
    assert_eq!(got["body"]["country"], "united states");
    assert_eq!(got["body"]["max_results"], 5);
}

#[tokio::test]
async fn brave_web_search_api() {
    let seen: Seen = Default::default();
    let s = seen.clone();
    let app = Router::new().route(
        "/res/v1/web/search",
        get(move |headers: HeaderMap, Query(q): Query<Value>| async move {
            let token = headers["x-subscription-token"].to_str().unwrap().to_string();
            s.lock().unwrap().push(json!({"token": token, "q": q}));
            Json(json!({"type": "search", "query": {"original": "falcon"}, "web": {"type": "search", "results": [
                {"title": "Falcon A", "url": "https://a.com/", "description": "about <strong>falcons</strong>"},
                {"title": "Falcon B", "url": "https://b.com/", "description": "more"}
            ]}}))
        }),
    );
    let base = serve(app).await;
    let backend = Brave {
        endpoint: format!("{base}/res/v1/web/search"),
        api_key: "brave-key".into(),
    };
    let hits = backend
        .search(&query("falcon", SearchSettings::default()))
        .await
        .unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(hits[0].content, "about <strong>falcons</strong>");
    assert!(hits[0].score > hits[1].score);
    let got = seen.lock().unwrap()[0].clone();
    assert_eq!(
        got,
        json!({"token": "brave-key", "q": {"q": "falcon", "count": "5"}})
    );
}

#[tokio::test]
async fn an_api_error_is_a_backend_error() {
    let app = Router::new().route(
        "/search",
        get(|| async { (axum::http::StatusCode::UNAUTHORIZED, "no") }),
    );
    let base = serve(app).await;
    let e = SearxNg { base }
        .search(&query("x", SearchSettings::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(e, SearchError::Backend(ref m) if m.contains("401")),
        "{e}"
    );
}
