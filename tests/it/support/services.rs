//! The real Redis and PostgreSQL servers `scripts/services.sh` starts. A test that needs
//! one fails when it is missing (set SWITCHYARD_SKIP_SERVICES=1 to skip knowingly).

use std::process::Command;

fn skipping() -> bool {
    std::env::var("SWITCHYARD_SKIP_SERVICES").as_deref() == Ok("1")
}

fn required(variable: &str) -> Option<String> {
    if skipping() {
        eprintln!("SKIPPED: SWITCHYARD_SKIP_SERVICES=1");
        return None;
    }
    Some(std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set: run scripts/test.sh, or `. scripts/services.sh` before cargo test")
    }))
}

/// A Redis URL and a key prefix of this test's own.
pub fn redis() -> Option<(String, String)> {
    let url = required("SWITCHYARD_TEST_REDIS_URL")?;
    Some((url, format!("test-{}:", switchyard::protocol::random_id(""))))
}

/// A fresh, empty PostgreSQL database for this test.
pub fn postgres() -> Option<String> {
    let server = required("SWITCHYARD_TEST_POSTGRES_URL")?;
    let name = format!("sy_{}", switchyard::protocol::random_id("").to_lowercase());
    let status = Command::new("psql")
        .args([server.as_str(), "-q", "-c", &format!("CREATE DATABASE {name}")])
        .status()
        .expect("psql");
    assert!(status.success(), "cannot create database {name}");
    Some(format!("{}/{name}", server.rsplit_once('/').map_or(server.as_str(), |(base, _)| base)))
}
