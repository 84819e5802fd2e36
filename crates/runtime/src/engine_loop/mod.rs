//! The engine thread: drains new requests, plans a step with the scheduler, runs one forward
//! pass over every sequence in flight, samples, detokenizes, matches stop strings and sends
//! events. A request whose receiver is gone (the client left) is aborted and its KV cache
//! slot freed before the next step.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use peregrine_engine::{
    is_image_placeholder, AdapterId, Batch, BatchToken, Engine, SeqId, SeqSnapshot, TokenId, Vocab,
};
use peregrine_grammar::{Constraint, OutputError};
use peregrine_text::detok::IncrementalDecoder;
use peregrine_text::stop::StopMatcher;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::cost::StepCosts;
use crate::draft_model::{DraftAsk, DraftModel};
use crate::events::{Event, FinishReason};
use crate::metrics::{Ended, EngineMetrics};
use crate::request::{PreparedRequest, PromptImage, ServiceTier};
use crate::sampling::{Sampled, Sampler};
use crate::scheduler::{self, Budget, SeqView};
use crate::speculate::{self, Acceptance, Speculation};
use crate::stats::StatsCell;
use reasoning::ReasoningState;
use tools::ToolState;

mod output;
mod reasoning;
mod tools;

use output::{finish, process_token, reject, reject_tool, take_forced};

/// The text of control token `tok` among a syntax's `markers` (tool calls, reasoning): the
/// parsers see such tokens as their text.
pub(crate) fn marker_text(markers: &[(TokenId, String)], tok: TokenId) -> Option<&str> {
    markers
        .iter()
        .find(|(id, _)| *id == tok)
        .map(|(_, t)| t.as_str())
}

/// What the engine thread's inbox carries: work, or an adapter to load between steps.
pub(crate) enum Inbox {
    /// Boxed: a prepared request is large, an adapter message small.
    Work(Box<Submission>),
    LoadAdapter {
        path: std::path::PathBuf,
        reply: std::sync::mpsc::SyncSender<Result<AdapterId, peregrine_engine::EngineError>>,
    },
}

/// A request on its way to the engine thread.
pub(crate) struct Submission {
    pub req: PreparedRequest,
    pub events: mpsc::Sender<Event>,
    pub submitted: Instant,
    /// Batch work: admitted only when no interactive request waits, run only in what
    /// interactive sequences leave, and preempted (`Event::Preempted`) when an interactive
    /// request needs its slot. Not counted in the queue limit.
    pub background: bool,
}

/// Tuning of the loop, and where it reports.
#[derive(Clone, Debug)]
pub(crate) struct LoopConfig {
    pub busy_prefill: usize,
    pub background_rows: usize,
    pub mask_threads: usize,
    pub cost_model: bool,
    pub metrics: EngineMetrics,
}

/// Most tokens jump-forward appends in one step, whatever the batch allows: forced runs are
/// keys and punctuation, rarely longer.
const JUMP_MAX: usize = 32;

/// A new sequence with at least this many prompt tokens to compute moves the idle slots'
/// cells out of the cache first. In llama.cpp's unified cache a forward pass looks at every
/// cell up to the highest one in use, whoever holds it: a long prefill beside seven idle
/// slots of ~1,700 cells took 20% longer than with the cache empty (docs/benchmarks.md),
/// while copying those cells out and back costs milliseconds.
const OFFLOAD_MIN_PREFILL: usize = 256;

/// Most drafts a sequence sends in one step. Verify passes of up to `1 + DRAFT_MAX` rows are
/// measured at load, so the cost model can tell whether they pay.
const DRAFT_MAX: usize = 7;

/// Features switched for requests that start from now on (benchmarks compare both in one
/// run).
#[derive(Debug)]
pub(crate) struct Switches {
    pub jump_forward: AtomicBool,
    /// A [`Speculation`] as its `u8`.
    pub speculation: AtomicU8,
}

/// What a KV slot holds, so a new prompt sharing a prefix can skip re-computing it.
#[derive(Default)]
struct Slot {
    tokens: Vec<TokenId>,
    /// The adapter those tokens' cells were computed with: a prefix is only reused under
    /// the same one.
    adapter: Option<AdapterId>,
    busy: bool,
    last_used: u64,
    /// An idle slot's cells, copied out to host memory and dropped from the cache so that
    /// attention no longer spans them ([`EngineLoop::offload_idle`]); put back when a
    /// request reuses them.
    offloaded: Option<SeqSnapshot>,
}

struct Active {
    slot: SeqId,
    /// The LoRA adapter its passes run with (`None`: the base model).
    adapter: Option<AdapterId>,
    background: bool,
    events: mpsc::Sender<Event>,
    prompt: Vec<TokenId>,
    /// The prompt's images: computed by the projector when the prefill reaches them.
    images: Vec<PromptImage>,
    /// Tokens of this sequence already in the KV cache.
    kv: Vec<TokenId>,
    /// Sampled (and then forced by the grammar) but not yet fed to the model.
    pending: Vec<TokenId>,
    /// Most tokens the grammar may force after a sampled one (0: jump-forward off).
    jump: usize,
    /// Guesses of the tokens after `pending`, fed with it this step and checked against what
    /// is sampled (`speculate`); empty when not speculating.
    drafts: Vec<TokenId>,
    /// When this sequence drafts (as speculation was set when it started).
    speculation: Speculation,
    /// How often its drafts were right, by kind of draft ([`speculate::Draft::kind`]).
    acceptance: [Acceptance; speculate::KINDS],
    /// The kind of the drafts sent this step.
    draft_kind: usize,
    sampler: Sampler,
    max_tokens: u32,
    generated: u32,
    stop: StopMatcher,
    /// A stop string matched: text held back after it is never released.
    hit_stop: bool,
    detok: IncrementalDecoder,
    /// The grammar the output must follow (`response_format`), if any.
    constraint: Option<Constraint>,
    /// Text sent so far, kept only for constrained sequences (checked at the end, and the
    /// `failed_generation` of a rejection).
    text: String,
    /// Tool calls parsed out of the output, when the request may call tools.
    tools: Option<ToolState>,
    /// Tokens the first token of the answer may not be.
    first_banned: Option<Arc<[TokenId]>>,
    /// A reasoning model's parser: the reasoning is split off before the answer goes on to
    /// stop strings, tool calls and the grammar.
    reasoning: Option<ReasoningState>,
    /// The answer's grammar while the model still reasons: it starts with the answer.
    deferred: Option<Constraint>,
    /// `generated` when the answer began (`None` while reasoning): the first-token ban
    /// applies to the answer's first token.
    answer_at: Option<u32>,
    cached: usize,
    /// The request's span: this sequence's events are logged in it (its request id).
    span: tracing::Span,
    submitted: Instant,
    started: Instant,
    first_token: Option<Instant>,
}

