use base64::Engine as _;
use serde_json::json;

use crate::support::mock::embedding;
use crate::support::{client, error_of, get, post, send, setup};

#[tokio::test]
async fn models_lists_every_available_model_as_provider_slash_model() {
    let (_mock, gateway) = setup().await;
    let reply = get(&gateway, "/v1/models").await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"mockai/gpt-mock") && ids.contains(&"local/llama-mock"), "{ids:?}");
    assert!(!ids.iter().any(|id| id.starts_with("nokey/")), "providers without a key are not listed: {ids:?}");
    let model = &body["data"][0];
    assert_eq!(model["object"], "model");
    assert!(model["created"].as_u64().unwrap() > 1_700_000_000 && model["owned_by"].is_string());

    let reply = get(&gateway, "/v1/models/mockai/gpt-mock").await;
    assert_eq!(reply.json()["id"], "mockai/gpt-mock");
    let reply = get(&gateway, "/v1/models/gpt-mock").await;
    assert_eq!(reply.json()["id"], "mockai/gpt-mock");
    assert_eq!(error_of(&get(&gateway, "/v1/models/nope").await, 404)["code"], "model_not_found");
}

#[tokio::test]
async fn readiness_reports_providers_without_auth() {
    let (_mock, gateway) = setup().await;
    let reply = send(client().get(format!("{}/readyz", gateway.url))).await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    let nokey = body["providers"].as_array().unwrap().iter().find(|p| p["id"] == "nokey").unwrap().clone();
    assert_eq!(nokey["available"], false);
    assert_eq!(nokey["reason"], "SWITCHYARD_TEST_NEVER_SET_KEY is not set");
    assert_eq!(body["database"], json!({"backend": "sqlite", "ok": true}));
    assert_eq!(body["limits"]["backend"], "in-process");
    let reply = send(client().get(format!("{}/healthz", gateway.url))).await;
    assert_eq!(reply.json(), json!({"status": "ok"}));
}

#[tokio::test]
async fn openai_embeddings_pass_through() {
    let (mock, gateway) = setup().await;
    let reply = post(
        &gateway,
        "/v1/embeddings",
        &json!({"model": "mockai/embed-mock", "input": ["a", "b"], "encoding_format": "float"}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["data"][1]["embedding"], json!(embedding(1)));
    assert_eq!(mock.last().body, json!({"model": "embed-mock", "input": ["a", "b"], "encoding_format": "float"}));
}

#[tokio::test]
async fn ollama_embeddings_are_translated_in_both_encodings() {
    let (mock, gateway) = setup().await;
    let reply = post(&gateway, "/v1/embeddings", &json!({"model": "local/embed-local", "input": "alpha"})).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0], json!({"object": "embedding", "index": 0, "embedding": embedding(0)}));
    assert_eq!(body["usage"]["prompt_tokens"], 6);
    assert_eq!(mock.last().body, json!({"model": "embed-local", "input": ["alpha"], "truncate": true}));

    let reply = post(
        &gateway,
        "/v1/embeddings",
        &json!({"model": "local/embed-local", "input": ["a", "b"], "encoding_format": "base64"}),
    )
    .await;
    let body = reply.json();
    let encoded = body["data"][1]["embedding"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
    let floats: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(floats, embedding(1));

    let reply = post(&gateway, "/v1/embeddings", &json!({"model": "local/embed-local", "input": [1, 2, 3]})).await;
    assert_eq!(error_of(&reply, 400)["param"], "input");
    let reply = post(&gateway, "/v1/embeddings", &json!({"model": "local/embed-local", "input": ""})).await;
    assert_eq!(error_of(&reply, 400)["param"], "input");
    let reply = post(&gateway, "/v1/embeddings", &json!({"model": "local/llama-mock", "input": "x"})).await;
    error_of(&reply, 400);
}
