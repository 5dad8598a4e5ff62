//! Ollama's native API: `/api/chat` (NDJSON streams) and `/api/embed`, translated to and
//! from OpenAI's shapes.

mod translate;
mod wire;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream;
use tokio::time::Instant;

use super::framing::LineDecoder;
use super::http::{Upstream, error_envelope};
use super::{ChatReply, EmbeddingsReply, EventStream, ProviderError, StreamEvent, WireAdapter};
use crate::protocol::embeddings::EncodingFormat;
use crate::protocol::{ChatCompletionRequest, EmbeddingsRequest, random_id};

pub use translate::{chat_completion, chat_request, embed_request, embeddings_response};

pub struct OllamaAdapter {
    upstream: Arc<Upstream>,
    chat_url: reqwest::Url,
    embed_url: reqwest::Url,
}

impl OllamaAdapter {
    pub fn new(upstream: Upstream) -> Result<Self, String> {
        Ok(OllamaAdapter {
            chat_url: upstream.endpoint("api/chat")?,
            embed_url: upstream.endpoint("api/embed")?,
            upstream: Arc::new(upstream),
        })
    }

    async fn chat(&self, request: ChatCompletionRequest) -> Result<ChatReply, ProviderError> {
        let deadline = Instant::now() + self.upstream.request_timeout;
        let include_usage = request.wants_stream_usage();
        let stream = request.is_stream();
        let body = translate::chat_request(request)?;
        let body = serde_json::to_vec(&body).map_err(|e| self.upstream.invalid(e.to_string()))?;
        let mut response = self.upstream.post(&self.chat_url, body, false, deadline).await?;
        // Ours, unique per request: Ollama's own are not.
        let id = random_id("chatcmpl-");
        if !stream {
            let body = self.upstream.read_body(response, deadline).await?;
            let chunk = self.parse_line(&body)?;
            let completion = translate::chat_completion(chunk, id);
            let usage = completion.usage.clone();
            let body = serde_json::to_vec(&completion).map_err(|e| self.upstream.invalid(e.to_string()))?;
            return Ok(ChatReply::Complete { body: Bytes::from(body), usage });
        }
        // Read the first line before answering 200, so a failure that Ollama reports on
        // its first line (a missing model, say) still reaches the client as an HTTP error.
        let mut decoder = LineDecoder::default();
        let first = loop {
            if let Some(line) = decoder.next_line() {
                break line;
            }
            let chunk = match tokio::time::timeout_at(deadline, response.chunk()).await {
                Err(_) => return Err(self.upstream.timeout()),
                Ok(Err(error)) => return Err(self.upstream.interrupted(&error)),
                Ok(Ok(chunk)) => chunk,
            };
            match chunk {
                Some(bytes) => decoder.push(&bytes),
                None => match decoder.finish() {
                    Some(line) => break line,
                    None => {
                        return Err(self.upstream.invalid("the stream closed before any output"));
                    }
                },
            }
        };
        let first = self.parse_line(&first)?;
        let mut translator = translate::StreamTranslator::new(id, include_usage);
        let mut pending = Vec::new();
        let finished = first.done;
        translator.on_chunk(first, &mut pending);
        let state = NdjsonState {
            upstream: self.upstream.clone(),
            response,
            decoder,
            translator,
            pending: pending.into(),
            finished,
        };
        Ok(ChatReply::Stream(ndjson_events(state)))
    }

    /// One line or body: an error line becomes an error, anything else must parse.
    fn parse_line(&self, line: &[u8]) -> Result<wire::ChatChunk, ProviderError> {
        let chunk: wire::ChatChunk = serde_json::from_slice(line)
            .map_err(|error| self.upstream.invalid(format!("not an Ollama chat response: {error}")))?;
        match chunk.error {
            Some(message) => {
                let status = if message.contains("not found") { 404 } else { 500 };
                Err(ProviderError::Status {
                    provider: self.upstream.provider.clone(),
                    status,
                    body: Box::new(error_envelope(
                        status,
                        serde_json::json!({ "error": message }).to_string().as_bytes(),
                    )),
                    retry_after: None,
                })
            }
            None => Ok(chunk),
        }
    }

    async fn embeddings(&self, request: EmbeddingsRequest) -> Result<EmbeddingsReply, ProviderError> {
        let deadline = Instant::now() + self.upstream.request_timeout;
        let format = request.encoding_format.unwrap_or(EncodingFormat::Float);
        let body = translate::embed_request(request)?;
        let body = serde_json::to_vec(&body).map_err(|e| self.upstream.invalid(e.to_string()))?;
        let response = self.upstream.post(&self.embed_url, body, false, deadline).await?;
        let body = self.upstream.read_body(response, deadline).await?;
        let parsed = serde_json::from_slice(&body)
            .map_err(|error| self.upstream.invalid(format!("not an Ollama embed response: {error}")))?;
        let response = translate::embeddings_response(parsed, format);
        let usage = Some(response.usage.clone());
        let body = serde_json::to_vec(&response).map_err(|e| self.upstream.invalid(e.to_string()))?;
        Ok(EmbeddingsReply { body: Bytes::from(body), usage })
    }
}

impl WireAdapter for OllamaAdapter {
    fn chat(&self, request: ChatCompletionRequest) -> BoxFuture<'_, Result<ChatReply, ProviderError>> {
        Box::pin(OllamaAdapter::chat(self, request))
    }

    fn embeddings(&self, request: EmbeddingsRequest) -> BoxFuture<'_, Result<EmbeddingsReply, ProviderError>> {
        Box::pin(OllamaAdapter::embeddings(self, request))
    }
}

struct NdjsonState {
    upstream: Arc<Upstream>,
    response: reqwest::Response,
    decoder: LineDecoder,
    translator: translate::StreamTranslator,
    pending: std::collections::VecDeque<StreamEvent>,
    finished: bool,
}

fn ndjson_events(state: NdjsonState) -> EventStream {
    Box::pin(stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        loop {
            if let Some(event) = state.pending.pop_front() {
                return Some((Ok(event), Some(state)));
            }
            if state.finished {
                return None;
            }
            let line = match state.decoder.next_line() {
                Some(line) => line,
                None => match state.upstream.next_chunk(&mut state.response).await {
                    Ok(Some(bytes)) => {
                        state.decoder.push(&bytes);
                        continue;
                    }
                    Ok(None) => match state.decoder.finish() {
                        Some(line) => line,
                        None => {
                            let error = ProviderError::Interrupted {
                                provider: state.upstream.provider.clone(),
                                detail: "the stream closed before its `done` line".into(),
                            };
                            return Some((Err(error), None));
                        }
                    },
                    Err(error) => return Some((Err(error), None)),
                },
            };
            let chunk = match serde_json::from_slice::<wire::ChatChunk>(&line) {
                Ok(chunk) => chunk,
                Err(error) => {
                    return Some((Err(state.upstream.invalid(format!("a stream line is not JSON: {error}"))), None));
                }
            };
            if let Some(message) = chunk.error {
                let body =
                    Box::new(error_envelope(500, serde_json::json!({ "error": message }).to_string().as_bytes()));
                return Some((Err(ProviderError::MidStream { provider: state.upstream.provider.clone(), body }), None));
            }
            state.finished = chunk.done;
            let mut events = Vec::new();
            state.translator.on_chunk(chunk, &mut events);
            state.pending.extend(events);
        }
    }))
}
