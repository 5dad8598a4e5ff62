//! One request's path through the gateway, in named phases:
//!
//! 1. **authenticate**: bearer key → [`Principal`]
//! 2. **admit**: rate limits and quota reservation
//! 3. **plan**: the requested model → a [`Plan`] of upstream attempts
//! 4. **enrich**: memory and gateway tools added to the request
//! 5. **dispatch**: the provider call; streams pass through chunk by chunk
//! 6. **settle**: real usage and cost, recorded once the response is complete
//!
//! The HTTP handlers (and the MCP tools) call these functions; none has its own copy.

use std::pin::Pin;
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt, stream};

use crate::auth::{self, AuthError, Principal};
use crate::gateway::Gateway;
use crate::protocol::parse::{self, InvalidRequest};
use crate::protocol::{ChatCompletionRequest, Usage};
use crate::providers::{ChatReply, EventStream, ProviderError, StreamEvent, WireAdapter};
use crate::routing::{self, Plan, Purpose, RoutingError, Target};

/// What the edge knows of a request before the pipeline runs.
pub struct RequestContext {
    pub request_id: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    InvalidRequest(#[from] InvalidRequest),
    #[error(transparent)]
    Routing(#[from] RoutingError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// A chat answer for the client.
pub enum ChatOutput {
    /// A `chat.completion` JSON body.
    Complete(Bytes),
    /// SSE frames; the edge ends a finished stream with `data: [DONE]`.
    Stream(FrameStream),
}

pub type FrameStream = Pin<Box<dyn Stream<Item = Result<Bytes, ProviderError>> + Send>>;

/// `POST /v1/chat/completions`
pub async fn chat(gateway: &Gateway, context: &RequestContext, body: &[u8]) -> Result<ChatOutput, PipelineError> {
    let principal = authenticate(gateway, context)?;
    let request = parse::chat_request(body)?;
    admit(gateway, &principal)?;
    let plan = routing::plan(&gateway.registry, &request.model, Purpose::Chat)?;
    let request = enrich(request, &plan);
    let started = Instant::now();
    let (target, reply) = dispatch(&plan, request, |r, model| r.model = model, |adapter, r| adapter.chat(r)).await?;
    let mut record = Settlement { request_id: context.request_id.clone(), target, started, usage: None, outcome: None };
    Ok(match reply {
        ChatReply::Complete { body, usage } => {
            record.usage = usage;
            record.outcome = Some(Outcome::Completed);
            record.settle();
            ChatOutput::Complete(body)
        }
        ChatReply::Stream(events) => ChatOutput::Stream(settle_stream(events, record)),
    })
}

/// `POST /v1/embeddings`
pub async fn embeddings(gateway: &Gateway, context: &RequestContext, body: &[u8]) -> Result<Bytes, PipelineError> {
    let principal = authenticate(gateway, context)?;
    let request = parse::embeddings_request(body)?;
    admit(gateway, &principal)?;
    let plan = routing::plan(&gateway.registry, &request.model, Purpose::Embeddings)?;
    let started = Instant::now();
    let (target, reply) =
        dispatch(&plan, request, |r, model| r.model = model, |adapter, r| adapter.embeddings(r)).await?;
    Settlement {
        request_id: context.request_id.clone(),
        target,
        started,
        usage: reply.usage,
        outcome: Some(Outcome::Completed),
    }
    .settle();
    Ok(reply.body)
}

/// Phase 1: the caller behind the request's bearer key.
pub fn authenticate(gateway: &Gateway, context: &RequestContext) -> Result<Principal, AuthError> {
    auth::authenticate(gateway.master_key.as_ref(), context.authorization.as_deref())
}

/// Phase 2: rate limits and quota reservation. Every caller is admitted until limits exist.
fn admit(_gateway: &Gateway, _principal: &Principal) -> Result<(), PipelineError> {
    Ok(())
}

/// Phase 4: memory and gateway tools. The request goes out as the client sent it until
/// those exist.
fn enrich(request: ChatCompletionRequest, _plan: &Plan) -> ChatCompletionRequest {
    request
}

/// Phase 5: the attempts of the plan in order; the first answer wins. Only failures that
/// say nothing about the request (unreachable, timed out) move on to the next attempt.
async fn dispatch<Request: Clone, Reply>(
    plan: &Plan,
    request: Request,
    set_model: fn(&mut Request, String),
    call: impl for<'a> Fn(&'a dyn WireAdapter, Request) -> BoxFuture<'a, Result<Reply, ProviderError>>,
) -> Result<(Target, Reply), ProviderError> {
    let mut last_error = None;
    let mut request = Some(request);
    for (i, target) in plan.attempts.iter().enumerate() {
        let Ok(adapter) = target.provider.adapter() else { continue };
        // The last attempt takes the request itself: no copy on the common one-target path.
        let mut attempt = if i + 1 == plan.attempts.len() { request.take() } else { request.clone() };
        let Some(mut attempt) = attempt.take() else { break };
        set_model(&mut attempt, target.model.clone());
        match call(adapter, attempt).await {
            Ok(reply) => return Ok((target.clone(), reply)),
            Err(error @ (ProviderError::Unreachable { .. } | ProviderError::Timeout { .. })) => {
                last_error = Some(error)
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(no_attempt))
}

fn no_attempt() -> ProviderError {
    ProviderError::Unreachable { provider: "none".into(), cause: "the plan has no usable target".into() }
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
}

impl Settlement {
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

/// Passes a stream's frames on, keeps its usage, and settles when it ends.
fn settle_stream(events: EventStream, record: Settlement) -> FrameStream {
    Box::pin(stream::unfold(Some((events, record)), |state| async move {
        let (mut events, mut record) = state?;
        loop {
            match events.next().await {
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
