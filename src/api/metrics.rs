//! `GET /metrics`: the Prometheus exposition (OpenMetrics text).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::auth::AuthError;
use crate::gateway::Gateway;
use crate::pipeline::{self, RequestContext};

/// Needs the master key (scrapers send it as a bearer token) unless `[telemetry]
/// metrics_public` is set: metrics name key ids and what each key spent.
pub async fn metrics(State(gateway): State<Arc<Gateway>>, context: RequestContext) -> Response {
    if !gateway.config.telemetry.metrics_public {
        match pipeline::authenticate(&gateway, &context).await {
            Ok(principal) if principal.is_admin() => {}
            Ok(_) => {
                return ApiError::from(AuthError::Forbidden("/metrics needs the master key".into())).into_response();
            }
            Err(error) => return ApiError::from(error).into_response(),
        }
    }
    let deployments: Vec<_> = gateway
        .router
        .health
        .snapshot()
        .into_iter()
        .filter_map(|(name, circuit, in_flight)| {
            // Catalog models only: a name a client made up is not a time series.
            let (provider, model) = name.split_once('/')?;
            let listed = gateway.registry.get(provider)?.spec.models.iter().any(|m| m.id == model);
            listed.then(|| (provider.to_owned(), model.to_owned(), circuit, in_flight))
        })
        .collect();
    let text = gateway.metrics.render(&deployments, &gateway.audit.stats());
    let content_type = HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}
