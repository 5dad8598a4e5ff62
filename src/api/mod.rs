//! The HTTP front door: routes, the error envelope, request ids.

mod error;
mod health;
mod openai;
mod request_id;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::FutureExt as _;

pub use error::ApiError;

use crate::gateway::Gateway;

pub fn router(gateway: Arc<Gateway>) -> Router {
    let body_limit = gateway.config.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{*id}", get(openai::get_model))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(|request: Request| async move { ApiError::not_found_route(request.uri().path()) })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(catch_panic))
        .layer(middleware::from_fn(request_id::assign))
        .with_state(gateway)
}

/// A bug must cost one request a 500, never the connection without an answer.
async fn catch_panic(request: Request, next: Next) -> Response {
    match std::panic::AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(_) => ApiError::internal("the gateway hit an internal error; it has been logged").into_response(),
    }
}
