use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use switchyard::auth::MasterKey;
use switchyard::config;
use switchyard::gateway::{self, Gateway};
use switchyard::keys::{KeyCache, NewKey};
use switchyard::providers::catalog::ApiKey;
use switchyard::store::{AuditFilter, Store};

/// mimalloc rather than the system allocator: a request makes a few hundred small
/// allocations, and glibc's malloc was 13 % of the gateway's CPU under load; with mimalloc
/// throughput is ~10 % higher (load-tests, side by side). Built without transparent huge
/// pages: they bought another ~5 % but added 10 MB to the idle footprint.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// switchyard: one OpenAI-compatible endpoint in front of OpenAI, DeepSeek, Groq and Ollama.
///
/// Point any OpenAI client at http://127.0.0.1:8080/v1 and name models as
/// provider/model (e.g. `groq/openai/gpt-oss-20b`, `ollama/llama3.1:8b`).
/// Provider keys come from the usual variables (OPENAI_API_KEY, DEEPSEEK_API_KEY,
/// GROQ_API_KEY; OLLAMA_HOST for Ollama); a provider without its key is listed as
/// unavailable. Set SWITCHYARD_MASTER_KEY to require `Authorization: Bearer <key>`.
#[derive(Parser)]
#[command(name = "switchyard", version, about, long_about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "\
Examples:
  switchyard serve                                 run on config/dev.toml (or the built-in defaults)
  switchyard serve --listen 0.0.0.0:8080           listen on every interface (needs SWITCHYARD_MASTER_KEY)
  switchyard check --config config/prod.toml       validate a config before deploying it
  switchyard keys create --name support-bot --team support \\
      --policy '{\"limits\":{\"rpm\":600},\"end_user_limits\":{\"rpm\":20}}'
                                                   a virtual key (printed once)

