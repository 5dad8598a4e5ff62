use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use switchyard::auth::MasterKey;
use switchyard::config;
use switchyard::gateway::Gateway;
use switchyard::providers::catalog::ApiKey;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, listen } => serve(config, listen),
        Command::Check { config } => check(config),
    }
}

fn serve(config_path: Option<PathBuf>, listen: Option<SocketAddr>) -> ExitCode {
    let loaded = match config::load(config_path.as_deref()) {
        Ok(loaded) => loaded,
        Err(problems) => {
            eprintln!("{problems}");
            eprintln!("switchyard: not starting: the configuration has {} problem(s)", problems.0.len());
            return ExitCode::FAILURE;
        }
    };
    switchyard::telemetry::init(&loaded.config.log);
    let listen = listen.unwrap_or(loaded.config.listen);
    let gateway = match Gateway::new(loaded, MasterKey::from_env()) {
        Ok(gateway) => Arc::new(gateway),
        Err(problems) => {
            eprintln!("{problems}");
            eprintln!("switchyard: not starting: the policies have {} problem(s)", problems.0.len());
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("switchyard: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(switchyard::server::serve(gateway, listen)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("switchyard: {error}");
            ExitCode::FAILURE
        }
    }
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
    let gateway = match Gateway::new(loaded, None) {
        Ok(gateway) => gateway,
        Err(problems) => return report(problems),
    };
    let policy = gateway.router.policy();
    println!(
        "{origin}: ok: {providers} providers, {models} models, {policy_files} policy files ({} aliases, {} rules)",
        policy.aliases.len(),
        policy.rules.len()
    );
    for line in missing_keys {
        println!("{line}");
    }
    ExitCode::SUCCESS
}
