//! `peregrine bench --structured`: constrained decoding (`response_format: json_schema`)
//! against plain decoding on one server, in one run, plus the grammar mask time per token.
//!
//! Scenarios, each measured twice with the order alternated: one stream alone, plain then
//! constrained; then four streams at once, all plain, then two plain beside two
//! constrained (does grammar work slow the streams that have none?).

use std::time::Instant;

use anyhow::{Context, Result};
use peregrine_runtime::{Runtime, Summary};
use serde_json::{json, Value};

use crate::bench_client::http_one;

const PROMPT: &str = "Write a long story about a peregrine falcon that learns to fly over a city.";

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 80},
            "story": {"type": "string"}
        },
        "required": ["title", "story"],
        "additionalProperties": false
    })
}

fn body(run: &str, i: usize, gen: u32, constrained: bool, bias: &Value) -> Value {
    let mut b = json!({
        "model": "bench",
        "messages": [
            {"role": "system", "content": format!("[{run}/{i}] You are a helpful assistant.")},
            {"role": "user", "content": PROMPT}
        ],
        "stream": true,
        "temperature": 0,
        "max_tokens": gen,
    });
    if constrained {
        b["response_format"] =
            json!({"type": "json_schema", "json_schema": {"name": "story", "schema": schema()}});
    } else {
        // Plain streams run to `max_tokens`, like the constrained ones that are still
        // inside their story string.
        b["logit_bias"] = bias.clone();
    }
    b
}

/// Per-stream decode rate (tokens after the first / time between first and last content).
struct Stream {
    constrained: bool,
    tok_s: f64,
    tokens: u64,
}

async fn streams(
    url: &str,
    run: &str,
    kinds: &[bool],
    gen: u32,
    bias: &Value,
) -> Result<Vec<Stream>> {
    let client = reqwest::Client::new();
    let futs = kinds.iter().enumerate().map(|(i, &constrained)| {
        let client = client.clone();
        let b = body(run, i, gen, constrained, bias);
        async move {
            let (_, first, last, tokens) = http_one(&client, url, b).await?;
            let secs = (last - first).as_secs_f64().max(1e-9);
            anyhow::Ok(Stream {
                constrained,
                tok_s: tokens.saturating_sub(1) as f64 / secs,
                tokens,
            })
        }
    });
    futures::future::try_join_all(futs).await
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn rate(s: &[Stream], constrained: bool) -> f64 {
    mean(
        s.iter()
            .filter(|x| x.constrained == constrained)
            .map(|x| x.tok_s),
    )
}

fn tokens(s: &[Stream], constrained: bool) -> f64 {
    mean(
        s.iter()
            .filter(|x| x.constrained == constrained)
            .map(|x| x.tokens as f64),
    )
}

fn row(name: &str, m: &Summary) -> String {
    format!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
        m.count, m.mean_us, m.p50_us, m.p99_us, m.max_us
    )
}

pub fn run(
    rt: &tokio::runtime::Runtime,
    url: &str,
    runtime: &Runtime,
    gen: u32,
    bias: &Value,
) -> Result<()> {
    // Warm-up: compiles the schema once (cached afterwards) and pages the weights in.
    rt.block_on(streams(url, "warm", &[true], 32, bias))?;
    rt.block_on(streams(url, "warm", &[false], 32, bias))?;
    runtime.reset_mask_stats();

    let t0 = Instant::now();
    let (mut p1, mut c1, mut p4, mut m4p, mut m4c) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut c1_tokens, mut m4c_tokens) = (vec![], vec![]);
    for round in 0..2 {
        let order: &[bool] = if round == 0 {
            &[false, true]
        } else {
            &[true, false]
        };
        for &constrained in order {
            let s = rt.block_on(streams(
                url,
                &format!("one{round}{constrained}"),
                &[constrained],
                gen,
                bias,
            ))?;
            if constrained {
                c1.push(rate(&s, true));
                c1_tokens.push(tokens(&s, true));
            } else {
                p1.push(rate(&s, false));
            }
        }
        let order: &[bool] = if round == 0 {
            &[false, true]
        } else {
            &[true, false]
        };
        for &mixed in order {
            let kinds: &[bool] = if mixed {
                &[false, true, false, true]
            } else {
                &[false, false, false, false]
            };
            let s = rt.block_on(streams(
                url,
                &format!("four{round}{mixed}"),
                kinds,
                gen,
                bias,
            ))?;
            if mixed {
                m4p.push(rate(&s, false));
                m4c.push(rate(&s, true));
                m4c_tokens.push(tokens(&s, true));
            } else {
                p4.push(rate(&s, false));
            }
        }
    }
    let stats = runtime.mask_stats();
    let avg = |v: &[f64]| mean(v.iter().copied());
    eprintln!("measured in {:.0}s", t0.elapsed().as_secs_f64());
    println!("\n| streams | plain tok/s (per stream) | constrained tok/s (per stream) | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| 1 alone | {:.1} | {:.1} (mean {:.0} tokens) | {:.3}x |",
        avg(&p1),
        avg(&c1),
        avg(&c1_tokens),
        avg(&c1) / avg(&p1)
    );
    println!(
        "| 4: 2 plain + 2 constrained, vs 4 plain | {:.1} (4 plain: {:.1}) | {:.1} (mean {:.0} tokens) | plain beside constrained / all plain: {:.3}x; constrained / plain: {:.3}x |",
        avg(&m4p),
        avg(&p4),
        avg(&m4c),
        avg(&m4c_tokens),
        avg(&m4p) / avg(&p4),
        avg(&m4c) / avg(&m4p)
    );
    println!("\nGrammar work on the engine thread (microseconds):\n");
    println!("| measure | samples | mean | p50 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    println!("{}", row("mask per constrained token", &stats.mask));
    println!("{}", row("wait after forward pass, per step", &stats.wait));
    println!(
        "\nconstrained / plain decode, one stream: {:.3}x",
        avg(&c1) / avg(&p1)
    );
    let _ = gen
        .checked_sub(1)
        .context("--gen-tokens must be at least 2")?;
    Ok(())
}
