//! `peregrine bench`: the HTTP server against the raw engine, same GGUF, same threads, one
//! run. The raw engine is the same llama.cpp decode loop with no server: a batch per step,
//! the same sampler, no channels, no HTTP. Both generate exactly `--gen-tokens` tokens per
//! request (end-of-generation tokens are banned with `logit_bias` on both sides).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use peregrine_engine::{Batch, BatchToken, Engine, SeqId, TokenId, Vocab};
use peregrine_llama::LoadedModel;
use peregrine_runtime::sampling::{Sampler, Sampling, SamplingParams};
use peregrine_service::{Completions, ModelRegistry, ServedModel};
use peregrine_text::template::TemplateMessage;

use crate::bench_client::{client, http_one};
use crate::settings::{CommonArgs, Layers, ModelSpec, ServeOptions, DEFAULT_CTX_SIZE};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Completion tokens per request.
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: u32,
    /// Concurrency levels for the aggregate measurement.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub concurrency: Vec<usize>,
    /// Seconds to let the machine settle after loading, before measuring. Right after a
    /// model is loaded, decoding on this machine kind runs ~35% slower for ~20 s
    /// (docs/benchmarks.md); both sides are measured after it.
    #[arg(long, default_value_t = 25)]
    pub settle_secs: u64,
    /// Measure built-in tools instead: the code sandbox's start and per-call times, and
    /// code-execution requests' added latency beside the model's own time.
    #[arg(long)]
    pub tools: bool,
    /// Requests of the `--tools` measurement.
    #[arg(long, default_value_t = 10)]
    pub tool_requests: usize,
    /// Measure constrained decoding instead (`response_format: json_schema` streams against
    /// plain ones on the same server, and the grammar mask time per token).
    #[arg(long)]
    pub structured: bool,
    /// Measure against a peer server instead of the raw engine: the chat-completions URL of
    /// llama.cpp's `llama-server` on the same GGUF and shape (`scripts/bench-peer` builds,
    /// starts and names it). Concurrency levels, cold and cached time to first token, four
    /// clients sharing a long system prompt, then jump-forward on and off, then speculation.
    #[arg(long)]
    pub peer_url: Option<String>,
    /// Measure jump-forward only (also part of `--structured`): one stream whose schema has
    /// twelve fixed keys, with jump-forward on and off, alternated.
    #[arg(long)]
    pub jump_forward: bool,
    /// Measure speculative decoding only: one stream repeating a piece of code with one
    /// change, speculation off, auto and always, rotated; and the step-cost curve.
    #[arg(long)]
    pub speculation: bool,
    /// The model and its settings, as for `serve` (the server is built by the same
    /// builder). Context per sequence is capped at 4096 and the slots are the highest
    /// concurrency; listen address, keys and storage do not apply.
    #[command(flatten)]
    pub serve: ServeOptions,
}

/// One measurement: time to first token and decode rate.
#[derive(Clone, Copy, Debug, Default)]
struct Measure {
    /// Mean time to first token, seconds.
    ttft: f64,
    /// Completion tokens per second after the first token, summed over the requests.
    tok_s: f64,
}

fn prompt_messages(run: &str, i: usize) -> Vec<TemplateMessage> {
    let msg = |role: &str, content: String| TemplateMessage {
        role: role.into(),
        content: Some(content),
        name: None,
        tool_calls: None,
        tool_call_id: None,
        reasoning: None,
    };
    vec![
        msg(
            "system",
            format!("[{run}/{i}] You are a helpful assistant."),
        ),
        msg(
            "user",
            "Write a long story about a peregrine falcon that learns to fly over a city.".into(),
        ),
    ]
}

fn no_eog_bias(vocab: &dyn Vocab) -> Vec<(TokenId, f32)> {
    (0..vocab.n_vocab() as TokenId)
        .filter(|&t| vocab.is_eog(t))
        .map(|t| (t, -100.0))
        .collect()
}

