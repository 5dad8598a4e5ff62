//! The configured providers, each with its catalog and (when usable) its adapter.

use std::sync::Arc;

use super::WireAdapter;
use super::catalog::{ApiKey, ProviderSpec, WireFormat};
use super::http::Upstream;
use super::ollama::OllamaAdapter;
use super::openai::OpenAiAdapter;

pub struct Provider {
    pub spec: ProviderSpec,
    /// `None` when the provider cannot be used; `unavailable` says why.
    adapter: Option<Box<dyn WireAdapter>>,
    unavailable: Option<String>,
}

impl Provider {
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// The adapter, or why the provider cannot be used (its key is not set, …).
    pub fn adapter(&self) -> Result<&dyn WireAdapter, &str> {
        match (&self.adapter, &self.unavailable) {
            (Some(adapter), _) => Ok(adapter.as_ref()),
            (None, Some(reason)) => Err(reason),
            (None, None) => Err("unavailable"),
        }
    }

    pub fn is_available(&self) -> bool {
        self.adapter.is_some()
    }
}

/// Every provider from `providers/`, in file-name order.
pub struct Registry {
    providers: Vec<Arc<Provider>>,
}

impl Registry {
    pub fn new(specs: Vec<ProviderSpec>) -> Self {
        let providers = specs
            .into_iter()
            .map(|spec| {
                let (adapter, unavailable) = match build_adapter(&spec) {
                    Ok(adapter) => (Some(adapter), None),
                    Err(reason) => (None, Some(reason)),
                };
                Arc::new(Provider { spec, adapter, unavailable })
            })
            .collect();
        Registry { providers }
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.spec.id == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Provider>> {
        self.providers.iter()
    }
}

fn build_adapter(spec: &ProviderSpec) -> Result<Box<dyn WireAdapter>, String> {
    let key = match &spec.api_key {
        ApiKey::NotNeeded => None,
        ApiKey::Present(key) => Some(key.clone()),
        ApiKey::Missing { env } => return Err(format!("{env} is not set")),
    };
    let upstream = Upstream::new(spec, key)?;
    Ok(match spec.wire {
        WireFormat::Openai => Box::new(OpenAiAdapter::new(upstream)?),
        WireFormat::Ollama => Box::new(OllamaAdapter::new(upstream)?),
    })
}
