use serde_json::{Value, json};

use crate::support::mock::{COMPLETION_TOKENS, PROMPT_TOKENS, REPLY, REPLY_PIECES};
use crate::support::{MASTER_KEY, UPSTREAM_KEY, client, post, send, setup};

#[tokio::test]
async fn non_streaming_passes_the_request_through_with_unknown_fields() {
    let (mock, gateway) = setup().await;
    let request = json!({
        "model": "mockai/gpt-mock",
        "messages": [
            {"role": "developer", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}], "x_message_field": 1}
        ],
        "temperature": 0.2, "top_p": 0.9, "max_completion_tokens": 64, "stop": ["\n\n"], "seed": 7, "n": 1,
        "user": "u-1", "metadata": {"team": "a"}, "logprobs": false,
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}, "strict": true}},
        "service_tier": "flex", "some_future_field": {"nested": [1, 2]}
    });
    let reply = post(&gateway, "/v1/chat/completions", &request).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["choices"][0]["message"]["content"], REPLY);
    assert_eq!(body["usage"]["total_tokens"], PROMPT_TOKENS + COMPLETION_TOKENS);

    let received = mock.last();
    assert_eq!(received.path, "/v1/chat/completions");
    let mut expected = request.clone();
    expected["model"] = json!("gpt-mock");
    assert_eq!(received.body, expected, "the upstream must get the client's request with only the model rewritten");
    // The upstream sees the provider key, never the client's gateway key.
    assert_eq!(received.headers["authorization"], format!("Bearer {UPSTREAM_KEY}"));
    assert!(!format!("{:?}", received.headers).contains(MASTER_KEY));
}

fn assembled_text(chunks: &[Value]) -> String {
    chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect()
}

#[tokio::test]
async fn streaming_injects_usage_upstream_and_strips_it_when_not_asked() {
    let (mock, gateway) = setup().await;
    let reply = post(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "mockai/gpt-mock", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let chunks = reply.stream_chunks();
    assert_eq!(assembled_text(&chunks), REPLY);
    assert!(chunks.iter().all(|c| !c["choices"].as_array().unwrap().is_empty()), "the usage chunk must be stripped");
    assert_eq!(mock.last().body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn streaming_keeps_the_usage_chunk_when_asked() {
    let (mock, gateway) = setup().await;
    let reply = post(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "gpt-mock", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    let chunks = reply.stream_chunks();
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], PROMPT_TOKENS);
    assert_eq!(chunks.len(), REPLY_PIECES.len() + 3);
    assert_eq!(mock.last().body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn streamed_tool_call_deltas_pass_through_unchanged() {
    let (_mock, gateway) = setup().await;
    let reply = post(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "mockai/gpt-mock", "stream": true, "messages": [{"role": "user", "content": "Weather?"}],
                "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
                "tool_choice": "auto", "parallel_tool_calls": true}),
    )
    .await;
    let chunks = reply.stream_chunks();
    let deltas: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"].get("tool_calls")).collect();
    assert_eq!(deltas.len(), 6);
    assert_eq!(deltas[0][0]["id"], "call_w1");
    assert!(deltas[1][0].get("id").is_none(), "later fragments must not repeat the id");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn request_ids_are_honoured_or_generated() {
    let (_mock, gateway) = setup().await;
    let url = format!("{}/v1/chat/completions", gateway.url);
    let body = json!({"model": "gpt-mock", "messages": [{"role": "user", "content": "Hi"}]}).to_string();
    let reply =
        send(client().post(&url).bearer_auth(MASTER_KEY).header("x-request-id", "trace-42").body(body.clone())).await;
    assert_eq!(reply.header("x-request-id"), Some("trace-42"));
    let reply = send(client().post(&url).bearer_auth(MASTER_KEY).body(body)).await;
    assert!(reply.header("x-request-id").is_some_and(|id| id.starts_with("req_")));
    // Errors carry one too.
    let reply = send(client().post(&url).body("{}")).await;
    assert!(reply.header("x-request-id").is_some());
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_stream() {
    let (mock, gateway) = setup().await;
    let mut response = client()
        .post(format!("{}/v1/chat/completions", gateway.url))
        .bearer_auth(MASTER_KEY)
        .body(
            json!({"model": "mockai/slow-stream", "stream": true, "messages": [{"role": "user", "content": "Hi"}]})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(response);
    let cancelled = &mock.state.cancelled_streams;
    for _ in 0..50 {
        if cancelled.load(std::sync::atomic::Ordering::SeqCst) == 1 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the upstream stream was not cancelled after the client left");
}
