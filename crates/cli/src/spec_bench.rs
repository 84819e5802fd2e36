//! `peregrine bench --speculation`: speculative decoding with drafts looked up in the prompt,
//! on one stream asked to repeat a piece of code with one change, with speculation off,
//! `auto` and `always`, alternated, on one server; and the step-cost curve that decides
//! whether drafts pay on this machine (what a pass of `k` rows costs against one row).

use anyhow::Result;
use peregrine_runtime::{Runtime, Speculation};
use serde_json::{json, Value};

use crate::bench_client::{client, http_one, mean};

/// The code the model is asked to repeat: long enough that most of the answer recurs.
const CODE: &str = r#"import math


def area(width, height):
    """The area of a rectangle."""
    return width * height


def perimeter(width, height):
    """The perimeter of a rectangle."""
    return 2 * (width + height)


def diagonal(width, height):
    """The length of a rectangle's diagonal."""
    return math.sqrt(width * width + height * height)


def describe(width, height):
    """A one-line description of a rectangle."""
    return (
        f"{width} by {height}: area {area(width, height)}, "
        f"perimeter {perimeter(width, height)}, "
        f"diagonal {diagonal(width, height):.2f}"
    )


if __name__ == "__main__":
    for width, height in [(3, 4), (5, 12), (8, 15)]:
        print(describe(width, height))
"#;

fn body() -> Value {
    json!({
        "model": "bench",
        "messages": [{"role": "user", "content": format!(
            "Repeat this Python code exactly, with one change: rename the function `describe` to `summary` everywhere. Answer with the code only.\n\n```python\n{CODE}```"
        )}],
        "stream": true,
        "temperature": 0,
        "max_tokens": 600,
    })
}

/// One request: (decode tokens per second after the first token, completion tokens).
async fn one(url: &str) -> Result<(f64, u64)> {
    let client = client();
    let (_, first, last, tokens) = http_one(&client, url, body()).await?;
    let decode = (last - first).as_secs_f64().max(1e-9);
    Ok((tokens.saturating_sub(1) as f64 / decode, tokens))
}

struct Mode {
    name: &'static str,
    mode: Speculation,
    runs: Vec<(f64, u64)>,
    drafted: u64,
    accepted: u64,
}

pub fn run(rt: &tokio::runtime::Runtime, url: &str, runtime: &Runtime) -> Result<()> {
    let rounds: usize = 3;
    let mut modes: Vec<Mode> = [
        ("off", Speculation::Off),
        ("auto", Speculation::Auto),
        ("always", Speculation::Always),
    ]
    .into_iter()
    .map(|(name, mode)| Mode {
        name,
        mode,
        runs: Vec::new(),
        drafted: 0,
        accepted: 0,
    })
    .collect();
    for round in 0..rounds {
        // Each round in another order, so drift of the machine falls on every mode.
        let n = modes.len();
        for i in 0..n {
            let m = &mut modes[(i + round) % n];
            runtime.set_speculation(m.mode);
            let before = runtime.mask_stats();
            let r = rt.block_on(one(url))?;
            let after = runtime.mask_stats();
            m.drafted += after.drafted_tokens - before.drafted_tokens;
            m.accepted += after.accepted_tokens - before.accepted_tokens;
            eprintln!("  {:>6}: {:.1} tok/s, {} tokens", m.name, r.0, r.1);
            m.runs.push(r);
        }
    }
    runtime.set_speculation(Speculation::Auto);
    println!(
        "\nSpeculative decoding (prompt lookup), one stream repeating code with one change \
         ({rounds} requests each, rotated):\n"
    );
    println!("| speculation | completion tokens | drafted / accepted per request | acceptance | decode tok/s |");
    println!("|---|---|---|---|---|");
    let per = |x: u64| x as f64 / rounds as f64;
    for m in &modes {
        let acceptance = if m.drafted > 0 {
            format!("{:.0}%", 100.0 * m.accepted as f64 / m.drafted as f64)
        } else {
            "-".into()
        };
        println!(
            "| {} | {:.0} | {:.0} / {:.0} | {acceptance} | {:.1} |",
            m.name,
            mean(m.runs.iter().map(|r| r.1 as f64)),
            per(m.drafted),
            per(m.accepted),
            mean(m.runs.iter().map(|r| r.0)),
        );
    }
    let rate = |i: usize| mean(modes[i].runs.iter().map(|r| r.0));
    println!(
        "\nauto / off, decode rate: {:.2}x; always / off: {:.2}x",
        rate(1) / rate(0),
        rate(2) / rate(0)
    );
    let curve = runtime.step_costs();
    if let Some(&(_, one)) = curve.first() {
        println!("\nStep costs measured at load (a pass of k decode rows against one row):\n");
        println!("| rows | ms | x one row |");
        println!("|---|---|---|");
        for (rows, secs) in curve {
            println!("| {rows} | {:.1} | {:.2} |", secs * 1e3, secs / one);
        }
    }
    Ok(())
}