Docs: README.md in the repository; GET /readyz shows which providers are usable.";

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file. Default: config/dev.toml, or the built-in copy if it does not exist.
        #[arg(long, env = "SWITCHYARD_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
        /// Address to listen on, overriding the config's `server.listen` (default 127.0.0.1:8080).
        #[arg(long, env = "SWITCHYARD_LISTEN", value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Validate the config, provider catalogs and policies; print each problem as
    /// `file:line:col: message` and exit 1 if there is any.
    Check {
        /// Config file. Default: config/dev.toml, or the built-in copy if it does not exist.
        #[arg(long, env = "SWITCHYARD_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Serve MCP over stdio, for clients that launch a command (Claude Desktop). The
    /// gateway runs in this process on the config, or, with SWITCHYARD_URL set, this
    /// process relays to the gateway there; the caller is the key in SWITCHYARD_API_KEY.
    Mcp {
        /// Config file. Default: config/dev.toml, or the built-in copy if it does not exist.
        #[arg(long, env = "SWITCHYARD_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Check or export the audit log.
    Audit {
        /// Config file. Default: config/dev.toml, or the built-in copy if it does not exist.
        #[arg(long, global = true, env = "SWITCHYARD_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Manage virtual keys in the configured database (running gateways see changes
    /// within two seconds).
    Keys {
        /// Config file. Default: config/dev.toml, or the built-in copy if it does not exist.
        #[arg(long, global = true, env = "SWITCHYARD_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: KeysAction,
    },
}

#[derive(Subcommand)]
enum AuditAction {
    /// Recompute every hash chain; exit 1 naming the first broken link.
    Verify,
    /// Print records, oldest first.
    Export {
        #[arg(long, value_enum, default_value = "jsonl")]
        format: ExportFormat,
        /// Only records at or after this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        since: Option<jiff::Timestamp>,
        /// Only records before this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        until: Option<jiff::Timestamp>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Jsonl,
    Csv,
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a key and print it (it is not shown again).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        team: Option<String>,
        /// Models, limits and budgets as JSON, e.g.
        /// '{"models":["auto"],"limits":{"rpm":60},"budgets":[{"amount":10,"unit":"usd","period":"month"}]}'
        #[arg(long, value_name = "JSON")]
        policy: Option<String>,
        /// When the key stops working (RFC 3339, e.g. 2027-01-01T00:00:00Z).
        #[arg(long, value_name = "TIME")]
        expires: Option<jiff::Timestamp>,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id.
    Revoke { id: String },
    /// Give a key a new secret; the old one stops working.
    Rotate { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, listen } => with_gateway(config, |gateway| async move {
            let listen = listen.unwrap_or(gateway.config.listen);
            switchyard::server::serve(gateway, listen).await.map_err(|error| error.to_string())
        }),
        Command::Check { config } => check(config),
        Command::Mcp { config } => {
            let key = std::env::var("SWITCHYARD_API_KEY").ok().filter(|key| !key.trim().is_empty());
            match std::env::var("SWITCHYARD_URL").ok().filter(|url| !url.trim().is_empty()) {
                // A gateway elsewhere: this process only relays stdio to its /mcp.
                Some(url) => match runtime() {
                    Some(runtime) => match runtime.block_on(switchyard::mcp::stdio::relay(&url, key)) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(error) => {
                            eprintln!("switchyard: {error}");
                            ExitCode::FAILURE
                        }
                    },
                    None => ExitCode::FAILURE,
                },
                None => with_gateway(config, |gateway| switchyard::mcp::stdio::serve(gateway, key)),
            }
        }
        Command::Keys { config, action } => keys(config, action),
        Command::Audit { config, action } => audit(config, action),
    }
}

/// Loads the config, starts the gateway on it and runs `task` with it, logging its
/// error and exiting 1 if anything fails.
fn with_gateway<Task, Done>(config_path: Option<PathBuf>, task: Task) -> ExitCode
where
    Task: FnOnce(Arc<Gateway>) -> Done,
    Done: std::future::Future<Output = Result<(), String>>,
{
    let loaded = match config::load(config_path.as_deref()) {
        Ok(loaded) => loaded,
        Err(problems) => {
            eprintln!("{problems}");
            eprintln!("switchyard: not starting: the configuration has {} problem(s)", problems.0.len());
            return ExitCode::FAILURE;
        }
    };
    switchyard::telemetry::logs::init(&loaded.config.log);
    let Some(runtime) = runtime() else { return ExitCode::FAILURE };
    let result = runtime.block_on(async {
        let gateway = match Gateway::start(loaded, MasterKey::from_env()).await {
            Ok(gateway) => Arc::new(gateway),
            Err(error) => return Err(format!("not starting: {error}")),
        };
        task(gateway).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("switchyard: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `task` on the configured database (for the CLI's `keys` and `audit`), printing
/// its error and exiting 1 if it fails.
fn with_store<Task, Done>(config_path: Option<PathBuf>, task: Task) -> ExitCode
where
    Task: FnOnce(Store) -> Done,
    Done: std::future::Future<Output = Result<(), String>>,
{
    let loaded = match config::load(config_path.as_deref()) {
        Ok(loaded) => loaded,
        Err(problems) => {
            eprintln!("{problems}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = runtime() else { return ExitCode::FAILURE };
    let storage = loaded.config.storage;
    let result = runtime.block_on(async {
        let store = Store::open(&storage.database_url, &storage.data_dir).await.map_err(|e| e.to_string())?;
        task(store).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("switchyard: {error}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            eprintln!("switchyard: cannot start the async runtime: {error}");
            None
        }
    }
}

fn audit(config_path: Option<PathBuf>, action: AuditAction) -> ExitCode {
    with_store(config_path, |store| async move {
        match action {
            AuditAction::Verify => {
                let verified = switchyard::audit::verify::verify(&store).await.map_err(|e| e.to_string())?;
                println!("ok: {} records in {} chains verify", verified.records, verified.chains);
            }
            AuditAction::Export { format, since, until } => {
                let filter = AuditFilter {
                    since_ms: since.map(|t| t.as_millisecond()),
                    until_ms: until.map(|t| t.as_millisecond()),
                    ..AuditFilter::default()
                };
                if let ExportFormat::Csv = format {
                    println!("{}", CSV_COLUMNS.join(","));
                }
                let mut cursor = None;
                loop {
                    let rows = store.audit_query(&filter, cursor.clone(), 1000).await.map_err(|e| e.to_string())?;
                    for row in &rows {
                        match format {
                            ExportFormat::Jsonl => println!("{}", row.record),
                            ExportFormat::Csv => println!("{}", csv_line(&row.record)),
                        }
                    }
                    match rows.last() {
                        Some(last) if rows.len() == 1000 => cursor = Some((last.at_ms, last.chain.clone(), last.seq)),
                        _ => break,
                    }
                }
            }
        }
        Ok(())
    })
}

const CSV_COLUMNS: &[&str] = &[
    "id",
    "at_ms",
    "kind",
    "request_id",
    "key_id",
    "team",
    "end_user",
    "client_ip",
    "endpoint",
    "requested_model",
    "rule",
    "target",
    "attempts",
    "status",
    "latency_ms",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "outcome",
    "action",
    "subject",
    "error",
];

/// One record as a CSV line, fields quoted where needed.
fn csv_line(record: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(record).unwrap_or_default();
    CSV_COLUMNS
        .iter()
        .map(|column| {
            let field = match &value[*column] {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            if field.contains([',', '"', '\n']) { format!("\"{}\"", field.replace('"', "\"\"")) } else { field }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn keys(config_path: Option<PathBuf>, action: KeysAction) -> ExitCode {
    with_store(config_path, |store| async move {
        let keys = KeyCache::new(store.clone());
        match action {
            KeysAction::Create { name, team, policy, expires } => {
                let policy = match policy {
                    Some(json) => serde_json::from_str(&json).map_err(|e| format!("--policy: {e}"))?,
                    None => Default::default(),
                };
                let new = NewKey { name, team, policy, metadata: None, expires_at: expires.map(|t| t.as_second()) };
                let (record, secret) = keys.create(new).await.map_err(|e| e.to_string())?;
                println!("{secret}");
                eprintln!("created {} ({}); the key above is not shown again", record.id, record.name);
            }
            KeysAction::List => {
                for key in store.list_keys().await.map_err(|e| e.to_string())? {
                    let state = if key.revoked_at.is_some() { "revoked" } else { "live" };
                    let policy = serde_json::to_string(&key.policy).unwrap_or_default();
                    let team = key.team.as_deref().unwrap_or("-");
                    println!("{}\t{}\t{}\t{team}\t{state}\t{policy}", key.id, key.prefix, key.name);
                }
            }
            KeysAction::Revoke { id } => {
                if !keys.revoke(&id).await.map_err(|e| e.to_string())? {
                    return Err(format!("no live key {id}"));
                }
                eprintln!("revoked {id}");
            }
            KeysAction::Rotate { id } => match keys.rotate(&id).await.map_err(|e| e.to_string())? {
                Some(secret) => println!("{secret}"),
                None => return Err(format!("no live key {id}")),
            },
        }
        Ok(())
    })
}

fn check(config_path: Option<PathBuf>) -> ExitCode {
    let report = |problems: config::Problems| {
        println!("{problems}");
        eprintln!("{} problem(s) found", problems.0.len());
        ExitCode::FAILURE
    };
    let loaded = match config::load(config_path.as_deref()) {
        Ok(loaded) => loaded,
        Err(problems) => return report(problems),
    };
    let missing_keys: Vec<String> = loaded
        .providers
        .iter()
        .filter_map(|provider| match &provider.api_key {
            ApiKey::Missing { env } => {
                Some(format!("  {}: unavailable until {env} is set ({})", provider.id, provider.source))
            }
            _ => None,
        })
        .collect();
    let origin = loaded.config.origin.clone();
    let models: usize = loaded.providers.iter().map(|p| p.models.len()).sum();
    let (providers, policy_files) = (loaded.providers.len(), loaded.policies.len());
    // Policies are compiled against the providers, exactly as `serve` does.
    let router = match gateway::compile_routing(&loaded, Arc::new(switchyard::routing::NoBudgets)) {
        Ok((_, router)) => router,
        Err(problems) => return report(problems),
    };
    let policy = router.policy();
    println!(
        "{origin}: ok: {providers} providers, {models} models, {policy_files} policy files ({} aliases, {} rules)",
        policy.aliases.len(),
        policy.rules.len()
    );
    for line in missing_keys {
        println!("{line}");
    }
    if loaded.config.mcp.servers.is_empty() {
        return ExitCode::SUCCESS;
    }
    // Upstream MCP servers: connected once, so unreachable ones and renamed tools show.
    let Some(runtime) = runtime() else { return ExitCode::FAILURE };
    for spec in &loaded.config.mcp.servers {
        match runtime.block_on(switchyard::tools::probe(spec)) {
            Ok((tools, collisions)) => {
                println!("  MCP server {}: {tools} tools", spec.name);
                for collision in collisions {
                    println!("  MCP server {}: {collision}", spec.name);
                }
            }
            // Not a config error: the gateway keeps retrying a server that is down.
            Err(error) => println!("  MCP server {}: unreachable now ({error})", spec.name),
        }
    }
    ExitCode::SUCCESS
}
