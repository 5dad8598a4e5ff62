//! The OpenAI wire format (OpenAI, DeepSeek, Groq and every compatible server):
//! requests pass through with only `model` rewritten; responses pass through as bytes.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::stream;
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::time::Instant;

use super::framing::SseDecoder;
use super::http::{Upstream, error_envelope};
use super::{ChatReply, EmbeddingsReply, EventStream, ProviderError, StreamEvent, WireAdapter};
use crate::protocol::usage::UsageField;
use crate::protocol::{ChatCompletionRequest, EmbeddingsRequest, ErrorEnvelope, Usage};

pub struct OpenAiAdapter {
    upstream: Arc<Upstream>,
    chat_url: reqwest::Url,
    embeddings_url: reqwest::Url,
}

impl OpenAiAdapter {
    pub fn new(upstream: Upstream) -> Result<Self, String> {
        Ok(OpenAiAdapter {
            chat_url: upstream.endpoint("chat/completions")?,
            embeddings_url: upstream.endpoint("embeddings")?,
            upstream: Arc::new(upstream),
        })
    }

    async fn chat(&self, mut request: ChatCompletionRequest) -> Result<ChatReply, ProviderError> {
        let deadline = Instant::now() + self.upstream.request_timeout;
        let stream = request.is_stream();
        let client_wants_usage = request.wants_stream_usage();
        if stream {
            // Always ask for usage so every stream can be accounted; the extra chunk is
            // dropped again below if the client did not ask for it.
            request.stream_options.get_or_insert_with(Default::default).include_usage = Some(true);
        }
        let body = serde_json::to_vec(&request).map_err(|e| self.upstream.invalid(e.to_string()))?;
        let response = self.upstream.post(&self.chat_url, body, stream, deadline).await?;
        if !stream {
            let body = self.upstream.read_body(response, deadline).await?;
            let usage = parse_usage(&self.upstream, &body)?;
            return Ok(ChatReply::Complete { body, usage });
        }
        let is_event_stream = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_event_stream {
            return Err(self.upstream.invalid("expected an event stream (text/event-stream) for a streaming request"));
        }
        Ok(ChatReply::Stream(sse_events(self.upstream.clone(), response, client_wants_usage)))
    }

    async fn embeddings(&self, request: EmbeddingsRequest) -> Result<EmbeddingsReply, ProviderError> {
        let deadline = Instant::now() + self.upstream.request_timeout;
        let body = serde_json::to_vec(&request).map_err(|e| self.upstream.invalid(e.to_string()))?;
        let response = self.upstream.post(&self.embeddings_url, body, false, deadline).await?;
        let body = self.upstream.read_body(response, deadline).await?;
        let usage = parse_usage(&self.upstream, &body)?;
        Ok(EmbeddingsReply { body, usage })
    }
}

impl WireAdapter for OpenAiAdapter {
    fn chat(&self, request: ChatCompletionRequest) -> BoxFuture<'_, Result<ChatReply, ProviderError>> {
        Box::pin(OpenAiAdapter::chat(self, request))
    }

    fn embeddings(&self, request: EmbeddingsRequest) -> BoxFuture<'_, Result<EmbeddingsReply, ProviderError>> {
        Box::pin(OpenAiAdapter::embeddings(self, request))
    }
}

/// Checks that a 2xx body is JSON and takes its `usage`.
fn parse_usage(upstream: &Upstream, body: &[u8]) -> Result<Option<Usage>, ProviderError> {
    serde_json::from_slice::<UsageField>(body)
        .map(|field| field.usage)
        .map_err(|error| upstream.invalid(format!("body is not the expected JSON: {error}")))
}

/// What the gateway needs to know of a chunk that mentions usage.
#[derive(Deserialize)]
struct UsageProbe {
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    choices: Vec<IgnoredAny>,
}

