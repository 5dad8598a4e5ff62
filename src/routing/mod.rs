//! Turning a requested model name into a plan of upstream attempts.
//!
//! Today a plan is the one provider that serves the name; policy rules, aliases, cost
//! and privacy routing build on this (`policies/`).

use std::sync::Arc;

use crate::providers::catalog::{Capability, ModelSpec};
use crate::providers::{Provider, Registry};

/// One upstream call the gateway may make.
#[derive(Clone)]
pub struct Target {
    pub provider: Arc<Provider>,
    /// The provider's own model id, without the `provider/` prefix.
    pub model: String,
}

impl Target {
    /// The catalog entry, if the model is listed (an Ollama model need not be).
    pub fn spec(&self) -> Option<&ModelSpec> {
        self.provider.spec.model(&self.model)
    }

    /// `provider/model`, as clients name it.
    pub fn name(&self) -> String {
        format!("{}/{}", self.provider.id(), self.model)
    }
}

/// The attempts for one request, in order.
pub struct Plan {
    pub attempts: Vec<Target>,
}

/// What the request needs from a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Chat,
    Embeddings,
}

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("{message}")]
    ModelNotFound { message: String },
    #[error("model `{model}` is served by several providers ({}); name one as provider/model", .candidates.join(", "))]
    Ambiguous { model: String, candidates: Vec<String> },
    #[error("provider {provider} is not available: {reason}")]
    ProviderUnavailable { provider: String, reason: String },
    #[error("model `{model}` {problem}")]
    WrongPurpose { model: String, problem: &'static str },
}

/// Resolves `requested` (`provider/model` or a bare model id) to a plan.
pub fn plan(registry: &Registry, requested: &str, purpose: Purpose) -> Result<Plan, RoutingError> {
    let target = resolve(registry, requested)?;
    if let Err(reason) = target.provider.adapter() {
        return Err(RoutingError::ProviderUnavailable {
            provider: target.provider.id().to_owned(),
            reason: reason.to_owned(),
        });
    }
    if let Some(spec) = target.spec() {
        let embeds = spec.has(Capability::Embeddings);
        match purpose {
            Purpose::Chat if embeds && spec.capabilities.len() == 1 => {
                return Err(RoutingError::WrongPurpose {
                    model: requested.into(),
                    problem: "is an embeddings model; use /v1/embeddings",
                });
            }
            Purpose::Embeddings if !embeds => {
                return Err(RoutingError::WrongPurpose {
                    model: requested.into(),
                    problem: "does not create embeddings",
                });
            }
            _ => {}
        }
    }
    Ok(Plan { attempts: vec![target] })
}

fn resolve(registry: &Registry, requested: &str) -> Result<Target, RoutingError> {
    // `provider/model` first; a model id may itself contain `/` (`groq/openai/gpt-oss-20b`).
    let mut prefixed_error = None;
    if let Some((provider_id, model)) = requested.split_once('/')
        && let Some(provider) = registry.get(provider_id)
    {
        if provider.spec.model(model).is_some() || (provider.spec.allow_unlisted_models && !model.is_empty()) {
            return Ok(Target { provider: provider.clone(), model: model.to_owned() });
        }
        prefixed_error = Some(RoutingError::ModelNotFound {
            message: format!(
                "provider {provider_id} has no model `{model}`; GET /v1/models lists the models this gateway serves"
            ),
        });
    }

    // A bare id: the one available provider that lists it.
    let serving: Vec<&Arc<Provider>> = registry.iter().filter(|p| p.spec.model(requested).is_some()).collect();
    let available: Vec<&&Arc<Provider>> = serving.iter().filter(|p| p.is_available()).collect();
    match (available.as_slice(), serving.first()) {
        ([only], _) => Ok(Target { provider: Arc::clone(only), model: requested.to_owned() }),
        ([], Some(provider)) => Ok(Target { provider: (*provider).clone(), model: requested.to_owned() }),
        ([], None) => Err(prefixed_error.unwrap_or_else(|| RoutingError::ModelNotFound {
            message: format!(
                "the model `{requested}` does not exist on this gateway; GET /v1/models lists the models it serves"
            ),
        })),
        (several, _) => Err(RoutingError::Ambiguous {
            model: requested.to_owned(),
            candidates: several.iter().map(|p| format!("{}/{requested}", p.id())).collect(),
        }),
    }
}
