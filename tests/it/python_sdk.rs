//! The official `openai` Python SDK against the real binary: what users' programs do.
//!
//! `scripts/test.sh` installs the SDK into `.venv-test`; without it this test fails
//! (set SWITCHYARD_SKIP_PYTHON=1 to skip it knowingly on a machine without Python).

use std::path::PathBuf;

use crate::support::{MASTER_KEY, setup};

/// The Python with the official SDKs (`.venv-test`, or SWITCHYARD_TEST_PYTHON); `None`
/// when SWITCHYARD_SKIP_PYTHON=1 says to skip knowingly.
pub fn python_with_sdks() -> Option<PathBuf> {
    if std::env::var("SWITCHYARD_SKIP_PYTHON").as_deref() == Ok("1") {
        eprintln!("SKIPPED: SWITCHYARD_SKIP_PYTHON=1");
        return None;
    }
    Some(python().expect("no Python with the SDKs: run scripts/test.sh (or set SWITCHYARD_TEST_PYTHON)"))
}

fn python() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("SWITCHYARD_TEST_PYTHON") {
        return Some(PathBuf::from(path));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/python");
    venv.exists().then_some(venv)
}

#[tokio::test]
async fn official_openai_python_sdk() {
    let Some(python) = python_with_sdks() else { return };
    let (_mock, gateway) = setup().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/openai_sdk.py");
    let output = tokio::process::Command::new(python)
        .arg(script)
        .env("SWITCHYARD_BASE_URL", format!("{}/v1", gateway.url))
        .env("SWITCHYARD_API_KEY", MASTER_KEY)
        .output()
        .await
        .expect("run python");
    assert_script_passed(&output, "all SDK checks passed", &gateway);
}

/// A test script exited 0 and printed `marker`; otherwise its output and the gateway's
/// log make the failure message.
pub fn assert_script_passed(output: &std::process::Output, marker: &str, gateway: &crate::support::Gateway) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains(marker),
        "the script failed:\n{stdout}\n{stderr}\n--- gateway log ---\n{}",
        gateway.logs()
    );
}
