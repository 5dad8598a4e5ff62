//! One request's path through the gateway, in named phases:
//!
//! 1. **authenticate**: bearer key → [`Principal`]
//! 2. **plan**: the policy engine turns the request into a [`Plan`] of upstream attempts
//! 3. **admit**: rate limits, and a budget reservation of the most the plan can cost
//!    (planning comes first because that cost depends on the targets' prices)
//! 4. **enrich**: memory and gateway tools added to the request
//! 5. **dispatch**: the attempts, with retries and fallbacks; streams pass through chunk
//!    by chunk once their first content has arrived
//! 6. **settle**: real usage and cost, recorded once the response is complete
//!
//! The HTTP handlers (and the MCP tools) call these functions; none has its own copy.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{Stream, StreamExt, stream};
use tokio::time::Instant;

mod answer;
mod settle;
pub mod views;

use crate::audit::{AuditEntry, ContentCapture, FailedAttempt, Field};
use crate::auth::{self, AuthError, Principal};
use crate::gateway::Gateway;
use crate::keys::{KEY_PREFIX, Lookup};
use crate::limits::spec::BudgetUnit;
use crate::limits::spec::Limits;
use crate::limits::{Admission, Demand, LimitError, RateHeaders, Subject};
use crate::protocol::ChatCompletionRequest;
use crate::protocol::ErrorEnvelope;
use crate::protocol::parse::{self, InvalidRequest};
use crate::providers::{ChatReply, ProviderError, RetryAfter, StreamEvent, WireAdapter};
use crate::routing::fallback::{self, NextStep};
use crate::routing::health::CallSlot;
use crate::routing::privacy::{self, StreamRestorer};
use crate::routing::redact::Redactions;
use crate::routing::{Caller, Plan, RouteInput, RoutingError, Target};
use crate::telemetry::metrics::Next;
use crate::telemetry::trace::{RequestTrace, Span, TraceParent, UPSTREAM_TRACEPARENT};

use self::answer::Answer;
use self::settle::{Asked, Outcome, Settlement, settle_stream};

/// What the edge knows of a request before the pipeline runs.
#[derive(Default)]
pub struct RequestContext {
    pub request_id: String,
    /// The connection's peer address.
    pub client_ip: Option<std::net::IpAddr>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// `x-switchyard-user`: the end user a bot is serving.
    pub end_user: Option<String>,
    /// `x-switchyard-tags`, comma-separated.
    pub tags: Option<String>,
    /// The client's W3C `traceparent`, if valid.
    pub traceparent: Option<TraceParent>,
    /// This request's trace (not recording until a handler starts it).
    pub trace: RequestTrace,
}

