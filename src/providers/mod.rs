//! Provider adapters, one per wire format, behind [`WireAdapter`]; and the registry of
//! configured providers.

pub mod catalog;
pub mod framing;
pub mod http;
pub mod ollama;
pub mod openai;
mod registry;

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use futures_util::future::BoxFuture;

use crate::protocol::{ChatCompletionRequest, EmbeddingsRequest, ErrorEnvelope, Usage};

pub use http::install_tls_provider;
pub use registry::{Provider, Registry};

/// What a provider sends back for a chat request.
pub enum ChatReply {
    /// A whole `chat.completion` body in OpenAI's shape, ready for the client.
    Complete { body: Bytes, usage: Option<Usage> },
    /// A stream of OpenAI SSE frames; it ends after the last chunk (the caller adds
    /// `data: [DONE]`) or with an error.
    Stream(EventStream),
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

pub enum StreamEvent {
    /// One complete SSE frame, `data: {chunk}\n\n`, to send to the client unchanged.
    Frame(Bytes),
    /// The request's token usage, reported once near the end (not sent to the client;
    /// the usage chunk the client asked for arrives as a `Frame`).
    Usage(Usage),
}

/// An embeddings response in OpenAI's shape, ready for the client.
pub struct EmbeddingsReply {
    pub body: Bytes,
    pub usage: Option<Usage>,
}

/// One wire format's translation and transport. `request.model` is already the
/// upstream's own model id (no `provider/` prefix).
pub trait WireAdapter: Send + Sync {
    fn chat(&self, request: ChatCompletionRequest) -> BoxFuture<'_, Result<ChatReply, ProviderError>>;
    fn embeddings(&self, request: EmbeddingsRequest) -> BoxFuture<'_, Result<EmbeddingsReply, ProviderError>>;
}

/// Why a provider call failed. Messages name the provider and the cause, never a key.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("cannot reach provider {provider}: {cause}")]
    Unreachable { provider: String, cause: String },
    #[error("provider {provider} did not respond within {}", humanize(*.after))]
    Timeout { provider: String, after: Duration },
    #[error("provider {provider} answered HTTP {status}: {}", .body.error.message)]
    Status { provider: String, status: u16, body: Box<ErrorEnvelope>, retry_after: Option<Box<RetryAfter>> },
    #[error("provider {provider} reported an error mid-stream: {}", .body.error.message)]
    MidStream { provider: String, body: Box<ErrorEnvelope> },
    #[error("provider {provider} sent a response the gateway cannot read: {detail}")]
    InvalidResponse { provider: String, detail: String },
    #[error("provider {provider} ended the stream before it was complete: {detail}")]
    Interrupted { provider: String, detail: String },
    /// The request cannot be expressed in this provider's wire format.
    #[error("{message}")]
    Unsupported { message: String, param: Option<String> },
}

/// An upstream's `retry-after` / `retry-after-ms` headers, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryAfter {
    pub seconds: Option<String>,
    pub millis: Option<String>,
}

fn humanize(duration: Duration) -> String {
    if duration.as_millis() < 1000 {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}
