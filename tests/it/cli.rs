use std::process::Command;

use crate::support::gateway::{binary, write_config};
use crate::support::{Gateway, client, send};

fn run(args: &[&str], dir: &std::path::Path) -> (bool, String, String) {
    let output = Command::new(binary())
        .args(args)
        .current_dir(dir)
        .env_remove("SWITCHYARD_MASTER_KEY")
        .env_remove("SWITCHYARD_CONFIG")
        .env_remove("SWITCHYARD_LISTEN")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into(),
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

#[test]
fn help_answers_a_newcomer() {
    let (ok, stdout, _) = run(&["--help"], std::path::Path::new("."));
    assert!(ok);
    for needle in ["serve", "check", "provider/model", "SWITCHYARD_MASTER_KEY", "Examples"] {
        assert!(stdout.contains(needle), "--help lacks {needle:?}:\n{stdout}");
    }
}

#[test]
fn check_accepts_a_valid_config() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "http://127.0.0.1:9");
    let (ok, stdout, stderr) = run(&["check", "--config", "config.toml"], dir.path());
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("ok: 3 providers"), "{stdout}");
    assert!(stdout.contains("nokey: unavailable until SWITCHYARD_TEST_NEVER_SET_KEY is set"), "{stdout}");
}

#[test]
fn check_lists_every_problem_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "http://127.0.0.1:9");
    std::fs::write(
        dir.path().join("providers/broken.toml"),
        "id = \"broken\"\nwire = \"carrier-pigeon\"\nbase_url = \"http://x\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("providers/unset.toml"),
        "id = \"unset\"\nwire = \"openai\"\nbase_url = \"${SWITCHYARD_TEST_UNSET_URL}\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("policies/bad.toml"), "[rules\n").unwrap();
    let (ok, stdout, _) = run(&["check", "--config", "config.toml"], dir.path());
    assert!(!ok);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("providers/broken.toml:2:8: unknown variant `carrier-pigeon`"), "{stdout}");
    assert!(
        lines[1].starts_with("providers/unset.toml:3:12: environment variable SWITCHYARD_TEST_UNSET_URL is not set"),
        "{stdout}"
    );
    assert!(lines[2].starts_with("policies/bad.toml:1:7: unclosed table"), "{stdout}");
}

#[test]
fn check_compiles_policies_against_the_providers() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "http://127.0.0.1:9");
    std::fs::write(
        dir.path().join("policies/routes.toml"),
        "[aliases.fast]\ntargets = [\"mockai/gpt-mock\", \"openia/gpt-5\"]\n\n[[rules]]\nname = \"r\"\nwhen = { pii = [\"passport\"] }\n",
    )
    .unwrap();
    let (ok, stdout, _) = run(&["check", "--config", "config.toml"], dir.path());
    assert!(!ok);
    assert!(stdout.contains("policies/routes.toml:2:31: no provider is called \"openia\""), "{stdout}");
    assert!(stdout.contains("policies/routes.toml:6:8: rule \"r\": unknown PII class \"passport\""), "{stdout}");

    std::fs::write(dir.path().join("policies/routes.toml"), "[aliases.fast]\ntargets = [\"mockai/*\"]\n").unwrap();
    let (ok, stdout, _) = run(&["check", "--config", "config.toml"], dir.path());
    assert!(ok, "{stdout}");
    assert!(stdout.contains("(1 aliases, 0 rules)"), "{stdout}");
}

#[test]
fn serve_refuses_an_open_network_address_without_a_master_key() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "http://127.0.0.1:9");
    let (ok, _, stderr) = run(&["serve", "--config", "config.toml", "--listen", "0.0.0.0:0"], dir.path());
    assert!(!ok);
    assert!(stderr.contains("SWITCHYARD_MASTER_KEY"), "{stderr}");
}

#[test]
fn serve_does_not_start_on_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "http://127.0.0.1:9");
    std::fs::write(dir.path().join("config.toml"), "[server]\nlisten = \"not an address\"\n").unwrap();
    let (ok, _, stderr) = run(&["serve", "--config", "config.toml"], dir.path());
    assert!(!ok);
    assert!(stderr.contains("config.toml:2:10: `listen` must be an address"), "{stderr}");
}

#[tokio::test]
async fn serve_runs_on_built_in_defaults_without_any_file() {
    let empty = tempfile::tempdir().unwrap();
    let mut command = Command::new(binary());
    command.args(["serve", "--listen", "127.0.0.1:0"]).current_dir(empty.path()).env_remove("OPENAI_API_KEY");
    let gateway = Gateway::launch(command, empty);
    let reply = send(client().get(format!("{}/readyz", gateway.url))).await;
    let body = reply.json();
    assert!(body["config"].as_str().unwrap().starts_with("<built-in>"), "{body}");
    let ids: Vec<&str> = body["providers"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["deepseek", "groq", "ollama", "openai"]);
}

#[tokio::test]
async fn sigterm_stops_the_gateway_cleanly() {
    let mock = crate::support::MockUpstream::start().await;
    let mut gateway = Gateway::start(&mock.url);
    let status = gateway.terminate();
    assert!(status.success(), "{status:?}\n{}", gateway.logs());
    assert!(gateway.logs().contains("shutting down"));
}
