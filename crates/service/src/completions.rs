//! Chat completions as a service: a request body in, a [`ChatJob`] prepared for the model it
//! names, then either its events ([`Completions::start`]) or the finished [`Completion`]
//! ([`Completions::complete`]), with domain outcomes ([`CompletionError`]) rather than HTTP
//! errors. The chat handler, the batch worker, the built-in tool loop (`crate::agent`) and
//! next the Responses API all run completions through here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use peregrine_protocol::parse::parse_chat_request;
use peregrine_protocol::ChatCompletionRequest;
use peregrine_runtime::AdmissionError;
use peregrine_runtime::{
    prepare, prepare_with_images, Event, Finished, PreparedRequest, Rejection, ServiceTier,
    TokenLogprob,
};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use peregrine_tools::{FetchConfig, SandboxConfig, ToolKit};

use crate::agent::{self, AgentJob};
use crate::error::ServiceError;
use crate::images::ImageFetcher;
use crate::registry::{ModelRegistry, ServedModel};
use crate::repeats::{self, RepeatGuard};

/// What every response of one request shares (ids, echoes, what to report).
#[derive(Clone, Debug)]
pub struct ResponseMeta {
    /// `chatcmpl-` + a UUID.
    pub id: String,
    pub created: i64,
    /// The model id as the client wrote it.
    pub model: String,
    pub fingerprint: String,
    /// `x_groq.id`.
    pub request_id: String,
    pub seed: i64,
    pub service_tier: &'static str,
    pub include_usage: bool,
    pub logprobs: bool,
    /// Keep the streamed text (for a rejection's `failed_generation`).
    pub track_text: bool,
}

/// A chat request prepared for the model that will run it.
pub struct ChatJob {
    pub model: Arc<ServedModel>,
    pub request: PreparedRequest,
    pub meta: ResponseMeta,
    /// The completion tokens the client asked for at most (`max_completion_tokens`), if it
    /// did: what the rate limiter reserves besides the prompt.
    pub asked_max_tokens: Option<u32>,
    /// Runs the answer instead when every call repeats one the conversation has the result
    /// of (`repeats`); `None` where that cannot happen, and in the tool loop's own turns.
    pub repeat_guard: Option<RepeatGuard>,
}

impl ChatJob {
    pub fn stream(&self) -> bool {
        self.request.stream
    }

    /// The tokens the rate limiter reserves at admission: the prompt, and the completion
    /// the client asked for at most.
    pub fn reserved_tokens(&self) -> u64 {
        let completion = self
            .asked_max_tokens
            .map_or(0, |n| n.min(self.request.max_tokens));
        self.request.prompt.len() as u64 + u64::from(completion)
    }

    /// The tier the request runs in (`auto` resolved by the rate limiter).
    pub fn set_tier(&mut self, tier: ServiceTier) {
        self.request.service_tier = tier;
        self.meta.service_tier = tier.as_str();
    }
}

/// Who is waiting for a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// A client: counted against the queue limit (429, or 498 on the flex tier).
    Interactive,
    /// Batch work: lowest priority, preempted for interactive work, not counted.
    Background,
}

/// A tool call the model made, checked against its tool.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedCall {
    pub name: String,
    /// Compact JSON of an object.
    pub arguments: String,
}

/// A finished generation.
#[derive(Clone, Debug)]
pub struct Completion {
    pub meta: ResponseMeta,
    pub content: String,
    /// Parsed reasoning (`reasoning_format: parsed`); empty otherwise.
    pub reasoning: String,
    pub logprobs: Vec<TokenLogprob>,
    pub tool_calls: Vec<GeneratedCall>,
    pub finished: Finished,
}

/// Why a completion did not finish.
#[derive(Debug)]
pub enum CompletionError {
    /// Refused before generation: the request, the model, or admission.
    Refused(ServiceError),
    /// Generated, but not an acceptable answer; `text` is what was generated.
    Rejected { rejection: Rejection, text: String },
    /// The engine failed after generation started.
    Failed(String),
    /// Background work only: it gave its slot to interactive work. Run it again.
    Preempted,
}

impl From<ServiceError> for CompletionError {
    fn from(e: ServiceError) -> Self {
        CompletionError::Refused(e)
    }
}

impl From<CompletionError> for ServiceError {
    fn from(e: CompletionError) -> Self {
        match e {
            CompletionError::Refused(e) => e,
            CompletionError::Rejected { rejection, text } => rejected(rejection, text),
            CompletionError::Failed(why) => ServiceError::Internal(why),
            CompletionError::Preempted => ServiceError::Internal("preempted".into()),
        }
    }
}

