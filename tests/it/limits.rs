//! Virtual keys, rate limits and budgets over the real binary: SQLite and a real
//! PostgreSQL for storage, in-process counters and a real Redis shared by two gateways.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::gateway::binary;
use crate::support::services;
use crate::support::{Gateway, MASTER_KEY, MockUpstream, client, error_of, send};

/// A gateway on the mock with these extra environment variables (storage, Redis, …).
fn start(mock: &MockUpstream, env: &[(&str, &str)]) -> Gateway {
    let mut all = vec![("SWITCHYARD_MASTER_KEY", MASTER_KEY)];
    all.extend_from_slice(env);
    Gateway::start_with(&mock.url, &all)
}

async fn create_key(gateway: &Gateway, definition: Value) -> (String, String) {
    let reply =
        send(client().post(format!("{}/admin/keys", gateway.url)).bearer_auth(MASTER_KEY).body(definition.to_string()))
            .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    let body = reply.json();
    (body["id"].as_str().unwrap().to_owned(), body["key"].as_str().unwrap().to_owned())
}

async fn chat_as(gateway: &Gateway, key: &str, body: &Value) -> crate::support::Reply {
    send(client().post(format!("{}/v1/chat/completions", gateway.url)).bearer_auth(key).body(body.to_string())).await
}

async fn chat_as_user(gateway: &Gateway, key: &str, user: &str) -> crate::support::Reply {
    let request = client()
        .post(format!("{}/v1/chat/completions", gateway.url))
        .bearer_auth(key)
        .header("x-switchyard-user", user)
        .body(chat("mockai/gpt-mock").to_string());
    send(request).await
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]})
}

/// A request whose reservation (prompt estimate + max_tokens = 21 tokens) covers the mock's
/// real usage (12 + 5 = 17 tokens).
fn budget_chat() -> Value {
    json!({"model": "mockai/gpt-mock", "max_tokens": 5,
           "messages": [{"role": "user", "content": "Please say hello to me, in a short sentence!"}]})
}

#[tokio::test]
async fn keys_authenticate_are_scoped_and_revocable() {
    let mock = MockUpstream::start().await;
    let gateway = start(&mock, &[]);
    let (id, key) =
        create_key(&gateway, json!({"name": "support-bot", "team": "support", "models": ["mockai/*"]})).await;
    assert!(key.starts_with("sk-sy-"));

    assert_eq!(chat_as(&gateway, &key, &chat("mockai/gpt-mock")).await.status, 200);
    let error = error_of(&chat_as(&gateway, &key, &chat("local/llama-mock")).await, 403);
    assert!(error["message"].as_str().unwrap().contains("may not use model"), "{error}");
    let listed = send(client().get(format!("{}/v1/models", gateway.url)).bearer_auth(&key)).await.json();
    assert!(listed["data"].as_array().unwrap().iter().all(|m| m["id"].as_str().unwrap().starts_with("mockai/")));
    // Virtual keys are not admins.
    error_of(&send(client().get(format!("{}/admin/keys", gateway.url)).bearer_auth(&key)).await, 403);

    // The list never shows a secret.
    let list = send(client().get(format!("{}/admin/keys", gateway.url)).bearer_auth(MASTER_KEY)).await;
    assert!(list.text.contains(&id) && !list.text.contains(&key), "{}", list.text);

    let rotated = send(client().post(format!("{}/admin/keys/{id}/rotate", gateway.url)).bearer_auth(MASTER_KEY)).await;
    let new_key = rotated.json()["key"].as_str().unwrap().to_owned();
    error_of(&chat_as(&gateway, &key, &chat("mockai/gpt-mock")).await, 401);
    assert_eq!(chat_as(&gateway, &new_key, &chat("mockai/gpt-mock")).await.status, 200);

    send(client().post(format!("{}/admin/keys/{id}/revoke", gateway.url)).bearer_auth(MASTER_KEY)).await;
    let error = error_of(&chat_as(&gateway, &new_key, &chat("mockai/gpt-mock")).await, 401);
    assert_eq!(error["message"], "this API key has been revoked");
    assert!(!gateway.logs().contains(&new_key), "a key reached the logs");
}

