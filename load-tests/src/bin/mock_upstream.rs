//! A fast mock LLM provider for benchmarks: OpenAI chat completions (JSON, or SSE with a
//! configurable number of chunks), Ollama `/api/chat` and `/api/embed`, OpenAI
//! embeddings and `/v1/models`. Responses are built once at start; the per-request work
//! is as close to nothing as the HTTP stack allows, so the gateway in front is what the
//! benchmark measures.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use clap::Parser;
use futures_util::stream;

#[derive(Parser, Clone)]
#[command(about = "Mock OpenAI/Ollama upstream for switchyard benchmarks")]
struct Args {
    /// Address to bind (loopback only).
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: SocketAddr,
    /// Content chunks per streamed response.
    #[arg(long, default_value_t = 20)]
    chunks: usize,
    /// Delay before the response starts, in ms.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Delay between two streamed chunks, in ms.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
}

struct Responses {
    completion: Bytes,
    sse_chunks: Vec<Bytes>,
    ndjson_chunks: Vec<Bytes>,
    ollama_completion: Bytes,
    embeddings: Bytes,
    ollama_embed: Bytes,
    models: Bytes,
    delay: Duration,
    chunk_delay: Duration,
}

impl Responses {
    fn build(args: &Args) -> Self {
        let usage = r#"{"prompt_tokens":12,"completion_tokens":20,"total_tokens":32}"#;
        let chunk = |delta: &str, finish: &str| {
            Bytes::from(format!(
                "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1718000000,\"model\":\"mock\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"
            ))
        };
        let mut sse_chunks = vec![chunk(r#"{"role":"assistant","content":""}"#, "null")];
        sse_chunks.extend((0..args.chunks).map(|i| chunk(&format!(r#"{{"content":"token{i} "}}"#), "null")));
        sse_chunks.push(chunk("{}", r#""stop""#));
        sse_chunks.push(Bytes::from(format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1718000000,\"model\":\"mock\",\"choices\":[],\"usage\":{usage}}}\n\n"
        )));
        sse_chunks.push(Bytes::from_static(b"data: [DONE]\n\n"));

        let mut ndjson_chunks: Vec<Bytes> = (0..args.chunks)
            .map(|i| Bytes::from(format!("{{\"model\":\"mock\",\"created_at\":\"2025-06-01T10:00:00Z\",\"message\":{{\"role\":\"assistant\",\"content\":\"token{i} \"}},\"done\":false}}\n")))
            .collect();
        ndjson_chunks.push(Bytes::from_static(b"{\"model\":\"mock\",\"created_at\":\"2025-06-01T10:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":12,\"eval_count\":20}\n"));

        Responses {
            completion: Bytes::from(format!(
                "{{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1718000000,\"model\":\"mock\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"Hello from the benchmark mock.\",\"refusal\":null}},\"logprobs\":null,\"finish_reason\":\"stop\"}}],\"usage\":{usage}}}"
            )),
            sse_chunks,
            ndjson_chunks,
            ollama_completion: Bytes::from_static(b"{\"model\":\"mock\",\"created_at\":\"2025-06-01T10:00:00Z\",\"message\":{\"role\":\"assistant\",\"content\":\"Hello from the benchmark mock.\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":12,\"eval_count\":20}"),
            embeddings: Bytes::from_static(b"{\"object\":\"list\",\"model\":\"mock\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":[0.1,0.2,0.3]}],\"usage\":{\"prompt_tokens\":4,\"total_tokens\":4}}"),
            ollama_embed: Bytes::from_static(b"{\"model\":\"mock\",\"embeddings\":[[0.1,0.2,0.3]],\"prompt_eval_count\":4}"),
            models: Bytes::from_static(b"{\"object\":\"list\",\"data\":[{\"id\":\"mock\",\"object\":\"model\",\"created\":1718000000,\"owned_by\":\"bench\"}]}"),
            delay: Duration::from_millis(args.delay_ms),
            chunk_delay: Duration::from_millis(args.chunk_delay_ms),
        }
    }
}

/// Whether the body asks for a stream; a byte search, not a JSON parse.
fn wants_stream(body: &[u8], default: bool) -> bool {
    let compact = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    if compact(b"\"stream\":true") || compact(b"\"stream\": true") {
        true
    } else if compact(b"\"stream\":false") || compact(b"\"stream\": false") {
        false
    } else {
        default
    }
}

fn json(body: &Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response()
}

fn streamed(chunks: &[Bytes], content_type: &'static str, chunk_delay: Duration) -> Response {
    let chunks = chunks.to_vec();
    let body = stream::unfold((chunks.into_iter(), true), move |(mut chunks, first)| async move {
        let next = chunks.next()?;
        if !first {
            pause(chunk_delay).await;
        }
        Some((Ok::<_, Infallible>(next), (chunks, false)))
    });
    ([(header::CONTENT_TYPE, content_type)], Body::from_stream(body)).into_response()
}

/// Sleeps only when there is something to wait for: no timer on the zero-delay path.
async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    assert!(args.listen.ip().is_loopback(), "the mock binds loopback addresses only");
    let responses: &'static Responses = Box::leak(Box::new(Responses::build(&args)));
    let app = Router::new()
        .route(
            "/v1/chat/completions",
            post(move |body: Bytes| async move {
                pause(responses.delay).await;
                if wants_stream(&body, false) {
                    streamed(&responses.sse_chunks, "text/event-stream", responses.chunk_delay)
                } else {
                    json(&responses.completion)
                }
            }),
        )
        .route(
            "/api/chat",
            post(move |body: Bytes| async move {
                pause(responses.delay).await;
                if wants_stream(&body, true) {
                    streamed(&responses.ndjson_chunks, "application/x-ndjson", responses.chunk_delay)
                } else {
                    json(&responses.ollama_completion)
                }
            }),
        )
        .route("/v1/embeddings", post(move || async move { json(&responses.embeddings) }))
        .route("/api/embed", post(move || async move { json(&responses.ollama_embed) }))
        .route("/v1/models", get(move || async move { json(&responses.models) }));
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket.bind(args.listen).expect("bind");
    let listener = socket.listen(4096).expect("listen");
    eprintln!("mock-upstream listening on http://{}", listener.local_addr().expect("address"));
    // Chunks go out as written: without this, Nagle and delayed ACKs hold them ~40 ms.
    let listener = listener.tap_io(|connection| {
        let _ = connection.set_nodelay(true);
    });
    axum::serve(listener, app).await.expect("serve");
}
