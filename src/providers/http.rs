//! HTTP plumbing shared by the adapters: the pooled client, sending with deadlines,
//! reading bodies, and turning upstream failures into [`ProviderError`]s.

use crate::telemetry::trace::UPSTREAM_TRACEPARENT;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::Value;
use tokio::time::{Instant, timeout_at};

use super::catalog::ProviderSpec;
use super::{ProviderError, RetryAfter};
use crate::protocol::ErrorEnvelope;

/// Upstream error bodies beyond this are cut; they are only read to quote them.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Longest non-streaming upstream body accepted.
const MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;

/// A provider's pooled HTTP client plus what every request to it needs.
pub struct Upstream {
    pub provider: String,
    client: reqwest::Client,
    base_url: String,
    /// `Bearer <key>`, built once and marked sensitive so it is never logged.
    authorization: Option<HeaderValue>,
    pub request_timeout: Duration,
    pub stream_idle_timeout: Duration,
}

impl Upstream {
    /// The client for one provider, or why it cannot be built.
    pub fn new(spec: &ProviderSpec, api_key: Option<String>) -> Result<Self, String> {
        install_tls_provider();
        let authorization = match api_key {
            None => None,
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| "the API key contains characters an HTTP header cannot carry".to_owned())?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        // One client per provider: its own keep-alive pool.
        let client = reqwest::Client::builder()
            .connect_timeout(spec.timeouts.connect)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| format!("cannot build an HTTP client: {error}"))?;
        Ok(Upstream {
            provider: spec.id.clone(),
            client,
            base_url: spec.base_url.clone(),
            authorization,
            request_timeout: spec.timeouts.request,
            stream_idle_timeout: spec.timeouts.stream_idle,
        })
    }

    /// `{base_url}/{path}`, parsed once when the adapter is built, not per request.
    pub fn endpoint(&self, path: &str) -> Result<reqwest::Url, String> {
        reqwest::Url::parse(&format!("{}/{}", self.base_url, path))
            .map_err(|error| format!("invalid base_url: {error}"))
    }

    /// POSTs a JSON body to `url`; returns the response if it is a 2xx.
    pub async fn post(
        &self,
        url: &reqwest::Url,
        body: Vec<u8>,
        stream: bool,
        deadline: Instant,
    ) -> Result<reqwest::Response, ProviderError> {
        let mut request = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, if stream { "text/event-stream" } else { "application/json" })
            .body(body);
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        if let Ok(traceparent) = UPSTREAM_TRACEPARENT.try_with(String::clone) {
            request = request.header("traceparent", traceparent);
        }
        let response = match timeout_at(deadline, request.send()).await {
            Err(_) => return Err(self.timeout()),
            Ok(Err(error)) => return Err(self.transport_error(&error)),
            Ok(Ok(response)) => response,
        };
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.status_error(response, deadline).await)
    }

    /// Reads a whole (bounded) body before `deadline`.
    pub async fn read_body(&self, response: reqwest::Response, deadline: Instant) -> Result<Bytes, ProviderError> {
        read_limited(response, MAX_RESPONSE_BODY, deadline).await.map_err(|error| match error {
            ReadError::Timeout => self.timeout(),
            ReadError::TooLarge => self.invalid(format!("response body is larger than {MAX_RESPONSE_BODY} bytes")),
            ReadError::Transport(error) => self.interrupted(&error),
        })
    }

    /// The next piece of a streamed body, failing if the upstream stays silent too long.
    pub async fn next_chunk(&self, response: &mut reqwest::Response) -> Result<Option<Bytes>, ProviderError> {
        match tokio::time::timeout(self.stream_idle_timeout, response.chunk()).await {
            Err(_) => Err(ProviderError::Interrupted {
                provider: self.provider.clone(),
                detail: format!("no data for {} ms", self.stream_idle_timeout.as_millis()),
            }),
            Ok(Err(error)) => Err(self.interrupted(&error)),
            Ok(Ok(chunk)) => Ok(chunk),
        }
    }

    pub fn timeout(&self) -> ProviderError {
        ProviderError::Timeout { provider: self.provider.clone(), after: self.request_timeout }
    }

    pub fn invalid(&self, detail: impl Into<String>) -> ProviderError {
        ProviderError::InvalidResponse { provider: self.provider.clone(), detail: detail.into() }
    }

    pub fn interrupted(&self, error: &reqwest::Error) -> ProviderError {
        ProviderError::Interrupted { provider: self.provider.clone(), detail: root_cause(error) }
    }

    fn transport_error(&self, error: &reqwest::Error) -> ProviderError {
        if error.is_timeout() {
            return self.timeout();
        }
        ProviderError::Unreachable { provider: self.provider.clone(), cause: root_cause(error) }
    }

    async fn status_error(&self, response: reqwest::Response, deadline: Instant) -> ProviderError {
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let body = read_limited(response, MAX_ERROR_BODY, deadline).await.unwrap_or_default();
        ProviderError::Status {
            provider: self.provider.clone(),
            status,
            body: Box::new(error_envelope(status, &body)),
            retry_after: retry_after.map(Box::new),
        }
    }
}