#[tokio::test]
async fn rate_limits_answer_429_with_openai_headers_per_key_and_end_user() {
    let mock = MockUpstream::start().await;
    let gateway = start(&mock, &[]);
    let (_, key) = create_key(&gateway, json!({"name": "k", "limits": {"rpm": 3}})).await;
    for remaining in ["2", "1", "0"] {
        let reply = chat_as(&gateway, &key, &chat("mockai/gpt-mock")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.header("x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(reply.header("x-ratelimit-remaining-requests"), Some(remaining));
        assert!(reply.header("x-ratelimit-reset-requests").unwrap().ends_with('s'));
    }
    let reply = chat_as(&gateway, &key, &chat("mockai/gpt-mock")).await;
    let error = error_of(&reply, 429);
    assert_eq!(error["code"], "rate_limit_exceeded");
    let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), Some("0"));

    // Per end user: each user of a bot's key has its own allowance.
    let (_, bot) = create_key(&gateway, json!({"name": "bot", "end_user_limits": {"rpm": 2}})).await;
    for _ in 0..2 {
        assert_eq!(chat_as_user(&gateway, &bot, "tg-1").await.status, 200);
    }
    error_of(&chat_as_user(&gateway, &bot, "tg-1").await, 429);
    assert_eq!(chat_as_user(&gateway, &bot, "tg-2").await.status, 200, "another user is not affected");
}

/// 50 requests at once against a budget that fits 10 real requests.
async fn concurrent_budget(gateway: &Gateway) {
    let (id, key) = create_key(
        gateway,
        json!({"name": "budgeted", "budgets": [{"amount": 170, "unit": "tokens", "period": "day", "timezone": "Europe/Kyiv"}]}),
    )
    .await;
    let body = budget_chat();
    let replies = futures_util::future::join_all((0..50).map(|_| chat_as(gateway, &key, &body))).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    for reply in replies.iter().filter(|r| r.status != 200) {
        let error = error_of(reply, 429);
        assert_eq!(error["code"], "insufficient_quota");
        assert!(error["message"].as_str().unwrap().contains("resets at"), "{error}");
    }
    // Each request reserves 21 tokens and really uses 17: the reservation can never let
    // the real spend pass the budget, so at most 170 / 17 = 10 succeed.
    assert!((1..=10).contains(&ok), "{ok} succeeded");

    // Spend recorded = the sum of real usage (settlement is asynchronous: give it a moment).
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let usage =
        send(client().get(format!("{}/admin/usage?key={id}", gateway.url)).bearer_auth(MASTER_KEY)).await.json();
    let total = &usage["data"][0];
    assert_eq!(total["requests"], ok);
    assert_eq!(total["input_tokens"].as_u64().unwrap() + total["output_tokens"].as_u64().unwrap(), 17 * ok as u64);
    let own = send(client().get(format!("{}/v1/usage", gateway.url)).bearer_auth(&key)).await.json();
    assert_eq!(own["budgets"][0]["used"], json!(17.0 * ok as f64), "{own}");
}

#[tokio::test]
async fn concurrent_requests_cannot_overspend_a_budget_in_process() {
    let mock = MockUpstream::start().await;
    let gateway = start(&mock, &[]);
    concurrent_budget(&gateway).await;
}

#[tokio::test]
async fn concurrent_requests_cannot_overspend_a_budget_in_redis_and_postgres() {
    let (Some((redis, prefix)), Some(database)) = (services::redis(), services::postgres()) else { return };
    let mock = MockUpstream::start().await;
    let gateway = start(
        &mock,
        &[
            ("SWITCHYARD_TEST_REDIS_URL_FOR_GATEWAY", &redis),
            ("SWITCHYARD_TEST_REDIS_PREFIX", &prefix),
            ("SWITCHYARD_TEST_DATABASE_URL_FOR_GATEWAY", &database),
        ],
    );
    concurrent_budget(&gateway).await;
}

