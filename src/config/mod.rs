//! Loading configuration: the gateway's own TOML file, the provider catalogs and the
//! policy files it points at. Every problem is collected with its location, so
//! `switchyard check` can list them all and `serve` refuses to start on any.

mod diagnostics;
pub mod interpolate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use diagnostics::{Problem, Problems};
pub use interpolate::EnvString;

use crate::audit::ContentCapture;
use crate::limits::{LimitsConfig, RedisFailure};
use crate::providers::catalog::{self, ProviderSpec};
use crate::routing::policy::file::PolicyFile;

/// Where `serve` and `check` look when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/dev.toml";

/// Compiled-in copies of the development config and provider catalogs, used when the
/// default config path does not exist (a bare binary, `cargo install`).
const BUILTIN_CONFIG: &str = include_str!("../../config/dev.toml");
const BUILTIN_PROVIDERS: &[(&str, &str)] = &[
    ("deepseek.toml", include_str!("../../providers/deepseek.toml")),
    ("groq.toml", include_str!("../../providers/groq.toml")),
    ("ollama.toml", include_str!("../../providers/ollama.toml")),
    ("openai.toml", include_str!("../../providers/openai.toml")),
];
const BUILTIN_POLICIES: &[(&str, &str)] = &[("default.toml", include_str!("../../policies/default.toml"))];
const BUILTIN_ORIGIN: &str = "<built-in>";

/// The gateway's settings, from `config/*.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file these settings came from, or `<built-in>`.
    pub origin: String,
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub upstream: UpstreamTimeouts,
    pub log: LogConfig,
    /// How often `policies/` is checked for changes.
    pub policy_reload_interval: Duration,
    pub storage: StorageConfig,
    pub limits: LimitsConfig,
    /// Failed authentications allowed per client address and minute.
    pub failed_auth_per_minute: u64,
    pub audit: AuditConfig,
    pub telemetry: TelemetryConfig,
    pub mcp: McpConfig,
}

/// The MCP endpoint's browser protections (DNS rebinding, cross-site requests).
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// `Host` values `/mcp` answers (with or without a port); `"*"`: any. Loopback names
    /// by default: list the gateway's public name to serve it on a network.
    pub allowed_hosts: Vec<String>,
    /// `Origin` values a browser page may call `/mcp` from; empty: requests carrying an
    /// `Origin` are not checked.
    pub allowed_origins: Vec<String>,
    /// Upstream MCP servers whose tools the gateway offers.
    pub servers: Vec<crate::tools::ServerSpec>,
}

/// The audit log's settings.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Off: no records are written (benchmarks, throwaway development gateways).
    pub enabled: bool,
    /// Records older than this are deleted; `None`: kept forever.
    pub retention: Option<Duration>,
    /// Prompt and response content in records, unless a key or its team says otherwise.
    pub content: ContentCapture,
    pub writer: WriterPriority,
}

/// The CPU priority of the thread moving audit records from the journal to the database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriterPriority {
    /// Linux's idle scheduling class: only CPU time no request wants; under full load
    /// records wait in the (durable) journal.
    #[default]
    Low,
    Normal,
}

/// Traces and metrics.
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// OTLP/HTTP base URL (`http://collector:4318`); `None`: no traces are exported.
    pub otlp_endpoint: Option<String>,
    /// Extra headers for the collector (`authorization`, `x-honeycomb-team`, …).
    pub otlp_headers: Vec<(String, String)>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of new traces (those without a sampled parent) that are exported, 0 to 1.
    pub sample_ratio: f64,
    /// `/metrics` without the master key. Metrics name key ids and spend, so this is for
    /// scrapers on a private network only.
    pub metrics_public: bool,
}

/// Where durable state lives.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// SQLite's file goes here when `database_url` is empty.
    pub data_dir: PathBuf,
    /// `postgres://…` (or `sqlite:…`); empty: SQLite under `data_dir`. Never logged.
    pub database_url: String,
}

/// Default timeouts for every upstream call; a provider file may override them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    /// Whole non-streaming call; for a stream, until the response headers.
    pub request: Duration,
    /// Longest silence allowed between two chunks of a stream.
    pub stream_idle: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `switchyard=debug`; `RUST_LOG` wins.
    pub level: String,
}

/// A data file read for the gateway: its display path and text.
#[derive(Debug, Clone)]
pub struct DataFile {
    pub path: String,
    pub text: String,
}

