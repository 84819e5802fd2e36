//! [`Runtime`]: the async side's handle on the engine thread.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peregrine_engine::{AdapterId, Engine, EngineError, ModelInfo, Vocab};
use tokio::sync::mpsc;

use crate::engine_loop::{now_ms, EngineLoop, Inbox, LoopConfig, Occupancy, Submission, Switches};
use crate::events::Event;
use crate::metrics::EngineMetrics;
use crate::request::{PreparedRequest, ServiceTier};
use crate::speculate::Speculation;
use crate::stats::{MaskStats, StatsCell};

/// Limits of the runtime. Defaults in brackets.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeConfig {
    /// Requests that may wait for a sequence slot before new ones get 429 [64].
    pub max_queue: usize,
    /// Prefill tokens per step while other sequences are decoding [128]. Smaller keeps
    /// running streams smoother while a long prompt is read; larger reads prompts faster.
    pub busy_prefill: usize,
    /// Threads that compute grammar masks while the forward pass runs [0]. 0 computes them
    /// on the engine thread just before it: right when the forward pass already uses every
    /// core (on a 2-core CPU, overlapping measured 6% slower than inline).
    pub mask_threads: usize,
    /// Batch sequences that may decode beside interactive ones [0]. On a 2-core CPU one
    /// more row nearly doubles the time of a step (docs/benchmarks.md), so by default batch
    /// work waits while any interactive sequence is in flight; it never prefills then.
    pub background_rows: usize,
    /// Jump-forward [on]: tokens a grammar forces (an object's fixed keys, a call's syntax)
    /// are appended without sampling and fed in one forward pass with the sampled token
    /// before them. Off for requests that ask for `logprobs`.
    pub jump_forward: bool,
    /// The step cost model [on]: passes of 1..=slots decode rows are measured at load (which
    /// also warms the machine up) and while serving, and a step of single decode rows runs
    /// as several smaller passes when those cost less in total (`cost`).
    pub cost_model: bool,
    /// Speculative decoding with drafts looked up in the sequence's own prompt and output
    /// [auto] (`speculate`): lossless; `Auto` drafts only where the measured step costs and
    /// the sequence's acceptance rate say a bigger pass gives more tokens per second (so it
    /// needs the cost model).
    pub speculation: Speculation,
    /// How long the engine thread may hold work without going round its loop before
    /// `/health` calls it stalled [60 s]. A step is one forward pass: the longest, a whole
    /// batch of prompt tokens on a slow CPU, takes seconds.
    pub stall_after: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_queue: 64,
            busy_prefill: 128,
            mask_threads: 0,
            background_rows: 0,
            jump_forward: true,
            cost_model: true,
            speculation: Speculation::Auto,
            stall_after: Duration::from_secs(60),
        }
    }
}

/// Why a request was not admitted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmissionError {
    #[error("the server is at capacity: {0} requests are already waiting")]
    QueueFull(usize),
    #[error("the engine has stopped")]
    Stopped,
    /// A flex-tier request found every slot taken.
    #[error("no capacity for the flex tier")]
    NoCapacity,
}

/// What the engine thread is doing, for `/health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineState {
    Running,
    /// It has had work and not gone round its loop for longer than `stall_after`.
    Stalled,
    /// It failed or panicked.
    Stopped,
}

impl EngineState {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineState::Running => "running",
            EngineState::Stalled => "stalled",
            EngineState::Stopped => "stopped",
        }
    }
}

/// Handle on one model's engine thread. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inbox: mpsc::UnboundedSender<Inbox>,
    occupancy: Arc<Occupancy>,
    info: Arc<ModelInfo>,
    cfg: RuntimeConfig,
    stats: StatsCell,
    switches: Arc<Switches>,
}

