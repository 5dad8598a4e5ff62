//! One request's path through the gateway, in named phases:
//!
//! 1. **authenticate**: bearer key → [`Principal`]
//! 2. **admit**: rate limits and quota reservation
//! 3. **plan**: the policy engine turns the request into a [`Plan`] of upstream attempts
//! 4. **enrich**: memory and gateway tools added to the request
//! 5. **dispatch**: the attempts, with retries and fallbacks; streams pass through chunk
//!    by chunk once their first content has arrived
//! 6. **settle**: real usage and cost, recorded once the response is complete
//!
//! The HTTP handlers (and the MCP tools) call these functions; none has its own copy.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt, stream};
use tokio::time::Instant;

use crate::auth::{self, AuthError, Principal};
use crate::gateway::Gateway;
use crate::protocol::parse::{self, InvalidRequest};
use crate::protocol::{ChatCompletionRequest, Usage};
use crate::providers::{ChatReply, EventStream, ProviderError, StreamEvent, WireAdapter};
use crate::routing::fallback::{self, NextStep};
use crate::routing::health::CallSlot;
use crate::routing::privacy::{self, StreamRestorer};
use crate::routing::redact::Redactions;
use crate::routing::{Caller, Plan, RouteInput, RoutingError, Target};

/// What the edge knows of a request before the pipeline runs.
#[derive(Default)]
pub struct RequestContext {
    pub request_id: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// `x-switchyard-user`: the end user a bot is serving.
    pub end_user: Option<String>,
    /// `x-switchyard-tags`, comma-separated.
    pub tags: Option<String>,
}