#[tokio::test]
async fn two_gateways_sharing_redis_enforce_one_limit() {
    let (Some((redis, prefix)), Some(database)) = (services::redis(), services::postgres()) else { return };
    let mock = MockUpstream::start().await;
    let env = [
        ("SWITCHYARD_TEST_REDIS_URL_FOR_GATEWAY", redis.as_str()),
        ("SWITCHYARD_TEST_REDIS_PREFIX", prefix.as_str()),
        ("SWITCHYARD_TEST_DATABASE_URL_FOR_GATEWAY", database.as_str()),
    ];
    let first = start(&mock, &env);
    let second = start(&mock, &env);
    let (_, key) = create_key(&first, json!({"name": "shared", "limits": {"rpm": 10}})).await;
    let mut ok = 0;
    for _ in 0..7 {
        for gateway in [&first, &second] {
            let reply = chat_as(gateway, &key, &chat("mockai/gpt-mock")).await;
            match reply.status {
                200 => ok += 1,
                _ => assert_eq!(error_of(&reply, 429)["code"], "rate_limit_exceeded"),
            }
        }
    }
    assert_eq!(ok, 10, "one limit of 10 across both instances, not 10 each");
}

/// Spends a 3-request token budget, restarts the gateway on the same storage, and checks
/// the budget and the usage are still there.
async fn budget_survives_restart(env: &[(&str, &str)]) {
    let mock = MockUpstream::start().await;
    let mut gateway = start(&mock, env);
    let (id, key) = create_key(
        &gateway,
        json!({"name": "durable", "budgets": [{"amount": 60, "unit": "tokens", "period": "month"}]}),
    )
    .await;
    for _ in 0..3 {
        assert_eq!(chat_as(&gateway, &key, &budget_chat()).await.status, 200);
    }
    error_of(&chat_as(&gateway, &key, &budget_chat()).await, 429);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert!(gateway.terminate().success());

    let gateway = start(&mock, env);
    let error = error_of(&chat_as(&gateway, &key, &budget_chat()).await, 429);
    assert_eq!(error["code"], "insufficient_quota", "the spent budget was restored from the usage table");
    let usage = send(client().get(format!("{}/admin/usage?group_by=key", gateway.url)).bearer_auth(MASTER_KEY)).await;
    let data = usage.json()["data"].clone();
    let row = data.as_array().unwrap().iter().find(|row| row["group"] == id.as_str()).expect("the key's usage").clone();
    assert_eq!(row["requests"], 3);
    assert_eq!(row["cost_usd"].as_f64().unwrap(), 3.0 * (12.0 * 1.0 + 5.0 * 2.0) / 1_000_000.0);
}

#[tokio::test]
async fn usage_and_budgets_survive_a_restart_on_sqlite() {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().to_str().unwrap().to_owned();
    budget_survives_restart(&[("SWITCHYARD_TEST_DATA_DIR", &path)]).await;
    assert!(Path::new(&path).join("switchyard.db").exists());
}

#[tokio::test]
async fn usage_and_budgets_survive_a_restart_on_postgres() {
    let Some(database) = services::postgres() else { return };
    budget_survives_restart(&[("SWITCHYARD_TEST_DATABASE_URL_FOR_GATEWAY", &database)]).await;
}

#[tokio::test]
async fn unreachable_redis_fails_open_or_closed_as_configured() {
    let mock = MockUpstream::start().await;
    let nowhere = "redis://127.0.0.1:9/";
    for (mode, expected) in [("fail_closed", 503), ("fail_open", 200)] {
        let gateway = start(
            &mock,
            &[("SWITCHYARD_TEST_REDIS_URL_FOR_GATEWAY", nowhere), ("SWITCHYARD_TEST_REDIS_FAILURE", mode)],
        );
        let (_, key) = create_key(&gateway, json!({"name": "k", "limits": {"rpm": 100}})).await;
        let reply = chat_as(&gateway, &key, &chat("mockai/gpt-mock")).await;
        assert_eq!(reply.status, expected, "{mode}: {}", reply.text);
        if expected == 503 {
            assert_eq!(error_of(&reply, 503)["code"], "limits_unavailable");
        }
    }
}

