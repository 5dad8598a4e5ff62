//! The privacy guarantee, end to end: under `local_only` or `redact`, no detected PII
//! value reaches a cloud upstream, on any retry or fallback path; `block` refuses the
//! request naming the classes, never the values.

use serde_json::{Value, json};

use crate::support::{MockUpstream, error_of, post, setup_with_policy};

const EMAIL: &str = "olena.kovalenko@example.com";
const PHONE: &str = "+380 50 123 45 67";
const CARD: &str = "4111 1111 1111 1111";

fn prompt() -> String {
    format!("Напишіть листа: мій email {EMAIL}, телефон {PHONE}, картка {CARD}. Дякую!")
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": prompt()}]})
}

/// Every request body a cloud (OpenAI-wire) upstream received.
fn cloud_bodies(mock: &MockUpstream) -> Vec<String> {
    mock.received().iter().filter(|r| r.path.starts_with("/v1/")).map(|r| r.body.to_string()).collect()
}

fn assert_no_pii_reached_the_cloud(mock: &MockUpstream) {
    for body in cloud_bodies(mock) {
        for value in [EMAIL, PHONE, CARD, "olena.kovalenko", "4111"] {
            assert!(!body.contains(value), "{value} reached a cloud upstream: {body}");
        }
    }
}

#[tokio::test]
async fn local_only_serves_pii_locally_and_never_falls_back_to_cloud() {
    let (mock, gateway) = setup_with_policy(
        r#"
[aliases.anywhere]
targets = ["local/fail-500", "mockai/gpt-mock"]

[[rules]]
name = "pii-local"
when = { pii = "any" }
privacy = "local_only"

[default]
retries = 1
backoff_ms = 10
"#,
    )
    .await;
    // The requested cloud model is not local: refused with 503, nothing sent anywhere.
    let error = error_of(&post(&gateway, "/v1/chat/completions", &chat("mockai/gpt-mock", false)).await, 503);
    assert_eq!(error["code"], "no_local_target");
    assert!(mock.received().is_empty());

    // A local target that fails is retried, and then the request fails: it does not go
    // on to the cloud target behind it.
    for stream in [false, true] {
        let reply = post(&gateway, "/v1/chat/completions", &chat("anywhere", stream)).await;
        assert!(reply.status >= 500, "{}", reply.text);
    }
    let paths: Vec<String> = mock.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/api/chat"; 4], "two tries of the local target per request, no cloud");

    // Without PII the same alias falls back to the cloud as usual.
    let clean = json!({"model": "anywhere", "messages": [{"role": "user", "content": "Hi"}]});
    let reply = post(&gateway, "/v1/chat/completions", &clean).await;
    // (The local target's breaker opened after five failures in a row, so it is not retried.)
    assert!(reply.header("x-switchyard-route").unwrap().starts_with("rule=default; target=mockai/gpt-mock"));
    assert_no_pii_reached_the_cloud(&mock);
}

#[tokio::test]
async fn redact_sends_placeholders_and_restores_the_originals_streamed_or_not() {
    let (mock, gateway) = setup_with_policy(
        r#"
[[rules]]
name = "pii-redacted"
when = { pii = "any" }
privacy = "redact"
targets = ["mockai/fail-500", "mockai/flaky-9", "mockai/echo"]

[default]
retries = 1
backoff_ms = 10
"#,
    )
    .await;
    let reply = post(&gateway, "/v1/chat/completions", &chat("whatever", false)).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["choices"][0]["message"]["content"], prompt(), "the echo comes back with the originals");
    assert_eq!(reply.header("x-switchyard-route"), Some("rule=pii-redacted; target=mockai/echo; attempts=5"));

    let reply = post(&gateway, "/v1/chat/completions", &chat("whatever", true)).await;
    let text: String =
        reply.stream_chunks().iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, prompt(), "placeholders split across 3-character chunks are restored");

    let sent = mock.last().body["messages"][1]["content"].as_str().unwrap().to_owned();
    assert!(sent.contains("[EMAIL_1]") && sent.contains("[PHONE_1]") && sent.contains("[CARD_1]"), "{sent}");
    assert!(sent.starts_with("Напишіть листа"), "the rest of the text is untouched: {sent}");
    assert!(cloud_bodies(&mock).len() >= 6, "every retry and fallback was inspected");
    assert_no_pii_reached_the_cloud(&mock);
}

#[tokio::test]
async fn block_names_the_classes_never_the_values() {
    let (mock, gateway) = setup_with_policy(
        r#"
[[rules]]
name = "no-secrets"
when = { pii = ["secret"] }
privacy = "block"
"#,
    )
    .await;
    let key = "sk-proj-Abcdefghijklmnopqrstuvwxyz0123456789";
    let body = json!({"model": "mockai/gpt-mock", "messages": [{"role": "user", "content": format!("my key is {key}, email {EMAIL}")}]});
    let reply = post(&gateway, "/v1/chat/completions", &body).await;
    let error = error_of(&reply, 400);
    assert_eq!(error["code"], "pii_detected");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("secret") && message.contains("email"), "{message}");
    assert!(!reply.text.contains(key) && !reply.text.contains(EMAIL), "{}", reply.text);
    assert!(mock.received().is_empty());

    // Other PII is not a secret: the rule does not match and the request goes through.
    let body = json!({"model": "mockai/gpt-mock", "messages": [{"role": "user", "content": format!("email {EMAIL}")}]});
    assert_eq!(post(&gateway, "/v1/chat/completions", &body).await.status, 200);
}

#[tokio::test]
async fn embeddings_follow_the_same_privacy_rules() {
    let (mock, gateway) = setup_with_policy(
        r#"
[[rules]]
name = "pii-local"
when = { pii = "any" }
privacy = "local_only"
"#,
    )
    .await;
    let body = json!({"model": "mockai/embed-mock", "input": [format!("contact {EMAIL}")]});
    let error = error_of(&post(&gateway, "/v1/embeddings", &body).await, 503);
    assert_eq!(error["code"], "no_local_target");
    let body = json!({"model": "local/embed-local", "input": [format!("contact {EMAIL}")]});
    assert_eq!(post(&gateway, "/v1/embeddings", &body).await.status, 200);
    assert_no_pii_reached_the_cloud(&mock);
}
