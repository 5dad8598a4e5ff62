//! The OpenAI-compatible routes under `/v1`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use bytes::Bytes;
use futures_util::stream;

use super::error::{ApiError, stream_error_frame};
use super::request_id::RequestId;
use crate::gateway::Gateway;
use crate::pipeline::{self, ChatOutput, FrameStream, RequestContext};
use crate::protocol::models::{Model, ModelList};

pub async fn chat_completions(
    State(gateway): State<Arc<Gateway>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return ApiError::from_body_rejection(rejection, gateway.config.max_body_bytes).into_response();
        }
    };
    let context = context(request_id, &headers);
    match pipeline::chat(&gateway, &context, &body).await {
        Ok(ChatOutput::Complete(body)) => json(body),
        Ok(ChatOutput::Stream(frames)) => event_stream(frames),
        Err(error) => ApiError::from(error).into_response(),
    }
}

pub async fn embeddings(
    State(gateway): State<Arc<Gateway>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return ApiError::from_body_rejection(rejection, gateway.config.max_body_bytes).into_response();
        }
    };
    let context = context(request_id, &headers);
    match pipeline::embeddings(&gateway, &context, &body).await {
        Ok(body) => json(body),
        Err(error) => ApiError::from(error).into_response(),
    }
}

pub async fn list_models(
    State(gateway): State<Arc<Gateway>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = pipeline::authenticate(&gateway, &context(request_id, &headers)) {
        return ApiError::from(error).into_response();
    }
    Json(ModelList { object: "list".into(), data: available_models(&gateway).collect() }).into_response()
}

pub async fn get_model(
    State(gateway): State<Arc<Gateway>>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(error) = pipeline::authenticate(&gateway, &context(request_id, &headers)) {
        return ApiError::from(error).into_response();
    }
    let bare_matches: Vec<Model> =
        available_models(&gateway).filter(|m| m.id.split_once('/').is_some_and(|(_, model)| model == id)).collect();
    match available_models(&gateway).find(|m| m.id == id) {
        Some(model) => Json(model).into_response(),
        None if bare_matches.len() == 1 => Json(bare_matches.into_iter().next()).into_response(),
        None => ApiError::model_not_found(&id).into_response(),
    }
}

/// Every model of every usable provider, as `provider/model`.
fn available_models(gateway: &Gateway) -> impl Iterator<Item = Model> + '_ {
    gateway.registry.iter().filter(|p| p.is_available()).flat_map(move |provider| {
        provider
            .spec
            .models
            .iter()
            .map(move |model| Model::new(format!("{}/{}", provider.id(), model.id), gateway.started_at, provider.id()))
    })
}

fn context(request_id: String, headers: &HeaderMap) -> RequestContext {
    RequestContext {
        request_id,
        authorization: headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned),
    }
}

fn json(body: Bytes) -> Response {
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
