//! What every request gets at the edge, in one middleware: an `x-request-id` (the
//! client's own if it sent a sane one, else ours) that every log line of the request
//! carries, HTTP metrics, and a 500 in OpenAI's shape instead of a dropped connection if
//! a handler panics.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::error::ApiError;
use crate::gateway::Gateway;
use crate::protocol::random_id;

pub const HEADER: &str = "x-request-id";

/// The request's id, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub async fn edge(State(gateway): State<Arc<Gateway>>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let _in_flight = gateway.metrics.http_started();
    // The route pattern, not the path: `/v1/models/{*id}` stays one label.
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |path| path.as_str()).to_owned();
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| random_id("req_"), str::to_owned);
    let header = HeaderValue::from_str(&id).ok();
    let span = tracing::info_span!("request", request_id = %id);
    request.extensions_mut().insert(RequestId(id));
    let mut response = match std::panic::AssertUnwindSafe(next.run(request)).catch_unwind().instrument(span).await {
        Ok(response) => response,
        Err(_) => ApiError::internal("the gateway hit an internal error; it has been logged").into_response(),
    };
    if let Some(header) = header {
        response.headers_mut().insert(HEADER, header);
    }
    gateway.metrics.http_finished(route, response.status().as_u16(), started.elapsed());
    response
}
