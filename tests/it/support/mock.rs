//! A mock LLM provider speaking OpenAI's and Ollama's exact wire formats.
//!
//! Behaviour is chosen by the requested model name, so one mock serves every test:
//! `fail-429`, `fail-400`, `fail-401`, `fail-500`, `stall`, `garbage`, `cut-mid-stream`,
//! `abort-mid-stream`, `error-mid-stream`, `stall-mid-stream`, `slow-stream`,
//! `cut-before-content` (a stream that ends after its role-only chunk), `delay-<ms>`
//! (answers after that long), `flaky-<n>` (503 for its first n requests) and
//! `flaky429-<n>` (429 with `retry-after-ms: 300` for its first n requests); any other
//! name answers normally; `echo` answers with the last user message (streamed in
//! 3-character pieces); `no-usage` answers without reporting usage, as some
//! OpenAI-compatible servers do. Requests carrying `tools` are answered with two tool
//! calls.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use futures_util::stream::{self, StreamExt};
use serde_json::{Value, json};

pub const REPLY: &str = "Hello from the mock!";
pub const REPLY_PIECES: [&str; 4] = ["Hello", " from", " the", " mock!"];
pub const PROMPT_TOKENS: u64 = 12;
pub const COMPLETION_TOKENS: u64 = 5;

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: std::time::Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
pub struct MockState {
    received: Mutex<Vec<Received>>,
    /// Requests seen per model name, for the `flaky-*` models.
    seen: Mutex<std::collections::HashMap<String, usize>>,
    /// Streams the client dropped before they finished.
    pub cancelled_streams: AtomicUsize,
}

pub struct MockUpstream {
    pub url: String,
    pub state: Arc<MockState>,
}

impl MockUpstream {
    pub async fn start() -> MockUpstream {
        let state = Arc::new(MockState::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(openai_chat))
            .route("/v1/embeddings", post(openai_embeddings))
            .route("/v1/models", get(|| async { axum::Json(json!({"object": "list", "data": []})) }))
            .route("/api/chat", post(ollama_chat))
            .route("/api/embed", post(ollama_embed))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let url = format!("http://{}", listener.local_addr().expect("mock addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("mock server") });
        MockUpstream { url, state }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn last(&self) -> Received {
        self.received().pop().expect("the mock received no request")
    }
}

fn record(state: &MockState, path: &str, headers: &HeaderMap, body: &Bytes) -> Value {
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let at = std::time::Instant::now();
    state.received.lock().unwrap().push(Received {
        at,
        path: path.into(),
        headers: headers.clone(),
        body: body.clone(),
    });
    *state.seen.lock().unwrap().entry(model_of(&body)).or_default() += 1;
    body
}

fn model_of(body: &Value) -> String {
    body["model"].as_str().unwrap_or_default().to_owned()
}

/// Answers that do not depend on the wire format, before any output.
async fn failure(state: &MockState, model: &str, ollama: bool) -> Option<Response> {
    let openai_error = |status: StatusCode, message: &str, kind: &str, code: Value| {
        (status, axum::Json(json!({"error": {"message": message, "type": kind, "param": null, "code": code}})))
            .into_response()
    };
    let seen = state.seen.lock().unwrap().get(model).copied().unwrap_or(0);
    let failing_first =
        |prefix: &str| model.strip_prefix(prefix).and_then(|n| n.parse::<usize>().ok()).is_some_and(|n| seen <= n);
    if let Some(ms) = model.strip_prefix("delay-").and_then(|ms| ms.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if failing_first("flaky-") {
        return Some(openai_error(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "server_error", Value::Null));
    }
    if failing_first("flaky429-") {
        let mut response =
            openai_error(StatusCode::TOO_MANY_REQUESTS, "Rate limit reached", "requests", json!("rate_limit_exceeded"));
        response.headers_mut().insert("retry-after-ms", "300".parse().unwrap());
        return Some(response);
    }
    Some(match model {
        "fail-429" if ollama => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": "server busy, please try again.  maximum pending requests exceeded"})),
        )
            .into_response(),
        "fail-429" => {
            let mut response = openai_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit reached for requests",
                "requests",
                json!("rate_limit_exceeded"),
            );
            response.headers_mut().insert("retry-after", "7".parse().unwrap());
            response.headers_mut().insert("retry-after-ms", "7000".parse().unwrap());
            response
        }
        "fail-400" => openai_error(
            StatusCode::BAD_REQUEST,
            "Invalid value for 'temperature'",
            "invalid_request_error",
            Value::Null,
        ),
        "fail-401" => openai_error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided",
            "invalid_request_error",
            json!("invalid_api_key"),
        ),
        "fail-500" => (StatusCode::INTERNAL_SERVER_ERROR, "internal oops").into_response(),
        "missing-model" if ollama => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "model \"missing-model\" not found, try pulling it first"})),
        )
            .into_response(),
        "stall" => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::OK.into_response()
        }
        "garbage" => ([(header::CONTENT_TYPE, "application/json")], "this is not json").into_response(),
        _ => return None,
    })
}

