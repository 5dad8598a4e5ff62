//! Telemetry over the real binary: `/metrics` counts what happened with bounded labels,
//! traces reach an OTLP collector (an in-process one here) with the GenAI attributes
//! and the client's trace continued upstream, and no key ever reaches a log or the
//! audit log.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use crate::support::{Gateway, MASTER_KEY, MockUpstream, UPSTREAM_KEY, client, get, send};

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]})
}

async fn create_key(gateway: &Gateway, body: Value) -> (String, String) {
    let created =
        send(client().post(format!("{}/admin/keys", gateway.url)).bearer_auth(MASTER_KEY).body(body.to_string()))
            .await
            .json();
    (created["id"].as_str().unwrap().to_owned(), created["key"].as_str().unwrap().to_owned())
}

fn as_key(gateway: &Gateway, key: &str, body: &Value) -> reqwest::RequestBuilder {
    client().post(format!("{}/v1/chat/completions", gateway.url)).bearer_auth(key).body(body.to_string())
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_tokens_and_failures_with_bounded_labels() {
    let mock = MockUpstream::start().await;
    let gateway = Gateway::start(&mock.url);
    let (key_id, key) = create_key(&gateway, json!({"name": "bot"})).await;

    // Scraping needs the master key: metrics name keys and their spend.
    let anonymous = send(client().get(format!("{}/metrics", gateway.url))).await;
    assert_eq!(anonymous.status, 401);
    let with_key = send(client().get(format!("{}/metrics", gateway.url)).bearer_auth(&key)).await;
    assert_eq!(with_key.status, 403);

    let bot_user = "telegram-user-918273";
    let request = |body: Value| as_key(&gateway, &key, &body).header("x-switchyard-user", bot_user);
    assert_eq!(send(request(chat("mockai/gpt-mock"))).await.status, 200);
    let mut streamed = chat("mockai/gpt-mock");
    streamed["stream"] = json!(true);
    assert_eq!(send(request(streamed)).await.status, 200);
    assert_eq!(send(request(chat("mockai/made-up-model-7f3a"))).await.status, 200);
    assert_eq!(send(request(chat("mockai/fail-500"))).await.status, 500);
    assert_eq!(send(as_key(&gateway, "sk-sy-not-a-real-key-000000000000000000000", &chat("x"))).await.status, 401);

    let scrape = get(&gateway, "/metrics").await;
    assert_eq!(scrape.status, 200);
    assert!(scrape.header("content-type").unwrap().starts_with("application/openmetrics-text"));
    let text = &scrape.text;
    let tokens = |direction: &str| {
        sample(
            text,
            &format!(
                "switchyard_llm_tokens_total{{provider=\"mockai\",model=\"gpt-mock\",key=\"{key_id}\",direction=\"{direction}\"}}"
            ),
        )
    };
    assert_eq!(tokens("input"), Some(24.0), "{text}");
    assert_eq!(tokens("output"), Some(10.0));
    let cost = sample(
        text,
        &format!("switchyard_llm_cost_usd_total{{provider=\"mockai\",model=\"gpt-mock\",key=\"{key_id}\"}}"),
    );
    assert!((cost.unwrap() - 2.0 * (12.0 + 10.0) / 1e6).abs() < 1e-12);
    let completed = "switchyard_llm_requests_total{provider=\"mockai\",model=\"gpt-mock\",outcome=\"completed\"}";
    assert_eq!(sample(text, completed), Some(2.0));
    let ttft = "switchyard_llm_time_to_first_token_seconds_count{provider=\"mockai\",model=\"gpt-mock\"}";
    assert_eq!(sample(text, ttft), Some(1.0), "only the stream has a time to first token");
    let chat_ok = "switchyard_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"}";
    assert_eq!(sample(text, chat_ok), Some(3.0));
    let errors = "switchyard_upstream_errors_total{provider=\"mockai\",model=\"unlisted\",kind=\"server_error\"}";
    assert!(sample(text, errors).is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(sample(text, "switchyard_auth_failures_total"), Some(1.0));
    assert!(text.contains("switchyard_circuit_state{provider=\"mockai\",model=\"gpt-mock\"} 0"));
    assert!(text.contains("switchyard_audit_pending_bytes "));
    // Bounded cardinality: models no catalog lists and end users never become labels.
    assert!(!text.contains("made-up-model") && !text.contains(bot_user), "{text}");
    assert!(text.contains("model=\"unlisted\""));
}

/// An OTLP/HTTP collector in the test process: keeps every export it receives.
async fn collector() -> (String, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(received): State<Arc<Mutex<Vec<Value>>>>, body: Bytes| async move {
                received.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                axum::Json(json!({}))
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// Every span exported so far.
fn spans(received: &Mutex<Vec<Value>>) -> Vec<Value> {
    let exports = received.lock().unwrap();
    let mut spans = Vec::new();
    for export in exports.iter() {
        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
            let service = resource["resource"]["attributes"]
                .as_array()
                .and_then(|a| a.iter().find(|a| a["key"] == "service.name"))
                .map(|a| a["value"]["stringValue"].clone());
            assert_eq!(service, Some(json!("switchyard")));
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                spans.extend(scope["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    spans
}

fn attribute(span: &Value, key: &str) -> Value {
    let found = span["attributes"].as_array().and_then(|a| a.iter().find(|a| a["key"] == key));
    let Some(value) = found.map(|a| &a["value"]) else { return Value::Null };
    for kind in ["stringValue", "intValue", "doubleValue", "boolValue"] {
        if let Some(v) = value.get(kind) {
            return v.clone();
        }
    }
    value["arrayValue"]["values"]
        .as_array()
        .map_or(Value::Null, |values| Value::Array(values.iter().map(|v| v["stringValue"].clone()).collect()))
}

#[tokio::test]
async fn traces_reach_an_otlp_collector_and_continue_the_clients_trace_upstream() {
    let mock = MockUpstream::start().await;
    let (collector_url, received) = collector().await;
    let gateway = Gateway::start_with(
        &mock.url,
        &[("SWITCHYARD_MASTER_KEY", MASTER_KEY), ("SWITCHYARD_TEST_OTLP_ENDPOINT", collector_url.as_str())],
    );
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let mut streamed = chat("mockai/gpt-mock");
    streamed["stream"] = json!(true);
    let reply = send(
        client()
            .post(format!("{}/v1/chat/completions", gateway.url))
            .bearer_auth(MASTER_KEY)
            .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
            .body(streamed.to_string()),
    )
    .await;
    assert_eq!(reply.status, 200);
    reply.stream_chunks();
    // The upstream call carries the trace, with the gateway's attempt span as parent.
    let upstream = mock.last().headers.get("traceparent").unwrap().to_str().unwrap().to_owned();
    let parts: Vec<&str> = upstream.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", client_trace, "01"), "{upstream}");
    assert_ne!(parts[2], client_span);
    // A failed call: its attempt span says why.
    let failed = send(
        client()
            .post(format!("{}/v1/chat/completions", gateway.url))
            .bearer_auth(MASTER_KEY)
            .body(chat("mockai/fail-400").to_string()),
    )
    .await;
    assert_eq!(failed.status, 400);

    let mut all = Vec::new();
    for _ in 0..50 {
        all = spans(&received);
        if all.iter().filter(|s| s["kind"] == 2).count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ours: Vec<&Value> = all.iter().filter(|s| s["traceId"] == client_trace).collect();
    let root = ours.iter().find(|s| s["kind"] == 2).expect("a server span for the request");
    assert_eq!(root["parentSpanId"], client_span);
    assert_eq!(root["name"], "chat mockai/gpt-mock");
    assert_eq!(attribute(root, "gen_ai.operation.name"), "chat");
    assert_eq!(attribute(root, "gen_ai.request.model"), "mockai/gpt-mock");
    assert_eq!(attribute(root, "gen_ai.response.model"), "gpt-mock");
    assert_eq!(attribute(root, "gen_ai.provider.name"), "mockai");
    assert_eq!(attribute(root, "gen_ai.usage.input_tokens"), "12");
    assert_eq!(attribute(root, "gen_ai.usage.output_tokens"), "5");
    assert_eq!(attribute(root, "gen_ai.response.finish_reasons"), json!(["stop"]));
    for phase in ["authenticate", "plan", "admit", "dispatch", "settle"] {
        let span = ours.iter().find(|s| s["name"] == phase).unwrap_or_else(|| panic!("no {phase} span: {ours:#?}"));
        assert_eq!(span["parentSpanId"], root["spanId"], "{phase}");
    }
    let dispatch = ours.iter().find(|s| s["name"] == "dispatch").unwrap();
    let attempt = ours.iter().find(|s| s["kind"] == 3).expect("a client span per upstream attempt");
    assert_eq!(attempt["parentSpanId"], dispatch["spanId"]);
    assert_eq!(attempt["spanId"], parts[2], "the upstream's parent is the attempt span");
    assert_eq!(attribute(attempt, "gen_ai.request.model"), "gpt-mock");
    let start: u64 = root["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
    let end: u64 = root["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(end > start);

    let failed_root = all.iter().find(|s| s["kind"] == 2 && s["traceId"] != client_trace).unwrap();
    assert_eq!(failed_root["status"]["code"], 2);
    assert_eq!(attribute(failed_root, "http.response.status_code"), "400");
    let failed_attempt = all.iter().find(|s| s["kind"] == 3 && s["traceId"] == failed_root["traceId"]).unwrap();
    assert_eq!(failed_attempt["status"]["code"], 2);
    assert_eq!(attribute(failed_attempt, "error.type"), "client_error");
}

#[tokio::test]
async fn without_tracing_the_clients_traceparent_still_reaches_the_upstream() {
    let mock = MockUpstream::start().await;
    let gateway = Gateway::start(&mock.url);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = send(
        client()
            .post(format!("{}/v1/chat/completions", gateway.url))
            .bearer_auth(MASTER_KEY)
            .header("traceparent", traceparent)
            .body(chat("mockai/gpt-mock").to_string()),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(mock.last().headers.get("traceparent").unwrap(), traceparent);
}

#[tokio::test]
async fn no_key_reaches_the_logs_or_the_audit_log() {
    let mock = MockUpstream::start().await;
    let env = [("SWITCHYARD_MASTER_KEY", MASTER_KEY), ("RUST_LOG", "debug")];
    let mut gateway = Gateway::start_with(&mock.url, &env);
    let (key_id, key) = create_key(&gateway, json!({"name": "leaky", "limits": {"rpm": 2}})).await;
    let rotated =
        send(client().post(format!("{}/admin/keys/{key_id}/rotate", gateway.url)).bearer_auth(MASTER_KEY)).await.json();
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    let mut streamed = chat("mockai/gpt-mock");
    streamed["stream"] = json!(true);
    for body in [chat("mockai/gpt-mock"), streamed, chat("mockai/fail-401"), chat("mockai/fail-500")] {
        send(as_key(&gateway, &new_key, &body)).await;
        send(as_key(&gateway, MASTER_KEY, &body)).await;
    }
    // Refused keys: the old one, the master key misspelled, the new one in the body.
    send(as_key(&gateway, &key, &chat("mockai/gpt-mock"))).await;
    send(as_key(&gateway, &format!("{MASTER_KEY}x"), &chat("mockai/gpt-mock"))).await;
    send(as_key(&gateway, "sk-sy-wrong", &json!({"model": new_key, "messages": "not a list"}))).await;
    send(client().get(format!("{}/admin/keys", gateway.url)).bearer_auth(&new_key)).await;
    // Wait for the writer, then stop: everything is flushed.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(gateway.terminate().success());

    let logs = gateway.logs();
    assert!(logs.contains("request_id"), "debug logs carry request ids: {logs}");
    let mut stored = String::new();
    for entry in std::fs::read_dir(gateway.dir().join("data/audit")).unwrap() {
        stored.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default());
    }
    // The database files themselves, byte for byte (SQLite stores text as is).
    for entry in std::fs::read_dir(gateway.dir().join("data")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            stored.push_str(&String::from_utf8_lossy(&std::fs::read(path).unwrap()));
        }
    }
    assert!(stored.contains("key.rotate"), "the audit log was written");
    for (name, secret) in
        [("master", MASTER_KEY), ("virtual", key.as_str()), ("rotated", new_key.as_str()), ("provider", UPSTREAM_KEY)]
    {
        assert!(!logs.contains(secret), "the {name} key is in the logs");
        assert!(!stored.contains(secret), "the {name} key is in the audit log or database");
    }
}