/// The raw engine: `c` sequences, prefilled one after another in batch-size chunks, then
/// decoded together, one batch per step.
fn raw_run(
    engine: &mut dyn Engine,
    prompts: &[Vec<TokenId>],
    gen: u32,
    bias: &[(TokenId, f32)],
) -> Result<Measure> {
    let n_batch = engine.info().n_batch as usize;
    let c = prompts.len();
    let params = SamplingParams {
        mode: Sampling::Greedy,
        seed: 0,
        frequency_penalty: 0.0,
        presence_penalty: 0.0,
        logit_bias: bias.to_vec(),
        logprobs: None,
    };
    let mut samplers: Vec<Sampler> = (0..c).map(|_| Sampler::new(params.clone())).collect();
    let mut next: Vec<TokenId> = vec![0; c];
    let mut pos: Vec<u32> = vec![0; c];
    let mut batch = Batch::default();
    let start = Instant::now();
    let mut first_at = vec![Duration::ZERO; c];
    for (i, p) in prompts.iter().enumerate() {
        engine.clear_seq(SeqId(i as u32), 0);
        for (ci, chunk) in p.chunks(n_batch).enumerate() {
            batch.clear();
            for (j, &t) in chunk.iter().enumerate() {
                let at = ci * n_batch + j;
                batch.push(BatchToken {
                    token: t,
                    pos: at as u32,
                    seq: SeqId(i as u32),
                    logits: at + 1 == p.len(),
                });
            }
            engine.decode(&batch)?;
        }
        next[i] = samplers[i].sample(engine.logits(batch.len() - 1)).token;
        pos[i] = p.len() as u32;
        first_at[i] = start.elapsed();
    }
    let decode_start = Instant::now();
    for _ in 1..gen {
        batch.clear();
        for i in 0..c {
            batch.push(BatchToken {
                token: next[i],
                pos: pos[i],
                seq: SeqId(i as u32),
                logits: true,
            });
            pos[i] += 1;
        }
        engine.decode(&batch)?;
        for (i, s) in samplers.iter_mut().enumerate() {
            next[i] = s.sample(engine.logits(i)).token;
        }
    }
    let decode = decode_start.elapsed().as_secs_f64();
    Ok(Measure {
        ttft: first_at.iter().map(Duration::as_secs_f64).sum::<f64>() / c as f64,
        tok_s: (c as f64 * f64::from(gen - 1)) / decode,
    })
}

async fn http_run(
    url: &str,
    c: usize,
    run: &str,
    gen: u32,
    bias: &serde_json::Value,
) -> Result<Measure> {
    let client = client();
    let futs = (0..c).map(|i| {
        let msgs: Vec<serde_json::Value> = prompt_messages(run, i)
            .into_iter()
            .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
            .collect();
        let body = serde_json::json!({
            "model": "bench", "messages": msgs, "stream": true, "temperature": 0,
            "max_tokens": gen, "logit_bias": bias,
        });
        let client = client.clone();
        async move { http_one(&client, url, body).await }
    });
    let results = futures::future::try_join_all(futs).await?;
    let ttft = results
        .iter()
        .map(|r| (r.1 - r.0).as_secs_f64())
        .sum::<f64>()
        / c as f64;
    let first = results.iter().map(|r| r.1).min().context("no results")?;
    let last = results.iter().map(|r| r.2).max().context("no results")?;
    let tokens: u64 = results.iter().map(|r| r.3.saturating_sub(1)).sum();
    Ok(Measure {
        ttft,
        tok_s: tokens as f64 / (last - first).as_secs_f64(),
    })
}

