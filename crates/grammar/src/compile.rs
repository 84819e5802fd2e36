//! Grammar compilation: one llguidance parser factory per model, fuel limits, and a cache of
//! compiled grammars keyed by the SHA-256 of their spec (the tokenizer is fixed per
//! [`Grammars`]), bounded by entries and by the bytes of the specs it holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::{Matcher, ParserFactory};
use peregrine_engine::Vocab;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::constraint::Constraint;

/// Bounds on the work one grammar may cost. A schema over a bound fails its own request with
/// a 400; it never stalls the engine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrammarLimits {
    /// Lexer fuel to build a grammar (llguidance `initial_lexer_fuel`; ~50k units per ms).
    pub compile_fuel: u64,
    /// Lexer fuel for one token mask (llguidance `step_lexer_fuel`; ~14k units per ms).
    pub mask_fuel: u64,
    /// Earley items for one token mask (llguidance `step_max_items`; ~20k per ms).
    pub mask_items: usize,
    /// Largest grammar, in symbols (llguidance `max_grammar_size`).
    pub max_grammar_size: usize,
    /// Compiled grammars kept in the cache.
    pub cache_entries: usize,
    /// Bytes of spec text (schemas, Lark sources) the cache may hold; a compiled grammar's
    /// memory grows with its spec, so this bounds the cache's memory, not just its count.
    /// A spec over a quarter of it is compiled but not kept.
    pub cache_bytes: usize,
}

/// Spec bytes the grammar cache holds by default [16 MiB].
pub const DEFAULT_CACHE_BYTES: usize = 16 * 1024 * 1024;

impl Default for GrammarLimits {
    fn default() -> Self {
        let l = ParserLimits::default();
        Self {
            compile_fuel: l.initial_lexer_fuel,
            mask_fuel: l.step_lexer_fuel,
            mask_items: l.step_max_items,
            max_grammar_size: l.max_grammar_size,
            cache_entries: 256,
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// What the output must be.
#[derive(Clone, Debug, PartialEq)]
pub enum GrammarSpec {
    /// `response_format: {"type": "json_object"}`: one JSON object.
    JsonObject,
    /// `response_format: {"type": "json_schema"}`: a value valid against the schema.
    JsonSchema(Value),
    /// A Lark grammar (tool calls, see [`crate::tools::CallGrammar`]); the output is checked
    /// only for completeness.
    Lark(String),
}

/// Why a grammar could not be built. The message names the schema keyword or limit.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GrammarError {
    #[error("the schema cannot be used for constrained decoding: {0}")]
    Unsupported(String),
    #[error("the schema is not a valid JSON Schema: {0}")]
    InvalidSchema(String),
}

struct Compiled {
    /// A started matcher that has seen no token; each request gets a clone sharing its lexer
    /// cache.
    matcher: Matcher,
    validator: Option<Arc<jsonschema::Validator>>,
    last_used: u64,
    /// Bytes of its spec text.
    bytes: usize,
}

/// A spec's cache key: the SHA-256 of its text (a multi-megabyte schema is not kept twice,
/// once as the key).
type Key = [u8; 32];

#[derive(Default)]
struct Cache {
    map: HashMap<Key, Compiled>,
    clock: u64,
    /// Sum of the entries' `bytes`.
    bytes: usize,
}

/// The compiler for one model's tokenizer.
pub struct Grammars {
    factory: ParserFactory,
    limits: GrammarLimits,
    cache: Mutex<Cache>,
}

/// JSON layout the grammar allows: compact, with the spaces models write by habit
/// (`{"a": 1, "b": 2}`). No free whitespace: a small model cannot pad forever after the value.
pub(crate) fn json_options() -> Value {
    json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
    })
}