fn last_user_text(body: &Value) -> String {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.iter().rev().find(|m| m["role"] == "user");
    last.and_then(|m| m["content"].as_str()).unwrap_or_default().to_owned()
}

fn has_tools(body: &Value) -> bool {
    body["tools"].as_array().is_some_and(|tools| !tools.is_empty())
}

// ---- OpenAI -------------------------------------------------------------------------

async fn openai_chat(State(state): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = record(&state, "/v1/chat/completions", &headers, &body);
    let model = model_of(&body);
    if let Some(response) = failure(&state, &model, false).await {
        return response;
    }
    let usage = json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS, "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS});
    if body["stream"] != json!(true) {
        let message = if has_tools(&body) {
            json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                {"id": "call_w1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_t2", "type": "function", "function": {"name": "get_time", "arguments": "{\"tz\":\"Europe/Paris\"}"}}]})
        } else if model == "echo" {
            json!({"role": "assistant", "content": last_user_text(&body), "refusal": null})
        } else {
            json!({"role": "assistant", "content": REPLY, "refusal": null})
        };
        let finish = if has_tools(&body) { "tool_calls" } else { "stop" };
        let mut completion = json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 1718000000, "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": usage,
        });
        if model == "no-usage" {
            completion.as_object_mut().unwrap().remove("usage");
        }
        return axum::Json(completion).into_response();
    }

    let include_usage = body["stream_options"]["include_usage"] == json!(true) && model != "no-usage";
    let chunk = |delta: Value, finish: Value| {
        let mut chunk = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1718000000, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        format!("data: {chunk}\n\n")
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    if has_tools(&body) {
        for (index, id, name, pieces) in [
            (0, "call_w1", "get_weather", ["{\"city\":", "\"Paris\"}"]),
            (1, "call_t2", "get_time", ["{\"tz\":", "\"Europe/Paris\"}"]),
        ] {
            events.push(chunk(json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null));
            for piece in pieces {
                events.push(chunk(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
        }
        events.push(chunk(json!({}), json!("tool_calls")));
    } else {
        let echoed: Vec<char> = last_user_text(&body).chars().collect();
        let pieces: Vec<String> = match model.as_str() {
            "slow-stream" => vec![" tick".to_owned(); 100],
            "echo" => echoed.chunks(3).map(|piece| piece.iter().collect()).collect(),
            _ => REPLY_PIECES.iter().map(|piece| (*piece).to_owned()).collect(),
        };
        events.extend(pieces.into_iter().map(|piece| chunk(json!({"content": piece}), Value::Null)));
        events.push(chunk(json!({}), json!("stop")));
    }
    if include_usage {
        let mut last = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1718000000, "model": model, "choices": []});
        last["usage"] = usage;
        events.push(format!("data: {last}\n\n"));
    }
    events.push("data: [DONE]\n\n".into());

    match model.as_str() {
        "cut-mid-stream" => events.truncate(2),
        "cut-before-content" => events.truncate(1),
        "error-mid-stream" => {
            events.truncate(2);
            events.push(format!("data: {}\n\n", json!({"error": {"message": "upstream model crashed", "type": "server_error", "param": null, "code": null}})));
        }
        _ => {}
    }
    sse(state, events, &model)
}

/// Streams `events` with the pacing the model name asks for, noting cancellation.
fn sse(state: Arc<MockState>, events: Vec<String>, model: &str) -> Response {
    let (delay, stall_after, abort_after) = match model {
        "slow-stream" => (Duration::from_millis(100), None, None),
        "stall-mid-stream" => (Duration::ZERO, Some(2), None),
        "abort-mid-stream" => (Duration::ZERO, None, Some(2)),
        _ => (Duration::ZERO, None, None),
    };
    struct Guard {
        state: Arc<MockState>,
        finished: bool,
    }
    impl Guard {
        fn finish(&mut self) {
            self.finished = true;
        }
    }
    impl Drop for Guard {
        fn drop(&mut self) {
            if !self.finished {
                self.state.cancelled_streams.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let guard = Guard { state, finished: false };
    let total = events.len();
    let body = stream::unfold((events.into_iter().enumerate(), guard), move |(mut events, mut guard)| async move {
        let (i, event) = match events.next() {
            Some(next) => next,
            None => {
                guard.finish();
                return None;
            }
        };
        if abort_after == Some(i) {
            // Let what was sent reach the client first.
            tokio::time::sleep(Duration::from_millis(200)).await;
            guard.finished = true;
            return Some((Err(std::io::Error::other("mock aborts the connection")), (events, guard)));
        }
        if stall_after == Some(i) {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        if i > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if i + 1 == total {
            guard.finished = true;
        }
        Some((Ok::<_, std::io::Error>(Bytes::from(event)), (events, guard)))
    });
    ([(header::CONTENT_TYPE, "text/event-stream")], Body::from_stream(body)).into_response()
}

async fn openai_embeddings(State(state): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = record(&state, "/v1/embeddings", &headers, &body);
    if let Some(response) = failure(&state, &model_of(&body), false).await {
        return response;
    }
    let inputs = match &body["input"] {
        Value::Array(items) => items.len(),
        _ => 1,
    };
    let base64 = body["encoding_format"] == json!("base64");
    let data: Vec<Value> = (0..inputs)
        .map(|i| {
            let vector = embedding(i);
            let encoded = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": i, "embedding": encoded})
        })
        .collect();
    axum::Json(json!({"object": "list", "model": model_of(&body), "data": data, "usage": {"prompt_tokens": 4, "total_tokens": 4}})).into_response()
}

/// The vector the mock returns for the `i`-th input.
pub fn embedding(i: usize) -> Vec<f32> {
    vec![i as f32 + 0.5, -1.0, 0.25]
}

// ---- Ollama -------------------------------------------------------------------------

async fn ollama_chat(State(state): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = record(&state, "/api/chat", &headers, &body);
    let model = model_of(&body);
    if let Some(response) = failure(&state, &model, true).await {
        return response;
    }
    // Ollama streams unless told otherwise.
    let stream = body["stream"] != json!(false);
    // `llama-old` behaves like servers before v0.12.10: no call ids, index 0 for every call.
    let old = model == "llama-old";
    let tool_calls = json!([
        {"id": if old { Value::Null } else { json!("call_k3j9x0pq") }, "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}},
        {"id": if old { Value::Null } else { json!("call_p0q1r2s3") }, "function": {"index": if old { 0 } else { 1 }, "name": "get_time", "arguments": {"tz": "Europe/Paris"}}},
    ]);
    let tool_calls: Value = tool_calls
        .as_array()
        .unwrap()
        .iter()
        .map(|call| {
            let mut call = call.clone();
            if call["id"].is_null() {
                call.as_object_mut().unwrap().remove("id");
            }
            call
        })
        .collect();
    let done = json!({"model": model, "created_at": "2025-06-01T10:00:00.3Z", "message": {"role": "assistant", "content": ""},
        "done": true, "done_reason": "stop", "total_duration": 912000000, "prompt_eval_count": PROMPT_TOKENS, "eval_count": COMPLETION_TOKENS});

    if !stream {
        let mut whole = done.clone();
        if has_tools(&body) {
            whole["message"]["tool_calls"] = tool_calls;
        } else {
            whole["message"]["content"] = json!(REPLY);
        }
        return axum::Json(whole).into_response();
    }
    let line = |message: Value| {
        format!(
            "{}\n",
            json!({"model": model, "created_at": "2025-06-01T10:00:00.1Z", "message": message, "done": false})
        )
    };
    let mut lines = Vec::new();
    if has_tools(&body) {
        lines.push(line(json!({"role": "assistant", "content": "", "tool_calls": tool_calls})));
    } else {
        lines.extend(REPLY_PIECES.iter().map(|piece| line(json!({"role": "assistant", "content": piece}))));
    }
    lines.push(format!("{done}\n"));
    match model.as_str() {
        "error-first-line" => lines = vec![format!("{}\n", json!({"error": "llama runner process has terminated"}))],
        "error-mid-stream" => {
            lines.truncate(2);
            lines.push(format!("{}\n", json!({"error": "llama runner process has terminated"})));
        }
        "cut-mid-stream" => lines.truncate(2),
        _ => {}
    }
    let body = stream::iter(lines).map(|line| Ok::<_, Infallible>(Bytes::from(line)));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(body)).into_response()
}

async fn ollama_embed(State(state): State<Arc<MockState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body = record(&state, "/api/embed", &headers, &body);
    let inputs = body["input"].as_array().map_or(1, Vec::len);
    let embeddings: Vec<Vec<f32>> = (0..inputs).map(embedding).collect();
    axum::Json(
        json!({"model": model_of(&body), "embeddings": embeddings, "total_duration": 14000000, "prompt_eval_count": 6}),
    )
    .into_response()
}