impl Active {
    /// Prompt tokens to feed before the next image, or the prompt's end: text prefill never
    /// crosses an image ([`EngineLoop::compute_images`] computes it first).
    fn prefill_remaining(&self) -> usize {
        let done = self.kv.len();
        let stop = (self.images.iter())
            .map(|i| i.at)
            .find(|&at| at >= done)
            .unwrap_or(self.prompt.len());
        stop.saturating_sub(done)
    }

    /// The image whose positions start where the cache ends, if one does.
    fn image_next(&self) -> Option<&PromptImage> {
        let done = self.kv.len();
        self.images.iter().find(|i| i.at == done)
    }
}

/// `n` cached prompt tokens, less any part of an image they end inside: an image is
/// computed whole or not at all.
fn whole_images(images: &[PromptImage], n: usize) -> usize {
    (images.iter())
        .find(|i| i.at < n && n < i.end())
        .map_or(n, |i| i.at)
}

/// How full the engine is, shared with the async side: the flex tier is refused rather
/// than queued when no slot is free.
#[derive(Debug, Default)]
pub(crate) struct Occupancy {
    /// Interactive requests waiting for a slot.
    pub waiting: AtomicUsize,
    /// Interactive sequences holding a slot.
    pub running: AtomicUsize,
    /// Whether the loop has work (sequences in flight or waiting); idle, it sleeps.
    pub busy: AtomicBool,
    /// When the loop last went round (ms since the Unix epoch): a busy loop that has not
    /// gone round for long is stalled (`Runtime::state`).
    pub beat_ms: AtomicU64,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) struct EngineLoop<E: Engine> {
    engine: E,
    vocab: Arc<dyn Vocab>,
    inbox: mpsc::UnboundedReceiver<Inbox>,
    occupancy: Arc<Occupancy>,
    waiting: VecDeque<Submission>,
    active: Vec<Active>,
    slots: Vec<Slot>,
    clock: u64,
    budget: Budget,
    batch: Batch,
    stats: StatsCell,
    /// Threads computing grammar masks while the forward pass runs; 0: on this thread,
    /// before it.
    mask_threads: usize,
    /// Whether sequences that start now use jump-forward and speculation.
    switches: Arc<Switches>,
    /// Most forced tokens (or drafts) per step and sequence: what the batch has room for
    /// beside every slot's sampled token.
    jump_max: usize,
    /// Whether the engine can drop the tail of a sequence's cache (rejected drafts); probed
    /// at start, false until then.
    drops_suffix: bool,
    /// Whether steps of single decode rows may be split by `costs`.
    cost_model: bool,
    costs: StepCosts,
    metrics: EngineMetrics,
    /// The costs as measured at load, which decide drafting: fixed, so the same request on
    /// the same server drafts the same way and runs passes of the same shapes (its logits,
    /// and so a seeded sample, then repeat; see decision 0003).
    load_costs: StepCosts,
    /// A smaller model of the same vocabulary that drafts where prompt lookup finds nothing
    /// (or gives less), when the model was configured with one.
    draft_model: Option<DraftModel<E>>,
}

/// What `/metrics` records of a sequence that ends with `outcome`.
fn ended(a: &Active, outcome: &Outcome) -> Ended {
    let now = Instant::now();
    Ended {
        prompt_tokens: a.prompt.len(),
        completion_tokens: a.generated,
        queue: a.started - a.submitted,
        first_token: a.first_token.map(|t| t - a.submitted),
        total: now - a.submitted,
        reason: match outcome {
            // `finish` turns a stop after tool calls into `tool_calls`.
            Outcome::Finish(FinishReason::Stop)
                if a.tools.as_ref().is_some_and(|t| t.calls > 0) =>
            {
                "tool_calls"
            }
            Outcome::Finish(r) => r.as_str(),
            Outcome::Reject(_) | Outcome::RejectTool(_) => "rejected",
            Outcome::Failed => "failed",
            Outcome::Continue | Outcome::Gone => "abort",
        },
    }
}

