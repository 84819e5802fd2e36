//! `peregrine bench --speculation`: speculative decoding on one stream, with speculation off,
//! `auto` and `always`, alternated, on one server; and the step-cost curve that decides
//! whether drafts pay on this machine (what a pass of `k` rows costs against one row).
//!
//! Two workloads: repeating a piece of code with one change (drafts looked up in the prompt
//! do most of it), and, when the model has a draft model (`--draft-model`), writing new code
//! (nothing to look up: the draft model's guesses are measured).

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

/// What the stream is asked to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Repeat [`CODE`] with one change.
    Repeat,
    /// Write new code: prompt lookup finds little, a draft model can guess.
    Write,
}

impl Task {
    fn describe(self) -> &'static str {
        match self {
            Task::Repeat => "one stream repeating code with one change",
            Task::Write => "one stream writing new code",
        }
    }
}

fn body(task: Task) -> Value {
    let (prompt, max_tokens) = match task {
        Task::Repeat => (
            format!("Repeat this Python code exactly, with one change: rename the function `describe` to `summary` everywhere. Answer with the code only.\n\n```python\n{CODE}```"),
            600,
        ),
        Task::Write => (
            "Write a Python class `Inventory` that stores items with a name, a quantity and a price, with methods to add an item, remove an item, update a quantity, compute the total value, and list the items sorted by value. Include docstrings and type hints. Answer with the code only.".to_string(),
            300,
        ),
    };
    json!({
        "model": "bench",
        "messages": [{"role": "user", "content": prompt}],
        "stream": true,
        "temperature": 0,
        "max_tokens": max_tokens,
    })
}

/// One request: (decode tokens per second after the first token, completion tokens).
async fn one(url: &str, task: Task) -> Result<(f64, u64)> {
    let client = client();
    let (_, first, last, tokens) = http_one(&client, url, body(task)).await?;
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

/// Repeating code; then writing new code too when the model has a draft model.
pub fn run_tasks(
    rt: &tokio::runtime::Runtime,
    url: &str,
    runtime: &Runtime,
    with_draft: bool,
) -> Result<()> {
    run(rt, url, runtime, Task::Repeat)?;
    if with_draft {
        run(rt, url, runtime, Task::Write)?;
    }
    Ok(())
}

pub fn run(rt: &tokio::runtime::Runtime, url: &str, runtime: &Runtime, task: Task) -> Result<()> {
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
            let r = rt.block_on(one(url, task))?;
            let after = runtime.mask_stats();
            m.drafted += after.drafted_tokens - before.drafted_tokens;
            m.accepted += after.accepted_tokens - before.accepted_tokens;
            eprintln!("  {:>6}: {:.1} tok/s, {} tokens", m.name, r.0, r.1);
            m.runs.push(r);
        }
    }
    runtime.set_speculation(Speculation::Auto);
    print_modes(&modes, rounds, task);
    print_costs(runtime);
    Ok(())
}

/// The modes' table and their ratios to `off`.
fn print_modes(modes: &[Mode], rounds: usize, task: Task) {
    println!(
        "\nSpeculative decoding, {} ({rounds} requests each, rotated):\n",
        task.describe()
    );
    println!("| speculation | completion tokens | drafted / accepted per request | acceptance | decode tok/s |");
    println!("|---|---|---|---|---|");
    let per = |x: u64| x as f64 / rounds as f64;
    for m in modes {
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
}

/// The step-cost curve measured at load, and the draft model's beside it.
fn print_costs(runtime: &Runtime) {
    let curve = runtime.step_costs();
    if let Some(&(_, one)) = curve.first() {
        println!("\nStep costs measured at load (a pass of k decode rows against one row):\n");
        println!("| rows | ms | x one row |");
        println!("|---|---|---|");
        for (rows, secs) in curve {
            println!("| {rows} | {:.1} | {:.2} |", secs * 1e3, secs / one);
        }
        let draft = runtime.draft_step_costs();
        if !draft.is_empty() {
            println!(
                "\nThe draft model's passes, measured at load (against the model's one row):\n"
            );
            println!("| rows | ms | x the model's one row |");
            println!("|---|---|---|");
            for (rows, secs) in draft {
                println!("| {rows} | {:.1} | {:.2} |", secs * 1e3, secs / one);
            }
        }
    }
}