impl RequestContext {
    pub fn caller(&self) -> Caller<'_> {
        Caller { key_id: None, team: None, end_user: self.end_user.as_deref(), tags_header: self.tags.as_deref() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    InvalidRequest(#[from] InvalidRequest),
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// Every attempt of the plan failed; `route` says which were made.
    #[error("{error}")]
    Upstream { error: ProviderError, route: Box<RouteReport> },
}

/// A chat answer for the client.
pub enum ChatOutput {
    /// A `chat.completion` JSON body.
    Complete(Bytes),
    /// SSE frames; the edge ends a finished stream with `data: [DONE]`.
    Stream(FrameStream),
}

pub type FrameStream = Pin<Box<dyn Stream<Item = Result<Bytes, ProviderError>> + Send>>;

/// How a request was routed, for the `x-switchyard-route` and `-cost-estimate` headers.
#[derive(Debug, Clone)]
pub struct RouteReport {
    /// The deciding rule, `default` when none matched.
    pub rule: String,
    pub target: String,
    /// Upstream calls made, retries and fallbacks included.
    pub attempts: u32,
    /// USD for the serving target, from the prompt estimate and expected output.
    pub cost_estimate: Option<f64>,
}

impl RouteReport {
    /// The `x-switchyard-route` header value.
    pub fn header(&self) -> String {
        format!("rule={}; target={}; attempts={}", self.rule, self.target, self.attempts)
    }
}

/// `POST /v1/chat/completions`
pub async fn chat(
    gateway: &Gateway,
    context: &RequestContext,
    body: &[u8],
) -> Result<(ChatOutput, RouteReport), PipelineError> {
    let principal = authenticate(gateway, context)?;
    let mut request = parse::chat_request(body)?;
    admit(gateway, &principal)?;
    let plan = gateway.router.plan(&gateway.registry, &RouteInput::chat(&request, &context.caller()), None)?;
    let redactions = apply_plan(&plan, &mut request);
    let request = enrich(request, &plan);
    let started = Instant::now();
    let dispatched = dispatch(
        &plan,
        request,
        |r, model| r.model = model,
        |adapter, r| Box::pin(async move { hold_until_content(adapter.chat(r).await?).await }),
    )
    .await
    .map_err(|failed| failed.into_error(&plan))?;
    let report = dispatched.report(&plan);
    let attempt_started = dispatched.attempt_started;
    let mut record = Settlement::new(context, dispatched.target, dispatched.slot, started);
    let output = match dispatched.reply {
        ChatReply::Complete { body, usage } => {
            record.usage = usage;
            record.outcome = Some(Outcome::Completed);
            record.settle();
            match redactions {
                Some(redactions) => ChatOutput::Complete(privacy::restore_completion(body, &redactions)),
                None => ChatOutput::Complete(body),
            }
        }
        ChatReply::Stream(events) => {
            let deadline = plan.settings.total_timeout.map(|limit| attempt_started + limit);
            let frames = settle_stream(events, record, deadline);
            match redactions {
                Some(redactions) => ChatOutput::Stream(restore_stream(frames, redactions)),
                None => ChatOutput::Stream(frames),
            }
        }
    };
    Ok((output, report))
}

/// `POST /v1/embeddings`
pub async fn embeddings(
    gateway: &Gateway,
    context: &RequestContext,
    body: &[u8],
) -> Result<(Bytes, RouteReport), PipelineError> {
    let principal = authenticate(gateway, context)?;
    let mut request = parse::embeddings_request(body)?;
    admit(gateway, &principal)?;
    let plan = gateway.router.plan(&gateway.registry, &RouteInput::embeddings(&request, &context.caller()), None)?;
    if plan.redacts() {
        // Embeddings of the placeholders: nothing to restore in a vector.
        privacy::redact_embeddings(&mut request, &plan.detector);
    }
    let started = Instant::now();
    let dispatched = dispatch(&plan, request, |r, model| r.model = model, |adapter, r| adapter.embeddings(r))
        .await
        .map_err(|failed| failed.into_error(&plan))?;
    let report = dispatched.report(&plan);
    let mut record = Settlement::new(context, dispatched.target, dispatched.slot, started);
    record.usage = dispatched.reply.usage;
    record.outcome = Some(Outcome::Completed);
    record.settle();
    Ok((dispatched.reply.body, report))
}

/// Phase 1: the caller behind the request's bearer key.
pub fn authenticate(gateway: &Gateway, context: &RequestContext) -> Result<Principal, AuthError> {
    auth::authenticate(gateway.master_key.as_ref(), context.authorization.as_deref())
}

/// Phase 2: rate limits and quota reservation. Every caller is admitted until limits exist.
fn admit(_gateway: &Gateway, _principal: &Principal) -> Result<(), PipelineError> {
    Ok(())
}

/// Phase 3, applied: the rule's output cap and, under `redact`, placeholders for PII.
fn apply_plan(plan: &Plan, request: &mut ChatCompletionRequest) -> Option<Arc<Redactions>> {
    if let Some(cap) = plan.max_tokens {
        match (request.max_completion_tokens, request.max_tokens) {
            (None, Some(asked)) => request.max_tokens = Some(asked.min(cap)),
            (asked, _) => request.max_completion_tokens = Some(asked.map_or(cap, |asked| asked.min(cap))),
        }
    }
    if !plan.redacts() {
        return None;
    }
    let redactions = privacy::redact_chat(request, &plan.detector);
    (!redactions.is_empty()).then(|| Arc::new(redactions))
}

/// Phase 4: memory and gateway tools. The request goes out as the client sent it until
/// those exist.
fn enrich(request: ChatCompletionRequest, _plan: &Plan) -> ChatCompletionRequest {
    request
}

/// An answer and the attempt that produced it.
struct Dispatched<Reply> {
    target: Target,
    reply: Reply,
    /// Holds the deployment's in-flight count (and concurrency permit) until settlement.
    slot: CallSlot,
    /// Position of `target` in the plan.
    index: usize,
    attempts: u32,
    attempt_started: Instant,
}

impl<Reply> Dispatched<Reply> {
    fn report(&self, plan: &Plan) -> RouteReport {
        RouteReport {
            rule: plan.rule.clone().unwrap_or_else(|| "default".into()),
            target: self.target.name(),
            attempts: self.attempts,
            cost_estimate: plan.cost_estimates.get(self.index).copied().flatten(),
        }
    }
}

/// Why dispatch gave up: the last error, after how many calls, on which target.
struct DispatchFailure {
    error: ProviderError,
    attempts: u32,
    last_target: Option<String>,
}

impl DispatchFailure {
    fn into_error(self, plan: &Plan) -> PipelineError {
        let route = RouteReport {
            rule: plan.rule.clone().unwrap_or_else(|| "default".into()),
            target: self.last_target.unwrap_or_else(|| "none".into()),
            attempts: self.attempts,
            cost_estimate: None,
        };
        PipelineError::Upstream { error: self.error, route: Box::new(route) }
    }
}

/// Phase 5: the plan's targets in order. Passing faults (connect errors, timeouts, 429,
/// 5xx, a stream broken before its first content) are retried on the same target with
/// backoff, then the next target is tried; a target that refuses the request (401, 403,
/// 404) is skipped; an error in the request itself (other 4xx) goes to the client.
async fn dispatch<Request: Clone, Reply>(
    plan: &Plan,
    request: Request,
    set_model: fn(&mut Request, String),
    call: impl for<'a> Fn(&'a dyn WireAdapter, Request) -> BoxFuture<'a, Result<Reply, ProviderError>>,
) -> Result<Dispatched<Reply>, DispatchFailure> {
    let settings = &plan.settings;
    let deadline = settings.deadline.map(|limit| Instant::now() + limit);
    let mut request = Some(request);
    let mut last_error = None;
    let mut last_target = None;
    let mut attempts = 0;
    'targets: for (index, target) in plan.attempts.iter().enumerate() {
        let Ok(adapter) = target.provider.adapter() else { continue };
        for retry in 0..=settings.retries {
            let slot = match target.deployment.acquire().await {
                Ok(slot) => slot,
                Err(unavailable) => {
                    last_error.get_or_insert_with(|| ProviderError::Unreachable {
                        provider: target.provider.id().to_owned(),
                        cause: unavailable.to_string(),
                    });
                    continue 'targets;
                }
            };
            // The very last possible attempt takes the request itself: no copy on the
            // common one-target path.
            let last = index + 1 == plan.attempts.len() && retry == settings.retries;
            let Some(mut attempt) = (if last { request.take() } else { request.clone() }) else { break 'targets };
            set_model(&mut attempt, target.model.clone());
            attempts += 1;
            last_target = Some(target.name());
            let started = Instant::now();
            let limit = [settings.first_byte_timeout, settings.total_timeout, deadline.map(|d| d - started)]
                .into_iter()
                .flatten()
                .min();
            let result = match limit {
                Some(limit) => tokio::time::timeout(limit, call(adapter, attempt)).await.unwrap_or_else(|_| {
                    Err(ProviderError::Timeout { provider: target.provider.id().to_owned(), after: limit })
                }),
                None => call(adapter, attempt).await,
            };
            let error = match result {
                Ok(reply) => {
                    target.deployment.record(true, started.elapsed(), &plan.breaker);
                    return Ok(Dispatched {
                        target: target.clone(),
                        reply,
                        slot,
                        index,
                        attempts,
                        attempt_started: started,
                    });
                }
                Err(error) => error,
            };
            let next = NextStep::after(&error);
            if next.counts_against_health() {
                target.deployment.record(false, started.elapsed(), &plan.breaker);
            }
            drop(slot);
            tracing::debug!(target = %target.name(), attempt = attempts, ?next, "attempt failed: {error}");
            match next {
                NextStep::GiveUp => return Err(DispatchFailure { error, attempts, last_target }),
                NextStep::NextTarget => {
                    last_error = Some(error);
                    continue 'targets;
                }
                NextStep::Retry => {
                    let wait = (retry < settings.retries).then(|| fallback::backoff(settings, retry + 1, &error));
                    last_error = Some(error);
                    match wait.flatten() {
                        Some(wait) if deadline.is_none_or(|d| Instant::now() + wait < d) => {
                            tokio::time::sleep(wait).await
                        }
                        _ => continue 'targets,
                    }
                }
            }
        }
    }
    let error = last_error.unwrap_or_else(|| ProviderError::Unreachable {
        provider: "none".into(),
        cause: "no target of the plan could be tried".into(),
    });
    Err(DispatchFailure { error, attempts, last_target })
}

/// Holds a stream back until its first content (text, tool call, or finish) has arrived,
/// so a stream that fails before producing anything can still be retried or fall back.
/// Once this returns, the client gets the stream and it is never switched.
async fn hold_until_content(reply: ChatReply) -> Result<ChatReply, ProviderError> {
    let ChatReply::Stream(mut events) = reply else { return Ok(reply) };
    let mut held = Vec::new();
    while let Some(event) = events.next().await {
        let event = event?;
        let content = matches!(&event, StreamEvent::Frame(frame) if has_content(frame));
        held.push(Ok(event));
        if content {
            break;
        }
    }
    Ok(ChatReply::Stream(Box::pin(stream::iter(held).chain(events))))
}

/// Whether SSE frames carry anything beyond the role-only opening delta.
fn has_content(frames: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Vec<Choice>,
    }
    #[derive(serde::Deserialize)]
    struct Choice {
        #[serde(default)]
        delta: serde_json::Map<String, serde_json::Value>,
        #[serde(default)]
        finish_reason: Option<String>,
    }
    let Ok(text) = std::str::from_utf8(frames) else { return true };
    text.split("\n\n").filter_map(|event| event.trim().strip_prefix("data:")).any(|data| {
        match serde_json::from_str::<Chunk>(data.trim()) {
            Ok(chunk) => chunk.choices.iter().any(|choice| {
                choice.finish_reason.is_some()
                    || choice.delta.iter().any(|(key, value)| key != "role" && !is_empty_value(value))
            }),
            // Something we cannot read counts as content: never hold back indefinitely.
            Err(_) => true,
        }
    })
}

