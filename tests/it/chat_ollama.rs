use serde_json::{Value, json};

use crate::support::mock::{COMPLETION_TOKENS, PROMPT_TOKENS, REPLY};
use crate::support::{error_of, post, setup};

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather", "strict": true,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}
    ])
}

#[tokio::test]
async fn translates_the_request_to_ollama_native() {
    let (mock, gateway) = setup().await;
    let request = json!({
        "model": "local/llama-mock",
        "messages": [
            {"role": "developer", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "What is here?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Kyiv\"}"}}]},
            {"role": "tool", "tool_call_id": "call_a1", "content": "{\"temp\":3}"}
        ],
        "tools": tools(), "tool_choice": "auto",
        "temperature": 0.2, "top_p": 0.9, "max_tokens": 10, "max_completion_tokens": 256,
        "stop": "\n\n", "seed": 7, "response_format": {"type": "json_object"}, "user": "u-1"
    });
    let reply = post(&gateway, "/v1/chat/completions", &request).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let received = mock.last();
    assert_eq!(received.path, "/api/chat");
    assert_eq!(
        received.body,
        json!({
            "model": "llama-mock",
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "What is here?", "images": ["iVBORw0KGgo="]},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "call_a1", "function": {"name": "get_weather", "arguments": {"city": "Kyiv"}}}]},
                {"role": "tool", "content": "{\"temp\":3}", "tool_name": "get_weather", "tool_call_id": "call_a1"}
            ],
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}
            ],
            "format": "json",
            "options": {"temperature": 0.2, "top_p": 0.9, "num_predict": 256, "stop": ["\n\n"], "seed": 7},
            "stream": false,
            "think": false
        })
    );
}

#[tokio::test]
async fn non_streaming_response_is_openai_shaped() {
    let (_mock, gateway) = setup().await;
    let reply = post(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "local/llama-mock", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["created"], 1748772000);
    assert_eq!(body["choices"][0]["message"], json!({"role": "assistant", "content": REPLY, "refusal": null}));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS, "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS})
    );
}

#[tokio::test]
async fn non_streaming_tool_calls_get_string_arguments_and_ids() {
    let (_mock, gateway) = setup().await;
    for model in ["local/llama-mock", "local/llama-old"] {
        let reply = post(
            &gateway,
            "/v1/chat/completions",
            &json!({"model": model, "tools": tools(), "messages": [{"role": "user", "content": "Weather?"}]}),
        )
        .await;
        let body = reply.json();
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{model}");
        assert_eq!(choice["message"]["content"], Value::Null);
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0]["function"], json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}));
        assert_eq!(calls[0]["type"], "function");
        let ids: Vec<&str> = calls.iter().map(|c| c["id"].as_str().unwrap()).collect();
        assert!(ids.iter().all(|id| id.starts_with("call_")) && ids[0] != ids[1], "{ids:?}");
    }
}

#[tokio::test]
async fn ndjson_stream_becomes_openai_sse() {
    let (mock, gateway) = setup().await;
    let reply = post(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "local/llama-mock", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(mock.last().body["stream"], true);
    let chunks = reply.stream_chunks();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(
        chunks.iter().all(|c| c["id"] == id && c["created"] == 1748772000 && c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        chunks[1..].iter().all(|c| { c["choices"].get(0).is_none_or(|choice| choice["delta"].get("role").is_none()) })
    );
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, REPLY);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["usage"], Value::Null);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], COMPLETION_TOKENS);
}

#[tokio::test]
async fn ndjson_stream_without_usage_request_has_no_usage() {
    let (_mock, gateway) = setup().await;
    let reply = post(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "local/llama-mock", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    let chunks = reply.stream_chunks();
    assert!(chunks.iter().all(|c| c.get("usage").is_none() && !c["choices"].as_array().unwrap().is_empty()));
}

#[tokio::test]
async fn streamed_tool_calls_are_one_delta_each_with_own_indexes() {
    let (_mock, gateway) = setup().await;
    let reply = post(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "local/llama-old", "stream": true, "tools": tools(), "messages": [{"role": "user", "content": "Weather?"}]}),
    )
    .await;
    let chunks = reply.stream_chunks();
    let calls: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0)).collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["index"], 0);
    assert_eq!(calls[1]["index"], 1, "indexes are assigned by the gateway, not copied from Ollama");
    assert_eq!(calls[1]["function"], json!({"name": "get_time", "arguments": "{\"tz\":\"Europe/Paris\"}"}));
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn ollama_errors_before_output_are_http_errors() {
    let (_mock, gateway) = setup().await;
    for stream in [false, true] {
        let reply = post(
            &gateway,
            "/v1/chat/completions",
            &json!({"model": "local/missing-model", "stream": stream, "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
        let error = error_of(&reply, 404);
        assert_eq!(error["code"], "model_not_found");
        assert!(error["message"].as_str().unwrap().contains("not found"));
    }
    let reply = post(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "local/error-first-line", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    let error = error_of(&reply, 500);
    assert!(error["message"].as_str().unwrap().contains("runner process has terminated"));
}

#[tokio::test]
async fn ollama_error_mid_stream_ends_with_an_error_event() {
    let (_mock, gateway) = setup().await;
    for model in ["local/error-mid-stream", "local/cut-mid-stream"] {
        let reply = post(
            &gateway,
            "/v1/chat/completions",
            &json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
        assert_eq!(reply.status, 200);
        let data = reply.sse_data();
        assert_ne!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "{model}: a failed stream must not end with [DONE]"
        );
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert!(last["error"]["message"].is_string(), "{model}: {last}");
    }
}

#[tokio::test]
async fn features_ollama_cannot_serve_are_clear_400s() {
    let (_mock, gateway) = setup().await;
    let cases = [
        (json!({"n": 2}), "n"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "not json"}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
    ];
    for (patch, param) in cases {
        let mut request = json!({"model": "local/llama-mock", "messages": [{"role": "user", "content": "Hi"}]});
        for (key, value) in patch.as_object().unwrap() {
            request[key] = value.clone();
        }
        let reply = post(&gateway, "/v1/chat/completions", &request).await;
        let error = error_of(&reply, 400);
        assert_eq!(error["param"], param);
    }
}