/// `--peer-url`: the peer workloads against both servers, then jump-forward on and off.
fn peer_run(
    rt: &tokio::runtime::Runtime,
    url: &str,
    peer: &str,
    args: &BenchArgs,
    runtime: &peregrine_runtime::Runtime,
    bias: &serde_json::Value,
    vocab: &dyn Vocab,
) -> Result<()> {
    let sides = crate::peer_bench::Sides { ours: url, peer };
    let count_tokens = |t: &str| vocab.tokenize(t).len();
    let workload = crate::peer_bench::Workload {
        concurrency: &args.concurrency,
        gen: args.gen_tokens,
        bias,
        count_tokens: &count_tokens,
    };
    crate::peer_bench::run(rt, &sides, &workload)?;
    crate::structured_bench::jump_forward(rt, url, runtime)?;
    crate::spec_bench::run(rt, url, runtime, crate::spec_bench::Task::Repeat)
}

/// The spec of the benchmarked model: `serve`'s settings, sized for `max_c` streams.
fn bench_spec(args: &BenchArgs, source: String, max_c: usize) -> Result<ModelSpec> {
    let o = &args.serve;
    let server_level = o.host.is_some() || o.port.is_some() || !o.api_keys.is_empty();
    if server_level || o.database_url.is_some() || o.data_dir.is_some() {
        tracing::warn!(
            "bench serves on a private loopback port with no keys or storage: host, port, \
             API keys, database URL and data directory are not used"
        );
    }
    let defaults = ServeOptions::default();
    let layers = Layers {
        cli: o,
        file: &defaults,
    };
    let ctx = o.ctx_size.unwrap_or(DEFAULT_CTX_SIZE).min(4096);
    let mut settings = layers.model_settings(None, None, None)?;
    settings.context.n_ctx_seq = ctx;
    settings.context.n_seq_max = max_c as u32;
    settings.context.n_batch = settings.context.n_batch.max(max_c as u32);
    Ok(ModelSpec {
        source,
        id: Some("bench".into()),
        aliases: vec![],
        adapters: vec![],
        mmproj: None,
        draft: o.draft_model.clone(),
        settings,
    })
}

/// The served model on a loopback port of `rt`; returns the chat-completions URL.
fn start_server(rt: &tokio::runtime::Runtime, served: ServedModel) -> Result<String> {
    let mut registry = ModelRegistry::default();
    registry.add(served, vec![]);
    let app = peregrine_server::router(Arc::new(peregrine_server::AppState {
        completions: Completions::new(registry),
        keys: peregrine_service::ApiKeys::new(&[], None),
        limiter: std::sync::Arc::new(peregrine_service::RateLimiter::unlimited()),
        metrics: Default::default(),
        storage: None,
        fine_tunings: None,
        policy: Default::default(),
    }));
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!(
            "http://{}/openai/v1/chat/completions",
            listener.local_addr()?
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        anyhow::Ok(url)
    })
}

