//! `peregrine bench --peer-url URL`: the same workloads against a peer server (llama.cpp's
//! `llama-server`, which `scripts/bench-peer` builds and starts on the same GGUF and shape)
//! and against Peregrine, alternated, in one run; prints Peregrine / peer ratios.
//!
//! Workloads (all streaming, greedy, end-of-generation banned so lengths match):
//! - aggregate decode at each concurrency level;
//! - time to first token of a cold ~1,700-token prompt, and of the same prompt again;
//! - four clients at once whose ~1,500-token system prompt an earlier request computed:
//!   their mean time to first token against that earlier (cold) request's.
//!
//! Each side's requests start with a marker of their own, so neither side's prompt cache
//! serves the other's measurement, and the order of the sides alternates between rounds.

use anyhow::Result;
use serde_json::{json, Value};

use crate::bench_client::{client, http_one, mean};

/// The two servers measured.
pub struct Sides<'a> {
    pub ours: &'a str,
    pub peer: &'a str,
}

impl Sides<'_> {
    /// The sides in the order of round `round`: the peer first on even rounds.
    fn order(&self, round: usize) -> [(bool, &str); 2] {
        let (ours, peer) = ((true, self.ours), (false, self.peer));
        if round.is_multiple_of(2) {
            [peer, ours]
        } else {
            [ours, peer]
        }
    }
}

/// What the workloads need besides the servers.
pub struct Workload<'a> {
    pub concurrency: &'a [usize],
    pub gen: u32,
    /// `logit_bias` that bans every end-of-generation token.
    pub bias: &'a Value,
    /// Counts the tokens of a text as the model's tokenizer does.
    pub count_tokens: &'a dyn Fn(&str) -> usize,
}

/// A system prompt of at least `tokens` tokens: numbered, varied sentences, so no tokenizer
/// folds it into a few repeated pieces.
fn long_text(tokens: usize, count: &dyn Fn(&str) -> usize) -> String {
    let districts = [
        "harbour",
        "old town",
        "market",
        "station",
        "university",
        "riverside",
    ];
    let mut text = String::from("You are the city's falcon-watch assistant. Field notes follow.\n");
    let mut i = 0usize;
    while count(&text) < tokens {
        let d = districts[i % districts.len()];
        text.push_str(&format!(
            "Note {i}: falcon {} was seen over the {d} at {:02}:{:02}, flying {} at {} metres.\n",
            i * 7 % 97,
            6 + i % 14,
            (i * 13) % 60,
            if i.is_multiple_of(3) {
                "north"
            } else {
                "south-west"
            },
            40 + (i * 11) % 300
        ));
        i += 1;
    }
    text
}

fn body(system: &str, user: &str, max_tokens: u32, bias: &Value) -> Value {
    json!({
        "model": "bench",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "stream": true,
        "temperature": 0,
        "max_tokens": max_tokens,
        "logit_bias": bias,
    })
}

/// Seconds from sending to the first content of one request.
async fn ttft(client: &reqwest::Client, url: &str, body: Value) -> Result<f64> {
    let (sent, first, _, _) = http_one(client, url, body).await?;
    Ok((first - sent).as_secs_f64())
}

/// Aggregate decode rate and mean time to first token of `c` concurrent streams.
async fn aggregate(url: &str, tag: &str, c: usize, w: &Workload<'_>) -> Result<(f64, f64)> {
    let client = client();
    let futs = (0..c).map(|i| {
        let b = body(
            &format!("[{tag}/{i}] You are a helpful assistant."),
            "Write a long story about a peregrine falcon that learns to fly over a city.",
            w.gen,
            w.bias,
        );
        let client = client.clone();
        async move { http_one(&client, url, b).await }
    });
    let results = futures::future::try_join_all(futs).await?;
    let first = results.iter().map(|r| r.1).min();
    let last = results.iter().map(|r| r.2).max();
    let tokens: u64 = results.iter().map(|r| r.3.saturating_sub(1)).sum();
    let secs = match (first, last) {
        (Some(f), Some(l)) => (l - f).as_secs_f64().max(1e-9),
        _ => anyhow::bail!("no results"),
    };
    let ttft = mean(results.iter().map(|r| (r.1 - r.0).as_secs_f64()));
    Ok((tokens as f64 / secs, ttft))
}

/// Cold and cached time to first token of one long prompt.
async fn cold_and_cached(url: &str, tag: &str, long: &str, bias: &Value) -> Result<(f64, f64)> {
    let client = client();
    let system = format!("[{tag}] {long}");
    let b = body(
        &system,
        "Which district is mentioned most? One word.",
        4,
        bias,
    );
    let cold = ttft(&client, url, b.clone()).await?;
    let cached = ttft(&client, url, b).await?;
    Ok((cold, cached))
}

