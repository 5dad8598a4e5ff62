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

/// A PostgreSQL server of the test's own, which it may stop and start again (the shared
/// one must stay up for the other tests). Runs as the `postgres` user when the tests run
/// as root, like `scripts/services.sh`.
pub struct OwnPostgres {
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    pub port: u16,
}

impl OwnPostgres {
    pub fn start() -> Option<OwnPostgres> {
        let bin = std::path::PathBuf::from(required("SWITCHYARD_TEST_PG_BIN")?);
        let dir = std::env::temp_dir().join(format!("switchyard-own-pg-{}", switchyard::protocol::random_id("")));
        std::fs::create_dir_all(&dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = OwnPostgres { bin, dir, port };
        if is_root() {
            assert!(Command::new("chown").arg("postgres").arg(&server.dir).status().unwrap().success());
        }
        let initdb = server.bin.join("initdb");
        let dir = server.dir.to_str().unwrap().to_owned();
        assert!(server.run(&initdb, &["-D", &dir, "-A", "trust", "-U", "postgres"]), "initdb failed");
        server.resume();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts (again) and waits until it accepts connections.
    pub fn resume(&self) {
        let dir = self.dir.to_str().unwrap();
        let options = format!("-p {} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off", self.port);
        let log = format!("{dir}/log");
        let pg_ctl = self.bin.join("pg_ctl");
        assert!(self.run(&pg_ctl, &["-D", dir, "-l", &log, "-w", "-s", "-o", &options, "start"]), "pg_ctl start");
    }

    /// An abrupt stop, as a crashed or unreachable server looks to clients.
    pub fn halt(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        assert!(self.run(&pg_ctl, &["-D", self.dir.to_str().unwrap(), "-s", "-m", "immediate", "stop"]), "pg_ctl stop");
    }

    fn run(&self, program: &std::path::Path, args: &[&str]) -> bool {
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.args(args).stdout(std::process::Stdio::null()).status().is_ok_and(|status| status.success())
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        self.run(&pg_ctl, &["-D", self.dir.to_str().unwrap(), "-s", "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|output| output.stdout.starts_with(b"0"))
}
