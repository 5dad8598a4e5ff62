//! The HTTP front door: routes, the error envelope, the edge middleware.

mod admin;
mod audit;
mod edge;
mod error;
mod health;
mod keys;
mod metrics;
mod openai;
mod usage;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware;
use axum::routing::{get, post, put};

pub use error::ApiError;
pub use openai::{record_refusal, request_context};

use crate::gateway::Gateway;

/// `/mcp`, behind the same keys as `/v1`.
fn mcp_routes(gateway: Arc<Gateway>) -> Router<Arc<Gateway>> {
    Router::new()
        .route_service("/mcp", crate::mcp::http::service(gateway.clone()))
        .layer(middleware::from_fn_with_state(gateway, crate::mcp::http::require_key))
}

pub fn router(gateway: Arc<Gateway>) -> Router {
    let body_limit = gateway.config.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{*id}", get(openai::get_model))
        .route("/v1/usage", get(usage::own_usage))
        .route("/admin/keys", post(keys::create).get(keys::list))
        .route("/admin/keys/{id}/revoke", post(keys::revoke))
        .route("/admin/keys/{id}/rotate", post(keys::rotate))
        .route("/admin/teams/{id}", put(keys::put_team))
        .route("/admin/usage", get(usage::admin_usage))
        .route("/admin/audit", get(audit::list))
        .route("/admin/route/explain", post(admin::explain_route))
        .route("/admin/policies", get(admin::get_policies))
        .route("/admin/policies/{name}", put(admin::put_policy))
        .route("/metrics", get(metrics::metrics))
        .merge(mcp_routes(gateway.clone()))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(|request: Request| async move { ApiError::not_found_route(request.uri().path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(gateway.clone(), edge::edge))
        .with_state(gateway)
}