/// One request computes a long system prompt; then four clients with that system prompt and
/// questions of their own arrive at once. Returns (the first request's time to first token,
/// the four's mean).
async fn shared_prefix(url: &str, tag: &str, long: &str, bias: &Value) -> Result<(f64, f64)> {
    let client = client();
    let system = format!("[{tag}] {long}");
    let first = ttft(
        &client,
        url,
        body(&system, "Question 0: which falcon flew highest?", 4, bias),
    )
    .await?;
    let futs = (1..=4).map(|i| {
        let b = body(
            &system,
            &format!("Question {i}: where was falcon {} seen?", i * 7),
            4,
            bias,
        );
        let client = client.clone();
        async move { ttft(&client, url, b).await }
    });
    let four = futures::future::try_join_all(futs).await?;
    Ok((first, mean(four.into_iter())))
}

/// Per side: a list of measurements, ours and the peer's.
#[derive(Default)]
struct Pair {
    ours: Vec<f64>,
    peer: Vec<f64>,
}

impl Pair {
    fn push(&mut self, ours: bool, x: f64) {
        if ours {
            self.ours.push(x);
        } else {
            self.peer.push(x);
        }
    }

    fn means(&self) -> (f64, f64) {
        (
            mean(self.ours.iter().copied()),
            mean(self.peer.iter().copied()),
        )
    }
}

pub fn run(rt: &tokio::runtime::Runtime, sides: &Sides<'_>, w: &Workload<'_>) -> Result<()> {
    // Warm-up on both: pages the weights in, compiles nothing later.
    for (_, url) in sides.order(0) {
        rt.block_on(aggregate(url, "warm", 1, &Workload { gen: 16, ..*w }))?;
    }
    println!("\n| concurrency | llama-server tok/s | Peregrine tok/s | ratio | llama-server TTFT s | Peregrine TTFT s |");
    println!("|---|---|---|---|---|---|");
    for (round, &c) in w.concurrency.iter().enumerate() {
        let (mut rate, mut first) = (Pair::default(), Pair::default());
        for (ours, url) in sides.order(round) {
            let tag = format!("c{c}{}", if ours { "p" } else { "l" });
            let (r, t) = rt.block_on(aggregate(url, &tag, c, w))?;
            eprintln!("  c={c} {}: {r:.1} tok/s, ttft {t:.3}s", side_name(ours));
            rate.push(ours, r);
            first.push(ours, t);
        }
        let ((ro, rp), (to, tp)) = (rate.means(), first.means());
        println!(
            "| {c} | {rp:.1} | {ro:.1} | {:.2}x | {tp:.3} | {to:.3} |",
            ro / rp
        );
    }

    let long = long_text(1700, w.count_tokens);
    let (mut cold, mut cached) = (Pair::default(), Pair::default());
    for round in 0..2 {
        for (ours, url) in sides.order(round) {
            let tag = format!("cold{round}{}", if ours { "p" } else { "l" });
            let (c, k) = rt.block_on(cold_and_cached(url, &tag, &long, w.bias))?;
            eprintln!("  cold prompt {}: {c:.3}s, cached {k:.3}s", side_name(ours));
            cold.push(ours, c);
            cached.push(ours, k);
        }
    }
    let ((co, cp), (ko, kp)) = (cold.means(), cached.means());
    let n = (w.count_tokens)(&long);
    println!("\nTime to first token, a {n}-token prompt (2 rounds each, alternated):\n");
    println!("| prompt | llama-server s | Peregrine s | Peregrine / llama-server |");
    println!("|---|---|---|---|");
    println!("| cold | {cp:.3} | {co:.3} | {:.2}x |", co / cp);
    println!(
        "| cached (same prompt again) | {kp:.3} | {ko:.3} | {:.2}x |",
        ko / kp
    );

    let shared = long_text(1500, w.count_tokens);
    let (mut first, mut four) = (Pair::default(), Pair::default());
    for round in 0..2 {
        for (ours, url) in sides.order(round) {
            let tag = format!("shared{round}{}", if ours { "p" } else { "l" });
            let (f, m) = rt.block_on(shared_prefix(url, &tag, &shared, w.bias))?;
            eprintln!(
                "  shared prefix {}: first {f:.3}s, four {m:.3}s",
                side_name(ours)
            );
            first.push(ours, f);
            four.push(ours, m);
        }
    }
    let ((fo, fp), (mo, mp)) = (first.means(), four.means());
    let n = (w.count_tokens)(&shared);
    println!("\nFour clients at once sharing a {n}-token system prompt that an earlier request computed:\n");
    println!("| | llama-server s | Peregrine s |");
    println!("|---|---|---|");
    println!("| the earlier request (cold) | {fp:.3} | {fo:.3} |");
    println!("| the four, mean | {mp:.3} | {mo:.3} |");
    println!("| the four / cold | {:.2}x | {:.2}x |", mp / fp, mo / fo);
    Ok(())
}

fn side_name(ours: bool) -> &'static str {
    if ours {
        "Peregrine"
    } else {
        "llama-server"
    }
}