/// The error for a generated text that was refused; `text` is what was generated.
pub fn rejected(r: Rejection, text: String) -> ServiceError {
    match r {
        Rejection::Json(message) => ServiceError::JsonValidateFailed {
            message,
            failed_generation: text,
        },
        Rejection::Tool {
            message,
            failed_generation,
        } => ServiceError::ToolUseFailed {
            message,
            failed_generation,
        },
    }
}

/// Requests waiting to be prepared before new ones get 429 [64], like the engine's queue.
pub const DEFAULT_MAX_WAITING: usize = 64;

/// Bounds the requests being parsed, rendered and tokenized at once. Why: that work and its
/// memory (a 4 MB prompt's tokens and template copies) come before the engine's queue limit
/// applies, so without a bound any number of large prompts are worked on together.
struct PrepareGate {
    permits: Arc<Semaphore>,
    /// Interactive requests waiting for a permit.
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Counts one interactive waiter while it lives: a request whose client hangs up while it
/// waits is dropped mid-`await`, and the count must come down then too.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PrepareGate {
    fn new(at_once: usize, max_waiting: usize) -> Self {
        PrepareGate {
            permits: Arc::new(Semaphore::new(at_once.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// A permit, after waiting for one. An interactive request gets 429 when too many wait
    /// already; background work (batch lines, bounded by the worker's own slots) always
    /// waits and is not counted, so a flood of clients cannot fail a batch line. The permit
    /// is owned: it goes with the preparation onto its blocking thread, so a request whose
    /// client hung up still holds it until that work ends.
    async fn enter(&self, priority: Priority) -> Result<OwnedSemaphorePermit, ServiceError> {
        let closed = |_| ServiceError::Internal("preparation gate closed".into());
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        if priority == Priority::Background {
            return self.permits.clone().acquire_owned().await.map_err(closed);
        }
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if before >= self.max_waiting {
            return Err(ServiceError::Admission(
                AdmissionError::QueueFull(before),
                false,
            ));
        }
        self.permits.clone().acquire_owned().await.map_err(closed)
    }
}

/// The service: the served models and the way into their engines.
#[derive(Clone)]
pub struct Completions {
    registry: Arc<ModelRegistry>,
    gate: Arc<PrepareGate>,
    /// The built-in tools requests may use.
    tools: Arc<ToolKit>,
    /// Fetches the images of requests to vision models.
    images: ImageFetcher,
}

/// A chat request, ready to run.
pub enum ChatRun {
    /// An ordinary completion (boxed: a prepared request is large).
    Plain(Box<ChatJob>),
    /// The built-in tool loop, started.
    Agent(AgentJob),
}

impl Completions {
    /// The service over `registry`, preparing as many requests at once as there are cores.
    pub fn new(registry: ModelRegistry) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::with_limits(registry, cores, DEFAULT_MAX_WAITING)
    }

    /// The service preparing at most `at_once` requests together, with `max_waiting` more
    /// waiting before 429.
    pub fn with_limits(registry: ModelRegistry, at_once: usize, max_waiting: usize) -> Self {
        Self {
            registry: Arc::new(registry),
            gate: Arc::new(PrepareGate::new(at_once, max_waiting)),
            tools: Arc::new(ToolKit::new(SandboxConfig::default())),
            images: ImageFetcher::new(FetchConfig::default()),
        }
    }

    /// The same service with `tools` as its built-in tools. Image URLs are fetched behind
    /// the website-visit guard's allow-list and timeout (the default guard when visits are
    /// off).
    pub fn with_tools(mut self, tools: ToolKit) -> Self {
        self.images = ImageFetcher::new(tools.visit.clone().unwrap_or_default());
        self.tools = Arc::new(tools);
        self
    }

    pub fn registry(&self) -> &ModelRegistry {
        &self.registry
    }

    pub fn tool_kit(&self) -> &ToolKit {
        &self.tools
    }

    /// Parses a client's body and readies it: an ordinary completion, or the built-in tool
    /// loop (a compound model, built-in `tools`) started with its first turn prepared.
    /// `model_version` is the `Groq-Model-Version` header; `org` the caller's organization
    /// (whose fine-tuned models resolve, and no other's).
    pub async fn prepare_chat(
        &self,
        body: &[u8],
        request_id: String,
        model_version: Option<&str>,
        org: &str,
    ) -> Result<ChatRun, ServiceError> {
        let (req, permit) = self.parse_gated(body, Priority::Interactive).await?;
        self.ready_chat(req, permit, request_id, model_version, org)
            .await
    }

    /// [`Completions::prepare_chat`] for a request already parsed (another wire format's,
    /// converted).
    pub async fn prepare_chat_request(
        &self,
        req: ChatCompletionRequest,
        request_id: String,
        model_version: Option<&str>,
        org: &str,
    ) -> Result<ChatRun, ServiceError> {
        let permit = self.gate.enter(Priority::Interactive).await?;
        self.ready_chat(req, permit, request_id, model_version, org)
            .await
    }

    async fn ready_chat(
        &self,
        req: ChatCompletionRequest,
        permit: OwnedSemaphorePermit,
        request_id: String,
        model_version: Option<&str>,
        org: &str,
    ) -> Result<ChatRun, ServiceError> {
        let Some(plan) = agent::plan(&req, model_version, self, org)? else {
            return Ok(ChatRun::Plain(Box::new(
                self.prepare_with(req, request_id, org, Some(permit))
                    .await?,
            )));
        };
        drop(permit);
        let stream = req.stream.unwrap_or(false);
        let include_usage = stream
            && req
                .stream_options
                .as_ref()
                .and_then(|o| o.include_usage)
                .unwrap_or(false);
        let job = agent::start(self, plan, request_id, stream, include_usage).await?;
        Ok(ChatRun::Agent(job))
    }

    /// Prepares one turn of the tool loop, waiting at the gate like a client's request.
    pub(crate) async fn prepare_turn(
        &self,
        req: ChatCompletionRequest,
        request_id: String,
        org: &str,
    ) -> Result<ChatJob, ServiceError> {
        let permit = self.gate.enter(Priority::Interactive).await?;
        let mut job = self
            .prepare_with(req, request_id, org, Some(permit))
            .await?;
        // The loop ends repeated calls itself (agent::runner).
        job.repeat_guard = None;
        Ok(job)
    }

    /// Parses the body and prepares it: everything known before generation.
    pub async fn prepare_body(
        &self,
        body: &[u8],
        request_id: String,
        priority: Priority,
        org: &str,
    ) -> Result<ChatJob, ServiceError> {
        let (req, permit) = self.parse_gated(body, priority).await?;
        self.prepare_with(req, request_id, org, Some(permit)).await
    }

    /// A permit of the preparation gate, then the body parsed.
    async fn parse_gated(
        &self,
        body: &[u8],
        priority: Priority,
    ) -> Result<(ChatCompletionRequest, OwnedSemaphorePermit), ServiceError> {
        let permit = self.gate.enter(priority).await?;
        let req = parse_chat_request(body).map_err(|e| ServiceError::BadRequest(e.message()))?;
        Ok((req, permit))
    }

    /// Resolves the model and prepares the request for it.
    pub async fn prepare(
        &self,
        req: ChatCompletionRequest,
        request_id: String,
        org: &str,
    ) -> Result<ChatJob, ServiceError> {
        self.prepare_with(req, request_id, org, None).await
    }

    /// [`Completions::prepare`], holding the gate's `permit` until the work is done.
    async fn prepare_with(
        &self,
        req: ChatCompletionRequest,
        request_id: String,
        org: &str,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<ChatJob, ServiceError> {
        let model = self
            .registry
            .resolve(&req.model, org)
            .ok_or_else(|| ServiceError::ModelNotFound(req.model.clone()))?
            .model;
        let seed = prepare::random_seed();
        // A model without a projector refuses images in preparation: nothing is fetched.
        let images = match model.ctx.vision {
            Some(_) => self.images.fetch_all(&req.messages).await?,
            None => Vec::new(),
        };
        // Rendering, tokenizing, decoding images and compiling a schema are CPU work: off
        // the async workers.
        let ctx = model.ctx.clone();
        let (req, prepared) = tokio::task::spawn_blocking(move || {
            let prepared = prepare_with_images(&req, &ctx, seed, &images);
            drop(permit);
            (req, prepared)
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("preparation task: {e}")))?;
        let mut request = prepared?;
        request.adapter = model.adapter;
        request.span = tracing::info_span!("request", request_id = %request_id);
        let asked_max_tokens = (req.max_completion_tokens.or(req.max_tokens))
            .map(|n| n.clamp(0, i64::from(u32::MAX)) as u32);
        let repeat_guard = repeats::guard(&req, &request_id, org);
        let meta = ResponseMeta {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4()),
            created: now_unix(),
            model: req.model,
            fingerprint: model.fingerprint.clone(),
            request_id,
            seed: request.sampling.seed as i64,
            // `auto` without a rate limiter to resolve it runs as on_demand.
            service_tier: match request.service_tier {
                ServiceTier::Auto => ServiceTier::OnDemand.as_str(),
                t => t.as_str(),
            },
            include_usage: request.include_usage,
            logprobs: request.sampling.logprobs.is_some(),
            track_text: request.constraint.is_some(),
        };
        Ok(ChatJob {
            model,
            request,
            meta,
            asked_max_tokens,
            repeat_guard,
        })
    }

    /// Queues the job; its events arrive on the receiver (dropping it cancels the job).
    pub fn start(
        &self,
        job: ChatJob,
        priority: Priority,
    ) -> Result<(ResponseMeta, mpsc::Receiver<Event>), ServiceError> {
        let flex = job.request.service_tier == ServiceTier::Flex;
        let runtime = &job.model.runtime;
        let rx = match priority {
            Priority::Interactive => runtime.submit(job.request),
            Priority::Background => runtime.submit_background(job.request),
        }
        .map_err(|e| ServiceError::Admission(e, flex))?;
        let rx = match job.repeat_guard {
            Some(guard) => guard.relay(self.clone(), rx, priority),
            None => rx,
        };
        Ok((job.meta, rx))
    }

    /// Runs the job to its end.
    pub async fn complete(
        &self,
        job: ChatJob,
        priority: Priority,
    ) -> Result<Completion, CompletionError> {
        let (meta, rx) = self.start(job, priority)?;
        collect(meta, rx).await
    }
}

/// Folds a job's events into its completion: the same events a stream sends, one object.
pub async fn collect(
    meta: ResponseMeta,
    mut rx: mpsc::Receiver<Event>,
) -> Result<Completion, CompletionError> {
    let (mut content, mut logprobs, mut tool_calls) = (String::new(), Vec::new(), Vec::new());
    let mut reasoning = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Delta { text, logprobs: lp } => {
                content.push_str(&text);
                logprobs.extend(lp);
            }
            Event::Reasoning { text } => reasoning.push_str(&text),
            Event::ToolCall { name, arguments } => {
                tool_calls.push(GeneratedCall { name, arguments })
            }
            Event::Finished(finished) => {
                return Ok(Completion {
                    meta,
                    content,
                    reasoning,
                    logprobs,
                    tool_calls,
                    finished,
                })
            }
            Event::Failed(why) => return Err(CompletionError::Failed(why)),
            Event::Rejected(rejection) => {
                return Err(CompletionError::Rejected {
                    rejection,
                    text: content,
                })
            }
            Event::Preempted => return Err(CompletionError::Preempted),
        }
    }
    Err(CompletionError::Failed(
        "the engine dropped the request".into(),
    ))
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_gate_admits_its_permits_then_queues_then_refuses() {
        let gate = Arc::new(PrepareGate::new(1, 1));
        let held = gate
            .enter(Priority::Interactive)
            .await
            .expect("first permit");
        // One may wait for it...
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.enter(Priority::Interactive).await.is_ok() });
        while gate.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        // ...and the next is told to come back.
        let refused = gate.enter(Priority::Interactive).await.unwrap_err();
        assert_eq!(refused.status(), 429);
        // Background work waits however many wait, uncounted.
        let g = gate.clone();
        let background = tokio::spawn(async move { g.enter(Priority::Background).await.is_ok() });
        tokio::task::yield_now().await;
        assert_eq!(gate.waiting.load(Ordering::Acquire), 1);
        drop(held);
        assert!(waiter.await.unwrap());
        assert!(background.await.unwrap());
        assert_eq!(gate.waiting.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_goes_away_is_no_longer_counted() {
        let gate = Arc::new(PrepareGate::new(1, 1));
        let _held = gate
            .enter(Priority::Interactive)
            .await
            .expect("first permit");
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.enter(Priority::Interactive).await.is_ok() });
        while gate.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        // The client hangs up: its request future is dropped while it waits.
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(gate.waiting.load(Ordering::Acquire), 0);
        // So the next request may wait again instead of a 429.
        let g = gate.clone();
        let next = tokio::spawn(async move { g.enter(Priority::Interactive).await.map(drop) });
        tokio::task::yield_now().await;
        assert_eq!(gate.waiting.load(Ordering::Acquire), 1);
        next.abort();
    }
}