fn is_empty_value(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => true,
        serde_json::Value::String(text) => text.is_empty(),
        serde_json::Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// The frames with redaction placeholders turned back into the original values.
fn restore_stream(frames: FrameStream, redactions: Arc<Redactions>) -> FrameStream {
    let mut restorer = StreamRestorer::new(redactions);
    Box::pin(frames.map(move |frame| frame.map(|frame| restorer.frame(&frame))))
}

/// How a request ended, for settlement.
#[derive(Debug)]
enum Outcome {
    Completed,
    Failed(String),
}

/// Phase 6: what a request used and cost. Settled exactly once: when a complete answer
/// is sent, or when a stream ends, fails or is dropped by a departing client.
struct Settlement {
    request_id: String,
    target: Target,
    started: Instant,
    usage: Option<Usage>,
    /// `None` while a stream is running; still `None` when it is dropped means the
    /// client went away.
    outcome: Option<Outcome>,
    /// The deployment stays busy until the answer is settled.
    _slot: CallSlot,
}

impl Settlement {
    fn new(context: &RequestContext, target: Target, slot: CallSlot, started: Instant) -> Self {
        Settlement { request_id: context.request_id.clone(), target, started, usage: None, outcome: None, _slot: slot }
    }

    /// Records now; `Drop` does the recording, so a stream dropped midway is settled too.
    fn settle(self) {}

    fn record(&self) {
        let (input, output) = self.usage.as_ref().map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
        let cost_usd = self.target.spec().map(|spec| spec.cost_usd(input, output));
        let outcome = match &self.outcome {
            Some(Outcome::Completed) => "completed",
            Some(Outcome::Failed(_)) => "failed",
            None => "cancelled by client",
        };
        tracing::debug!(
            request_id = %self.request_id,
            target = %self.target.name(),
            input_tokens = input,
            output_tokens = output,
            cost_usd = cost_usd.unwrap_or(0.0),
            usage_reported = self.usage.is_some(),
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            error = match &self.outcome { Some(Outcome::Failed(e)) => e.as_str(), _ => "" },
            "{outcome}"
        );
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        self.record();
    }
}

/// Passes a stream's frames on, keeps its usage, and settles when it ends. `deadline`
/// (the rule's total timeout) cuts a stream that runs too long.
fn settle_stream(events: EventStream, record: Settlement, deadline: Option<Instant>) -> FrameStream {
    Box::pin(stream::unfold(Some((events, record)), move |state| async move {
        let (mut events, mut record) = state?;
        loop {
            let next = match deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, events.next()).await {
                    Ok(next) => next,
                    Err(_) => Some(Err(ProviderError::Timeout {
                        provider: record.target.provider.id().to_owned(),
                        after: deadline.duration_since(record.started).max(Duration::ZERO),
                    })),
                },
                None => events.next().await,
            };
            match next {
                Some(Ok(StreamEvent::Usage(usage))) => record.usage = Some(usage),
                Some(Ok(StreamEvent::Frame(frame))) => {
                    return Some((Ok(frame), Some((events, record))));
                }
                Some(Err(error)) => {
                    record.outcome = Some(Outcome::Failed(error.to_string()));
                    return Some((Err(error), None));
                }
                None => {
                    record.outcome = Some(Outcome::Completed);
                    return None;
                }
            }
        }
    }))
}