/// How many leading tokens `a` and `b` have in common.
fn common_prefix(a: &[TokenId], b: &[TokenId]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

enum Outcome {
    Continue,
    Finish(FinishReason),
    /// The grammar could not go on.
    Reject(OutputError),
    /// A tool call was refused (Groq's message).
    RejectTool(String),
    /// The forward pass failed.
    Failed,
    Gone,
}

type DecodeResult = Result<(), peregrine_engine::EngineError>;
/// Sequences (by index into the active list) whose grammar could not compute a mask.
type MaskErrors = Vec<(usize, OutputError)>;

/// The forward pass on this thread while `threads` helper threads compute the masks of
/// `work`. Returns the decode result, the mask errors, and how long the pass waited for
/// the masks after it finished.
fn masks_beside_decode<E: Engine>(
    engine: &mut E,
    batch: &Batch,
    work: &mut [(usize, &mut Constraint)],
    threads: usize,
) -> (DecodeResult, MaskErrors, Duration) {
    let per_thread = work.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = work
            .chunks_mut(per_thread)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter_mut()
                        .filter_map(|(i, c)| c.compute_mask().err().map(|e| (*i, e)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let res = engine.decode(batch);
        let t = Instant::now();
        let mut errors = Vec::new();
        for h in handles {
            match h.join() {
                Ok(e) => errors.extend(e),
                Err(_) => warn!("a grammar mask computation panicked"),
            }
        }
        (res, errors, t.elapsed())
    })
}

/// Where a sequence's drafts come from this step.
enum DraftChoice {
    /// Tokens prompt lookup found, of this kind of match ([`speculate::Draft::kind`]).
    Lookup(usize, Vec<TokenId>),
    /// This many, from the draft model.
    Model(usize),
}

impl DraftChoice {
    fn kind(&self) -> usize {
        match self {
            DraftChoice::Lookup(kind, _) => *kind,
            DraftChoice::Model(_) => speculate::MODEL_KIND,
        }
    }

    fn len(&self) -> usize {
        match self {
            DraftChoice::Lookup(_, tokens) => tokens.len(),
            DraftChoice::Model(k) => *k,
        }
    }
}

/// How sequence `a` drafts this step, with `room` drafts at most, in a pass that already
/// has `rows` rows expected to give `tokens` tokens. Prompt lookup is free; a draft of the
/// draft model costs `model_cost` seconds (`None`: there is none). Under `always` the draft
/// model drafts whenever there is one (that is what measures it), else any lookup does;
/// under `auto` the choice with the most expected tokens per second, if any pays.
fn choose_draft(
    a: &mut Active,
    room: usize,
    costs: &StepCosts,
    rows: usize,
    tokens: f64,
    model_cost: Option<f64>,
) -> Option<DraftChoice> {
    // A model cannot be fed an image's placeholders, and a looked-up guess stops before them.
    let model_cost = model_cost.filter(|_| a.images.is_empty() && room > 0);
    let guess = lookup_guess(a, room);
    if a.speculation == Speculation::Always {
        return match (model_cost, guess) {
            (Some(_), _) => Some(DraftChoice::Model(room)),
            (None, Some((kind, g))) => Some(DraftChoice::Lookup(kind, g)),
            (None, None) => None,
        };
    }
    let looked_up = guess.as_ref().and_then(|(kind, g)| {
        speculate::best_draft(costs, rows, tokens, &a.acceptance[*kind], g.len(), 0.0)
    });
    let modelled = model_cost.and_then(|c| {
        let acceptance = &a.acceptance[speculate::MODEL_KIND];
        speculate::best_draft(costs, rows, tokens, acceptance, room, c)
    });
    match (looked_up, modelled) {
        (Some((k, r)), m) if m.is_none_or(|(_, mr)| r >= mr) => {
            let (kind, mut g) = guess.expect("a looked-up choice has a guess");
            g.truncate(k);
            Some(DraftChoice::Lookup(kind, g))
        }
        (_, Some((k, _))) => Some(DraftChoice::Model(k)),
        _ => {
            // Found but not worth sending: let the estimates drift back, so the sequence
            // tries again later (its text may have come to a part that repeats).
            if let Some((kind, _)) = &guess {
                a.acceptance[*kind].idle();
            }
            if model_cost.is_some() {
                a.acceptance[speculate::MODEL_KIND].idle();
            }
            None
        }
    }
}

/// The drafts prompt lookup finds for `a` (at most `room`), with their kind; they stop
/// before an image's placeholders, which are no tokens the model could decode.
fn lookup_guess(a: &mut Active, room: usize) -> Option<(usize, Vec<TokenId>)> {
    // The history is the cache's tokens and the one pending token: looked up in place
    // rather than copied each step.
    a.kv.push(a.pending[0]);
    let guess = speculate::lookup(&a.kv, room);
    a.kv.pop();
    let guess = guess?;
    let kind = guess.kind();
    let mut tokens = guess.tokens;
    if let Some(at) = tokens.iter().position(|&t| is_image_placeholder(t)) {
        tokens.truncate(at);
    }
    (!tokens.is_empty()).then_some((kind, tokens))
}

/// The next token of `a` from its logits row: under its grammar, or with its first-token ban
/// while it has generated nothing, or freely.
fn sample(a: &mut Active, logits: &[f32]) -> Sampled {
    let ban = a
        .first_banned
        .as_deref()
        .filter(|_| a.answer_at == Some(a.generated));
    match (&a.constraint, ban) {
        (Some(c), _) => a
            .sampler
            .sample_masked(logits, Some(&|r: &mut [f32]| c.apply(r))),
        (None, Some(ban)) => a.sampler.sample_masked(
            logits,
            Some(&|r: &mut [f32]| {
                for &t in ban {
                    if let Some(l) = r.get_mut(t as usize) {
                        *l = f32::NEG_INFINITY;
                    }
                }
            }),
        ),
        (None, None) => a.sampler.sample(logits),
    }
}

/// Samples `a`'s next token from batch row `row` and, when it sent drafts, goes on down the
/// draft rows while each sampled token is the draft fed there: those tokens' cells are
/// already computed, so they move to `kv`. Every token is sampled from its own row by the
/// sequence's sampler, as without drafts. Returns the outcome of the last token taken and,
/// when there were drafts, how many were sent and how many were right.
fn sample_and_verify<E: Engine>(
    a: &mut Active,
    engine: &E,
    row: usize,
    vocab: &dyn Vocab,
    n_ctx_seq: u32,
) -> (Outcome, Option<(usize, usize)>) {
    let drafts = std::mem::take(&mut a.drafts);
    let mut accepted = 0;
    loop {
        let sampled = sample(a, engine.logits(row + accepted));
        let tok = sampled.token;
        let outcome = process_token(a, sampled, vocab, n_ctx_seq);
        // A grammar that came into force with this token (a tool call began) masks the next
        // one, which the draft rows were not sampled under: stop there.
        let right = drafts.get(accepted) == Some(&tok) && a.constraint.is_none();
        if !matches!(outcome, Outcome::Continue) || !right {
            let verdict = (!drafts.is_empty()).then_some((drafts.len(), accepted));
            return (outcome, verdict);
        }
        a.pending.pop();
        a.kv.push(tok);
        accepted += 1;
    }
}

impl<E: Engine> EngineLoop<E> {
    /// A loop over `engines`: the model's engine and, if it has one, its draft model's.
    pub fn new(
        (engine, draft_model): (E, Option<E>),
        vocab: Arc<dyn Vocab>,
        inbox: mpsc::UnboundedReceiver<Inbox>,
        occupancy: Arc<Occupancy>,
        cfg: LoopConfig,
        stats: StatsCell,
        switches: Arc<Switches>,
    ) -> Self {
        let info = engine.info();
        let n_slots = info.n_seq_max as usize;
        let budget = Budget {
            max_tokens: info.n_batch as usize,
            busy_prefill: cfg.busy_prefill,
            background_rows: cfg.background_rows,
        };
        Self {
            engine,
            vocab,
            inbox,
            occupancy,
            waiting: VecDeque::new(),
            active: Vec::new(),
            slots: (0..n_slots).map(|_| Slot::default()).collect(),
            clock: 0,
            budget,
            batch: Batch::default(),
            stats,
            mask_threads: cfg.mask_threads,
            switches,
            jump_max: (budget.max_tokens / n_slots.max(1))
                .saturating_sub(1)
                .min(JUMP_MAX),
            drops_suffix: false,
            cost_model: cfg.cost_model,
            costs: StepCosts::new(n_slots.max(1 + DRAFT_MAX)),
            metrics: cfg.metrics,
            load_costs: StepCosts::new(n_slots.max(1 + DRAFT_MAX)),
            draft_model: draft_model.map(DraftModel::new),
        }
    }

    /// Runs until every sender of the inbox is dropped and no work is left.
    pub fn run(mut self) {
        self.drops_suffix = self.probe_suffix_drop();
        if self.cost_model {
            self.calibrate();
            if let Some(d) = &mut self.draft_model {
                d.calibrate();
                self.stats.set_draft_step_costs(d.curve());
            }
        }
        loop {
            if self.active.is_empty() && self.waiting.is_empty() {
                self.publish(false);
                match self.inbox.blocking_recv() {
                    Some(m) => self.take(m),
                    None => return,
                }
            }
            while let Ok(m) = self.inbox.try_recv() {
                self.take(m);
            }
            self.drop_departed();
            self.admit();
            self.publish(true);
            if !self.active.is_empty() {
                self.step();
            }
        }
    }

    /// Queues work, or loads an adapter now (between forward passes, on this thread).
    fn take(&mut self, m: Inbox) {
        match m {
            Inbox::Work(s) => self.waiting.push_back(*s),
            Inbox::LoadAdapter { path, reply } => {
                let loaded = self.engine.load_adapter(&path);
                match &loaded {
                    Ok(id) => {
                        tracing::info!(path = %path.display(), adapter = id.0, "LoRA adapter loaded")
                    }
                    Err(e) => warn!(path = %path.display(), error = %e, "LoRA adapter not loaded"),
                }
                let _ = reply.send(loaded);
            }
        }
    }

    /// Tells the async side and `/metrics` how full the engine is, and that the loop is
    /// alive.
    fn publish(&self, busy: bool) {
        let running = self.active.iter().filter(|a| !a.background).count();
        self.occupancy.running.store(running, Ordering::Release);
        self.occupancy.busy.store(busy, Ordering::Release);
        self.occupancy.beat_ms.store(now_ms(), Ordering::Release);
        let info = self.engine.info();
        let cells = (info.n_ctx_seq as usize * info.n_seq_max as usize).max(1);
        let held: usize = self.active.iter().map(|a| a.kv.len()).sum();
        self.metrics.occupancy(
            self.active.len(),
            (self.waiting.iter()).map(|s| (s.req.service_tier, s.background)),
            held as f64 / cells as f64,
        );
    }

    fn drop_departed(&mut self) {
        let mut gone = 0;
        self.waiting.retain(|s| {
            let closed = s.events.is_closed();
            gone += usize::from(closed && !s.background);
            !closed
        });
        if gone > 0 {
            self.occupancy.waiting.fetch_sub(gone, Ordering::AcqRel);
        }
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].events.is_closed() {
                let a = self.active.remove(i);
                debug!(parent: &a.span, slot = a.slot.0, "client left; freeing its sequence");
                self.release(a);
            } else {
                i += 1;
            }
        }
    }

    fn admit(&mut self) {
        // The performance tier first, then other interactive requests, each in arrival
        // order; batch work after them.
        while let Some(next) = (self.waiting.iter())
            .position(|s| !s.background && s.req.service_tier == ServiceTier::Performance)
            .or_else(|| self.waiting.iter().position(|s| !s.background))
            .or((!self.waiting.is_empty()).then_some(0))
        {
            let w = &self.waiting[next].req;
            let slot = match self.pick_slot(&w.prompt, w.adapter) {
                Some(slot) => slot,
                None if !self.waiting[next].background && self.preempt_background() => continue,
                None => return,
            };
            let Some(sub) = self.waiting.remove(next) else {
                return;
            };
            if !sub.background {
                self.occupancy.waiting.fetch_sub(1, Ordering::AcqRel);
            }
            let active = self.start_in_slot(sub, slot);
            self.active.push(active);
        }
    }

    /// Starts `sub` in KV slot `slot`, reusing the longest prefix of its prompt that any
    /// slot holds (its own, another idle one's, or a running sequence's), but always
    /// computing the last prompt token: its logits choose the first completion token.
    fn start_in_slot(&mut self, sub: Submission, slot: usize) -> Active {
        let prompt = sub.req.prompt;
        let images = sub.req.images;
        let adapter = sub.req.adapter;
        self.slots[slot].busy = true;
        let common = self.reuse_prefix(slot, &prompt, &images, adapter);
        self.slots[slot].adapter = adapter;
        if prompt.len() - common >= OFFLOAD_MIN_PREFILL {
            self.offload_idle();
        }
        self.metrics.prefix_lookup(prompt.len(), common);
        // Forced tokens carry no log-probabilities of their own, so a request that asks for
        // them samples every token.
        let jump = if self.switches.jump_forward.load(Ordering::Relaxed)
            && sub.req.sampling.logprobs.is_none()
        {
            self.jump_max
        } else {
            0
        };
        let reasoning = sub.req.reasoning.map(ReasoningState::new);
        // The grammar applies to the answer: while the model reasons it waits.
        let (constraint, deferred) = match &reasoning {
            Some(r) if !r.in_answer() => (None, sub.req.constraint),
            _ => (sub.req.constraint, None),
        };
        Active {
            slot: SeqId(slot as u32),
            adapter,
            background: sub.background,
            events: sub.events,
            kv: prompt[..common].to_vec(),
            pending: Vec::new(),
            jump,
            drafts: Vec::new(),
            speculation: Speculation::from_u8(self.switches.speculation.load(Ordering::Relaxed)),
            acceptance: Acceptance::all(),
            draft_kind: 0,
            sampler: Sampler::new(sub.req.sampling),
            max_tokens: sub.req.max_tokens,
            generated: 0,
            stop: StopMatcher::new(sub.req.stops),
            hit_stop: false,
            detok: IncrementalDecoder::default(),
            text: String::new(),
            tools: sub.req.tools.map(ToolState::new),
            first_banned: sub.req.first_banned,
            answer_at: reasoning
                .as_ref()
                .is_none_or(|r| r.in_answer())
                .then_some(0),
            constraint,
            deferred,
            reasoning,
            cached: common,
            span: sub.req.span,
            submitted: sub.submitted,
            started: Instant::now(),
            first_token: None,
            prompt,
            images,
        }
    }

    /// Makes slot `slot` hold the longest prefix of `prompt` that any slot holds (its own,
    /// another idle one's, or a running sequence's, from the cache or from host memory) and
    /// nothing after it, but never the last prompt token: its logits choose the first
    /// completion token. Returns how many tokens it holds. Cells computed under another
    /// adapter hold other keys and values, and an image is reused whole or not at all.
    fn reuse_prefix(
        &mut self,
        slot: usize,
        prompt: &[TokenId],
        images: &[PromptImage],
        adapter: Option<AdapterId>,
    ) -> usize {
        let most = prompt.len().saturating_sub(1);
        let own = if self.slots[slot].adapter == adapter {
            whole_images(
                images,
                common_prefix(&self.slots[slot].tokens, prompt).min(most),
            )
        } else {
            0
        };
        let donor = self
            .cached_prefixes(adapter)
            .filter(|(i, _)| *i != slot)
            .map(|(i, tokens)| (i, common_prefix(tokens, prompt).min(most)))
            .map(|(i, n)| (i, whole_images(images, n)))
            .max_by_key(|(_, n)| *n)
            .filter(|(_, n)| *n > own);
        let seq = SeqId(slot as u32);
        let own = self.bring_back(slot, own);
        match donor {
            Some((from, n)) => self.share(SeqId(from as u32), seq, n),
            None if self.engine.clear_seq(seq, own as u32) => own,
            None => 0,
        }
    }

    /// Frees the slot of the most recently started batch sequence for an interactive
    /// request. Its worker gets `Event::Preempted` and submits it again later; what it had
    /// computed stays in the slot's prefix cache. False when no batch sequence runs.
    fn preempt_background(&mut self) -> bool {
        let Some(i) = self
            .active
            .iter()
            .enumerate()
            .filter(|(_, a)| a.background)
            .max_by_key(|(_, a)| a.started)
            .map(|(i, _)| i)
        else {
            return false;
        };
        let a = self.active.remove(i);
        debug!(parent: &a.span, slot = a.slot.0, "batch sequence preempted");
        let _ = a.events.try_send(Event::Preempted);
        self.release(a);
        true
    }

    /// The free slot whose cached tokens share the longest prefix with `next`, counting only
    /// prefixes of at least half what the slot holds; among equals (no such prefix, most
    /// often), the least recently used. A new prompt that shares only the chat template's
    /// first tokens, or a system prompt much shorter than the conversation a slot holds,
    /// then takes the stalest slot rather than destroying a conversation that may come back;
    /// the shared part is still reused, copied from that slot ([`Self::start_in_slot`]).
    /// llama.cpp's server picks slots by the same similarity rule.
    fn pick_slot(&self, next: &[TokenId], adapter: Option<AdapterId>) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.busy)
            .max_by_key(|(_, s)| {
                let common = if s.adapter == adapter {
                    common_prefix(&s.tokens, next)
                } else {
                    0
                };
                let useful = if 2 * common >= s.tokens.len() {
                    common
                } else {
                    0
                };
                (useful, std::cmp::Reverse(s.last_used))
            })
            .map(|(i, _)| i)
    }

    /// What each slot holds in the KV cache: a running sequence's tokens so far, or what an
    /// idle slot's last sequence left.
    fn cached_prefixes(
        &self,
        adapter: Option<AdapterId>,
    ) -> impl Iterator<Item = (usize, &[TokenId])> {
        let running = (self.active.iter())
            .filter(move |a| a.adapter == adapter)
            .map(|a| (a.slot.0 as usize, a.kv.as_slice()));
        let idle = (self.slots.iter().enumerate())
            .filter(move |(_, s)| !s.busy && s.adapter == adapter)
            .map(|(i, s)| (i, s.tokens.as_slice()));
        running.chain(idle)
    }

    /// Puts slot `slot`'s offloaded cells back in the cache when `own` of them are to be
    /// reused (else its snapshot is dropped: the new sequence replaces it); how many it then
    /// holds.
    fn bring_back(&mut self, slot: usize, own: usize) -> usize {
        let Some(snapshot) = self.slots[slot].offloaded.take() else {
            return own;
        };
        if own == 0 {
            return 0;
        }
        if self.engine.restore_seq(&snapshot, SeqId(slot as u32)) {
            debug!(slot, cells = snapshot.cells, "offloaded cells put back");
            self.stats.record_restore();
            own
        } else {
            debug!(slot, "offloaded cells found no room; computed again");
            0
        }
    }

    /// Copies every idle slot's cells out to host memory and drops them from the cache, so
    /// the passes of a long prefill look at fewer cells; their prefixes stay reusable
    /// ([`Self::bring_back`], [`Self::share`]). At most one copy per slot: host memory
    /// holds no more than the cache did. A no-op for engines that cannot copy cells out.
    fn offload_idle(&mut self) {
        let mut moved = 0;
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            if s.busy || s.offloaded.is_some() || s.tokens.is_empty() {
                continue;
            }
            let seq = SeqId(i as u32);
            let Some(snapshot) = self.engine.save_seq(seq) else {
                return;
            };
            self.engine.clear_seq(seq, 0);
            moved += snapshot.cells;
            self.slots[i].offloaded = Some(snapshot);
        }
        if moved > 0 {
            debug!(cells = moved, "idle slots' cells moved to host memory");
            self.stats.record_offload(moved);
        }
    }

    /// Makes `dst` hold the first `len` cells of `src`; how many it then holds. An idle
    /// `src` whose cells are in host memory is copied into `dst` from there (and keeps its
    /// copy).
    fn share(&mut self, src: SeqId, dst: SeqId, len: usize) -> usize {
        if let Some(snapshot) = &self.slots[src.0 as usize].offloaded {
            let ok =
                self.engine.restore_seq(snapshot, dst) && self.engine.clear_seq(dst, len as u32);
            debug!(
                src = src.0,
                dst = dst.0,
                len,
                ok,
                "offloaded prefix copied into a slot"
            );
            if !ok {
                self.engine.clear_seq(dst, 0);
            }
            return if ok { len } else { 0 };
        }
        if self.engine.share_prefix(src, dst, len as u32) {
            debug!(
                src = src.0,
                dst = dst.0,
                len,
                "prompt prefix shared between slots"
            );
            len
        } else {
            0
        }
    }

    fn step(&mut self) {
        self.compute_images();
        self.draft();
        let views: Vec<SeqView> = self
            .active
            .iter()
            .map(|a| SeqView {
                prefill_remaining: a.prefill_remaining(),
                feed: a.pending.len() + a.drafts.len(),
                background: a.background,
            })
            .collect();
        let plan = scheduler::plan(&views, self.budget);
        let mut done = Vec::new();
        for part in self.passes(&plan) {
            self.run_pass(&part, &mut done);
        }
        self.end_sequences(done);
    }

    /// Computes the image each prefilling sequence has reached (the projector's encoder,
    /// then its embeddings into the cache), so text prefill can go on after it. A sequence
    /// whose image fails ends failed.
    fn compute_images(&mut self) {
        let mut done = Vec::new();
        for i in 0..self.active.len() {
            while let Some(image) = self.active[i].image_next().cloned() {
                let a = &self.active[i];
                let result = (self.engine.set_adapter(a.adapter)).and_then(|()| {
                    self.engine
                        .decode_image(&image.image, a.slot, image.at as u32)
                });
                let a = &mut self.active[i];
                match result {
                    Ok(()) => a.kv.extend_from_slice(&a.prompt[image.at..image.end()]),
                    Err(e) => {
                        warn!(parent: &a.span, error = %e, "an image failed; failing its sequence");
                        done.push((i, Outcome::Failed));
                        break;
                    }
                }
            }
        }
        self.end_sequences(done);
    }

    /// Gives decoding sequences drafts to verify this step where the step costs say they
    /// pay (`speculate`): looked up in the sequence's history, or made by the draft model,
    /// whichever promises more tokens per second. Only in steps of decode rows alone: a pass
    /// that also prefills is not a shape the costs know, and drafts would take the prompt's
    /// room. Sequences under a grammar get none (their next mask depends on each token
    /// committed; jump-forward serves them).
    fn draft(&mut self) {
        for a in &mut self.active {
            a.drafts.clear();
        }
        let cost_model = self.cost_model;
        let drafting = |a: &Active| match a.speculation {
            Speculation::Off => false,
            Speculation::Auto => cost_model,
            Speculation::Always => true,
        };
        if !self.drops_suffix
            || !self.active.iter().any(drafting)
            || self.active.iter().any(|a| a.prefill_remaining() > 0)
        {
            return;
        }
        let views: Vec<SeqView> = (self.active.iter())
            .map(|a| SeqView {
                prefill_remaining: 0,
                feed: a.pending.len(),
                background: a.background,
            })
            .collect();
        let plan = scheduler::plan(&views, self.budget);
        let mut rows: usize = plan.iter().sum();
        let mut tokens = rows as f64;
        let n_ctx_seq = self.engine.info().n_ctx_seq as usize;
        let most = self.jump_max.min(DRAFT_MAX);
        // What one draft of the draft model costs: a pass of one row (the passes of several
        // sequences drafting at once cost less per row, so this errs toward not drafting).
        let model_draft_cost =
            (self.draft_model.as_ref()).map(|d| d.cost(1).unwrap_or(f64::INFINITY));
        // Sequences the draft model drafts for, and how many drafts each.
        let mut for_model: Vec<(usize, usize)> = Vec::new();
        for (i, (a, &n)) in self.active.iter_mut().zip(&plan).enumerate() {
            if n != 1 || !drafting(a) || a.constraint.is_some() || a.pending.len() != 1 {
                continue;
            }
            // Each draft, if right, is one more completion token and one more cell.
            let used = a.kv.len() + a.pending.len();
            let room = (a.max_tokens.saturating_sub(a.generated) as usize)
                .min(n_ctx_seq.saturating_sub(used + 1))
                .min(most);
            let choice = choose_draft(a, room, &self.load_costs, rows, tokens, model_draft_cost);
            let Some(choice) = choice else {
                continue;
            };
            let k = choice.len();
            rows += k;
            tokens += a.acceptance[choice.kind()].expected(k);
            a.draft_kind = choice.kind();
            match choice {
                DraftChoice::Lookup(_, guess) => a.drafts = guess,
                DraftChoice::Model(k) => for_model.push((i, k)),
            }
        }
        self.draft_from_model(&for_model);
    }

    /// Runs the draft model for the sequences `for_model` names, with most drafts each.
    fn draft_from_model(&mut self, for_model: &[(usize, usize)]) {
        let Some(model) = &mut self.draft_model else {
            return;
        };
        if for_model.is_empty() {
            return;
        }
        let histories: Vec<Vec<TokenId>> = (for_model.iter())
            .map(|&(i, _)| {
                let a = &self.active[i];
                a.kv.iter().chain(&a.pending).copied().collect()
            })
            .collect();
        let asks: Vec<DraftAsk<'_>> = (for_model.iter().zip(&histories))
            .map(|(&(i, max), history)| DraftAsk {
                seq: self.active[i].slot,
                history,
                max,
            })
            .collect();
        let drafts = model.draft(&asks);
        for (&(i, _), d) in for_model.iter().zip(drafts) {
            self.active[i].drafts = d;
        }
    }

    /// The plan as forward passes: one per LoRA adapter among its sequences (llama.cpp
    /// applies adapters per context, so a pass runs one), each split further where the step
    /// costs say so ([`Self::passes_of`]). Every adapter's sequences advance every step.
    fn passes(&self, plan: &[usize]) -> Vec<Vec<usize>> {
        let mut adapters: Vec<Option<AdapterId>> = (self.active.iter().zip(plan))
            .filter(|(_, &n)| n > 0)
            .map(|(a, _)| a.adapter)
            .collect();
        adapters.sort_unstable();
        adapters.dedup();
        if adapters.len() < 2 {
            return self.passes_of(plan);
        }
        let mut out = Vec::new();
        for adapter in adapters {
            let part: Vec<usize> = (self.active.iter().zip(plan))
                .map(|(a, &n)| if a.adapter == adapter { n } else { 0 })
                .collect();
            out.extend(self.passes_of(&part));
        }
        out
    }

    /// One group's forward passes: one, unless every sequence in it feeds a single decode
    /// token and the measured step costs say smaller passes cost less in total.
    fn passes_of(&self, plan: &[usize]) -> Vec<Vec<usize>> {
        let Some(rows) = self.single_decode_rows(plan) else {
            return vec![plan.to_vec()];
        };
        let groups = self.costs.split(rows.len());
        if groups.len() < 2 {
            return vec![plan.to_vec()];
        }
        let mut rows = rows.into_iter();
        (groups.into_iter())
            .map(|g| {
                let mut part = vec![0; plan.len()];
                for i in rows.by_ref().take(g) {
                    part[i] = 1;
                }
                part
            })
            .collect()
    }

    /// The sequences of `plan` when each feeds exactly one decode token (the shape the cost
    /// model knows), or `None`.
    fn single_decode_rows(&self, plan: &[usize]) -> Option<Vec<usize>> {
        if !self.cost_model {
            return None;
        }
        let mut rows = Vec::new();
        for (i, (a, &n)) in self.active.iter().zip(plan).enumerate() {
            match n {
                0 => {}
                1 if a.pending.len() == 1 => rows.push(i),
                _ => return None,
            }
        }
        Some(rows)
    }

    /// One forward pass over the sequences `plan` gives tokens, then their samples; ends go
    /// to `done` (a failed pass fails its sequences).
    fn run_pass(&mut self, plan: &[usize], done: &mut Vec<(usize, Outcome)>) {
        let adapter = (self.active.iter().zip(plan))
            .find(|(_, &n)| n > 0)
            .and_then(|(a, _)| a.adapter);
        if let Err(e) = self.engine.set_adapter(adapter) {
            warn!(error = %e, "cannot apply the adapter; failing the sequences of this pass");
            done.extend(
                (plan.iter().enumerate())
                    .filter(|(_, &n)| n > 0)
                    .map(|(i, _)| (i, Outcome::Failed)),
            );
            return;
        }
        let decode_only =
            (self.active.iter().zip(plan)).all(|(a, &n)| n == 0 || !a.pending.is_empty());
        let rows = self.fill_batch(plan);
        let t0 = Instant::now();
        let (res, mask_errors) = self.decode_with_masks(&rows);
        let secs = t0.elapsed().as_secs_f64();
        tracing::trace!(
            tokens = self.batch.len(),
            seqs = self.active.len(),
            ms = secs * 1e3,
            "step"
        );
        if let Err(e) = res {
            warn!(error = %e, "decode failed; failing the sequences of this pass");
            done.extend(
                (plan.iter().enumerate())
                    .filter(|(_, &n)| n > 0)
                    .map(|(i, _)| (i, Outcome::Failed)),
            );
            return;
        }
        if decode_only {
            // Decode rows alone, drafts included: the shape the cost model measures.
            self.costs.record(self.batch.len(), secs);
        }
        self.record_kv(plan);
        done.extend(
            mask_errors
                .into_iter()
                .map(|(i, e)| (i, Outcome::Reject(e))),
        );
        self.sample_rows(&rows, done);
    }

    /// Measures passes of 1..=R decode rows (R: the slots, or a verify pass of one sequence
    /// with the most drafts, whichever is more; rows spread over the sequences, a few passes
    /// each, from the first positions of empty sequences) so the cost model starts from this
    /// machine's figures; it also warms the machine up, so the first request runs at full
    /// speed. The sequences are emptied after. A failed pass ends the calibration with what it has.
    fn calibrate(&mut self) {
        let slots = self.slots.len().max(1);
        let max_rows = slots.max(1 + DRAFT_MAX.min(self.jump_max));
        let measured = StepCosts::measure(&mut self.engine, slots, max_rows, "model");
        // Sized for every pass the loop may run, measured or not.
        for (rows, secs) in measured.curve() {
            self.costs.record(rows, secs);
        }
        self.stats.set_step_costs(self.costs.curve());
        self.load_costs = self.costs.clone();
    }

    /// Whether the cache can drop the tail of a sequence and keep its head (recurrent and
    /// sliding-window memories cannot): two tokens in, one dropped. Speculation needs it to
    /// take back the cells of wrong drafts. The sequence is emptied after.
    fn probe_suffix_drop(&mut self) -> bool {
        self.batch.clear();
        for pos in 0..2 {
            self.batch.push(BatchToken {
                token: 0,
                pos,
                seq: SeqId(0),
                logits: pos == 1,
            });
        }
        let ok = self.engine.decode(&self.batch).is_ok() && self.engine.clear_seq(SeqId(0), 1);
        self.engine.clear_seq(SeqId(0), 0);
        debug!(drops_suffix = ok, "cache probed");
        ok
    }

    /// Fills the batch with the planned tokens: each decoding sequence's pending tokens
    /// (logits for the last), each prefilling one's next prompt chunk. Returns, per active
    /// sequence, the batch row whose logits it samples from.
    fn fill_batch(&mut self, plan: &[usize]) -> Vec<Option<usize>> {
        self.batch.clear();
        let mut rows: Vec<Option<usize>> = vec![None; self.active.len()];
        for (i, (a, &n)) in self.active.iter_mut().zip(plan).enumerate() {
            if n == 0 {
                continue;
            }
            let start = a.kv.len();
            // The row whose logits choose the next token: the prompt's last, or the last
            // pending one; every draft after it gets logits too, to be checked.
            let (tokens, sample_at) = if a.pending.is_empty() {
                (&a.prompt[start..start + n], a.prompt.len() - start - 1)
            } else {
                (&a.pending[..], a.pending.len() - 1)
            };
            let drafts = if a.pending.is_empty() {
                &[][..]
            } else {
                &a.drafts[..]
            };
            for (p, &tok) in tokens.iter().chain(drafts).enumerate() {
                self.batch.push(BatchToken {
                    token: tok,
                    pos: (start + p) as u32,
                    seq: a.slot,
                    logits: p >= sample_at,
                });
                if p == sample_at {
                    rows[i] = Some(self.batch.len() - 1);
                }
            }
        }
        rows
    }

    /// Records what the decode put in the KV cache.
    fn record_kv(&mut self, plan: &[usize]) {
        for (a, &n) in self.active.iter_mut().zip(plan) {
            if n == 0 {
                continue;
            }
            if a.pending.is_empty() {
                let start = a.kv.len();
                a.kv.extend_from_slice(&a.prompt[start..start + n]);
            } else {
                a.kv.append(&mut a.pending);
            }
        }
    }

    /// Samples every sequence that has a logits row (and no outcome yet) and processes its
    /// token; sequences that end are added to `done`.
    fn sample_rows(&mut self, rows: &[Option<usize>], done: &mut Vec<(usize, Outcome)>) {
        let n_ctx_seq = self.engine.info().n_ctx_seq;
        for (i, row) in rows.iter().enumerate() {
            let Some(row) = *row else { continue };
            if done.iter().any(|d| d.0 == i) {
                continue;
            }
            let a = &mut self.active[i];
            let (mut outcome, verdict) =
                sample_and_verify(a, &self.engine, row, self.vocab.as_ref(), n_ctx_seq);
            if let Some((drafted, accepted)) = verdict {
                a.acceptance[a.draft_kind].record(drafted, accepted);
                self.stats.record_drafts(drafted, accepted);
                // The cells of the drafts that were wrong hold what the sampled token will
                // replace. The probe at load made sure the cache can drop them.
                if accepted < drafted && !self.engine.clear_seq(a.slot, a.kv.len() as u32) {
                    done.push((i, Outcome::Failed));
                    continue;
                }
            }
            if matches!(outcome, Outcome::Continue) && a.jump > 0 {
                let forced;
                (outcome, forced) = take_forced(a, self.vocab.as_ref(), n_ctx_seq);
                self.stats.record_forced(forced);
            }
            if !matches!(outcome, Outcome::Continue) {
                done.push((i, outcome));
            }
        }
    }

    /// Sends each ended sequence its last event and frees its slot. Removed from the back so
    /// indices stay valid; `remove` keeps the order of the rest (the scheduler serves
    /// prefill first come, first served).
    fn end_sequences(&mut self, mut done: Vec<(usize, Outcome)>) {
        done.sort_by_key(|d| std::cmp::Reverse(d.0));
        for (i, outcome) in done {
            let mut a = self.active.remove(i);
            let e = ended(&a, &outcome);
            debug!(parent: &a.span, slot = a.slot.0, reason = e.reason, tokens = a.generated, "sequence ended");
            self.metrics.ended(&e);
            match outcome {
                Outcome::Finish(reason) => finish(&mut a, reason),
                Outcome::Reject(e) => reject(&a, &e),
                Outcome::RejectTool(m) => reject_tool(&a, m),
                Outcome::Failed => {
                    // Its KV state is unknown: nothing of it stays cached.
                    let _ = a
                        .events
                        .try_send(Event::Failed("internal_server_error".into()));
                    self.engine.clear_seq(a.slot, 0);
                    a.kv.clear();
                }
                Outcome::Continue | Outcome::Gone => {}
            }
            self.release(a);
        }
    }

    /// Runs the forward pass while other threads compute the grammar masks of the sequences
    /// that sample this step (a mask depends only on tokens already committed). Returns the
    /// decode result and the sequences whose grammar failed.
    fn decode_with_masks(&mut self, rows: &[Option<usize>]) -> (DecodeResult, MaskErrors) {
        let mut work: Vec<(usize, &mut Constraint)> = self
            .active
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| rows[*i].is_some())
            .filter_map(|(i, a)| a.constraint.as_mut().map(|c| (i, c)))
            .collect();
        if work.is_empty() {
            return (self.engine.decode(&self.batch), Vec::new());
        }
        if self.mask_threads == 0 {
            // No spare core: masks first, then the forward pass, on this thread.
            let errors: Vec<(usize, OutputError)> = work
                .iter_mut()
                .filter_map(|(i, c)| c.compute_mask().err().map(|e| (*i, e)))
                .collect();
            let times: Vec<Duration> = work.iter().map(|(_, c)| c.last_mask_time()).collect();
            self.stats.record(&times, Duration::ZERO);
            self.metrics.masks(&times);
            return (self.engine.decode(&self.batch), errors);
        }
        let (res, errors, wait) =
            masks_beside_decode(&mut self.engine, &self.batch, &mut work, self.mask_threads);
        let times: Vec<Duration> = work.iter().map(|(_, c)| c.last_mask_time()).collect();
        // A panicked mask thread leaves its constraints without a mask: fail them.
        let mut errors = errors;
        for (i, c) in &work {
            if !c.has_mask() && !errors.iter().any(|e| e.0 == *i) {
                errors.push((*i, OutputError::Grammar("mask computation failed".into())));
            }
        }
        self.stats.record(&times, wait);
        self.metrics.masks(&times);
        (res, errors)
    }

    fn release(&mut self, a: Active) {
        self.clock += 1;
        let slot = &mut self.slots[a.slot.0 as usize];
        slot.busy = false;
        slot.last_used = self.clock;
        slot.tokens = a.kv;
    }
}