/// Everything loaded and validated, ready to build a gateway from.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub providers: Vec<ProviderSpec>,
    /// Policy files, read but not yet compiled (that needs the provider registry).
    pub policies: Vec<DataFile>,
    /// The policies directory; `None` when running on the built-in copy.
    pub policies_dir: Option<PathBuf>,
}

/// Loads `path` (or the default config, falling back to the built-in copy) and every
/// provider and policy file it names. Returns every problem found, not just the first.
pub fn load(path: Option<&Path>) -> Result<Loaded, Problems> {
    let mut problems = Vec::new();
    let (config_file, base_dir) = match path {
        Some(path) => match read(path) {
            Ok(file) => (file, path.parent().map(Path::to_path_buf)),
            Err(problem) => return Err(Problems(vec![problem])),
        },
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => match read(Path::new(DEFAULT_CONFIG_PATH)) {
            Ok(file) => (file, Some(PathBuf::from("config"))),
            Err(problem) => return Err(Problems(vec![problem])),
        },
        None => (DataFile { path: format!("{BUILTIN_ORIGIN}/config/dev.toml"), text: BUILTIN_CONFIG.into() }, None),
    };

    let file: ConfigFile = match toml::from_str(&config_file.text) {
        Ok(file) => file,
        Err(error) => {
            return Err(Problems(vec![Problem::from_toml(&config_file.path, &config_file.text, &error)]));
        }
    };
    let config = match file.validate(&config_file, base_dir.as_deref()) {
        Ok(config) => config,
        Err(problem) => return Err(Problems(vec![problem])),
    };

    let builtin = |folder: &str, files: &[(&str, &str)]| -> Vec<DataFile> {
        files
            .iter()
            .map(|(name, text)| DataFile { path: format!("{BUILTIN_ORIGIN}/{folder}/{name}"), text: (*text).into() })
            .collect()
    };
    let (provider_files, policy_files, policies_dir) = match &base_dir {
        Some(base) => {
            let policies_dir = base.join(&*file.paths.policies);
            (
                read_dir_toml(&base.join(&*file.paths.providers), &mut problems),
                read_dir_toml(&policies_dir, &mut problems),
                Some(policies_dir),
            )
        }
        None => (builtin("providers", BUILTIN_PROVIDERS), builtin("policies", BUILTIN_POLICIES), None),
    };

    let providers = catalog::parse_all(&provider_files, config.upstream, &mut problems);
    // The policy language is checked here too, so `check` lists its errors with the rest;
    // what policies refer to is checked when they are compiled against the providers.
    for policy in &policy_files {
        if let Err(error) = toml::from_str::<PolicyFile>(&policy.text) {
            problems.push(Problem::from_toml(&policy.path, &policy.text, &error));
        }
    }
    if problems.is_empty() {
        Ok(Loaded { config, providers, policies: policy_files, policies_dir })
    } else {
        Err(Problems(problems))
    }
}

fn read(path: &Path) -> Result<DataFile, Problem> {
    let display = path.display().to_string();
    std::fs::read_to_string(path)
        .map(|text| DataFile { path: display.clone(), text })
        .map_err(|error| Problem::in_file(&display, format!("cannot read file: {error}")))
}

/// Every `*.toml` directly in `dir`, sorted by name so load order is stable.
pub fn read_dir_toml(dir: &Path, problems: &mut Vec<Problem>) -> Vec<DataFile> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            problems.push(Problem::in_file(&dir.display().to_string(), format!("cannot read directory: {error}")));
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    paths.sort();
    paths.iter().filter_map(|path| read(path).map_err(|problem| problems.push(problem)).ok()).collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    paths: PathsSection,
    #[serde(default)]
    upstream: UpstreamSection,
    #[serde(default)]
    log: LogSection,
    #[serde(default)]
    routing: RoutingSection,
    #[serde(default)]
    storage: StorageSection,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    audit: AuditSection,
    #[serde(default)]
    telemetry: TelemetrySection,
    #[serde(default)]
    mcp: McpSection,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AuditSection {
    enabled: bool,
    /// 0: keep forever.
    retention_days: u64,
    content: ContentCapture,
    writer_priority: WriterPriority,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            enabled: true,
            retention_days: 0,
            content: ContentCapture::Off,
            writer_priority: WriterPriority::Low,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct McpSection {
    allowed_hosts: Vec<EnvString>,
    allowed_origins: Vec<EnvString>,
    servers: Vec<Spanned<McpServerSection>>,
}

impl Default for McpSection {
    fn default() -> Self {
        McpSection {
            allowed_hosts: ["localhost", "127.0.0.1", "::1"].map(|host| EnvString::from(host.to_owned())).into(),
            allowed_origins: Vec::new(),
            servers: Vec::new(),
        }
    }
}

/// `[[mcp.servers]]`: `command` (with `args`, `env`) for stdio, or `url` (with `headers`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct McpServerSection {
    name: String,
    command: Option<EnvString>,
    #[serde(default)]
    args: Vec<EnvString>,
    #[serde(default)]
    env: std::collections::BTreeMap<String, EnvString>,
    url: Option<EnvString>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, EnvString>,
    #[serde(default = "default_tool_timeout_ms")]
    timeout_ms: u64,
    rpm_per_key: Option<u64>,
}

