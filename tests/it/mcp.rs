//! The MCP front door with the official `mcp` Python SDK as the client: Streamable HTTP
//! in both protocol generations (2026-07-28 via `server/discover`, 2025-11-25 via
//! `initialize`), stdio through `switchyard mcp`, the `chat` tool answered by the mock
//! LLM through the pipeline, a model the key may not use refused, a bad key rejected.

use std::path::PathBuf;

use serde_json::json;

use crate::python_sdk::{assert_script_passed, python_with_sdks};
use crate::support::gateway::binary;
use crate::support::{MASTER_KEY, UPSTREAM_KEY, audit_records_until, client, send, setup};

#[tokio::test]
async fn official_mcp_python_sdk_over_http_and_stdio() {
    let Some(python) = python_with_sdks() else { return };
    let (_mock, gateway) = setup().await;
    let created = send(
        client()
            .post(format!("{}/admin/keys", gateway.url))
            .bearer_auth(MASTER_KEY)
            .body(json!({"name": "mcp-test", "models": ["mockai/*"]}).to_string()),
    )
    .await
    .json();
    let key = created["key"].as_str().unwrap();
    // `switchyard mcp` runs its own gateway in-process: the same config, its own data.
    let stdio_data = tempfile::tempdir().unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/mcp_client.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .env("SWITCHYARD_MCP_URL", format!("{}/mcp", gateway.url))
        .env("SWITCHYARD_GATEWAY_URL", &gateway.url)
        .env("SWITCHYARD_API_KEY", key)
        .env("SWITCHYARD_BINARY", binary())
        .env("SWITCHYARD_STDIO_CONFIG", gateway.dir().join("config.toml"))
        .env("SWITCHYARD_STDIO_KEY", MASTER_KEY)
        .env("SWITCHYARD_MASTER_KEY", MASTER_KEY)
        .env("SWITCHYARD_TEST_DATA_DIR", stdio_data.path())
        .env("MOCKAI_KEY", UPSTREAM_KEY)
        .output()
        .await
        .expect("run python");
    assert_script_passed(&output, "all MCP checks passed", &gateway);

    // The tool calls went through the pipeline: chat records with the key, and the
    // other tools recorded as MCP tool calls.
    let records =
        audit_records_until(&gateway, |records| records.iter().filter(|r| r["endpoint"] == "mcp:chat").count() >= 6)
            .await;
    let chats: Vec<_> = records.iter().filter(|r| r["endpoint"] == "mcp:chat").collect();
    assert_eq!(chats.len(), 6, "three answered and three refused chat calls (HTTP twice, relay): {records:#?}");
    assert!(chats.iter().all(|r| r["key_id"] == created["id"]));
    assert_eq!(chats.iter().filter(|r| r["status"] == 403).count(), 3);
    assert!(records.iter().any(|r| r["kind"] == "mcp" && r["action"] == "tool.list_models"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_mcp_servers_are_aggregated_filtered_and_restarted() {
    let Some(python) = python_with_sdks() else { return };
    let mock = crate::support::MockUpstream::start().await;
    let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python");
    // The HTTP upstream: the same SDK server on a port of its own.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut http_upstream = tokio::process::Command::new(&python)
        .arg(scripts.join("upstream_server.py"))
        .args(["--http", &port.to_string()])
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the HTTP upstream");
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("calc.pid");
    crate::support::gateway::write_config(dir.path(), &mock.url);
    let servers = format!(
        "\n[[mcp.servers]]\nname = \"calc\"\ncommand = {python:?}\nargs = [{script:?}]\nenv = {{ UPSTREAM_PID_FILE = {pid:?} }}\nrpm_per_key = 3\n\
         \n[[mcp.servers]]\nname = \"web\"\nurl = \"http://127.0.0.1:{port}/mcp\"\nheaders = {{ Authorization = \"Bearer ${{WEB_TOKEN:-none}}\" }}\n",
        python = python.display().to_string(),
        script = scripts.join("upstream_server.py").display().to_string(),
        pid = pid_file.display().to_string(),
    );
    crate::support::gateway::append_to_config(dir.path(), &servers);
    let gateway = crate::support::Gateway::spawn(dir, &[("SWITCHYARD_MASTER_KEY", MASTER_KEY)]);
    let created = send(
        client()
            .post(format!("{}/admin/keys", gateway.url))
            .bearer_auth(MASTER_KEY)
            .body(json!({"name": "calc-only", "tools": ["calc__*"]}).to_string()),
    )
    .await
    .json();

    let output = tokio::process::Command::new(&python)
        .arg(scripts.join("mcp_upstreams.py"))
        .env("SWITCHYARD_MCP_URL", format!("{}/mcp", gateway.url))
        .env("SWITCHYARD_API_KEY", created["key"].as_str().unwrap())
        .env("SWITCHYARD_MASTER_KEY", MASTER_KEY)
        .env("UPSTREAM_PID_FILE", &pid_file)
        .output()
        .await
        .expect("run python");
    let _ = http_upstream.kill().await;
    assert_script_passed(&output, "all upstream checks passed", &gateway);

    // Every upstream call is audited, the refused one too.
    let records = audit_records_until(&gateway, |records| {
        records.iter().any(|r| r["action"] == "tool.web__add" && r["status"] == 403)
    })
    .await;
    let refused = records.iter().find(|r| r["action"] == "tool.web__add" && r["status"] == 403);
    assert!(refused.is_some_and(|r| r["key_id"] == created["id"]), "{records:#?}");
    let added = records.iter().find(|r| r["action"] == "tool.calc__add" && r["status"] == 200).unwrap();
    assert!(added["latency_ms"].as_u64().is_some());
    assert!(records.iter().any(|r| r["action"] == "tool.calc__echo" && r["status"] == 429), "{records:#?}");

    // `switchyard check` connects to each server and reports the renamed tool.
    let check = std::process::Command::new(binary())
        .args(["check", "--config", "config.toml"])
        .current_dir(gateway.dir())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}");
    assert!(report.contains("MCP server calc: 4 tools"), "{report}");
    assert!(report.contains("`tell_time` of calc is exposed as `calc__tell_time_2`"), "{report}");
    assert!(report.contains("MCP server web: unreachable now"), "the HTTP upstream was stopped: {report}");
}