/// The bias that keeps every end-of-generation token out, as `logit_bias` JSON.
fn bias_json(bias: &[(TokenId, f32)]) -> serde_json::Value {
    bias.iter()
        .map(|(t, b)| (t.to_string(), serde_json::json!(b)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn print_table(concurrency: &[usize], raw: &[Measure], srv: &[Measure]) {
    println!(
        "\n| concurrency | raw tok/s | server tok/s | server/raw | raw TTFT s | server TTFT s |"
    );
    println!("|---|---|---|---|---|---|");
    for (i, &c) in concurrency.iter().enumerate() {
        println!(
            "| {c} | {:.1} | {:.1} | {:.3}x | {:.3} | {:.3} |",
            raw[i].tok_s,
            srv[i].tok_s,
            srv[i].tok_s / raw[i].tok_s,
            raw[i].ttft,
            srv[i].ttft
        );
    }
    if let (Some(i1), Some(i4)) = (
        concurrency.iter().position(|&c| c == 1),
        concurrency.iter().position(|&c| c == 4),
    ) {
        println!(
            "\nsingle-stream decode, server/raw: {:.3}x; server aggregate c=4 / single-stream: {:.2}x",
            srv[i1].tok_s / raw[i1].tok_s,
            srv[i4].tok_s / srv[i1].tok_s
        );
    }
}

pub fn run(common: &CommonArgs, args: BenchArgs) -> Result<()> {
    let max_c = args.concurrency.iter().copied().max().unwrap_or(1).max(1);
    let model = (args.serve.model.as_deref()).unwrap_or(crate::catalog::DEFAULT_MODEL);
    let loc = crate::serve::locate(common, model)?;
    let spec = bench_spec(&args, loc.path.display().to_string(), max_c)?;
    let cs = spec.settings.context.clone();
    let loaded = LoadedModel::load(&loc.path, cs.n_gpu_layers)?;
    let (name, path) = (loc.id.clone(), loc.path.display().to_string());
    // The server, in-process on a loopback port, over the same loaded weights and the same
    // engine shape; the raw engine beside it, fed the same prompts through the served
    // model's template and vocabulary. Measurements alternate (raw, server) per
    // concurrency level so both see the same machine state.
    let draft = crate::serve::load_draft(common, &spec)?;
    let served =
        crate::serve::serve_loaded(loc, &loaded, draft.as_ref(), &spec, &Default::default())?;
    let (ctx, runtime) = (served.ctx.clone(), served.runtime.clone());
    let bias = no_eog_bias(ctx.vocab.as_ref());
    let bias_json = bias_json(&bias);
    let prompts = |run: &str, c: usize| -> Result<Vec<Vec<TokenId>>> {
        (0..c)
            .map(|i| {
                let text = ctx
                    .template
                    .render_prompt(prompt_messages(run, i), None)?
                    .text;
                Ok(ctx.vocab.tokenize(&text))
            })
            .collect()
    };
    eprintln!(
        "bench: {name} ({path}), {} threads, {} completion tokens per request, prompt {} tokens",
        cs.n_threads,
        args.gen_tokens,
        prompts("x", 1)?[0].len()
    );
    // The raw engine's context exists only when it is measured: a second llama context in
    // the process slows decoding on this machine kind (docs/benchmarks.md).
    let peer = args.peer_url.is_some();
    let mut engine =
        if args.structured || args.tools || args.jump_forward || args.speculation || peer {
            None
        } else {
            Some(loaded.engine(&cs)?)
        };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let url = start_server(&rt, served)?;

    // Warm-up: page the weights in and let the machine settle.
    std::thread::sleep(Duration::from_secs(args.settle_secs));
    if args.tools {
        return crate::tools_bench::run(&rt, &url, args.tool_requests);
    }
    if args.jump_forward {
        return crate::structured_bench::jump_forward(&rt, &url, &runtime);
    }
    if args.speculation {
        let with_draft = args.serve.draft_model.is_some();
        return crate::spec_bench::run_tasks(&rt, &url, &runtime, with_draft);
    }
    if let Some(peer) = &args.peer_url {
        let vocab = ctx.vocab.as_ref();
        return peer_run(&rt, &url, peer, &args, &runtime, &bias_json, vocab);
    }
    let Some(engine) = engine.as_mut() else {
        return crate::structured_bench::run(&rt, &url, &runtime, args.gen_tokens, &bias_json);
    };
    raw_run(engine, &prompts("warm", 1)?, 64, &bias)?;
    rt.block_on(http_run(&url, 1, "warm", 64, &bias_json))?;

    let (mut raw, mut srv) = (Vec::new(), Vec::new());
    for &c in &args.concurrency {
        let r = raw_run(
            engine,
            &prompts(&format!("raw{c}"), c)?,
            args.gen_tokens,
            &bias,
        )?;
        eprintln!("  raw    c={c}: ttft {:.3}s, {:.1} tok/s", r.ttft, r.tok_s);
        let m = rt.block_on(http_run(
            &url,
            c,
            &format!("srv{c}"),
            args.gen_tokens,
            &bias_json,
        ))?;
        eprintln!("  server c={c}: ttft {:.3}s, {:.1} tok/s", m.ttft, m.tok_s);
        raw.push(r);
        srv.push(m);
    }
    print_table(&args.concurrency, &raw, &srv);
    Ok(())
}
