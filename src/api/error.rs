//! Every error a client sees: OpenAI's envelope with the right status, so SDKs raise the
//! matching exception (`AuthenticationError`, `NotFoundError`, `RateLimitError`, …).

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use crate::auth::AuthError;
use crate::limits::LimitError;
use crate::pipeline::PipelineError;
use crate::protocol::ErrorEnvelope;
use crate::providers::ProviderError;
use crate::routing::RoutingError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorEnvelope,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &str,
        code: Option<&str>,
        param: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        ApiError { status, body: ErrorEnvelope::new(message, kind, param, code), headers: Vec::new() }
    }

    fn with_header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.push((HeaderName::from_static(name), value));
        }
        self
    }

    /// 400 with no particular field or code: a malformed admin query or body.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", None, None, message)
    }

    pub fn not_found_route(path: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("unknown_url"),
            None,
            format!("no route for {path}"),
        )
    }

    pub fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            Some("method_not_allowed"),
            None,
            "method not allowed for this route",
        )
    }

    pub fn model_not_found(model: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
            Some("model"),
            format!("the model `{model}` does not exist on this gateway"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, None, message)
    }

    /// A body that could not be read: too large (413) or cut off.
    pub fn from_body_rejection(rejection: BytesRejection, limit: usize) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(
                status,
                "invalid_request_error",
                Some("request_too_large"),
                None,
                format!("the request body is larger than the gateway's limit of {limit} bytes"),
            );
        }
        ApiError::new(status, "invalid_request_error", None, None, format!("cannot read the request body: {rejection}"))
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        let message = error.to_string();
        match error {
            AuthError::Missing | AuthError::Invalid | AuthError::Revoked | AuthError::Expired => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", Some("invalid_api_key"), None, message)
                    .with_header("www-authenticate", "Bearer")
            }
            AuthError::TooManyFailures { retry_after_ms } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "requests", Some("rate_limit_exceeded"), None, message)
                    .with_header("retry-after", &retry_after_ms.div_ceil(1000).to_string())
            }
            AuthError::Forbidden(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "invalid_request_error", Some("permission_denied"), None, message)
            }
            AuthError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("auth_unavailable"), None, message)
            }
        }
    }
}

impl From<LimitError> for ApiError {
    fn from(error: LimitError) -> Self {
        let message = error.to_string();
        match error {
            LimitError::RateLimited { retry_after_ms, headers, .. } => {
                let mut api = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "requests",
                    Some("rate_limit_exceeded"),
                    None,
                    message,
                )
                .with_header("retry-after", &retry_after_ms.div_ceil(1000).max(1).to_string())
                .with_header("retry-after-ms", &retry_after_ms.to_string());
                for (name, value) in headers.pairs() {
                    api = api.with_header(name, &value);
                }
                api
            }
            LimitError::BudgetExhausted { .. } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                Some("insufficient_quota"),
                None,
                message,
            ),
            LimitError::Unavailable => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("limits_unavailable"),
                None,
                message,
            ),
            LimitError::Unpriced { .. } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("model_unpriced"),
                Some("model"),
                message,
            ),
        }
    }
}

impl From<PipelineError> for ApiError {
    fn from(error: PipelineError) -> Self {
        match error {
            PipelineError::Auth(error) => error.into(),
            PipelineError::InvalidRequest(error) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                error.param.as_deref(),
                error.message,
            ),
            PipelineError::Routing(error) => routing_error(error),
            PipelineError::Limit(error) => error.into(),
            PipelineError::Upstream { error, route } => {
                provider_error(error).with_header("x-switchyard-route", &route.header())
            }
        }
    }
}

fn routing_error(error: RoutingError) -> ApiError {
    let message = error.to_string();
    match error {
        RoutingError::ModelNotFound { .. } => ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("model_not_found"),
            Some("model"),
            message,
        ),
        RoutingError::Ambiguous { .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("ambiguous_model"),
            Some("model"),
            message,
        ),
        RoutingError::WrongPurpose { .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("model_not_supported"),
            Some("model"),
            message,
        ),
        // A configuration gap, not a passing fault: retrying will not help.
        RoutingError::ProviderUnavailable { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("provider_unavailable"), None, message)
                .with_header("x-should-retry", "false")
        }
        RoutingError::Rejected { status, .. } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            let kind = if status.is_server_error() { "server_error" } else { "invalid_request_error" };
            ApiError::new(status, kind, Some("rejected_by_policy"), None, message)
        }
        RoutingError::PiiBlocked { .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("pii_detected"),
            Some("messages"),
            message,
        ),
        RoutingError::NoLocalTarget { .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("no_local_target"), None, message)
        }
        RoutingError::NoTarget { retryable: true, .. } => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("no_target_available"), None, message)
        }
        RoutingError::NoTarget { retryable: false, .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("no_capable_target"),
            Some("model"),
            message,
        ),
    }
}

/// An upstream failure before any byte went to the client.
pub fn provider_error(error: ProviderError) -> ApiError {
    let message = error.to_string();
    match error {
        ProviderError::Unreachable { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "server_error", Some("upstream_unreachable"), None, message)
        }
        ProviderError::Timeout { .. } => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "server_error", Some("upstream_timeout"), None, message)
        }
        // The provider refused the gateway's own key: the client's key was fine, so
        // passing 401 through would mislead it.
        ProviderError::Status { provider, status: status @ (401 | 403), body, .. } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            Some("upstream_auth_failed"),
            None,
            format!("provider {provider} rejected the gateway's credentials (HTTP {status}): {}", body.error.message),
        ),
        // Everything else passes through as the provider said it, Retry-After included.
        ProviderError::Status { status, body, retry_after, .. } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut error = ApiError { status, body: *body, headers: Vec::new() };
            if let Some(retry) = retry_after {
                if let Some(seconds) = retry.seconds {
                    error = error.with_header("retry-after", &seconds);
                }
                if let Some(millis) = retry.millis {
                    error = error.with_header("retry-after-ms", &millis);
                }
            }
            error
        }
        ProviderError::MidStream { body, .. } => {
            ApiError { status: StatusCode::BAD_GATEWAY, body: *body, headers: Vec::new() }
        }
        ProviderError::InvalidResponse { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "server_error", Some("upstream_invalid_response"), None, message)
        }
        ProviderError::Interrupted { .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "server_error", Some("upstream_interrupted"), None, message)
        }
        ProviderError::Unsupported { param, .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("unsupported_by_provider"),
            param.as_deref(),
            message,
        ),
    }
}

/// The SSE event that ends a stream that failed after its first byte.
pub fn stream_error_frame(error: ProviderError) -> Bytes {
    let body = match error {
        ProviderError::MidStream { body, .. } => *body,
        other => provider_error(other).body,
    };
    crate::providers::openai::sse_frame(&body.to_json())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], self.body.to_json())
                .into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}
