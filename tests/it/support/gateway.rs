//! The real `switchyard` binary, started on a config written for the test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const MASTER_KEY: &str = "sk-master-test-0123456789";
pub const UPSTREAM_KEY: &str = "sk-upstream-secret-abcdef";

pub struct Gateway {
    pub url: String,
    /// Holds the config files for as long as the process runs.
    _dir: tempfile::TempDir,
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// A config whose providers are the mock: `mockai` (OpenAI wire format, needs a key),
/// `local` (Ollama wire format) and `nokey` (its key is never set).
pub fn write_config(dir: &Path, mock_url: &str) {
    std::fs::create_dir_all(dir.join("providers")).unwrap();
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 65536
shutdown_grace_secs = 5

[paths]
providers = "providers"
policies = "policies"

[upstream]
connect_timeout_ms = 1000
request_timeout_ms = 1500
stream_idle_timeout_ms = 1000

[log]
level = "info"

[routing]
policy_reload_ms = 100

[storage]
data_dir = "${SWITCHYARD_TEST_DATA_DIR:-data}"
database_url = "${SWITCHYARD_TEST_DATABASE_URL_FOR_GATEWAY:-}"

[limits]
redis_url = "${SWITCHYARD_TEST_REDIS_URL_FOR_GATEWAY:-}"
redis_key_prefix = "${SWITCHYARD_TEST_REDIS_PREFIX:-switchyard:}"
on_redis_failure = "${SWITCHYARD_TEST_REDIS_FAILURE:-fail_open}"

[telemetry]
otlp_endpoint = "${SWITCHYARD_TEST_OTLP_ENDPOINT:-}"
"#,
    )
    .unwrap();
    // A provider that exists only in this test: no Rust change needed to add one.
    let mockai = format!(
        "id = \"mockai\"\nwire = \"openai\"\nbase_url = \"${{MOCK_URL:-{mock_url}}}/v1\"\napi_key_env = \"MOCKAI_KEY\"\nallow_unlisted_models = true\n"
    );
    write_provider(
        dir,
        "mockai",
        &mockai,
        &[
            model("gpt-mock", 1.0, 2.0, r#"["tools", "json_schema", "streaming"]"#),
            model("embed-mock", 0.1, 0.0, r#"["embeddings"]"#),
            model("shared-model", 0.0, 0.0, r#"["streaming"]"#),
        ],
    );
    let local = format!(
        "id = \"local\"\nwire = \"ollama\"\nbase_url = \"{mock_url}\"\nlocality = \"local\"\nallow_unlisted_models = true\n"
    );
    write_provider(
        dir,
        "local",
        &local,
        &[
            model("llama-mock", 0.0, 0.0, r#"["tools", "json_schema", "streaming"]"#),
            model("shared-model", 0.0, 0.0, r#"["streaming"]"#),
            model("embed-local", 0.0, 0.0, r#"["embeddings"]"#),
        ],
    );
    let nokey = "id = \"nokey\"\nwire = \"openai\"\nbase_url = \"https://nokey.invalid/v1\"\napi_key_env = \"SWITCHYARD_TEST_NEVER_SET_KEY\"\n";
    write_provider(dir, "nokey", nokey, &[model("lonely-model", 1.0, 1.0, "[]")]);
}

/// Adds `extra` (more TOML sections) to the end of the config `write_config` wrote.
pub fn append_to_config(dir: &Path, extra: &str) {
    let config = dir.join("config.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n{extra}")).unwrap();
}

/// `providers/<name>.toml`: the provider's own keys, then its models.
fn write_provider(dir: &Path, name: &str, header: &str, models: &[String]) {
    std::fs::write(dir.join(format!("providers/{name}.toml")), format!("{header}{}", models.concat())).unwrap();
}

/// One `[[models]]` entry of a provider catalog.
fn model(id: &str, input_price: f64, output_price: f64, capabilities: &str) -> String {
    format!(
        "\n[[models]]\nid = \"{id}\"\ncontext_window = 8192\nmax_output_tokens = 1024\ninput_price = {input_price:?}\noutput_price = {output_price:?}\ncapabilities = {capabilities}\n"
    )
}

impl Gateway {
    /// Starts the gateway on the mock with the master key set.
    pub fn start(mock_url: &str) -> Gateway {
        Gateway::start_with(mock_url, &[("SWITCHYARD_MASTER_KEY", MASTER_KEY)])
    }

    /// Starts the gateway with `policy` as `policies/test.toml`.
    pub fn start_with_policy(mock_url: &str, policy: &str) -> Gateway {
        Gateway::start_with_files(mock_url, &[("policies/test.toml", policy.to_owned())])
    }

    /// Starts the gateway with extra files (`providers/x.toml`, `policies/y.toml`) in its
    /// config directory.
    pub fn start_with_files(mock_url: &str, files: &[(&str, String)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), mock_url);
        for (path, text) in files {
            std::fs::write(dir.path().join(path), text).unwrap();
        }
        Gateway::spawn(dir, &[("SWITCHYARD_MASTER_KEY", MASTER_KEY)])
    }

    /// The policies directory, to edit while the gateway runs.
    pub fn policies_dir(&self) -> PathBuf {
        self._dir.path().join("policies")
    }

    pub fn start_with(mock_url: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), mock_url);
        Gateway::spawn(dir, env)
    }

    pub fn spawn(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Gateway {
        let mut command = Command::new(binary());
        command.args(["serve", "--config"]).arg(dir.path().join("config.toml"));
        for (name, value) in env {
            command.env(name, value);
        }
        Gateway::launch(command, dir)
    }

    /// Runs `command` (a `serve`) with a clean environment for the gateway's own
    /// variables, and waits until it says where it listens.
    pub fn launch(mut command: Command, dir: tempfile::TempDir) -> Gateway {
        for name in ["SWITCHYARD_MASTER_KEY", "SWITCHYARD_LISTEN", "SWITCHYARD_CONFIG", "RUST_LOG"] {
            if command.get_envs().all(|(key, _)| key != name) {
                command.env_remove(name);
            }
        }
        command
            .env("MOCKAI_KEY", UPSTREAM_KEY)
            .env("SWITCHYARD_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start switchyard");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.stderr.take().unwrap());
        let log = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = address_tx.send(rest.split_whitespace().next().unwrap_or_default().to_owned());
                }
                log.lock().unwrap().push(line);
            }
        });
        let address = match address_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(address) => address,
            Err(_) => {
                let _ = child.kill();
                panic!("switchyard did not start:\n{}", stderr.lock().unwrap().join("\n"));
            }
        };
        Gateway { url: format!("http://{address}"), _dir: dir, child, stderr, reader: Some(reader) }
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The directory holding this gateway's config (and its `data/`).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                // The log is complete once the reader has seen the end of stderr.
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("switchyard did not exit after SIGTERM");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_switchyard"))
}
