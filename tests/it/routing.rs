//! Policy routing over the real binary: aliases and strategies, retries and fallbacks
//! against failing, slow and 429-ing mock upstreams, circuit breakers, concurrency
//! limits, rules, explanations and hot reload.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Gateway, MASTER_KEY, MockUpstream, client, error_of, get, post, send, setup_with_policy};

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]})
}

/// The chat requests the mock received, as the model names they asked for.
fn chat_models(mock: &MockUpstream) -> Vec<String> {
    mock.received()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions" || r.path == "/api/chat")
        .map(|r| r.body["model"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn aliases_are_listed_and_route_by_their_strategy() {
    let (_mock, gateway) = setup_with_policy(
        r#"
[aliases.thrifty]
targets = ["mockai/gpt-mock", "mockai/shared-model"]
strategy = "cheapest"

[aliases.chain]
targets = ["mockai/gpt-mock", "local/llama-mock"]
"#,
    )
    .await;
    let models = get(&gateway, "/v1/models").await.json();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"thrifty") && ids.contains(&"chain"), "{ids:?}");

    let reply = post(&gateway, "/v1/chat/completions", &chat("thrifty")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-switchyard-route"), Some("rule=default; target=mockai/shared-model; attempts=1"));
    let reply = post(&gateway, "/v1/chat/completions", &chat("chain")).await;
    assert_eq!(reply.header("x-switchyard-route"), Some("rule=default; target=mockai/gpt-mock; attempts=1"));
    // gpt-mock costs $1/$2 per 1M tokens: a small, positive estimate.
    let cost: f64 = reply.header("x-switchyard-cost-estimate").unwrap().parse().unwrap();
    assert!(cost > 0.0 && cost < 0.01, "{cost}");
}

#[tokio::test]
async fn passing_failures_are_retried_with_backoff_then_fall_back_in_order() {
    let (mock, gateway) = setup_with_policy(
        r#"
[aliases.chain]
targets = ["mockai/flaky-9", "mockai/fail-500", "mockai/gpt-mock"]

[default]
retries = 1
backoff_ms = 200
"#,
    )
    .await;
    let reply = post(&gateway, "/v1/chat/completions", &chat("chain")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-switchyard-route"), Some("rule=default; target=mockai/gpt-mock; attempts=5"));
    assert_eq!(chat_models(&mock), ["flaky-9", "flaky-9", "fail-500", "fail-500", "gpt-mock"]);
    // Full jitter keeps the first wait within [backoff/2, backoff].
    let received = mock.received();
    let waited = received[1].at - received[0].at;
    assert!(waited >= Duration::from_millis(100), "retried after {waited:?}");
}

#[tokio::test]
async fn retry_after_is_honoured_and_4xx_is_not_retried() {
    let (mock, gateway) = setup_with_policy(
        r#"
[aliases.limited]
targets = ["mockai/flaky429-1"]

[aliases.refused]
targets = ["mockai/fail-400", "mockai/gpt-mock"]

[default]
retries = 2
backoff_ms = 10
"#,
    )
    .await;
    let reply = post(&gateway, "/v1/chat/completions", &chat("limited")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let received = mock.received();
    assert_eq!(received.len(), 2);
    let waited = received[1].at - received[0].at;
    assert!(waited >= Duration::from_millis(300), "Retry-After 300 ms, retried after {waited:?}");

    let reply = post(&gateway, "/v1/chat/completions", &chat("refused")).await;
    error_of(&reply, 400);
    assert_eq!(reply.header("x-switchyard-route"), Some("rule=default; target=mockai/fail-400; attempts=1"));
    assert_eq!(chat_models(&mock)[2..], ["fail-400"], "a 400 is neither retried nor sent elsewhere");

    // A 429 whose Retry-After is longer than max_backoff moves on at once.
    let reply = post(&gateway, "/v1/chat/completions", &chat("mockai/fail-429")).await;
    error_of(&reply, 429);
    assert_eq!(reply.header("x-switchyard-route"), Some("rule=default; target=mockai/fail-429; attempts=1"));
    assert_eq!(reply.header("retry-after"), Some("7"));
}

#[tokio::test]
async fn a_stream_falls_back_before_its_first_content_and_never_after() {
    let (mock, gateway) = setup_with_policy(
        r#"
[aliases.early]
targets = ["mockai/cut-before-content", "mockai/gpt-mock"]

[aliases.late]
targets = ["mockai/cut-mid-stream", "mockai/gpt-mock"]

[default]
retries = 0
"#,
    )
    .await;
    let stream = |model: &str| json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "Hi"}]});
    let reply = post(&gateway, "/v1/chat/completions", &stream("early")).await;
    assert_eq!(reply.status, 200);
    let text: String =
        reply.stream_chunks().iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, crate::support::mock::REPLY, "one clean answer, from the fallback");
    assert_eq!(reply.header("x-switchyard-route"), Some("rule=default; target=mockai/gpt-mock; attempts=2"));

    let reply = post(&gateway, "/v1/chat/completions", &stream("late")).await;
    assert_eq!(reply.status, 200);
    let data = reply.sse_data();
    assert!(data.last().unwrap().contains("\"error\""), "the stream ends with an error event: {data:?}");
    assert!(!data.iter().any(|d| d == "[DONE]"));
    assert_eq!(
        chat_models(&mock),
        ["cut-before-content", "gpt-mock", "cut-mid-stream"],
        "no retry once content was sent"
    );
}

