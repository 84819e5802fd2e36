//! `peregrine bench`: the HTTP server against the raw engine, same GGUF, same threads, one
//! run. The raw engine is the same llama.cpp decode loop with no server: a batch per step,
//! the same sampler, no channels, no HTTP. Both generate exactly `--gen-tokens` tokens per
//! request (end-of-generation tokens are banned with `logit_bias` on both sides).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use peregrine_engine::{Batch, BatchToken, Engine, SeqId, TokenId, Vocab};
use peregrine_llama::{ContextSettings, LoadedModel};
use peregrine_runtime::sampling::{Sampler, Sampling, SamplingParams};
use peregrine_text::template::{ChatTemplate, TemplateMessage};

use crate::settings::{CommonArgs, EngineArgs, ModelSpec, ServeSettings};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Catalogue id or GGUF path.
    #[arg(long, short, default_value = crate::catalog::DEFAULT_MODEL)]
    pub model: String,
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
    /// Measure constrained decoding instead (`response_format: json_schema` streams against
    /// plain ones on the same server, and the grammar mask time per token).
    #[arg(long)]
    pub structured: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
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
    vocab: &dyn Vocab,
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
    let _ = vocab;
    Ok(Measure {
        ttft: first_at.iter().map(Duration::as_secs_f64).sum::<f64>() / c as f64,
        tok_s: (c as f64 * f64::from(gen - 1)) / decode,
    })
}

/// One streaming request: when it was sent, its first and last content, and its completion
/// tokens (from `usage`, or the number of content chunks when the stream ends in an error).
pub(crate) async fn http_one(
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
            if let Some(n) = v["x_groq"]["usage"]["completion_tokens"].as_u64() {
                tokens = n;
            }
        }
    }
    let first = first.context("the stream carried no content")?;
    Ok((sent, first, last, if tokens > 0 { tokens } else { chunks }))
}

async fn http_run(
    url: &str,
    c: usize,
    run: &str,
    gen: u32,
    bias: &serde_json::Value,
) -> Result<Measure> {
    let client = reqwest::Client::new();
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

pub fn run(common: &CommonArgs, args: BenchArgs) -> Result<()> {
    let max_c = args.concurrency.iter().copied().max().unwrap_or(1).max(1);
    let loc = crate::serve::locate(common, &args.model)?;
    let threads = args.engine.threads();
    let cs = ContextSettings {
        n_ctx_seq: args
            .engine
            .ctx_size
            .unwrap_or(crate::settings::DEFAULT_CTX_SIZE)
            .min(4096),
        n_seq_max: max_c as u32,
        n_batch: args.engine.batch_size.max(max_c as u32),
        n_threads: threads,
        n_gpu_layers: args.engine.gpu_layers,
    };
    let loaded = LoadedModel::load(&loc.path, cs.n_gpu_layers)?;
    let info = loaded.info(&cs);
    let vocab = loaded.vocab();
    let template = ChatTemplate::new(
        info.chat_template
            .as_deref()
            .context("the model has no chat template")?,
        &info.bos_text,
        &info.eos_text,
    )?;
    let bias = no_eog_bias(&vocab);
    let bias_json: serde_json::Value = bias
        .iter()
        .map(|(t, b)| (t.to_string(), serde_json::json!(b)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let prompts = |run: &str, c: usize| -> Result<Vec<Vec<TokenId>>> {
        (0..c)
            .map(|i| {
                Ok(vocab.tokenize(&template.render_prompt(prompt_messages(run, i), None)?.text))
            })
            .collect()
    };
    eprintln!(
        "bench: {} ({}), {} threads, {} completion tokens per request, prompt {} tokens",
        loc.id,
        loc.path.display(),
        threads,
        args.gen_tokens,
        prompts("x", 1)?[0].len()
    );

    // The server, in-process on a loopback port, over the same loaded weights and the same
    // engine shape; the raw engine beside it. Measurements alternate (raw, server) per
    // concurrency level so both see the same machine state.
    let settings = ServeSettings {
        host: "127.0.0.1".into(),
        port: 0,
        api_keys: vec![],
        models: vec![],
        max_queue: 64,
        busy_prefill: 128,
        batch_rows: 0,
        batch_lease_secs: 30,
        batch_size: cs.n_batch,
        threads,
        gpu_layers: cs.n_gpu_layers,
        grammar: peregrine_grammar::GrammarLimits::default(),
        mask_threads: crate::settings::default_mask_threads(threads),
        database_url: None,
        data_dir: None,
    };
    let spec = ModelSpec {
        source: loc.path.display().to_string(),
        id: Some("bench".into()),
        ctx_size: cs.n_ctx_seq,
        parallel: cs.n_seq_max,
        aliases: vec![],
        tool_format: None,
    };
    let served = crate::serve::serve_loaded(loc, &loaded, &spec, &settings)?;
    let runtime = served.runtime.clone();
    // The raw engine's context exists only when it is measured: a second llama context in
    // the process slows decoding on this machine kind (docs/benchmarks.md).
    let mut engine = if args.structured {
        None
    } else {
        Some(loaded.engine(&cs)?)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut registry = peregrine_server::ModelRegistry::default();
    registry.add(served, vec![]);
    let app = peregrine_server::router(Arc::new(peregrine_server::AppState {
        registry,
        api_keys: vec![],
        files: None,
    }));
    let url = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!(
            "http://{}/openai/v1/chat/completions",
            listener.local_addr()?
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        anyhow::Ok(url)
    })?;

    // Warm-up: page the weights in and let the machine settle.
    std::thread::sleep(Duration::from_secs(args.settle_secs));
    let Some(engine) = engine.as_mut() else {
        return crate::structured_bench::run(&rt, &url, &runtime, &args, &bias_json);
    };
    raw_run(engine, &vocab, &prompts("warm", 1)?, 64, &bias)?;
    rt.block_on(http_run(&url, 1, "warm", 64, &bias_json))?;

    let (mut raw, mut srv) = (Vec::new(), Vec::new());
    for &c in &args.concurrency {
        let r = raw_run(
            engine,
            &vocab,
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

    println!(
        "\n| concurrency | raw tok/s | server tok/s | server/raw | raw TTFT s | server TTFT s |"
    );
    println!("|---|---|---|---|---|---|");
    for (i, &c) in args.concurrency.iter().enumerate() {
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
        args.concurrency.iter().position(|&c| c == 1),
        args.concurrency.iter().position(|&c| c == 4),
    ) {
        println!(
            "\nsingle-stream decode, server/raw: {:.3}x; server aggregate c=4 / single-stream: {:.2}x",
            srv[i1].tok_s / raw[i1].tok_s,
            srv[i4].tok_s / srv[i1].tok_s
        );
    }
    Ok(())
}