/// llguidance's grammar for `spec`, and the schema validator that checks finished JSON.
fn top_level(
    spec: &GrammarSpec,
) -> Result<(TopLevelGrammar, Option<Arc<jsonschema::Validator>>), GrammarError> {
    let schema = match spec {
        GrammarSpec::Lark(g) => return Ok((TopLevelGrammar::from_lark(g.clone()), None)),
        GrammarSpec::JsonSchema(s) => s.clone(),
        GrammarSpec::JsonObject => json!({"type": "object"}),
    };
    let validator = jsonschema::validator_for(&schema)
        .map_err(|e| GrammarError::InvalidSchema(e.to_string()))?;
    let mut with_opts = schema;
    if let Some(obj) = with_opts.as_object_mut() {
        obj.insert("x-guidance".into(), json_options());
    }
    Ok((
        TopLevelGrammar::from_json_schema(with_opts),
        Some(Arc::new(validator)),
    ))
}

impl Grammars {
    /// Builds the token trie and parser factory for `vocab` (tens of ms for a 150k vocabulary).
    pub fn new(vocab: Arc<dyn Vocab>, limits: GrammarLimits) -> Result<Self, GrammarError> {
        let env = crate::tokenizer::tok_env(vocab);
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| GrammarError::Unsupported(format!("tokenizer: {e}")))?;
        factory.quiet();
        let l = factory.limits_mut();
        l.initial_lexer_fuel = limits.compile_fuel;
        l.step_lexer_fuel = limits.mask_fuel;
        l.step_max_items = limits.mask_items;
        l.max_grammar_size = limits.max_grammar_size;
        Ok(Self {
            factory,
            limits,
            cache: Mutex::new(Cache::default()),
        })
    }

    /// A fresh constraint for `spec`, compiled or taken from the cache.
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Constraint, GrammarError> {
        let text = match spec {
            GrammarSpec::JsonObject => "json_object".to_string(),
            GrammarSpec::JsonSchema(s) => format!("json_schema:{s}"),
            GrammarSpec::Lark(g) => format!("lark:{g}"),
        };
        let key: Key = Sha256::digest(text.as_bytes()).into();
        let bytes = text.len();
        drop(text);
        if let Some(c) = self.lookup(&key) {
            return Ok(c);
        }
        let t0 = Instant::now();
        let (grammar, validator) = top_level(spec)?;
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| GrammarError::Unsupported(clean(&e.to_string())))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(GrammarError::Unsupported(clean(&e)));
        }
        tracing::debug!(ms = t0.elapsed().as_secs_f64() * 1e3, "compiled a grammar");
        let constraint = Constraint::new(matcher.clone(), validator.clone());
        self.store(
            key,
            Compiled {
                matcher,
                validator,
                last_used: 0,
                bytes,
            },
        );
        Ok(constraint)
    }

    /// Keeps a compiled grammar, evicting the least recently used ones until it fits both
    /// bounds. A spec over a quarter of the byte budget is not kept at all.
    fn store(&self, key: Key, mut entry: Compiled) {
        let limits = &self.limits;
        if limits.cache_entries == 0 || entry.bytes > limits.cache_bytes / 4 {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.clock += 1;
        entry.last_used = cache.clock;
        while !cache.map.is_empty()
            && (cache.map.len() >= limits.cache_entries
                || cache.bytes + entry.bytes > limits.cache_bytes)
        {
            let Some(oldest) = (cache.map.iter())
                .min_by_key(|(_, c)| c.last_used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some(old) = cache.map.remove(&oldest) {
                cache.bytes -= old.bytes;
            }
        }
        cache.bytes += entry.bytes;
        if let Some(old) = cache.map.insert(key, entry) {
            cache.bytes -= old.bytes;
        }
    }

    /// Bytes of spec text the cache holds.
    pub fn cached_bytes(&self) -> usize {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }

    fn lookup(&self, key: &Key) -> Option<Constraint> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.clock += 1;
        let clock = cache.clock;
        let c = cache.map.get_mut(key)?;
        c.last_used = clock;
        Some(Constraint::new(c.matcher.clone(), c.validator.clone()))
    }

    /// Number of grammars in the cache.
    pub fn cached(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map
            .len()
    }
}

/// llguidance errors can carry a dump of the grammar; keep the first line, which names the
/// problem.
fn clean(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or(msg).trim();
    let mut s: String = first.chars().take(500).collect();
    if s.is_empty() {
        s = "unknown error".into();
    }
    s
}