#[tokio::test]
async fn slow_first_bytes_time_out_and_fall_back() {
    let (mock, gateway) = setup_with_policy(
        r#"
[[rules]]
name = "impatient"
when = { model = ["hurry"] }
targets = ["mockai/delay-3000", "mockai/gpt-mock"]
first_byte_timeout_ms = 300
retries = 0
"#,
    )
    .await;
    let reply = post(&gateway, "/v1/chat/completions", &chat("hurry")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("x-switchyard-route"), Some("rule=impatient; target=mockai/gpt-mock; attempts=2"));
    assert_eq!(chat_models(&mock), ["delay-3000", "gpt-mock"]);
}

#[tokio::test]
async fn an_open_circuit_is_skipped_in_planning() {
    let (mock, gateway) = setup_with_policy(
        r#"
[aliases.chain]
targets = ["mockai/fail-500", "mockai/gpt-mock"]

[default]
retries = 0

[circuit_breaker]
consecutive_failures = 2
cooldown_ms = 60000
"#,
    )
    .await;
    for _ in 0..3 {
        let reply = post(&gateway, "/v1/chat/completions", &chat("chain")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
    }
    assert_eq!(chat_models(&mock), ["fail-500", "gpt-mock", "fail-500", "gpt-mock", "gpt-mock"]);
    let trace = post(&gateway, "/admin/route/explain", &chat("chain")).await.json();
    assert_eq!(trace["candidates"][0]["circuit"], "open");
    assert_eq!(trace["plan"], json!(["mockai/gpt-mock"]));
}

#[tokio::test]
async fn a_full_concurrency_queue_spills_to_the_next_target() {
    let mock = MockUpstream::start().await;
    let provider = format!(
        "id = \"narrow\"\nwire = \"openai\"\nbase_url = \"{}/v1\"\nallow_unlisted_models = true\nmax_concurrency = 1\nmax_queue = 0\n",
        mock.url
    );
    let policy = "[aliases.spill]\ntargets = [\"narrow/delay-600\", \"mockai/gpt-mock\"]\n".to_owned();
    let gateway =
        Gateway::start_with_files(&mock.url, &[("providers/narrow.toml", provider), ("policies/test.toml", policy)]);
    let body = chat("spill");
    let (first, second) = tokio::join!(post(&gateway, "/v1/chat/completions", &body), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        post(&gateway, "/v1/chat/completions", &body).await
    });
    assert_eq!(first.header("x-switchyard-route"), Some("rule=default; target=narrow/delay-600; attempts=1"));
    assert_eq!(second.header("x-switchyard-route"), Some("rule=default; target=mockai/gpt-mock; attempts=1"));
}

#[tokio::test]
async fn rules_match_on_user_tags_and_message_and_act() {
    let (mock, gateway) = setup_with_policy(
        r#"
[[rules]]
name = "no-batch-jobs"
priority = 10
when = { tags = ["batch"] }
reject = { status = 403, message = "batch jobs go through the batch API" }

[[rules]]
name = "short-answers-for-bots"
when = { user = ["tg-*"] }
max_tokens = 50

[[rules]]
name = "translations-local"
when = { last_user_message = "(?i)^translate" }
targets = ["local/llama-mock"]
"#,
    )
    .await;
    let request = client()
        .post(format!("{}/v1/chat/completions", gateway.url))
        .bearer_auth(MASTER_KEY)
        .header("x-switchyard-tags", "nightly, batch")
        .body(chat("mockai/gpt-mock").to_string());
    let error = error_of(&send(request).await, 403);
    assert_eq!(error["message"], "batch jobs go through the batch API");
    assert_eq!(error["code"], "rejected_by_policy");

    let mut body = chat("mockai/gpt-mock");
    body["user"] = json!("tg-12345");
    body["max_completion_tokens"] = json!(400);
    let reply = post(&gateway, "/v1/chat/completions", &body).await;
    assert_eq!(
        reply.header("x-switchyard-route"),
        Some("rule=short-answers-for-bots; target=mockai/gpt-mock; attempts=1")
    );
    assert_eq!(mock.last().body["max_completion_tokens"], 50);

    let body = json!({"model": "mockai/gpt-mock", "messages": [{"role": "user", "content": "Translate: добрий день"}]});
    let reply = post(&gateway, "/v1/chat/completions", &body).await;
    assert_eq!(
        reply.header("x-switchyard-route"),
        Some("rule=translations-local; target=local/llama-mock; attempts=1")
    );
    assert_eq!(mock.last().path, "/api/chat");
}