/// rustls needs one process-wide crypto provider; `ring` builds without cmake or nasm.
pub fn install_tls_provider() {
    // Fails only when one is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Headers from the config, whose values may carry secrets (`${ENV}`): marked sensitive,
/// so they never show in debug output. The error names the header at fault.
pub fn secret_headers<'a>(
    headers: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<Vec<(reqwest::header::HeaderName, HeaderValue)>, String> {
    headers
        .into_iter()
        .map(|(name, value)| {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("{name:?} is not a header name"))?;
            let mut value =
                HeaderValue::from_str(value).map_err(|_| format!("the value of {name} cannot be a header"))?;
            value.set_sensitive(true);
            Ok((name, value))
        })
        .collect()
}

fn retry_after(headers: &HeaderMap) -> Option<RetryAfter> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let retry = RetryAfter { seconds: get("retry-after"), millis: get("retry-after-ms") };
    (retry.seconds.is_some() || retry.millis.is_some()).then_some(retry)
}

/// An upstream error body in OpenAI's envelope: kept as is when it already is one;
/// otherwise built from Ollama's `{"error":"..."}`, a `message` field, or the text.
pub fn error_envelope(status: u16, body: &[u8]) -> ErrorEnvelope {
    if let Ok(envelope) = serde_json::from_slice::<ErrorEnvelope>(body) {
        return envelope;
    }
    let message = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => match (object.get("error"), object.get("message")) {
            (Some(Value::String(text)), _) | (_, Some(Value::String(text))) => text.clone(),
            (Some(Value::Object(inner)), _) => {
                inner.get("message").and_then(Value::as_str).unwrap_or_default().to_owned()
            }
            _ => String::new(),
        },
        _ => String::from_utf8_lossy(body).trim().chars().take(500).collect(),
    };
    let message = if message.is_empty() { format!("upstream returned HTTP {status}") } else { message };
    let (kind, code) = match status {
        400 => ("invalid_request_error", None),
        401 | 403 => ("authentication_error", None),
        404 => ("invalid_request_error", Some("model_not_found")),
        429 => ("rate_limit_exceeded", Some("rate_limit_exceeded")),
        _ => ("server_error", None),
    };
    ErrorEnvelope::new(message, kind, None, code)
}

enum ReadError {
    Timeout,
    TooLarge,
    Transport(reqwest::Error),
}

async fn read_limited(mut response: reqwest::Response, limit: usize, deadline: Instant) -> Result<Bytes, ReadError> {
    // Most bodies arrive in one piece, which is returned without a copy; a buffer is made
    // only when a second piece comes.
    let mut first = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    let mut received = 0;
    loop {
        match timeout_at(deadline, response.chunk()).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(Err(error)) => return Err(ReadError::Transport(error)),
            Ok(Ok(None)) => return Ok(joined.map_or(first, BytesMut::freeze)),
            Ok(Ok(Some(chunk))) => {
                received += chunk.len();
                if received > limit {
                    return Err(ReadError::TooLarge);
                }
                if received == chunk.len() {
                    first = chunk;
                } else {
                    joined.get_or_insert_with(|| BytesMut::from(&first[..])).extend_from_slice(&chunk);
                }
            }
        }
    }
}

/// The innermost cause ("Connection refused (os error 111)"), without the URL reqwest
/// puts in its own message.
fn root_cause(error: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(inner) = source.source() {
        source = inner;
    }
    source.to_string()
}