#[tokio::test]
async fn a_flood_of_bad_keys_is_cut_off_per_address() {
    let mock = MockUpstream::start().await;
    // 6 a minute, so one failure comes back every 10 s: at the default 60 (one a second),
    // a debug build on a busy machine could take long enough that the refill let the
    // flood through.
    let dir = tempfile::tempdir().unwrap();
    crate::support::gateway::write_config(dir.path(), &mock.url);
    let path = dir.path().join("config.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, config.replace("[limits]\n", "[limits]\nfailed_auth_per_ip_per_minute = 6\n")).unwrap();
    let gateway = Gateway::spawn(dir, &[("SWITCHYARD_MASTER_KEY", MASTER_KEY)]);
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(chat_as(&gateway, &format!("sk-sy-wrong{i}"), &chat("mockai/gpt-mock")).await.status);
    }
    assert!(statuses[..6].iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses[7], 429, "{statuses:?}");
    // The master key still works from the same address.
    assert_eq!(crate::support::post(&gateway, "/v1/chat/completions", &chat("mockai/gpt-mock")).await.status, 200);
}

#[test]
fn keys_cli_creates_lists_and_revokes() {
    let dir = tempfile::tempdir().unwrap();
    crate::support::gateway::write_config(dir.path(), "http://127.0.0.1:9");
    let run = |args: &[&str]| {
        let output = std::process::Command::new(binary())
            .args(args)
            .args(["--config", "config.toml"])
            .current_dir(dir.path())
            .env_remove("SWITCHYARD_TEST_DATA_DIR")
            .output()
            .unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (ok, secret) = run(&["keys", "create", "--name", "cli-key", "--policy", r#"{"limits":{"rpm":5}}"#]);
    assert!(ok && secret.trim().starts_with("sk-sy-"), "{secret}");
    let (_, listed) = run(&["keys", "list"]);
    assert!(listed.contains("cli-key") && listed.contains("live") && !listed.contains(secret.trim()), "{listed}");
    let id = listed.split('\t').next().unwrap().to_owned();
    assert!(run(&["keys", "revoke", &id]).0);
    assert!(run(&["keys", "list"]).1.contains("revoked"));
    assert!(!run(&["keys", "revoke", &id]).0, "revoking twice is an error");
}

#[tokio::test]
async fn team_limits_are_shared_by_its_keys() {
    let mock = MockUpstream::start().await;
    let gateway = start(&mock, &[]);
    let team = send(
        client()
            .put(format!("{}/admin/teams/research", gateway.url))
            .bearer_auth(MASTER_KEY)
            .body(json!({"limits": {"rpm": 3}}).to_string()),
    )
    .await;
    assert_eq!(team.status, 200, "{}", team.text);
    let (_, first) = create_key(&gateway, json!({"name": "a", "team": "research"})).await;
    let (_, second) = create_key(&gateway, json!({"name": "b", "team": "research"})).await;
    let mut ok = 0;
    for key in [&first, &second, &first, &second] {
        if chat_as(&gateway, key, &chat("mockai/gpt-mock")).await.status == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 3, "one team allowance for both keys");
}

#[tokio::test]
async fn tokens_per_minute_are_estimated_then_corrected_with_real_usage() {
    let mock = MockUpstream::start().await;
    let gateway = start(&mock, &[]);
    let (_, key) = create_key(&gateway, json!({"name": "k", "limits": {"tpm": 100}})).await;
    let body = json!({"model": "mockai/gpt-mock", "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]});
    let mut ok = 0;
    for _ in 0..10 {
        let reply = chat_as(&gateway, &key, &body).await;
        if reply.status != 200 {
            assert_eq!(error_of(&reply, 429)["code"], "rate_limit_exceeded");
            assert_eq!(reply.header("x-ratelimit-limit-tokens"), Some("100"));
            break;
        }
        assert_eq!(reply.header("x-ratelimit-limit-tokens"), Some("100"));
        ok += 1;
        // Settlement corrects the estimate after the answer; let it land.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Each request reserves 12 tokens (7 estimated prompt + 5 output) and really uses 17:
    // with corrections, the 7th no longer fits (6 × 17 = 102); on estimates alone 8 would.
    assert_eq!(ok, 6);
}

#[tokio::test]
async fn concurrent_requests_per_key_are_capped() {
    let mock = MockUpstream::start().await;
    let gateway = start(&mock, &[]);
    let (_, key) = create_key(&gateway, json!({"name": "k", "limits": {"concurrent": 1}})).await;
    let slow = chat("mockai/delay-500");
    let (first, second) = tokio::join!(chat_as(&gateway, &key, &slow), async {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        chat_as(&gateway, &key, &slow).await
    });
    assert_eq!(first.status, 200);
    assert!(error_of(&second, 429)["message"].as_str().unwrap().contains("1 requests at once"));
    assert_eq!(chat_as(&gateway, &key, &chat("mockai/gpt-mock")).await.status, 200, "the slot was given back");
}

#[tokio::test]
async fn a_deployment_at_its_own_rate_limit_falls_back() {
    let mock = MockUpstream::start().await;
    let provider = format!(
        "id = \"limited\"\nwire = \"openai\"\nbase_url = \"{}/v1\"\n\n[[models]]\nid = \"gpt-mock\"\ncontext_window = 8192\nmax_output_tokens = 1024\ninput_price = 0.5\noutput_price = 1.0\ncapabilities = [\"streaming\"]\nrpm = 2\n",
        mock.url
    );
    let policy = "[aliases.spread]\ntargets = [\"limited/gpt-mock\", \"mockai/gpt-mock\"]\n".to_owned();
    let gateway =
        Gateway::start_with_files(&mock.url, &[("providers/limited.toml", provider), ("policies/test.toml", policy)]);
    let mut targets = Vec::new();
    for _ in 0..3 {
        let reply = crate::support::post(&gateway, "/v1/chat/completions", &chat("spread")).await;
        targets.push(reply.header("x-switchyard-route").unwrap().to_owned());
    }
    assert!(targets[0].contains("target=limited/gpt-mock") && targets[1].contains("target=limited/gpt-mock"));
    assert!(targets[2].contains("target=mockai/gpt-mock"), "{targets:?}");
}

#[tokio::test]
async fn a_revocation_reaches_every_instance_within_seconds() {
    let Some(database) = services::postgres() else { return };
    let mock = MockUpstream::start().await;
    let env = [("SWITCHYARD_TEST_DATABASE_URL_FOR_GATEWAY", database.as_str())];
    let (first, second) = (start(&mock, &env), start(&mock, &env));
    let (id, key) = create_key(&first, json!({"name": "k"})).await;
    assert_eq!(chat_as(&second, &key, &chat("mockai/gpt-mock")).await.status, 200, "the other instance knows it");
    send(client().post(format!("{}/admin/keys/{id}/revoke", first.url)).bearer_auth(MASTER_KEY)).await;
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    error_of(&chat_as(&second, &key, &chat("mockai/gpt-mock")).await, 401);
}

/// A Redis of this test's own, so stopping it does not disturb the others.
struct OwnRedis {
    child: std::process::Child,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/services.sh)");
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        OwnRedis { child }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_gateway_rides_out_a_redis_outage_and_reconnects() {
    if services::redis().is_none() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let redis = OwnRedis::start(port);
    let url = format!("redis://127.0.0.1:{port}/");
    let mock = MockUpstream::start().await;
    let gateway = start(
        &mock,
        &[("SWITCHYARD_TEST_REDIS_URL_FOR_GATEWAY", &url), ("SWITCHYARD_TEST_REDIS_FAILURE", "fail_closed")],
    );
    let (_, key) = create_key(&gateway, json!({"name": "k", "limits": {"rpm": 1000}})).await;
    assert_eq!(chat_as(&gateway, &key, &chat("mockai/gpt-mock")).await.status, 200);

    drop(redis);
    let reply = chat_as(&gateway, &key, &chat("mockai/gpt-mock")).await;
    assert_eq!(error_of(&reply, 503)["code"], "limits_unavailable", "refused at once, not hung");

    let _redis = OwnRedis::start(port);
    let mut recovered = false;
    for _ in 0..50 {
        if chat_as(&gateway, &key, &chat("mockai/gpt-mock")).await.status == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(recovered, "the gateway reconnected to Redis by itself");
}
