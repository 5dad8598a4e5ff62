//! The gateway's shared state: what every request reads.

use std::sync::Arc;

use crate::audit::Auditor;
use crate::auth::{FailedAuthGuard, MasterKey};
use crate::config::{Config, Loaded, Problems};
use crate::keys::KeyCache;
use crate::limits::Limiter;
use crate::providers::Registry;
use crate::routing::health::Health;
use crate::routing::policy;
use crate::routing::reload::PolicyStore;
use crate::routing::{BudgetView, Router};
use crate::store::{Store, StoreError, UsageWriter};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::otlp::Exporter;
use crate::telemetry::trace::Tracer;
use crate::tools::ToolRegistry;

pub struct Gateway {
    pub config: Config,
    pub registry: Arc<Registry>,
    pub router: Arc<Router>,
    pub policies: Arc<PolicyStore>,
    pub master_key: Option<MasterKey>,
    pub store: Store,
    /// Usage rows, written in batches.
    pub usage: Arc<UsageWriter>,
    pub keys: KeyCache,
    pub limiter: Arc<Limiter>,
    pub failed_auth: FailedAuthGuard,
    pub audit: Arc<Auditor>,
    pub metrics: Arc<Metrics>,
    pub tracer: Tracer,
    /// Tools of the upstream MCP servers.
    pub tools: ToolRegistry,
    /// Unix seconds at start; the `created` of models in `/v1/models`.
    pub started_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(Problems),
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Limits(#[from] crate::limits::counters::CounterError),
    #[error("{0}")]
    Audit(#[from] crate::audit::JournalError),
    #[error("{0}")]
    Telemetry(String),
}

/// The provider registry and the policies compiled against it: everything `check`
/// validates, without opening any store. `budgets` feeds budget-aware downgrades.
pub fn compile_routing(loaded: &Loaded, budgets: Arc<dyn BudgetView>) -> Result<(Arc<Registry>, Router), Problems> {
    let registry = Arc::new(Registry::new(loaded.providers.clone()));
    let health = Arc::new(Health::default());
    let policy = policy::compile(&loaded.policies, &registry, &health).map_err(Problems)?;
    Ok((registry, Router::new(policy, health, budgets)))
}

impl Gateway {
    /// Compiles routing, opens the database (creating it on first start) and the limit
    /// counters.
    pub async fn start(loaded: Loaded, master_key: Option<MasterKey>) -> Result<Self, StartError> {
        let config = &loaded.config;
        let store = Store::open(&config.storage.database_url, &config.storage.data_dir).await?;
        let limiter = Arc::new(Limiter::new(&config.limits, store.clone())?);
        let (registry, router) = compile_routing(&loaded, limiter.clone()).map_err(StartError::Config)?;
        let audit = Arc::new(Auditor::start(&config.storage, &config.audit)?);
        let metrics = Arc::new(Metrics::new());
        let exporter = Exporter::start(&config.telemetry, metrics.clone()).map_err(StartError::Telemetry)?;
        let tracer = Tracer::new(exporter, config.telemetry.sample_ratio);
        let config = loaded.config;
        Ok(Gateway {
            tools: ToolRegistry::start(&config.mcp.servers),
            metrics,
            tracer,
            registry,
            router: Arc::new(router),
            policies: Arc::new(PolicyStore::new(loaded.policies_dir, audit.clone())),
            audit,
            master_key,
            keys: KeyCache::new(store.clone()),
            usage: Arc::new(UsageWriter::start(store.clone())),
            limiter,
            store,
            failed_auth: FailedAuthGuard::new(config.failed_auth_per_minute),
            config,
            started_at: jiff::Timestamp::now().as_second().max(0) as u64,
        })
    }
}
