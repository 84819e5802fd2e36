//! `peregrine bench --tools`: what built-in tools cost. The code sandbox's start time and
//! per-call overhead for `print(1)` (p50, p99), then code-execution requests on the served
//! model with the loop's added latency (wall time less the model's own time) beside the
//! model's time, in one run.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use peregrine_tools::{PythonSandbox, SandboxConfig};
use serde_json::{json, Value};

/// The `q`-quantile of `xs` (sorted here), nearest rank.
fn quantile(xs: &mut [f64], q: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    let i = ((xs.len() as f64 * q).ceil() as usize).clamp(1, xs.len()) - 1;
    xs[i]
}

fn ms(s: f64) -> String {
    format!("{:.1} ms", s * 1e3)
}

/// Cold starts (a fresh sandbox's first `print(1)`) and warm calls (`print(1)` again).
async fn sandbox(cold_runs: usize, warm_runs: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut cold = Vec::new();
    for _ in 0..cold_runs {
        let mut sb = PythonSandbox::new(SandboxConfig::default());
        let t = Instant::now();
        let out = sb.run("print(1)").await?;
        cold.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(out.output == "1\n", "unexpected output {out:?}");
    }
    let mut sb = PythonSandbox::new(SandboxConfig::default());
    sb.run("print(1)").await?;
    let mut warm = Vec::new();
    for _ in 0..warm_runs {
        let t = Instant::now();
        sb.run("print(1)").await?;
        warm.push(t.elapsed().as_secs_f64());
    }
    Ok((cold, warm))
}

/// One code-execution request: (wall seconds, the model's own seconds, tools run).
async fn request(client: &reqwest::Client, url: &str, i: usize) -> Result<(f64, f64, usize)> {
    let body = json!({
        "model": "bench",
        "messages": [{"role": "user", "content": format!("Use Python to compute {} * 23.", 17 + i)}],
        "tools": [{"type": "code_interpreter"}],
        "tool_choice": "required",
        "temperature": 0,
        "seed": 1,
        "max_completion_tokens": 96,
    });
    let t = Instant::now();
    let v: Value = client
        .post(url)
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let wall = t.elapsed().as_secs_f64();
    let u = &v["usage"];
    let model = u["queue_time"].as_f64().unwrap_or(0.0) + u["total_time"].as_f64().unwrap_or(0.0);
    let tools = v["choices"][0]["message"]["executed_tools"]
        .as_array()
        .map_or(0, Vec::len);
    Ok((wall, model, tools))
}

/// Runs both parts and prints their tables.
pub fn run(rt: &tokio::runtime::Runtime, url: &str, requests: usize) -> Result<()> {
    let (mut cold, mut warm) = rt
        .block_on(sandbox(20, 200))
        .context("the code sandbox (is bubblewrap installed?)")?;
    println!("\n| sandbox | runs | p50 | p99 |");
    println!("|---|---|---|---|");
    let n = cold.len();
    println!(
        "| start + first `print(1)` | {n} | {} | {} |",
        ms(quantile(&mut cold, 0.5)),
        ms(quantile(&mut cold, 0.99))
    );
    let n = warm.len();
    println!(
        "| later `print(1)` | {n} | {} | {} |",
        ms(quantile(&mut warm, 0.5)),
        ms(quantile(&mut warm, 0.99))
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let mut rows = Vec::new();
    for i in 0..requests {
        rows.push(rt.block_on(request(&client, url, i))?);
    }
    let mut wall: Vec<f64> = rows.iter().map(|r| r.0).collect();
    let mut model: Vec<f64> = rows.iter().map(|r| r.1).collect();
    let mut added: Vec<f64> = rows.iter().map(|r| r.0 - r.1).collect();
    let tools: usize = rows.iter().map(|r| r.2).sum();
    println!(
        "\ncode-execution requests: {requests}, tools run: {tools} ({:.2} per request)",
        tools as f64 / requests.max(1) as f64
    );
    println!("\n| per request | p50 | p99 |");
    println!("|---|---|---|");
    for (name, xs) in [
        ("wall time", &mut wall),
        (
            "model time (queue + prompt + completion, all turns)",
            &mut model,
        ),
        ("added by the tool loop (wall - model)", &mut added),
    ] {
        println!(
            "| {name} | {} | {} |",
            ms(quantile(xs, 0.5)),
            ms(quantile(xs, 0.99))
        );
    }
    let (a, m) = (quantile(&mut added, 0.5), quantile(&mut model, 0.5));
    println!("\ntool loop / model time (p50): {:.3}x", a / m);
    Ok(())
}
