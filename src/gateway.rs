//! The gateway's shared state: what every request reads.

use crate::auth::MasterKey;
use crate::config::{Config, Loaded};
use crate::providers::Registry;

pub struct Gateway {
    pub config: Config,
    pub registry: Registry,
    pub master_key: Option<MasterKey>,
    /// Unix seconds at start; the `created` of models in `/v1/models`.
    pub started_at: u64,
}

impl Gateway {
    pub fn new(loaded: Loaded, master_key: Option<MasterKey>) -> Self {
        Gateway {
            config: loaded.config,
            registry: Registry::new(loaded.providers),
            master_key,
            started_at: jiff::Timestamp::now().as_second().max(0) as u64,
        }
    }
}