impl Runtime {
    /// Starts the engine thread. `make` runs on that thread, so the engine never has to be
    /// `Send`; its load error is returned here. It makes the model's engine and, when the
    /// model has a draft model, the draft model's.
    pub fn spawn<E, F>(
        make: F,
        vocab: Arc<dyn Vocab>,
        cfg: RuntimeConfig,
        metrics: EngineMetrics,
    ) -> Result<(Self, std::thread::JoinHandle<()>), EngineError>
    where
        E: Engine + 'static,
        F: FnOnce() -> Result<(E, Option<E>), EngineError> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let occupancy = Arc::new(Occupancy::default());
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let loop_occupancy = occupancy.clone();
        let stats = StatsCell::default();
        let loop_stats = stats.clone();
        let switches = Arc::new(Switches {
            jump_forward: AtomicBool::new(cfg.jump_forward),
            speculation: AtomicU8::new(cfg.speculation.as_u8()),
        });
        let loop_switches = switches.clone();
        let join = std::thread::Builder::new()
            .name("peregrine-engine".into())
            .spawn(move || {
                let engines = match make() {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let info = engines.0.info().clone();
                if ready_tx.send(Ok(info)).is_err() {
                    return;
                }
                let cfg = LoopConfig {
                    busy_prefill: cfg.busy_prefill,
                    mask_threads: cfg.mask_threads,
                    background_rows: cfg.background_rows,
                    cost_model: cfg.cost_model,
                    metrics,
                };
                EngineLoop::new(
                    engines,
                    vocab,
                    rx,
                    loop_occupancy,
                    cfg,
                    loop_stats,
                    loop_switches,
                )
                .run();
            })
            .map_err(|e| EngineError::Load(format!("cannot start the engine thread: {e}")))?;
        let info = ready_rx
            .recv()
            .map_err(|_| EngineError::Load("the engine thread exited during load".into()))??;
        Ok((
            Self {
                inbox: tx,
                occupancy,
                info: Arc::new(info),
                cfg,
                stats,
                switches,
            },
            join,
        ))
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Grammar mask timings since start (or the last [`Runtime::reset_mask_stats`]).
    pub fn mask_stats(&self) -> MaskStats {
        self.stats.snapshot()
    }

    pub fn reset_mask_stats(&self) {
        self.stats.reset();
    }

    /// What passes of 1, 2, ... decode rows cost when measured at load: (rows, seconds);
    /// empty with the cost model off.
    pub fn step_costs(&self) -> Vec<(usize, f64)> {
        self.stats.step_costs()
    }

    /// The same for the draft model; empty without one (or with the cost model off).
    pub fn draft_step_costs(&self) -> Vec<(usize, f64)> {
        self.stats.draft_step_costs()
    }

    /// Turns jump-forward on or off for requests that start from now on (benchmarks compare
    /// both in one run).
    pub fn set_jump_forward(&self, on: bool) {
        self.switches.jump_forward.store(on, Ordering::Relaxed);
    }

    /// Sets when requests that start from now on speculate.
    pub fn set_speculation(&self, mode: Speculation) {
        (self.switches.speculation).store(mode.as_u8(), Ordering::Relaxed);
    }

    /// Whether the engine thread is still taking requests (it stops only when it fails or
    /// panics: then its inbox closes).
    pub fn is_running(&self) -> bool {
        !self.inbox.is_closed()
    }

    /// Running, stalled (busy, and its loop has not gone round for `stall_after`) or
    /// stopped.
    pub fn state(&self) -> EngineState {
        if !self.is_running() {
            return EngineState::Stopped;
        }
        let occ = &self.occupancy;
        let since = now_ms().saturating_sub(occ.beat_ms.load(Ordering::Acquire));
        if occ.busy.load(Ordering::Acquire) && since > self.cfg.stall_after.as_millis() as u64 {
            return EngineState::Stalled;
        }
        EngineState::Running
    }

    /// Requests waiting for a slot right now.
    pub fn queue_depth(&self) -> usize {
        self.occupancy.waiting.load(Ordering::Acquire)
    }

    /// Queues a request. Dropping the returned receiver cancels it. A flex-tier request is
    /// not queued: when every slot is taken or others wait, it is refused at once (Groq's
    /// flex tier fails fast instead of queueing).
    pub fn submit(&self, req: PreparedRequest) -> Result<mpsc::Receiver<Event>, AdmissionError> {
        let occ = &self.occupancy;
        if req.service_tier == ServiceTier::Flex
            && (occ.waiting.load(Ordering::Acquire) > 0
                || occ.running.load(Ordering::Acquire) >= self.info.n_seq_max as usize)
        {
            return Err(AdmissionError::NoCapacity);
        }
        let max = self.cfg.max_queue;
        self.occupancy
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(AdmissionError::QueueFull)?;
        self.enqueue(req, false).inspect_err(|_| {
            self.occupancy.waiting.fetch_sub(1, Ordering::AcqRel);
        })
    }

    /// Queues batch work at the lowest priority (see [`Event::Preempted`]); it does not count
    /// against the queue limit. The caller bounds how much it submits.
    pub fn submit_background(
        &self,
        req: PreparedRequest,
    ) -> Result<mpsc::Receiver<Event>, AdmissionError> {
        self.enqueue(req, true)
    }

    fn enqueue(
        &self,
        req: PreparedRequest,
        background: bool,
    ) -> Result<mpsc::Receiver<Event>, AdmissionError> {
        // Room for one event per completion token, the flush and the finish: the engine
        // thread's `try_send` can then only fail when the client is gone.
        // A token may yield reasoning, answer text and a call.
        let per_token = 1 + usize::from(req.tools.is_some()) + usize::from(req.reasoning.is_some());
        let (tx, rx) = mpsc::channel(req.max_tokens as usize * per_token + 8);
        let sub = Submission {
            req,
            events: tx,
            submitted: Instant::now(),
            background,
        };
        if self.inbox.send(Inbox::Work(Box::new(sub))).is_err() {
            return Err(AdmissionError::Stopped);
        }
        Ok(rx)
    }

    /// Loads a LoRA adapter (llama.cpp's GGUF adapter format) into the running engine,
    /// between two of its steps; requests name it by the returned id
    /// ([`PreparedRequest::adapter`]). Blocks until the engine thread has loaded it: call it
    /// off the async workers.
    pub fn load_adapter(&self, path: &std::path::Path) -> Result<AdapterId, EngineError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let msg = Inbox::LoadAdapter {
            path: path.to_path_buf(),
            reply,
        };
        let stopped = || EngineError::Load("the engine has stopped".into());
        self.inbox.send(msg).map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }
}