struct SseState {
    upstream: Arc<Upstream>,
    response: reqwest::Response,
    decoder: SseDecoder,
    client_wants_usage: bool,
    pending: VecDeque<Result<StreamEvent, ProviderError>>,
    saw_done: bool,
    finished: bool,
}

fn sse_events(upstream: Arc<Upstream>, response: reqwest::Response, client_wants_usage: bool) -> EventStream {
    let state = SseState {
        upstream,
        response,
        decoder: SseDecoder::default(),
        client_wants_usage,
        pending: VecDeque::new(),
        saw_done: false,
        finished: false,
    };
    Box::pin(stream::unfold(state, |mut state| async move {
        loop {
            while let Some(data) = state.decoder.next_event() {
                state.on_event(data);
            }
            if let Some(event) = state.next_ready() {
                return Some((event, state));
            }
            if state.finished {
                return None;
            }
            match state.upstream.next_chunk(&mut state.response).await {
                Ok(Some(bytes)) => state.decoder.push(&bytes),
                Ok(None) => {
                    if let Some(data) = state.decoder.finish() {
                        state.on_event(data);
                    }
                    state.finished = true;
                    if !state.saw_done {
                        state.pending.push_back(Err(ProviderError::Interrupted {
                            provider: state.upstream.provider.clone(),
                            detail: "the connection closed before `data: [DONE]`".into(),
                        }));
                    }
                }
                Err(error) => {
                    state.finished = true;
                    state.pending.push_back(Err(error));
                }
            }
        }
    }))
}

impl SseState {
    /// The next event; frames that arrived in the same read leave as one write, so a fast
    /// upstream's burst costs one pass through the HTTP stack, not one per chunk.
    fn next_ready(&mut self) -> Option<Result<StreamEvent, ProviderError>> {
        let first = self.pending.pop_front()?;
        let Ok(StreamEvent::Frame(first)) = first else { return Some(first) };
        if !matches!(self.pending.front(), Some(Ok(StreamEvent::Frame(_)))) {
            return Some(Ok(StreamEvent::Frame(first)));
        }
        let mut merged = BytesMut::from(&first[..]);
        while let Some(Ok(StreamEvent::Frame(next))) = self.pending.front() {
            merged.extend_from_slice(next);
            self.pending.pop_front();
        }
        Some(Ok(StreamEvent::Frame(merged.freeze())))
    }

    fn on_event(&mut self, data: Bytes) {
        if self.saw_done || self.finished {
            return;
        }
        let trimmed = data.trim_ascii_start();
        if trimmed.starts_with(b"[DONE]") {
            // Keep reading to the end of the body so the connection returns to the pool.
            self.saw_done = true;
            return;
        }
        if trimmed.starts_with(b"{\"error\"") {
            let body = Box::new(
                serde_json::from_slice::<ErrorEnvelope>(trimmed).unwrap_or_else(|_| error_envelope(500, trimmed)),
            );
            self.pending.push_back(Err(ProviderError::MidStream { provider: self.upstream.provider.clone(), body }));
            self.finished = true;
            return;
        }
        if memchr::memmem::find(&data, b"\"usage\":{").is_some() {
            match serde_json::from_slice::<UsageProbe>(&data) {
                Ok(UsageProbe { usage: Some(usage), choices }) => {
                    self.pending.push_back(Ok(StreamEvent::Usage(usage)));
                    if choices.is_empty() && !self.client_wants_usage {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    self.pending.push_back(Err(self.upstream.invalid(format!("a stream chunk is not JSON: {error}"))));
                    self.finished = true;
                    return;
                }
            }
        }
        self.pending.push_back(Ok(StreamEvent::Frame(sse_frame(&data))));
    }
}

/// `data: {json}\n\n`
pub fn sse_frame(json: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(json.len() + 8);
    frame.extend_from_slice(b"data: ");
    frame.extend_from_slice(json);
    frame.extend_from_slice(b"\n\n");
    frame.freeze()
}
