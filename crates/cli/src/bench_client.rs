//! The benchmarks' HTTP client: one streaming chat request, timed.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use futures::StreamExt;

/// The benchmarks' client: a new connection per request. llama-server closes a kept-alive
/// connection on its own schedule, and a request sent on one it has just closed fails
/// ("error sending request"), which ended peer runs half-way; a loopback connect costs well
/// under a millisecond, the same on both sides.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("a client without TLS settings builds")
}

/// One streaming request: when it was sent, its first and last content, and its completion
/// tokens (from `usage`, or the number of content chunks when the stream ends in an error).
pub async fn http_one(
    client: &reqwest::Client,
    url: &str,
    body: serde_json::Value,
) -> Result<(Instant, Instant, Instant, u64)> {
    let sent = Instant::now();
    let resp = client.post(url).json(&body).send().await?;
    if !resp.status().is_success() {
        bail!(
            "server answered {}: {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    let mut stream = resp.bytes_stream();
    let mut first = None;
    let mut last = sent;
    let mut tokens = 0u64;
    let mut chunks = 0u64;
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let line: Vec<u8> = buf.drain(..end + 2).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(data)?;
            let has_content = v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|s| !s.is_empty());
            if has_content {
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                chunks += 1;
            }
            // Groq's place for usage in a stream, then OpenAI's (llama-server).
            let usage = v["x_groq"]["usage"]["completion_tokens"].as_u64();
            if let Some(n) = usage.or_else(|| v["usage"]["completion_tokens"].as_u64()) {
                tokens = n;
            }
        }
    }
    let first = first.context("the stream carried no content")?;
    Ok((sent, first, last, if tokens > 0 { tokens } else { chunks }))
}

/// The mean of `xs`; 0 for none.
pub fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}