fn default_tool_timeout_ms() -> u64 {
    30_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TelemetrySection {
    otlp_endpoint: EnvString,
    otlp_headers: std::collections::BTreeMap<String, EnvString>,
    service_name: EnvString,
    sample_ratio: f64,
    metrics_public: bool,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            otlp_endpoint: EnvString::from(String::new()),
            otlp_headers: Default::default(),
            service_name: EnvString::from("switchyard".to_owned()),
            sample_ratio: 1.0,
            metrics_public: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StorageSection {
    /// Relative to the config file's directory.
    data_dir: EnvString,
    database_url: EnvString,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection { data_dir: EnvString::from("../data".to_owned()), database_url: EnvString::from(String::new()) }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LimitsSection {
    redis_url: EnvString,
    redis_timeout_ms: u64,
    redis_key_prefix: EnvString,
    /// `fail_open` or `fail_closed`.
    on_redis_failure: Spanned<EnvString>,
    failed_auth_per_ip_per_minute: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            redis_url: EnvString::from(String::new()),
            redis_timeout_ms: 100,
            redis_key_prefix: EnvString::from("switchyard:".to_owned()),
            on_redis_failure: Spanned::new(0..0, EnvString::from("fail_open".to_owned())),
            failed_auth_per_ip_per_minute: 60,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RoutingSection {
    policy_reload_ms: u64,
}

impl Default for RoutingSection {
    fn default() -> Self {
        RoutingSection { policy_reload_ms: 1_000 }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServerSection {
    listen: Spanned<EnvString>,
    max_body_bytes: usize,
    shutdown_grace_secs: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: Spanned::new(0..0, EnvString::from("127.0.0.1:8080".to_owned())),
            max_body_bytes: 10 * 1024 * 1024,
            shutdown_grace_secs: 30,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PathsSection {
    /// Relative to the config file's directory.
    providers: EnvString,
    policies: EnvString,
}

impl Default for PathsSection {
    fn default() -> Self {
        PathsSection {
            providers: EnvString::from("../providers".to_owned()),
            policies: EnvString::from("../policies".to_owned()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct UpstreamSection {
    connect_timeout_ms: u64,
    request_timeout_ms: u64,
    stream_idle_timeout_ms: u64,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        UpstreamSection { connect_timeout_ms: 5_000, request_timeout_ms: 600_000, stream_idle_timeout_ms: 300_000 }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LogSection {
    format: LogFormat,
    level: EnvString,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection { format: LogFormat::Human, level: EnvString::from("info".to_owned()) }
    }
}

impl ConfigFile {
    /// `[[mcp.servers]]`, checked: valid unique names, one transport each.
    fn mcp_servers(&self, file: &DataFile) -> Result<Vec<crate::tools::ServerSpec>, Problem> {
        use crate::tools::{ServerSpec, Transport};
        let mut specs: Vec<ServerSpec> = Vec::new();
        for section in &self.mcp.servers {
            let problem = |message: String| Problem::at_span(&file.path, &file.text, Some(section.span()), message);
            let server = section.get_ref();
            if !crate::tools::spec::valid_server_name(&server.name) {
                return Err(problem(format!(
                    "MCP server name {:?}: 1 to 32 letters, digits, `_` or `-` (it prefixes tool names)",
                    server.name
                )));
            }
            if specs.iter().any(|spec| spec.name == server.name) {
                return Err(problem(format!("two MCP servers are named {:?}", server.name)));
            }
            let strings = |map: &std::collections::BTreeMap<String, EnvString>| {
                map.iter().map(|(key, value)| (key.clone(), value.to_string())).collect()
            };
            let transport = match (&server.command, &server.url) {
                (Some(command), None) => Transport::Stdio {
                    command: command.to_string(),
                    args: server.args.iter().map(|arg| arg.to_string()).collect(),
                    env: strings(&server.env),
                },
                (None, Some(url)) => Transport::Http { url: url.to_string(), headers: strings(&server.headers) },
                _ => return Err(problem(format!("MCP server {:?} needs `command` or `url`, not both", server.name))),
            };
            specs.push(ServerSpec {
                name: server.name.clone(),
                transport,
                timeout: Duration::from_millis(server.timeout_ms.max(1)),
                rpm_per_key: server.rpm_per_key,
            });
        }
        Ok(specs)
    }

    fn validate(&self, file: &DataFile, base_dir: Option<&Path>) -> Result<Config, Problem> {
        let listen_span = self.server.listen.span();
        let listen = self.server.listen.get_ref().parse::<SocketAddr>().map_err(|error| {
            Problem::at_span(
                &file.path,
                &file.text,
                Some(listen_span),
                format!("`listen` must be an address like 127.0.0.1:8080: {error}"),
            )
        })?;
        let upstream = &self.upstream;
        let on_redis_failure = match &**self.limits.on_redis_failure.get_ref() {
            "fail_open" => RedisFailure::FailOpen,
            "fail_closed" => RedisFailure::FailClosed,
            other => {
                return Err(Problem::at_span(
                    &file.path,
                    &file.text,
                    Some(self.limits.on_redis_failure.span()),
                    format!("`on_redis_failure` is \"fail_open\" or \"fail_closed\", not {other:?}"),
                ));
            }
        };
        Ok(Config {
            origin: file.path.clone(),
            listen,
            max_body_bytes: self.server.max_body_bytes,
            shutdown_grace: Duration::from_secs(self.server.shutdown_grace_secs),
            upstream: UpstreamTimeouts {
                connect: Duration::from_millis(upstream.connect_timeout_ms),
                request: Duration::from_millis(upstream.request_timeout_ms),
                stream_idle: Duration::from_millis(upstream.stream_idle_timeout_ms),
            },
            log: LogConfig { format: self.log.format, level: self.log.level.to_string() },
            policy_reload_interval: Duration::from_millis(self.routing.policy_reload_ms.max(100)),
            storage: StorageConfig {
                data_dir: match base_dir {
                    Some(base) => base.join(&*self.storage.data_dir),
                    // The built-in config: a `data` folder where the gateway runs.
                    None => PathBuf::from("data"),
                },
                database_url: self.storage.database_url.to_string(),
            },
            limits: LimitsConfig {
                redis_url: Some(self.limits.redis_url.to_string()).filter(|url| !url.trim().is_empty()),
                redis_timeout: Duration::from_millis(self.limits.redis_timeout_ms.max(1)),
                redis_prefix: self.limits.redis_key_prefix.to_string(),
                on_redis_failure,
            },
            failed_auth_per_minute: self.limits.failed_auth_per_ip_per_minute,
            audit: AuditConfig {
                enabled: self.audit.enabled,
                retention: (self.audit.retention_days > 0)
                    .then(|| Duration::from_secs(self.audit.retention_days * 24 * 3600)),
                content: self.audit.content,
                writer: self.audit.writer_priority,
            },
            telemetry: TelemetryConfig {
                otlp_endpoint: Some(self.telemetry.otlp_endpoint.trim().trim_end_matches('/').to_owned())
                    .filter(|url| !url.is_empty()),
                otlp_headers: (self.telemetry.otlp_headers.iter())
                    .map(|(name, value)| (name.clone(), value.to_string()))
                    .collect(),
                service_name: self.telemetry.service_name.to_string(),
                sample_ratio: self.telemetry.sample_ratio.clamp(0.0, 1.0),
                metrics_public: self.telemetry.metrics_public,
            },
            mcp: McpConfig {
                allowed_hosts: self.mcp.allowed_hosts.iter().map(|host| host.to_string()).collect(),
                allowed_origins: self.mcp.allowed_origins.iter().map(|origin| origin.to_string()).collect(),
                servers: self.mcp_servers(file)?,
            },
        })
    }
}
