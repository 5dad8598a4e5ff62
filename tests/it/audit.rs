//! The audit log over the real binary: a record per request and admin action, a hash
//! chain that `switchyard audit verify` checks, tampering found, and nothing lost when
//! the gateway is killed.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::gateway::{append_to_config, binary, write_config};
use crate::support::{Gateway, MASTER_KEY, MockUpstream, audit_records_until, client, error_of, get, post, send};

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]})
}

/// Runs `switchyard audit …` on the gateway's own config.
fn audit_cli(gateway: &Gateway, args: &[&str]) -> (bool, String) {
    audit_cli_with(gateway, args, &[])
}

fn audit_cli_with(gateway: &Gateway, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let output = std::process::Command::new(binary())
        .arg("audit")
        .args(args)
        .args(["--config", "config.toml"])
        .current_dir(gateway.dir())
        .env_remove("SWITCHYARD_TEST_DATA_DIR")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// The audit records once the writer has moved at least `count` into the database.
async fn wait_for_records(gateway: &Gateway, count: usize) -> Vec<Value> {
    audit_records_until(gateway, |records| records.len() >= count).await
}

/// How many of `answered` (request ids) have no audit record once the writer has had up
/// to a minute to catch up (it runs in the idle scheduling class).
async fn unrecorded(gateway: &Gateway, answered: &[String]) -> usize {
    let mut logged = std::collections::HashSet::new();
    for _ in 0..600 {
        logged.clear();
        let mut cursor = String::new();
        loop {
            let page = get(gateway, &format!("/admin/audit?limit=1000{cursor}")).await.json();
            for record in page["data"].as_array().into_iter().flatten() {
                logged.extend(record["request_id"].as_str().map(str::to_owned));
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => break,
            }
        }
        if answered.iter().all(|id| logged.contains(id)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    answered.iter().filter(|id| !logged.contains(*id)).count()
}

async fn sqlite(gateway: &Gateway, statement: &str) {
    use sqlx::ConnectOptions as _;
    use sqlx::Connection as _;
    let path = gateway.dir().join("data/switchyard.db");
    let mut connection = sqlx::sqlite::SqliteConnectOptions::new().filename(path).connect().await.unwrap();
    sqlx::query(statement).execute(&mut connection).await.unwrap();
    connection.close().await.unwrap();
}

#[tokio::test]
async fn requests_and_admin_actions_are_audited_in_a_verifiable_chain() {
    let mock = MockUpstream::start().await;
    let gateway = Gateway::start(&mock.url);
    let created = send(
        client()
            .post(format!("{}/admin/keys", gateway.url))
            .bearer_auth(MASTER_KEY)
            .body(json!({"name": "k"}).to_string()),
    )
    .await
    .json();
    let key = created["key"].as_str().unwrap().to_owned();
    let as_key = |body: Value| {
        client()
            .post(format!("{}/v1/chat/completions", gateway.url))
            .bearer_auth(&key)
            .header("x-switchyard-user", "tg-7")
            .body(body.to_string())
    };
    assert_eq!(send(as_key(chat("mockai/gpt-mock"))).await.status, 200);
    let mut streamed = chat("mockai/gpt-mock");
    streamed["stream"] = json!(true);
    assert_eq!(send(as_key(streamed)).await.status, 200);
    error_of(&send(as_key(chat("mockai/fail-429"))).await, 429);
    error_of(&post(&gateway, "/v1/chat/completions", &json!({"model": "mockai/gpt-mock"})).await, 400);

    let found = wait_for_records(&gateway, 5).await;
    assert_eq!(found.len(), 5, "{found:#?}");
    let admin = &found[0];
    assert_eq!((admin["kind"].as_str(), admin["action"].as_str()), (Some("admin"), Some("key.create")));
    let ok = &found[1];
    assert_eq!(ok["key_id"], created["id"]);
    assert_eq!(ok["end_user"], "tg-7");
    assert_eq!(ok["target"], "mockai/gpt-mock");
    assert_eq!(
        (ok["status"].as_u64(), ok["input_tokens"].as_u64(), ok["output_tokens"].as_u64()),
        (Some(200), Some(12), Some(5))
    );
    assert_eq!(ok["cost_usd"].as_f64().unwrap(), (12.0 + 10.0) / 1e6);
    assert_eq!(found[2]["outcome"], "completed", "the stream's record is written when it ends");
    assert_eq!(found[3]["status"], 429);
    assert_eq!(found[4]["status"], 400);
    let all = serde_json::to_string(&found).unwrap();
    for secret in [key.as_str(), MASTER_KEY, crate::support::UPSTREAM_KEY] {
        assert!(!all.contains(secret), "a key reached the audit log");
    }
    // Filters and cursors.
    let filtered = get(&gateway, "/admin/audit?status=429").await.json();
    assert_eq!(filtered["data"].as_array().unwrap().len(), 1);
    let page = get(&gateway, "/admin/audit?limit=2").await.json();
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let next = get(&gateway, &format!("/admin/audit?limit=2&cursor={cursor}")).await.json();
    assert_eq!(next["data"][0]["id"], found[2]["id"]);

    let (ok, output) = audit_cli(&gateway, &["verify"]);
    assert!(ok && output.contains("ok: 5 records in 1 chains"), "{output}");
    let (_, csv) = audit_cli(&gateway, &["export", "--format", "csv"]);
    assert_eq!(csv.lines().count(), 6, "{csv}");

    // Editing a row breaks its link.
    sqlite(&gateway, "UPDATE audit_log SET record = replace(record, '\"status\":429', '\"status\":200') WHERE seq = 4")
        .await;
    let (ok, output) = audit_cli(&gateway, &["verify"]);
    assert!(!ok && output.contains("record 4 was edited"), "{output}");
}

#[tokio::test]
async fn a_deleted_record_is_found() {
    let mock = MockUpstream::start().await;
    let gateway = Gateway::start(&mock.url);
    for _ in 0..3 {
        post(&gateway, "/v1/chat/completions", &chat("mockai/gpt-mock")).await;
    }
    wait_for_records(&gateway, 3).await;
    sqlite(&gateway, "DELETE FROM audit_log WHERE seq = 2").await;
    let (ok, output) = audit_cli(&gateway, &["verify"]);
    assert!(!ok && output.contains("records 1..3 are missing"), "{output}");
}

#[tokio::test]
async fn the_end_user_is_the_header_else_the_body_user_and_never_empty() {
    let mock = MockUpstream::start().await;
    let gateway = Gateway::start(&mock.url);
    let ask = |header: Option<&str>, body_user: &str| {
        let mut body = chat("mockai/gpt-mock");
        body["user"] = json!(body_user);
        let mut request = client()
            .post(format!("{}/v1/chat/completions", gateway.url))
            .bearer_auth(MASTER_KEY)
            .body(body.to_string());
        if let Some(header) = header {
            request = request.header("x-switchyard-user", header);
        }
        send(request)
    };
    for (header, body_user) in [(Some("tg-7"), "body-user"), (Some(""), "body-user"), (None, "")] {
        assert_eq!(ask(header, body_user).await.status, 200);
    }
    let found = wait_for_records(&gateway, 3).await;
    let end_users: Vec<&Value> = found.iter().map(|record| &record["end_user"]).collect();
    assert_eq!(end_users, [&json!("tg-7"), &json!("body-user"), &Value::Null], "{found:#?}");
}

/// The Linux scheduling policy of the gateway's audit writer thread: field 41 of its
/// `/proc/<pid>/task/<tid>/stat` (0 normal, 5 idle). The thread names itself and sets its
/// policy once it runs, which on a busy machine can be after the gateway listens: this
/// waits up to 10 s for `expected`, and returns what it last saw.
async fn writer_policy(gateway: &Gateway, expected: u32) -> Option<u32> {
    let mut seen = None;
    for _ in 0..100 {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", gateway.pid())).unwrap();
        for task in tasks.map_while(Result::ok) {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if name.trim() == "audit-writer" {
                let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                // Fields after the command name, which is in parentheses: state is field 3.
                let fields: Vec<&str> =
                    stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default().split_whitespace().collect();
                seen = fields.get(41 - 3).and_then(|policy| policy.parse().ok());
            }
        }
        if seen == Some(expected) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

#[tokio::test]
async fn the_audit_writer_yields_the_cpu_to_requests_unless_told_to_compete() {
    const SCHED_OTHER: u32 = 0;
    const SCHED_IDLE: u32 = 5;
    let mock = MockUpstream::start().await;
    let low = Gateway::start(&mock.url);
    assert_eq!(writer_policy(&low, SCHED_IDLE).await, Some(SCHED_IDLE), "the default writer_priority is low");

    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &mock.url);
    append_to_config(dir.path(), "[audit]\nwriter_priority = \"normal\"\n");
    let normal = Gateway::spawn(dir, &[("SWITCHYARD_MASTER_KEY", MASTER_KEY)]);
    assert_eq!(writer_policy(&normal, SCHED_OTHER).await, Some(SCHED_OTHER));

    for gateway in [&low, &normal] {
        let response = send(
            client()
                .post(format!("{}/v1/chat/completions", gateway.url))
                .bearer_auth(MASTER_KEY)
                .body(chat("mockai/gpt-mock").to_string()),
        )
        .await;
        assert_eq!(response.status, 200, "{}", response.text);
        assert_eq!(wait_for_records(gateway, 1).await.len(), 1, "either way, records reach the database");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_request_is_in_the_log_after_a_kill_9() {
    let mock = MockUpstream::start().await;
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap().to_owned();
    let env = [("SWITCHYARD_MASTER_KEY", MASTER_KEY), ("SWITCHYARD_TEST_DATA_DIR", data_dir.as_str())];
    let mut gateway = Gateway::start_with(&mock.url, &env);

    // Load from 20 clients; the gateway is killed while it runs.
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let load = (0..20).map(|_| {
        let (url, answered) = (gateway.url.clone(), answered.clone());
        tokio::spawn(async move {
            for _ in 0..200 {
                let request = client()
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(MASTER_KEY)
                    .body(chat("mockai/gpt-mock").to_string());
                let Ok(response) = request.send().await else { break };
                let id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
                if response.status() == 200 && response.bytes().await.is_ok() {
                    answered.lock().unwrap().extend(id);
                }
            }
        })
    });
    let load: Vec<_> = load.collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    gateway.kill();
    for task in load {
        let _ = task.await;
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() > 20, "the load ran ({} answers)", answered.len());

    let gateway = Gateway::start_with(&mock.url, &env);
    let missing = unrecorded(&gateway, &answered).await;
    assert_eq!(missing, 0, "{missing} of {} answered requests have no audit record", answered.len());
    let (ok, output) = audit_cli(&gateway, &["verify"]);
    assert!(ok, "{output}");
}

#[tokio::test]
async fn records_carry_attempts_tools_estimated_usage_and_the_content_each_key_asks_for() {
    let mock = MockUpstream::start().await;
    let gateway = Gateway::start(&mock.url);
    let admin = |method: reqwest::Method, path: &str, body: Value| {
        client().request(method, format!("{}{path}", gateway.url)).bearer_auth(MASTER_KEY).body(body.to_string())
    };
    let team = send(admin(reqwest::Method::PUT, "/admin/teams/support", json!({"audit_content": "redacted"}))).await;
    assert_eq!(team.status, 200, "{}", team.text);
    let key = |body: Value| {
        let request = admin(reqwest::Method::POST, "/admin/keys", body);
        async move { send(request).await.json()["key"].as_str().unwrap().to_owned() }
    };
    let full = key(json!({"name": "full", "audit_content": "full"})).await;
    let redacted = key(json!({"name": "redacted", "team": "support"})).await;
    let plain = key(json!({"name": "plain"})).await;
    let as_key = |key: &str, body: Value| {
        client().post(format!("{}/v1/chat/completions", gateway.url)).bearer_auth(key).body(body.to_string())
    };
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let mut with_tools = chat("mockai/gpt-mock");
    with_tools["tools"] = tools.clone();
    with_tools["stream"] = json!(true);
    assert_eq!(send(as_key(&full, with_tools)).await.status, 200);
    let email =
        json!({"model": "mockai/echo", "messages": [{"role": "user", "content": "Mail me at olena@example.com"}]});
    assert_eq!(send(as_key(&redacted, email)).await.status, 200);
    assert_eq!(send(as_key(&plain, chat("mockai/flaky-1"))).await.status, 200);
    assert_eq!(send(as_key(&full, chat("mockai/no-usage"))).await.status, 200);
    let mut no_usage_stream = chat("mockai/no-usage");
    no_usage_stream["stream"] = json!(true);
    assert_eq!(send(as_key(&full, no_usage_stream)).await.status, 200);

    let found = wait_for_records(&gateway, 9).await;
    let requests: Vec<&Value> = found.iter().filter(|r| r["kind"] == "chat").collect();
    assert_eq!(requests.len(), 5, "{found:#?}");

    let tool_call = requests[0];
    assert_eq!(tool_call["tools"], json!(["get_weather", "get_time"]));
    assert_eq!(tool_call["prompt"], json!([{"role": "user", "content": "Hi"}]));
    assert!(tool_call["ttfb_ms"].as_u64().is_some() && tool_call["latency_ms"].as_u64().is_some());

    let echoed = requests[1];
    assert_eq!(echoed["prompt"][0]["content"], "Mail me at [EMAIL_1]");
    assert_eq!(echoed["response"], "Mail me at [EMAIL_1]");
    assert!(!serde_json::to_string(echoed).unwrap().contains("olena@"), "{echoed}");

    let retried = requests[2];
    assert_eq!(retried["attempts"], 2, "{retried}");
    assert_eq!(retried["failed_attempts"][0]["target"], "mockai/flaky-1");
    assert!(retried["failed_attempts"][0]["error"].as_str().unwrap().contains("503"));
    assert!(retried.get("prompt").is_none() && retried.get("response").is_none(), "content is off by default");

    // No usage from the upstream: counted with the tokenizer, and marked so.
    for estimated in &requests[3..] {
        assert_eq!(estimated["usage_estimated"], true, "{estimated}");
        // "Hello from the mock!" is 5 o200k tokens; the prompt is a one-message chat.
        assert_eq!(estimated["output_tokens"], 5);
        assert!(estimated["input_tokens"].as_u64().unwrap() > 0);
        assert_eq!(estimated["response"], crate::support::mock::REPLY);
    }
    assert!(requests[0].get("usage_estimated").is_none());

    // The usage totals agree with the records to the cent (and well below it).
    let audited: f64 = requests.iter().map(|r| r["cost_usd"].as_f64().unwrap()).sum();
    let mut totals = 0.0;
    for _ in 0..100 {
        totals = get(&gateway, "/admin/usage").await.json()["data"][0]["cost_usd"].as_f64().unwrap_or(0.0);
        if (totals - audited).abs() < 1e-12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!((totals - audited).abs() < 1e-12, "usage {totals} vs audit {audited}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_mid_load_loses_no_record() {
    let Some(postgres) = crate::support::services::OwnPostgres::start() else { return };
    let mock = MockUpstream::start().await;
    let url = postgres.url();
    let env = [("SWITCHYARD_MASTER_KEY", MASTER_KEY), ("SWITCHYARD_TEST_DATABASE_URL_FOR_GATEWAY", url.as_str())];
    let gateway = Gateway::start_with(&mock.url, &env);

    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (url, answered, stop) = (gateway.url.clone(), answered.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let request = client()
                        .post(format!("{url}/v1/chat/completions"))
                        .bearer_auth(MASTER_KEY)
                        .body(chat("mockai/gpt-mock").to_string());
                    let Ok(response) = request.send().await else { continue };
                    let id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
                    if response.status() == 200 && response.bytes().await.is_ok() {
                        answered.lock().unwrap().extend(id);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    postgres.halt();
    let during = answered.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Requests go on being answered; the records wait in the journal.
    assert!(answered.lock().unwrap().len() > during + 20, "the gateway kept answering without its database");
    let metrics = get(&gateway, "/metrics").await.text;
    assert!(metrics.contains("switchyard_audit_store_down 1"), "{metrics}");
    postgres.resume();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        let _ = task.await;
    }
    let answered = answered.lock().unwrap().clone();

    let missing = unrecorded(&gateway, &answered).await;
    assert_eq!(missing, 0, "{missing} of {} answered requests have no audit record", answered.len());
    let (ok, output) = audit_cli_with(&gateway, &["verify"], &[("SWITCHYARD_TEST_DATABASE_URL_FOR_GATEWAY", &url)]);
    assert!(ok && output.contains(&format!("ok: {} records", answered.len())), "{output}");
}