#[tokio::test]
async fn explain_traces_rules_candidates_and_plan_without_calling_upstream() {
    let (mock, gateway) = setup_with_policy(
        r#"
[aliases.auto]
targets = ["mockai/gpt-mock", "mockai/shared-model", "local/llama-mock", "nokey/lonely-model"]
strategy = "cheapest"

[[rules]]
name = "tools-need-capable-models"
when = { needs = ["tools"] }
targets = ["auto"]
"#,
    )
    .await;
    let mut body = chat("auto");
    body["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    let trace = post(&gateway, "/admin/route/explain", &body).await.json();
    assert_eq!(trace["matched_rule"], "tools-need-capable-models");
    assert_eq!(trace["rules"][0]["matched"], true);
    assert_eq!(trace["strategy"], "cheapest");
    let candidates = trace["candidates"].as_array().unwrap();
    let by_name = |name: &str| candidates.iter().find(|c| c["target"] == name).unwrap().clone();
    assert_eq!(by_name("mockai/shared-model")["capabilities_fit"], false, "shared-model has no tools");
    assert!(
        by_name("nokey/lonely-model")["skipped_because"].as_str().unwrap().contains("SWITCHYARD_TEST_NEVER_SET_KEY")
    );
    assert_eq!(trace["plan"], json!(["local/llama-mock", "mockai/gpt-mock"]), "free local model first");
    assert!(mock.received().is_empty(), "explaining never calls an upstream");

    let unauthenticated =
        send(client().post(format!("{}/admin/route/explain", gateway.url)).body(body.to_string())).await;
    error_of(&unauthenticated, 401);
}

#[tokio::test]
async fn policies_hot_reload_without_failing_requests_and_refuse_invalid_edits() {
    let (_mock, gateway) = setup_with_policy("[aliases.live]\ntargets = [\"mockai/gpt-mock\"]\n").await;
    let file = gateway.policies_dir().join("test.toml");

    // Load runs while the file is rewritten several times.
    let load = async {
        let mut statuses = Vec::new();
        for _ in 0..60 {
            statuses.push(post(&gateway, "/v1/chat/completions", &chat("live")).await.status);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        statuses
    };
    let edits = async {
        for target in ["local/llama-mock", "mockai/shared-model", "local/llama-mock"] {
            tokio::time::sleep(Duration::from_millis(150)).await;
            std::fs::write(&file, format!("[aliases.live]\ntargets = [\"{target}\"]\n")).unwrap();
        }
    };
    let (statuses, ()) = tokio::join!(load, edits);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reply = post(&gateway, "/v1/chat/completions", &chat("live")).await;
    assert_eq!(reply.header("x-switchyard-route"), Some("rule=default; target=local/llama-mock; attempts=1"));

    // A broken edit on disk: logged with its location, the old policy keeps serving.
    std::fs::write(&file, "[aliases.live]\ntargets = [\"nowhere/model\"]\n").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reply = post(&gateway, "/v1/chat/completions", &chat("live")).await;
    assert_eq!(reply.header("x-switchyard-route"), Some("rule=default; target=local/llama-mock; attempts=1"));
    assert!(gateway.logs().contains("test.toml:2:12: no provider is called \"nowhere\""), "{}", gateway.logs());

    // Through the admin API: invalid is refused with its location, valid is applied.
    let put = |text: &str| {
        client().put(format!("{}/admin/policies/test", gateway.url)).bearer_auth(MASTER_KEY).body(text.to_owned())
    };
    let error =
        error_of(&send(put("[aliases.live]\ntargets = [\"mockai/gpt-mock\"]\nstrategy = \"random\"\n")).await, 400);
    assert!(error["message"].as_str().unwrap().contains("test.toml:3:12"), "{error}");
    let reply = send(put("[aliases.live]\ntargets = [\"mockai/shared-model\"]\n")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let reply = post(&gateway, "/v1/chat/completions", &chat("live")).await;
    assert_eq!(reply.header("x-switchyard-route"), Some("rule=default; target=mockai/shared-model; attempts=1"));
    assert!(std::fs::read_to_string(&file).unwrap().contains("shared-model"), "written to disk");

    let view = get(&gateway, "/admin/policies").await.json();
    let history = view["history"].as_array().unwrap();
    assert_eq!(history.last().unwrap()["by"], "master key");
    assert_eq!(view["version"], history.last().unwrap()["version"]);
    assert!(history.iter().any(|change| change["by"] == "file edit"));
}
