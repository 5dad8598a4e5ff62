//! The gateway's shared state: what every request reads.

use std::sync::Arc;

use crate::auth::MasterKey;
use crate::config::{Config, Loaded, Problems};
use crate::providers::Registry;
use crate::routing::health::Health;
use crate::routing::policy;
use crate::routing::reload::PolicyStore;
use crate::routing::{NoBudgets, Router};

pub struct Gateway {
    pub config: Config,
    pub registry: Arc<Registry>,
    pub router: Arc<Router>,
    pub policies: Arc<PolicyStore>,
    pub master_key: Option<MasterKey>,
    /// Unix seconds at start; the `created` of models in `/v1/models`.
    pub started_at: u64,
}

impl Gateway {
    /// Builds the provider registry and compiles the policies against it.
    pub fn new(loaded: Loaded, master_key: Option<MasterKey>) -> Result<Self, Problems> {
        let registry = Arc::new(Registry::new(loaded.providers));
        let health = Arc::new(Health::default());
        let policy = policy::compile(&loaded.policies, &registry, &health).map_err(Problems)?;
        Ok(Gateway {
            config: loaded.config,
            registry,
            router: Arc::new(Router::new(policy, health, Arc::new(NoBudgets))),
            policies: Arc::new(PolicyStore::new(loaded.policies_dir)),
            master_key,
            started_at: jiff::Timestamp::now().as_second().max(0) as u64,
        })
    }
}
