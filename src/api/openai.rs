//! The OpenAI-compatible routes under `/v1`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream;

use super::edge::RequestId;
use super::error::{ApiError, stream_error_frame};
use crate::audit::{AuditEntry, Field};
use crate::auth::AuthError;
use crate::gateway::Gateway;
use crate::limits::LimitError;
use crate::pipeline::views;
use crate::pipeline::{self, ChatOutput, FrameStream, PipelineError, RequestContext, RouteReport};
use crate::protocol::models::ModelList;
use crate::telemetry::trace::{RequestTrace, TraceParent};

pub async fn chat_completions(
    State(gateway): State<Arc<Gateway>>,
    mut context: RequestContext,
    RequestBody(body): RequestBody,
) -> Response {
    context.trace = gateway.tracer.request("chat", context.traceparent);
    let mut audit = gateway.audit.begin("chat", "/v1/chat/completions", &context.request_id, context.client_ip);
    match pipeline::chat(&gateway, &context, &body, &mut audit).await {
        Ok((ChatOutput::Complete(body), route)) => with_route(json(body), &route),
        Ok((ChatOutput::Stream(frames), route)) => with_route(event_stream(frames), &route),
        Err(error) => refused(&gateway, &context, audit, error),
    }
}

pub async fn embeddings(
    State(gateway): State<Arc<Gateway>>,
    mut context: RequestContext,
    RequestBody(body): RequestBody,
) -> Response {
    context.trace = gateway.tracer.request("embeddings", context.traceparent);
    let mut audit = gateway.audit.begin("embeddings", "/v1/embeddings", &context.request_id, context.client_ip);
    match pipeline::embeddings(&gateway, &context, &body, &mut audit).await {
        Ok((body, route)) => with_route(json(body), &route),
        Err(error) => refused(&gateway, &context, audit, error),
    }
}

/// A request that ended in an error before any answer: its audit record, metrics and
/// trace status, then the error.
fn refused(gateway: &Gateway, context: &RequestContext, audit: Option<AuditEntry>, error: PipelineError) -> Response {
    record_refusal(gateway, context, audit, error).into_response()
}

/// Everything that records a refused request (audit, metrics, trace); the error to send.
pub fn record_refusal(
    gateway: &Gateway,
    context: &RequestContext,
    audit: Option<AuditEntry>,
    error: PipelineError,
) -> ApiError {
    match &error {
        PipelineError::Auth(AuthError::Forbidden(_) | AuthError::Unavailable(_)) => {}
        PipelineError::Auth(_) => gateway.metrics.auth_failed(),
        PipelineError::Limit(LimitError::RateLimited { .. }) => gateway.metrics.rate_limited("rate"),
        PipelineError::Limit(LimitError::BudgetExhausted { .. }) => gateway.metrics.rate_limited("budget"),
        PipelineError::Limit(LimitError::Unavailable) => gateway.metrics.rate_limited("unavailable"),
        _ => {}
    }
    let message = error.to_string();
    let (target, attempts) = match &error {
        PipelineError::Upstream { route, .. } => (Some(route.target.clone()), route.attempts),
        _ => (None, 0),
    };
    let api_error = ApiError::from(error);
    let status = api_error.status.as_u16();
    context.trace.set("http.response.status_code", status);
    context.trace.set("error.type", status.to_string());
    context.trace.fail(&message);
    if let Some(mut record) = audit {
        if let Some(target) = &target {
            record.set(Field::Target(target));
        }
        record.set(Field::Attempts(attempts));
        record.set(Field::Error(&message));
        record.set(Field::Outcome("failed"));
        record.set(Field::Status(status));
        gateway.audit.record(record);
    }
    api_error
}

pub async fn list_models(State(gateway): State<Arc<Gateway>>, context: RequestContext) -> Response {
    let principal = match pipeline::authenticate(&gateway, &context).await {
        Ok(principal) => principal,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let data = views::available_models(&gateway).filter(|model| views::may_use(&principal, &model.id)).collect();
    Json(ModelList { object: "list".into(), data }).into_response()
}

pub async fn get_model(
    State(gateway): State<Arc<Gateway>>,
    context: RequestContext,
    Path(id): Path<String>,
) -> Response {
    let principal = match pipeline::authenticate(&gateway, &context).await {
        Ok(principal) => principal,
        Err(error) => return ApiError::from(error).into_response(),
    };
    if !views::may_use(&principal, &id) {
        return ApiError::model_not_found(&id).into_response();
    }
    if let Some(model) = views::available_models(&gateway).find(|m| m.id == id) {
        return Json(model).into_response();
    }
    // A bare id names a model when exactly one usable provider serves it.
    let mut bare =
        views::available_models(&gateway).filter(|m| m.id.split_once('/').is_some_and(|(_, model)| model == id));
    match (bare.next(), bare.next()) {
        (Some(model), None) => Json(model).into_response(),
        _ => ApiError::model_not_found(&id).into_response(),
    }
}

/// `x-switchyard-route: rule=…; target=…; attempts=…` and the cost estimate in USD.
fn with_route(mut response: Response, route: &RouteReport) -> Response {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&route.header()) {
        headers.insert(HeaderName::from_static("x-switchyard-route"), value);
    }
    if let Some(cost) = route.cost_estimate
        && let Ok(value) = HeaderValue::from_str(&format!("{cost:.8}"))
    {
        headers.insert(HeaderName::from_static("x-switchyard-cost-estimate"), value);
    }
    for (name, value) in route.limits.pairs() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    response
}

/// The raw request body; a body over the limit is a 413 in OpenAI's envelope.
pub struct RequestBody(pub Bytes);

impl FromRequest<Arc<Gateway>> for RequestBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, gateway: &Arc<Gateway>) -> Result<Self, ApiError> {
        Bytes::from_request(request, gateway)
            .await
            .map(RequestBody)
            .map_err(|rejection| ApiError::from_body_rejection(rejection, gateway.config.max_body_bytes))
    }
}

/// The request id (set by the middleware) and the `Authorization` header.
impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(request_context(parts))
    }
}

/// What the pipeline needs of an HTTP request's head.
pub fn request_context(parts: &Parts) -> RequestContext {
    let request_id = parts.extensions.get::<RequestId>().map(|id| id.0.clone()).unwrap_or_default();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    RequestContext {
        request_id,
        client_ip: parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip()),
        authorization: header(header::AUTHORIZATION.as_str()),
        end_user: header("x-switchyard-user"),
        tags: header("x-switchyard-tags"),
        traceparent: header("traceparent").as_deref().and_then(TraceParent::parse),
        trace: RequestTrace::default(),
    }
}

pub(super) fn json(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// SSE: each frame as it arrives, `data: [DONE]` after a complete stream, or one error
/// event (and no `[DONE]`) after a failed one, so a cut-off answer never looks finished.
fn event_stream(frames: FrameStream) -> Response {
    let body = stream::unfold(Some(frames), |frames| async move {
        use futures_util::StreamExt as _;
        let mut frames = frames?;
        match frames.next().await {
            Some(Ok(frame)) => Some((Ok::<_, std::convert::Infallible>(frame), Some(frames))),
            Some(Err(error)) => Some((Ok(stream_error_frame(error)), None)),
            None => Some((Ok(Bytes::from_static(b"data: [DONE]\n\n")), None)),
        }
    });
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no")),
        ],
        Body::from_stream(body),
    )
        .into_response()
}
