//! `peregrine bench --structured`: constrained decoding (`response_format: json_schema`)
//! against plain decoding on one server, in one run, plus the grammar mask time per token.
//!
//! Scenarios, each measured twice with the order alternated: one stream alone, plain then
//! constrained; then four streams at once, all plain, then two plain beside two
//! constrained (does grammar work slow the streams that have none?); then jump-forward on
//! and off for one stream whose schema has many fixed keys.

use std::time::Instant;

use anyhow::{Context, Result};
use peregrine_runtime::{Runtime, Summary};
use serde_json::{json, Value};

use crate::bench_client::{client, http_one, mean};

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

/// A record with twelve fixed keys and short values: most of its tokens are forced.
fn fixed_key_schema() -> Value {
    let int = json!({"type": "integer"});
    let boolean = json!({"type": "boolean"});
    let props = json!({
        "customer_identifier": int,
        "is_priority_customer": boolean,
        "preferred_contact_channel": {"type": "string", "enum": ["email", "phone", "post"]},
        "account_status": {"type": "string", "enum": ["active", "suspended", "closed"]},
        "number_of_open_orders": int,
        "has_outstanding_balance": boolean,
        "loyalty_program_tier": {"type": "string", "enum": ["bronze", "silver", "gold"]},
        "marketing_emails_allowed": boolean,
        "two_factor_authentication_enabled": boolean,
        "country_code": {"type": "string", "enum": ["US", "GB", "DE", "FR"]},
        "years_as_customer": int,
        "customer_satisfaction_score": int
    });
    let required: Vec<&String> = props
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false
    })
}

fn fixed_key_body() -> Value {
    json!({
        "model": "bench",
        "messages": [{"role": "user", "content": "Make up one customer record."}],
        "stream": true,
        "temperature": 0,
        "max_tokens": 400,
        "response_format": {"type": "json_schema", "json_schema": {"name": "customer", "schema": fixed_key_schema()}},
    })
}

/// One fixed-key request: (completion tokens per second of decoding, seconds from sending to
/// the last token, completion tokens).
async fn fixed_key_one(url: &str) -> Result<(f64, f64, u64)> {
    let client = client();
    let (sent, first, last, tokens) = http_one(&client, url, fixed_key_body()).await?;
    let decode = (last - first).as_secs_f64().max(1e-9);
    Ok((
        tokens.saturating_sub(1) as f64 / decode,
        (last - sent).as_secs_f64(),
        tokens,
    ))
}

/// Jump-forward on and off, alternated over `rounds` rounds, on one server.
pub fn jump_forward(rt: &tokio::runtime::Runtime, url: &str, runtime: &Runtime) -> Result<()> {
    let rounds = 3;
    let (mut on, mut off) = (vec![], vec![]);
    let mut forced = 0;
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for jf in order {
            runtime.set_jump_forward(jf);
            let before = runtime.mask_stats().forced_tokens;
            let r = rt.block_on(fixed_key_one(url))?;
            if jf {
                forced += runtime.mask_stats().forced_tokens - before;
                on.push(r);
            } else {
                off.push(r);
            }
        }
    }
    runtime.set_jump_forward(true);
    let avg = |v: &[(f64, f64, u64)], f: fn(&(f64, f64, u64)) -> f64| mean(v.iter().map(f));
    let (on_rate, off_rate) = (avg(&on, |r| r.0), avg(&off, |r| r.0));
    let (on_secs, off_secs) = (avg(&on, |r| r.1), avg(&off, |r| r.1));
    let (on_tok, off_tok) = (avg(&on, |r| r.2 as f64), avg(&off, |r| r.2 as f64));
    println!(
        "
Jump-forward, one stream, a schema with twelve fixed keys ({rounds} requests each, alternated):
"
    );
    println!("| jump-forward | completion tokens | forced per request | decode tok/s | request seconds |");
    println!("|---|---|---|---|---|");
    println!("| off | {off_tok:.0} | 0 | {off_rate:.1} | {off_secs:.2} |");
    println!(
        "| on | {on_tok:.0} | {:.0} | {on_rate:.1} | {on_secs:.2} |",
        forced as f64 / f64::from(rounds)
    );
    println!(
        "
jump-forward on / off, decode rate: {:.2}x; request time off / on: {:.2}x",
        on_rate / off_rate,
        off_secs / on_secs
    );
    Ok(())
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
    let client = client();
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
    jump_forward(rt, url, runtime)
}
