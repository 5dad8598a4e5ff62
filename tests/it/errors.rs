//! Every failure reaches the client as OpenAI's error envelope with the right status.

use serde_json::{Value, json};

use crate::support::{Gateway, MASTER_KEY, UPSTREAM_KEY, client, error_of, post, send, setup};

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]})
}

#[tokio::test]
async fn missing_or_wrong_keys_are_401() {
    let (_mock, gateway) = setup().await;
    let url = format!("{}/v1/chat/completions", gateway.url);
    let reply = send(client().post(&url).body(chat("gpt-mock").to_string())).await;
    assert_eq!(error_of(&reply, 401)["code"], "invalid_api_key");
    let reply = send(client().post(&url).bearer_auth("sk-wrong").body(chat("gpt-mock").to_string())).await;
    let error = error_of(&reply, 401);
    assert!(!error["message"].as_str().unwrap().contains("sk-wrong"), "keys are never echoed");
    let reply = send(client().get(format!("{}/v1/models", gateway.url))).await;
    error_of(&reply, 401);
}

#[tokio::test]
async fn malformed_requests_are_400_naming_the_field() {
    let (_mock, gateway) = setup().await;
    let url = format!("{}/v1/chat/completions", gateway.url);
    let reply = send(client().post(&url).bearer_auth(MASTER_KEY).body("{\"model\": \"gpt-mock\", ")).await;
    assert!(error_of(&reply, 400)["message"].as_str().unwrap().contains("not valid JSON"));
    let cases = [
        (
            json!({"model": "gpt-mock", "messages": [{"role": "user", "content": "Hi"}], "temperature": "hot"}),
            "temperature",
        ),
        (json!({"model": "gpt-mock", "messages": [{"role": "user", "content": 42}]}), "messages[0].content"),
        (json!({"model": "gpt-mock"}), "messages"),
        (json!({"model": "gpt-mock", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": -1}), "max_tokens"),
    ];
    for (body, param) in cases {
        let reply = post(&gateway, "/v1/chat/completions", &body).await;
        let error = error_of(&reply, 400);
        assert_eq!(error["param"], param, "{}", reply.text);
        assert_eq!(error["type"], "invalid_request_error");
    }
}

#[tokio::test]
async fn model_resolution_errors() {
    let (_mock, gateway) = setup().await;
    let error = error_of(&post(&gateway, "/v1/chat/completions", &chat("no-such-model")).await, 404);
    assert_eq!(error["code"], "model_not_found");
    let error = error_of(&post(&gateway, "/v1/chat/completions", &chat("nokey/other")).await, 404);
    assert_eq!(error["code"], "model_not_found");
    // Served by two providers: the client must say which.
    let error = error_of(&post(&gateway, "/v1/chat/completions", &chat("shared-model")).await, 400);
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("mockai/shared-model") && message.contains("local/shared-model"), "{message}");
    // A provider whose key is not set is unavailable, with the reason.
    let reply = post(&gateway, "/v1/chat/completions", &chat("lonely-model")).await;
    let error = error_of(&reply, 503);
    assert!(error["message"].as_str().unwrap().contains("SWITCHYARD_TEST_NEVER_SET_KEY is not set"));
    assert_eq!(reply.header("x-should-retry"), Some("false"));
    // Embedding models are not chat models.
    error_of(&post(&gateway, "/v1/chat/completions", &chat("mockai/embed-mock")).await, 400);
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let (_mock, gateway) = setup().await;
    let big = "x".repeat(70 * 1024);
    let reply = post(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "gpt-mock", "messages": [{"role": "user", "content": big}]}),
    )
    .await;
    assert_eq!(error_of(&reply, 413)["code"], "request_too_large");
}

#[tokio::test]
async fn upstream_client_errors_pass_through_faithfully() {
    let (_mock, gateway) = setup().await;
    let reply = post(&gateway, "/v1/chat/completions", &chat("mockai/fail-429")).await;
    let error = error_of(&reply, 429);
    assert_eq!(
        error,
        json!({"message": "Rate limit reached for requests", "type": "requests", "param": null, "code": "rate_limit_exceeded"})
    );
    assert_eq!(reply.header("retry-after"), Some("7"));
    assert_eq!(reply.header("retry-after-ms"), Some("7000"));
    let reply = post(&gateway, "/v1/chat/completions", &chat("mockai/fail-400")).await;
    assert_eq!(error_of(&reply, 400)["message"], "Invalid value for 'temperature'");
}

#[tokio::test]
async fn upstream_failures_name_the_provider_never_the_key() {
    let (_mock, gateway) = setup().await;
    let cases = [
        // The provider refusing the gateway's own key is the gateway's problem, not the client's.
        ("mockai/fail-401", 502, "upstream_auth_failed"),
        ("mockai/garbage", 502, "upstream_invalid_response"),
        ("mockai/stall", 504, "upstream_timeout"),
    ];
    for (model, status, code) in cases {
        let reply = post(&gateway, "/v1/chat/completions", &chat(model)).await;
        let error = error_of(&reply, status);
        assert_eq!(error["code"], code, "{model}");
        assert!(error["message"].as_str().unwrap().contains("mockai"), "{model}: {error}");
        assert!(!reply.text.contains(UPSTREAM_KEY) && !reply.text.contains(MASTER_KEY), "{model}: {}", reply.text);
    }
    let error = error_of(&post(&gateway, "/v1/chat/completions", &chat("mockai/fail-500")).await, 500);
    assert_eq!(error["message"], "internal oops");
}

#[tokio::test]
async fn unreachable_upstreams_are_502() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let gateway = Gateway::start(&url);
    let reply = post(&gateway, "/v1/chat/completions", &chat("mockai/gpt-mock")).await;
    let error = error_of(&reply, 502);
    assert_eq!(error["code"], "upstream_unreachable");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("mockai") && !message.contains(UPSTREAM_KEY), "{message}");
}

#[tokio::test]
async fn failures_after_the_first_byte_end_the_stream_with_an_error_event() {
    let (_mock, gateway) = setup().await;
    for model in
        ["mockai/error-mid-stream", "mockai/cut-mid-stream", "mockai/abort-mid-stream", "mockai/stall-mid-stream"]
    {
        let reply = post(
            &gateway,
            "/v1/chat/completions",
            &json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
        assert_eq!(reply.status, 200, "{model}");
        let data = reply.sse_data();
        assert!(!data.iter().any(|d| d == "[DONE]"), "{model}: a failed stream must not end with [DONE]: {data:?}");
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert!(last["error"]["message"].is_string() && last["error"].get("type").is_some(), "{model}: {last}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_envelope() {
    let (_mock, gateway) = setup().await;
    let reply = send(client().get(format!("{}/v1/nothing-here", gateway.url))).await;
    error_of(&reply, 404);
    let reply = send(client().get(format!("{}/v1/chat/completions", gateway.url)).bearer_auth(MASTER_KEY)).await;
    error_of(&reply, 405);
}
