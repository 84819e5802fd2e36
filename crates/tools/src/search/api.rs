//! Adapters for search APIs, each configured by its endpoint URL and key:
//! - [`SearxNg`]: a SearXNG instance's JSON API (`GET /search?q=...&format=json`);
//! - [`Tavily`]: `POST https://api.tavily.com/search` (Bearer key), which takes the domain
//!   lists and Groq's country names itself;
//! - [`Brave`]: `GET https://api.search.brave.com/res/v1/web/search` (`X-Subscription-Token`).
//!
//! Domain lists are also applied to what comes back, so `*.edu` means the same everywhere.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::{domain_allowed, SearchBackend, SearchError, SearchQuery, SearchSettings};
use crate::tool::SearchHit;

/// How long one API call may take.
const TIMEOUT: Duration = Duration::from_secs(15);

fn client() -> Result<reqwest::Client, SearchError> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| SearchError::Backend(e.to_string()))
}

fn backend_err(e: reqwest::Error) -> SearchError {
    SearchError::Backend(e.without_url().to_string())
}

/// Checks the status and decodes the body as `T`.
async fn decode<T: for<'de> Deserialize<'de>>(resp: reqwest::Response) -> Result<T, SearchError> {
    let status = resp.status();
    if !status.is_success() {
        return Err(SearchError::Backend(format!(
            "the search API answered {status}"
        )));
    }
    resp.json::<T>().await.map_err(backend_err)
}

/// Refuses what a backend cannot do: a country (`country_why`, or `None` when it takes
/// Groq's country names) and images (no backend collects them yet).
fn refuse(
    s: &SearchSettings,
    country_why: Option<&'static str>,
    images_why: &'static str,
) -> Result<(), SearchError> {
    if let (Some(_), Some(why)) = (&s.country, country_why) {
        return Err(SearchError::Unsupported("country", why));
    }
    if s.include_images {
        return Err(SearchError::Unsupported("include_images", images_why));
    }
    Ok(())
}

/// The hits of a `{"results": [{title, url, content, score?}]}` answer (SearXNG's and
/// Tavily's shape), best first, filtered.
async fn titled_hits(
    resp: Result<reqwest::Response, reqwest::Error>,
    q: &SearchQuery,
) -> Result<Vec<SearchHit>, SearchError> {
    let body: ResultsBody = decode(resp.map_err(backend_err)?).await?;
    let hits = body.results.into_iter().enumerate().map(|(i, h)| h.hit(i));
    Ok(filtered(hits.collect(), q))
}

/// Keeps the hits the domain lists allow, at most `max`.
fn filtered(hits: Vec<SearchHit>, q: &SearchQuery) -> Vec<SearchHit> {
    hits.into_iter()
        .filter(|h| domain_allowed(&h.url, &q.settings))
        .take(q.max_results.max(1))
        .collect()
}

#[derive(Deserialize)]
struct TitledHit {
    #[serde(default)]
    title: String,
    url: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    score: Option<f64>,
}

impl TitledHit {
    fn hit(self, rank: usize) -> SearchHit {
        SearchHit {
            title: self.title,
            url: self.url,
            content: self.content,
            score: self.score.unwrap_or(1.0 / (rank as f64 + 1.0)),
        }
    }
}

#[derive(Deserialize)]
struct ResultsBody {
    #[serde(default)]
    results: Vec<TitledHit>,
}

/// A SearXNG instance (`base` like `http://127.0.0.1:8888`).
#[derive(Debug, Clone)]
pub struct SearxNg {
    pub base: String,
}

#[async_trait]
impl SearchBackend for SearxNg {
    fn name(&self) -> &'static str {
        "SearXNG"
    }

    fn check(&self, s: &SearchSettings) -> Result<(), SearchError> {
        refuse(
            s,
            Some("SearXNG takes no country"),
            "images are not collected from SearXNG",
        )
    }

    async fn search(&self, q: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        let url = format!("{}/search", self.base.trim_end_matches('/'));
        let resp = client()?
            .get(url)
            .query(&[("q", q.query.as_str()), ("format", "json")])
            .send()
            .await;
        titled_hits(resp, q).await
    }
}

/// Tavily's search API (`endpoint` defaults to `https://api.tavily.com/search`).
#[derive(Debug, Clone)]
pub struct Tavily {
    pub endpoint: String,
    pub api_key: String,
}

/// Tavily's endpoint.
pub const TAVILY_ENDPOINT: &str = "https://api.tavily.com/search";

#[async_trait]
impl SearchBackend for Tavily {
    fn name(&self) -> &'static str {
        "Tavily"
    }

    fn check(&self, s: &SearchSettings) -> Result<(), SearchError> {
        refuse(s, None, "images are not collected from Tavily")
    }

    async fn search(&self, q: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        let s = &q.settings;
        let mut body = json!({
            "query": q.query,
            "max_results": q.max_results.clamp(1, 20),
            "topic": "general",
        });
        // Tavily takes plain domains; wildcards are applied to the answer below.
        let plain = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|d| d.trim_start_matches("*.").to_string())
                .collect()
        };
        if !s.include_domains.is_empty() {
            body["include_domains"] = json!(plain(&s.include_domains));
        }
        if !s.exclude_domains.is_empty() {
            body["exclude_domains"] = json!(plain(&s.exclude_domains));
        }
        if let Some(c) = &s.country {
            body["country"] = json!(c);
        }
        let resp = client()?
            .post(&self.endpoint)
            .bearer_auth(&self.api_key)
            .json(&body)
            .send()
            .await;
        titled_hits(resp, q).await
    }
}

/// Brave's web search API (`endpoint` defaults to Brave's).
#[derive(Debug, Clone)]
pub struct Brave {
    pub endpoint: String,
    pub api_key: String,
}

/// Brave's endpoint.
pub const BRAVE_ENDPOINT: &str = "https://api.search.brave.com/res/v1/web/search";

#[derive(Deserialize)]
struct BraveBody {
    #[serde(default)]
    web: Option<BraveWeb>,
}

#[derive(Deserialize)]
struct BraveWeb {
    #[serde(default)]
    results: Vec<BraveHit>,
}

#[derive(Deserialize)]
struct BraveHit {
    #[serde(default)]
    title: String,
    url: String,
    #[serde(default)]
    description: String,
}

#[async_trait]
impl SearchBackend for Brave {
    fn name(&self) -> &'static str {
        "Brave"
    }

    fn check(&self, s: &SearchSettings) -> Result<(), SearchError> {
        refuse(
            s,
            Some("Brave takes country codes, not Groq's country names"),
            "images are not collected from Brave",
        )
    }

    async fn search(&self, q: &SearchQuery) -> Result<Vec<SearchHit>, SearchError> {
        let count = q.max_results.clamp(1, 20).to_string();
        let resp = client()?
            .get(&self.endpoint)
            .header("X-Subscription-Token", &self.api_key)
            .header("Accept", "application/json")
            .query(&[("q", q.query.as_str()), ("count", count.as_str())])
            .send()
            .await
            .map_err(backend_err)?;
        let body: BraveBody = decode(resp).await?;
        let results = body.web.map(|w| w.results).unwrap_or_default();
        let hits = results.into_iter().enumerate().map(|(i, h)| SearchHit {
            title: h.title,
            url: h.url,
            content: h.description,
            score: 1.0 / (i as f64 + 1.0),
        });
        Ok(filtered(hits.collect(), q))
    }
}