impl RequestContext {
    pub fn caller<'a>(&'a self, principal: &'a Principal) -> Caller<'a> {
        let key = principal.key().map(|key| &key.record);
        Caller {
            key_id: key.map(|key| key.id.as_str()),
            team: key.and_then(|key| key.team.as_deref()),
            end_user: self.end_user.as_deref(),
            tags_header: self.tags.as_deref(),
        }
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
    #[error(transparent)]
    Limit(#[from] LimitError),
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
    /// The key's rate-limit state, for the `x-ratelimit-*` headers.
    pub limits: RateHeaders,
}

impl RouteReport {
    /// The `x-switchyard-route` header value.
    pub fn header(&self) -> String {
        format!("rule={}; target={}; attempts={}", self.rule, self.target, self.attempts)
    }
}

/// `POST /v1/chat/completions`
///
/// `audit` is filled in as the request goes; once an upstream has answered it moves into
/// the settlement, which records it when the answer is complete. Otherwise it stays with
/// the caller, who records it with the error.
pub async fn chat(
    gateway: &Gateway,
    context: &RequestContext,
    body: &Bytes,
    audit: &mut Option<AuditEntry>,
) -> Result<(ChatOutput, RouteReport), PipelineError> {
    let principal = authenticate_phase(gateway, context, audit).await?;
    let mut request = parse::chat_request(body)?;
    let end_user = end_user_of(context, request.user.as_deref());
    note_request(context, audit, &request.model, end_user.as_deref());
    may_use_model(&principal, &request.model)?;
    let plan = {
        let _span = context.trace.span("plan");
        let input = RouteInput::chat(&request, &context.caller(&principal));
        note_plan(context, audit, gateway.router.plan(&gateway.registry, &input, None))?
    };
    let max_output = request.max_output_tokens();
    let admission = {
        let _span = context.trace.span("admit");
        admit(gateway, &principal, end_user.as_deref(), &plan, max_output).await?
    };
    let redactions = apply_plan(&plan, &mut request);
    let request = enrich(request, &plan);
    let started = Instant::now();
    let dispatched = dispatch(
        gateway,
        context,
        &plan,
        max_output,
        request,
        |r, model| r.model = model,
        |adapter, r| Box::pin(async move { hold_until_content(adapter.chat(r).await?).await }),
    )
    .await
    .map_err(|failed| failed.into_error(&plan, audit))?;
    let report = dispatched.report(&plan, &admission);
    let attempt_started = dispatched.attempt_started;
    let asked = Asked { body: body.clone(), embeddings: false };
    let (reply, mut record) =
        dispatched.settle_with(gateway, context, &principal, end_user, admission, started, audit.take(), asked, &plan);
    let output = match reply {
        ChatReply::Complete { body, usage } => {
            record.usage = usage;
            record.outcome = Some(Outcome::Completed);
            record.answer = Answer::Complete(body.clone());
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
    body: &Bytes,
    audit: &mut Option<AuditEntry>,
) -> Result<(Bytes, RouteReport), PipelineError> {
    let principal = authenticate_phase(gateway, context, audit).await?;
    let mut request = parse::embeddings_request(body)?;
    let end_user = end_user_of(context, request.user.as_deref());
    note_request(context, audit, &request.model, end_user.as_deref());
    may_use_model(&principal, &request.model)?;
    let plan = {
        let _span = context.trace.span("plan");
        let input = RouteInput::embeddings(&request, &context.caller(&principal));
        note_plan(context, audit, gateway.router.plan(&gateway.registry, &input, None))?
    };
    let admission = {
        let _span = context.trace.span("admit");
        admit(gateway, &principal, end_user.as_deref(), &plan, Some(0)).await?
    };
    if plan.redacts() {
        // Embeddings of the placeholders: nothing to restore in a vector.
        privacy::redact_embeddings(&mut request, &plan.detector);
    }
    let started = Instant::now();
    let dispatched = dispatch(
        gateway,
        context,
        &plan,
        Some(0),
        request,
        |r, model| r.model = model,
        |adapter, r| adapter.embeddings(r),
    )
    .await
    .map_err(|failed| failed.into_error(&plan, audit))?;
    let report = dispatched.report(&plan, &admission);
    let asked = Asked { body: body.clone(), embeddings: true };
    let (reply, mut record) =
        dispatched.settle_with(gateway, context, &principal, end_user, admission, started, audit.take(), asked, &plan);
    record.usage = reply.usage;
    record.outcome = Some(Outcome::Completed);
    record.answer = Answer::Complete(Bytes::new());
    record.settle();
    Ok((reply.body, report))
}

/// Phase 1, with its span, and the caller in the audit record.
async fn authenticate_phase(
    gateway: &Gateway,
    context: &RequestContext,
    audit: &mut Option<AuditEntry>,
) -> Result<Principal, AuthError> {
    let mut span = context.trace.span("authenticate");
    let principal = authenticate(gateway, context).await;
    match &principal {
        Ok(principal) => {
            if let Some(record) = audit.as_mut() {
                record.set_principal(principal);
            }
            if let Some(key) = principal.key() {
                context.trace.set("switchyard.key_id", key.record.id.clone());
            }
        }
        Err(error) => span.fail(&error.to_string()),
    }
    principal
}

/// The end user that limits count against and the audit record names: the
/// `x-switchyard-user` header, else the body's `user`. Empty is no end user.
pub fn end_user_of(context: &RequestContext, body_user: Option<&str>) -> Option<String> {
    let given = |user: &&str| !user.is_empty();
    context.end_user.as_deref().filter(given).or(body_user.filter(given)).map(str::to_owned)
}

/// What the audit record and the trace learn from the parsed request.
fn note_request(context: &RequestContext, audit: &mut Option<AuditEntry>, model: &str, end_user: Option<&str>) {
    if context.trace.is_recording() {
        context.trace.set("gen_ai.request.model", model.to_owned());
        context.trace.rename(format!("{} {model}", context.trace.operation()));
    }
    if let Some(record) = audit {
        record.set(Field::RequestedModel(model));
        if let Some(end_user) = end_user {
            record.set(Field::EndUser(end_user));
        }
    }
}

/// What the audit record and the trace learn from planning: the rule, and the PII
/// classes found.
fn note_plan(
    context: &RequestContext,
    audit: &mut Option<AuditEntry>,
    plan: Result<Plan, RoutingError>,
) -> Result<Plan, RoutingError> {
    if let Ok(plan) = &plan {
        context.trace.set("switchyard.rule", plan.rule.clone().unwrap_or_else(|| "default".into()));
    }
    if let Some(record) = audit {
        match &plan {
            Ok(plan) => {
                record.set(Field::Rule(plan.rule.as_deref().unwrap_or("default")));
                if !plan.pii_found.is_empty() {
                    let classes: Vec<&str> = plan.pii_found.iter().map(|class| class.name()).collect();
                    record.set(Field::PiiClasses(&classes));
                }
            }
            Err(RoutingError::PiiBlocked { rule, classes }) => {
                record.set(Field::Rule(rule));
                let classes: Vec<&str> = classes.iter().map(String::as_str).collect();
                record.set(Field::PiiClasses(&classes));
            }
            Err(_) => {}
        }
    }
    plan
}

/// Phase 1: the caller behind the request's bearer key. Failures count against the
/// client's address, and an address over its failure limit is refused before any lookup.
pub async fn authenticate(gateway: &Gateway, context: &RequestContext) -> Result<Principal, AuthError> {
    let token = context.authorization.as_deref().and_then(auth::bearer_token);
    match token {
        Some(token) => {
            if let Some(principal) = auth::master(gateway.master_key.as_ref(), token) {
                return Ok(principal);
            }
            if let Some(Lookup::Valid(key)) = gateway.keys.cached(token) {
                return Ok(Principal::Key(key));
            }
        }
        None if gateway.master_key.is_none() => return Ok(Principal::Open),
        None => {}
    }
    if let Some(ip) = context.client_ip
        && let Err(retry_after_ms) = gateway.failed_auth.check(ip)
    {
        return Err(AuthError::TooManyFailures { retry_after_ms });
    }
    let outcome = match token {
        None => Err(AuthError::Missing),
        Some(token) if token.starts_with(KEY_PREFIX) => match gateway.keys.lookup(token).await {
            Ok(Lookup::Valid(key)) => Ok(Principal::Key(key)),
            Ok(Lookup::Unknown) => Err(AuthError::Invalid),
            Ok(Lookup::Revoked) => Err(AuthError::Revoked),
            Ok(Lookup::Expired) => Err(AuthError::Expired),
            // The store is down: not the client's fault, not counted against it.
            Err(error) => return Err(AuthError::Unavailable(error.to_string())),
        },
        // Open mode: a client that sends some placeholder key is let in.
        Some(_) if gateway.master_key.is_none() => Ok(Principal::Open),
        Some(_) => Err(AuthError::Invalid),
    };
    if outcome.is_err()
        && let Some(ip) = context.client_ip
    {
        gateway.failed_auth.failed(ip);
    }
    outcome
}

/// A virtual key may be limited to some models and aliases.
fn may_use_model(principal: &Principal, model: &str) -> Result<(), AuthError> {
    if views::may_use(principal, model) {
        return Ok(());
    }
    let allowed = principal.key().map(|key| key.record.policy.models.join(", ")).unwrap_or_default();
    Err(AuthError::Forbidden(format!("this key may not use model `{model}`; it may use: {allowed}")))
}

/// Phase 3: a virtual key's rate limits, and a reservation of the most this request can
/// cost against its budgets (and its team's and end user's). Master and open callers
/// are not limited.
async fn admit(
    gateway: &Gateway,
    principal: &Principal,
    end_user: Option<&str>,
    plan: &Plan,
    max_output: Option<u32>,
) -> Result<Option<Admission>, LimitError> {
    let Some(key) = principal.key() else { return Ok(None) };
    let has_usd_budget = [&key.record.policy.budgets, &key.record.policy.end_user_budgets]
        .into_iter()
        .chain(key.team.as_ref().map(|team| &team.policy.budgets))
        .flatten()
        .any(|budget| budget.unit == BudgetUnit::Usd);
    let mut demand = Demand { tokens: 0, usd: 0.0 };
    for target in &plan.attempts {
        let output = most_output(target, max_output, plan);
        demand.tokens = demand.tokens.max(plan.prompt_tokens + output);
        match target.spec() {
            Some(spec) => demand.usd = demand.usd.max(spec.cost_usd(plan.prompt_tokens, output)),
            // A local model nobody listed costs nothing; a cloud one must be priced.
            None if target.is_local() || !has_usd_budget => {}
            None => return Err(LimitError::Unpriced { model: target.name() }),
        }
    }
    let subject = Subject { key: &key.record, team: key.team.as_ref(), end_user };
    gateway.limiter.admit(&subject, demand).await.map(Some)
}

/// Output assumed for a model without a catalog entry when the request sets no limit.
const UNLISTED_MAX_OUTPUT: u32 = 4096;

/// The most output tokens `target` may produce for this request.
fn most_output(target: &Target, asked: Option<u32>, plan: &Plan) -> u64 {
    let output = match (asked, target.spec()) {
        (Some(asked), Some(spec)) => asked.min(spec.max_output_tokens.max(1)),
        (Some(asked), None) => asked,
        (None, Some(spec)) => spec.max_output_tokens,
        (None, None) => UNLISTED_MAX_OUTPUT,
    };
    u64::from(plan.max_tokens.map_or(output, |cap| output.min(cap)))
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
    /// The deployment's rate-limit admission, settled with the real usage.
    ticket: Option<Admission>,
    /// Position of `target` in the plan.
    index: usize,
    attempts: u32,
    failed_attempts: Vec<FailedAttempt>,
    attempt_started: Instant,
}

impl<Reply> Dispatched<Reply> {
    /// The reply, and the settlement that will record it: usage, and the caller's and the
    /// deployment's limits settled with the real figures.
    #[allow(clippy::too_many_arguments)]
    fn settle_with(
        self,
        gateway: &Gateway,
        context: &RequestContext,
        principal: &Principal,
        end_user: Option<String>,
        admission: Option<Admission>,
        started: Instant,
        audit: Option<AuditEntry>,
        asked: Asked,
        plan: &Plan,
    ) -> (Reply, Settlement) {
        let capture = match &audit {
            None => ContentCapture::Off,
            Some(_) => gateway.audit.capture_for(principal),
        };
        let key = principal.key().map(|key| &key.record);
        let settlement = Settlement {
            request_id: context.request_id.clone(),
            target: self.target,
            started,
            first_byte: started.elapsed(),
            usage: None,
            outcome: None,
            key_id: key.map(|key| key.id.clone()),
            team: key.and_then(|key| key.team.clone()),
            end_user,
            admissions: [admission, self.ticket].into_iter().flatten().collect(),
            usage_writer: gateway.usage.clone(),
            metrics: gateway.metrics.clone(),
            audit: audit.map(|record| (record, gateway.audit.clone())),
            capture,
            detector: plan.detector.clone(),
            attempts: self.attempts,
            failed_attempts: self.failed_attempts,
            trace: context.trace.clone(),
            asked,
            answer: Answer::default(),
            slot: Some(self.slot),
        };
        (self.reply, settlement)
    }

    fn report(&self, plan: &Plan, admission: &Option<Admission>) -> RouteReport {
        RouteReport {
            rule: plan.rule.clone().unwrap_or_else(|| "default".into()),
            target: self.target.name(),
            attempts: self.attempts,
            cost_estimate: plan.cost_estimates.get(self.index).copied().flatten(),
            limits: admission.as_ref().map(|a| a.headers.clone()).unwrap_or_default(),
        }
    }
}

/// Why dispatch gave up: the last error, after how many calls, on which target.
struct DispatchFailure {
    error: ProviderError,
    attempts: u32,
    last_target: Option<String>,
    /// Every failed call, the last included.
    failed_attempts: Vec<FailedAttempt>,
}

impl DispatchFailure {
    fn into_error(self, plan: &Plan, audit: &mut Option<AuditEntry>) -> PipelineError {
        if let Some(record) = audit {
            record.set(Field::FailedAttempts(&self.failed_attempts));
        }
        let route = RouteReport {
            rule: plan.rule.clone().unwrap_or_else(|| "default".into()),
            target: self.last_target.unwrap_or_else(|| "none".into()),
            attempts: self.attempts,
            cost_estimate: None,
            limits: RateHeaders::default(),
        };
        PipelineError::Upstream { error: self.error, route: Box::new(route) }
    }
}

/// Phase 5: the plan's targets in order. Passing faults (connect errors, timeouts, 429,
/// 5xx, a stream broken before its first content) are retried on the same target with
/// backoff, then the next target is tried; a target that refuses the request (401, 403,
/// 404) is skipped; an error in the request itself (other 4xx) goes to the client.
async fn dispatch<Request: Clone, Reply>(
    gateway: &Gateway,
    context: &RequestContext,
    plan: &Plan,
    max_output: Option<u32>,
    request: Request,
    set_model: fn(&mut Request, String),
    call: impl for<'a> Fn(&'a dyn WireAdapter, Request) -> BoxFuture<'a, Result<Reply, ProviderError>>,
) -> Result<Dispatched<Reply>, DispatchFailure> {
    let phase = context.trace.span("dispatch");
    let settings = &plan.settings;
    let deadline = settings.deadline.map(|limit| Instant::now() + limit);
    let mut request = Some(request);
    let mut last_error = None;
    let mut last_target = None;
    let mut attempts = 0;
    let mut failed_attempts = Vec::new();
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
            // The provider account's own limits for this model, shared by every instance.
            let limits = target.spec().map_or_else(Limits::default, |spec| Limits {
                rpm: spec.rpm,
                tpm: spec.tpm,
                concurrent: None,
            });
            let tokens = plan.prompt_tokens + most_output(target, max_output, plan);
            let ticket = match gateway.limiter.admit_deployment(&target.name(), limits, tokens).await {
                Ok(ticket) => ticket,
                Err(refused) => {
                    last_error = Some(deployment_refused(target, &refused));
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
            let mut span = attempt_span(&phase, context, target, attempts);
            let started = Instant::now();
            let limit = [settings.first_byte_timeout, settings.total_timeout, deadline.map(|d| d - started)]
                .into_iter()
                .flatten()
                .min();
            let call = async {
                match limit {
                    Some(limit) => tokio::time::timeout(limit, call(adapter, attempt)).await.unwrap_or_else(|_| {
                        Err(ProviderError::Timeout { provider: target.provider.id().to_owned(), after: limit })
                    }),
                    None => call(adapter, attempt).await,
                }
            };
            let result = match span.traceparent() {
                Some(traceparent) => UPSTREAM_TRACEPARENT.scope(traceparent, call).await,
                None => call.await,
            };
            let error = match result {
                Ok(reply) => {
                    target.deployment.record(true, started.elapsed(), &plan.breaker);
                    return Ok(Dispatched {
                        target: target.clone(),
                        reply,
                        slot,
                        ticket,
                        index,
                        attempts,
                        failed_attempts,
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
            span.fail(&error.to_string());
            span.set("error.type", error_kind(&error));
            drop(span);
            failed_attempts.push(FailedAttempt { target: target.name(), error: error.to_string() });
            let wait = match next {
                NextStep::Retry if retry < settings.retries => fallback::backoff(settings, retry + 1, &error)
                    .filter(|wait| deadline.is_none_or(|d| Instant::now() + *wait < d)),
                _ => None,
            };
            let metric_next = match (next, wait) {
                (NextStep::GiveUp, _) => Next::GiveUp,
                (_, Some(_)) => Next::Retry,
                (_, None) => Next::Fallback,
            };
            gateway.metrics.upstream_failed(target, error_kind(&error), metric_next);
            match (next, wait) {
                (NextStep::GiveUp, _) => {
                    return Err(DispatchFailure { error, attempts, last_target, failed_attempts });
                }
                (_, Some(wait)) => {
                    last_error = Some(error);
                    tokio::time::sleep(wait).await;
                }
                (_, None) => {
                    last_error = Some(error);
                    continue 'targets;
                }
            }
        }
    }
    let error = last_error.unwrap_or_else(|| ProviderError::Unreachable {
        provider: "none".into(),
        cause: "no target of the plan could be tried".into(),
    });
    Err(DispatchFailure { error, attempts, last_target, failed_attempts })
}

/// The client span of one upstream call, with the GenAI attributes known before it.
fn attempt_span(phase: &Span, context: &RequestContext, target: &Target, attempt: u32) -> Span {
    if !context.trace.is_recording() {
        return phase.client(String::new());
    }
    let mut span = phase.client(format!("{} {}", context.trace.operation(), target.model));
    span.set("gen_ai.operation.name", context.trace.operation());
    span.set("gen_ai.provider.name", target.provider.id().to_owned());
    span.set("gen_ai.system", target.provider.id().to_owned());
    span.set("gen_ai.request.model", target.model.clone());
    span.set("switchyard.attempt", attempt);
    span
}

/// A bounded name for an upstream failure, for metrics and traces.
fn error_kind(error: &ProviderError) -> &'static str {
    match error {
        ProviderError::Unreachable { .. } => "unreachable",
        ProviderError::Timeout { .. } => "timeout",
        ProviderError::Status { status: 429, .. } => "rate_limited",
        ProviderError::Status { status: 500.., .. } => "server_error",
        ProviderError::Status { .. } => "client_error",
        ProviderError::MidStream { .. } => "stream_error",
        ProviderError::InvalidResponse { .. } => "invalid_response",
        ProviderError::Interrupted { .. } => "interrupted",
        ProviderError::Unsupported { .. } => "unsupported",
    }
}

/// A deployment at its own rate limit: to the client (if no other target answers) it
/// looks like the provider's 429, with the wait.
fn deployment_refused(target: &Target, refused: &LimitError) -> ProviderError {
    let retry_after = match refused {
        LimitError::RateLimited { retry_after_ms, .. } => Some(Box::new(RetryAfter {
            seconds: Some(retry_after_ms.div_ceil(1000).to_string()),
            millis: Some(retry_after_ms.to_string()),
        })),
        _ => None,
    };
    ProviderError::Status {
        provider: target.provider.id().to_owned(),
        status: 429,
        body: Box::new(ErrorEnvelope::new(refused.to_string(), "requests", None, Some("rate_limit_exceeded"))),
        retry_after,
    }
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
