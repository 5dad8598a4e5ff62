//! Routing: every request is planned by the admin's policies (`policies/*.toml`). A plan
//! is an ordered list of upstream attempts plus how to make them (retries, timeouts,
//! privacy), and the planner can explain itself ([`explain::Trace`]).
//!
//! - [`policy`]: the policy language and its compiler
//! - [`rules`]: `when` conditions; [`strategy`]: candidate ordering
//! - [`pii`], [`redact`], [`privacy`]: finding PII and keeping it from cloud providers
//! - [`health`]: circuit breakers, latency, concurrency per deployment
//! - [`fallback`]: which failures are retried, and how long to wait
//! - [`reload`]: hot reload and the change history

pub mod explain;
pub mod fallback;
pub mod glob;
pub mod health;
pub mod input;
pub mod pii;
pub mod policy;
pub mod privacy;
pub mod redact;
pub mod reload;
mod rules;
pub mod strategy;
#[cfg(test)]
mod tests;
pub mod tokens;

use std::sync::Arc;

use arc_swap::ArcSwap;

use self::explain::{CandidateCheck, RuleCheck, Trace};
use self::health::{BreakerSettings, Deployment, Health};
pub use self::input::{Caller, RouteInput};
use self::pii::{PiiClass, PiiDetector};
use self::policy::{Actions, AttemptSettings, Policy, Privacy, Route};
use self::strategy::{Candidate, Strategy};
use crate::providers::catalog::{Capability, Locality, ModelSpec, Tokenizer};
use crate::providers::{Provider, Registry};

/// One deployment the gateway may call: a provider and its own model id.
#[derive(Clone)]
pub struct Target {
    pub provider: Arc<Provider>,
    /// The provider's own model id, without the `provider/` prefix.
    pub model: String,
    pub deployment: Arc<Deployment>,
}

impl Target {
    pub fn new(provider: &Arc<Provider>, model: &str, health: &Health) -> Self {
        let name = format!("{}/{model}", provider.id());
        let deployment = health.deployment(&name, provider.spec.concurrency);
        Target { provider: provider.clone(), model: model.to_owned(), deployment }
    }

    /// The catalog entry, if the model is listed (an Ollama model need not be).
    pub fn spec(&self) -> Option<&ModelSpec> {
        self.provider.spec.model(&self.model)
    }

    /// `provider/model`, as clients name it.
    pub fn name(&self) -> String {
        format!("{}/{}", self.provider.id(), self.model)
    }

    pub fn is_local(&self) -> bool {
        self.spec().map_or(self.provider.spec.locality, |spec| spec.locality) == Locality::Local
    }
}

/// What the request needs a model for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Chat,
    Embeddings,
}

/// How much of a caller's budget is spent. The limits module implements it; until then
/// nothing is known and budget-aware downgrades never fire.
pub trait BudgetView: Send + Sync {
    /// Share of the key's tightest budget already spent (0.0–1.0 and beyond), if it has one.
    fn spent_fraction(&self, key_id: Option<&str>) -> Option<f64>;
}

pub struct NoBudgets;

impl BudgetView for NoBudgets {
    fn spent_fraction(&self, _key_id: Option<&str>) -> Option<f64> {
        None
    }
}

/// The attempts for one request, in order, and how to make them.
pub struct Plan {
    pub attempts: Vec<Target>,
    /// The rule that decided, or `None` for the default.
    pub rule: Option<String>,
    pub settings: AttemptSettings,
    pub breaker: BreakerSettings,
    pub privacy: Option<Privacy>,
    /// PII classes found, when the rule's privacy action needed a scan.
    pub pii_found: Vec<PiiClass>,
    pub detector: Arc<PiiDetector>,
    /// Ceiling on output tokens from the rule.
    pub max_tokens: Option<u32>,
    /// Estimated USD per attempt (same order as `attempts`), `None` where unpriced.
    pub cost_estimates: Vec<Option<f64>>,
    /// The prompt's estimated tokens (see `tokens`).
    pub prompt_tokens: u64,
}

impl Plan {
    /// Whether request text must be redacted before it leaves.
    pub fn redacts(&self) -> bool {
        self.privacy == Some(Privacy::Redact) && !self.pii_found.is_empty()
    }
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
    /// A rule's `reject` action.
    #[error("{message}")]
    Rejected { rule: String, status: u16, message: String },
    #[error("the request contains personal data ({}) and policy rule `{rule}` blocks it", .classes.join(", "))]
    PiiBlocked { rule: String, classes: Vec<String> },
    /// `local_only` and no local target can take the request: never falls back to cloud.
    #[error(
        "policy rule `{rule}` keeps this request on local models, and none is available now ({detail}); it was not sent to any cloud provider"
    )]
    NoLocalTarget { rule: String, detail: String },
    /// Every candidate was filtered out.
    #[error("no target can serve this request: {detail}")]
    NoTarget { detail: String, retryable: bool },
}

impl RoutingError {
    /// The HTTP status this error is reported with.
    pub fn status(&self) -> u16 {
        match self {
            RoutingError::ModelNotFound { .. } => 404,
            RoutingError::Ambiguous { .. } | RoutingError::WrongPurpose { .. } | RoutingError::PiiBlocked { .. } => 400,
            RoutingError::Rejected { status, .. } => *status,
            RoutingError::ProviderUnavailable { .. } | RoutingError::NoLocalTarget { .. } => 503,
            RoutingError::NoTarget { retryable, .. } => {
                if *retryable {
                    503
                } else {
                    400
                }
            }
        }
    }
}

/// The live policy (swapped whole on reload), deployment health and budget view.
pub struct Router {
    policy: ArcSwap<Policy>,
    pub health: Arc<Health>,
    budgets: Arc<dyn BudgetView>,
}

impl Router {
    pub fn new(policy: Policy, health: Arc<Health>, budgets: Arc<dyn BudgetView>) -> Self {
        Router { policy: ArcSwap::from_pointee(policy), health, budgets }
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.policy.load_full()
    }

    /// Replaces the live policy; requests already planned keep the one they started with.
    pub fn swap(&self, policy: Policy) {
        self.policy.store(Arc::new(policy));
    }

    /// Plans a request. `trace`, when given, records every step of the decision.
    pub fn plan(
        &self,
        registry: &Registry,
        input: &RouteInput,
        mut trace: Option<&mut Trace>,
    ) -> Result<Plan, RoutingError> {
        let policy = self.policy.load();
        if let Some(trace) = trace.as_deref_mut() {
            trace.requested_model = input.requested.to_owned();
            trace.policy_version = policy.version;
        }

        let mut matched = None;
        for rule in &policy.rules {
            let checked = rule.when.check(input, &policy.detector);
            if let Some(trace) = trace.as_deref_mut() {
                trace.rules.push(RuleCheck {
                    name: rule.name.clone(),
                    priority: rule.priority,
                    origin: rule.origin.clone(),
                    matched: checked.is_ok(),
                    reason: checked.as_ref().err().map(ToString::to_string),
                });
            }
            if checked.is_ok() {
                matched = Some(rule);
                break;
            }
        }
        let actions: &Actions = matched.map_or(&policy.default, |rule| &rule.actions);
        let rule_name = matched.map(|rule| rule.name.clone());
        let rule_label = || rule_name.clone().unwrap_or_else(|| "default".into());

        let pii_found: Vec<PiiClass> = if actions.privacy.is_some() || trace.is_some() {
            input.pii_classes(&policy.detector).to_vec()
        } else {
            Vec::new()
        };
        if let Some(trace) = trace.as_deref_mut() {
            trace.matched_rule = rule_name.clone();
            trace.pii_found = pii_found.iter().map(|class| class.name().to_owned()).collect();
            trace.privacy = actions.privacy;
            trace.attempts = Some(actions.attempts);
            trace.max_tokens_cap = actions.max_tokens;
            trace.estimated_prompt_tokens = input.prompt_tokens(false);
        }
        if let Some(reject) = &actions.reject {
            return Err(RoutingError::Rejected {
                rule: rule_label(),
                status: reject.status,
                message: reject.message.clone(),
            });
        }
        if actions.privacy == Some(Privacy::Block) && !pii_found.is_empty() {
            return Err(RoutingError::PiiBlocked {
                rule: rule_label(),
                classes: pii_found.iter().map(|class| class.name().to_owned()).collect(),
            });
        }

        let (route, chosen_by) = self.route(registry, &policy, actions, input)?;
        let downgraded = chosen_by == RouteSource::Downgrade;
        // A model the client named itself is not second-guessed by the catalog's
        // capabilities or context window: the upstream has the final word.
        let screen = chosen_by != RouteSource::RequestedModel;
        let strategy =
            if actions.route.is_none() { actions.strategy.unwrap_or(route.strategy) } else { route.strategy };
        if let Some(trace) = trace.as_deref_mut() {
            trace.route = Some(route.label.clone());
            trace.strategy = Some(strategy);
            trace.downgraded = downgraded;
        }

        let local_only = actions.privacy == Some(Privacy::LocalOnly);
        let output_tokens = |spec: &ModelSpec| {
            input.max_output_tokens.unwrap_or(actions.expected_output_tokens).min(spec.max_output_tokens)
        };
        let mut candidates = Vec::with_capacity(route.targets.len());
        let mut skipped: Vec<(String, Skip)> = Vec::new();
        for (i, target) in route.targets.iter().enumerate() {
            let spec = target.spec();
            let exact = target.provider.spec.tokenizer == Tokenizer::O200kBase;
            let expected_cost = |spec: &ModelSpec| {
                let prompt = input.prompt_tokens(exact);
                spec.cost_usd(prompt, u64::from(output_tokens(spec)))
            };
            let capabilities_fit = !screen || spec.is_none_or(|spec| fits_needs(spec, input));
            let verdict = if let Err(reason) = target.provider.adapter() {
                Err(Skip::ProviderUnavailable(reason.to_owned()))
            } else if let Some(problem) = spec.and_then(|spec| wrong_purpose(spec, input.purpose)) {
                Err(Skip::WrongPurpose(problem))
            } else if local_only && !target.is_local() {
                Err(Skip::NotLocal)
            } else if !capabilities_fit {
                Err(Skip::LacksCapability)
            } else if let Some(spec) = spec.filter(|_| screen)
                && !fits_context(spec, input, exact, output_tokens(spec))
            {
                Err(Skip::ContextTooSmall(spec.context_window))
            } else if let Err(unavailable) = target.deployment.availability() {
                Err(Skip::Unhealthy(unavailable))
            } else {
                Ok(())
            };
            let wants_cost = strategy == Strategy::Cheapest || trace.is_some();
            if let Some(trace) = trace.as_deref_mut() {
                trace.candidates.push(CandidateCheck {
                    target: target.name(),
                    eligible: verdict.is_ok(),
                    skipped_because: verdict.as_ref().err().map(ToString::to_string),
                    local: target.is_local(),
                    capabilities_fit,
                    expected_cost_usd: spec.map(expected_cost),
                    circuit: target.deployment.circuit(),
                    latency_ewma_ms: target.deployment.latency().map(|d| d.as_secs_f64() * 1000.0),
                    in_flight: target.deployment.in_flight(),
                });
            }
            match verdict {
                Ok(()) => candidates.push(Candidate {
                    target: target.clone(),
                    weight: route.weights.get(i).copied().unwrap_or(0),
                    expected_cost: if wants_cost { spec.map(expected_cost) } else { None },
                    latency: target.deployment.latency(),
                    in_flight: target.deployment.in_flight(),
                }),
                Err(skip) => skipped.push((target.name(), skip)),
            }
        }
        if candidates.is_empty() {
            return Err(no_candidate(input, &route, skipped, local_only, rule_label()));
        }
        strategy::order(strategy, &mut candidates, input.end_user.or(input.key_id));

        if let Some(trace) = trace {
            trace.plan = candidates.iter().map(|c| c.target.name()).collect();
        }
        let cost_estimates = candidates
            .iter()
            .map(|c| {
                c.expected_cost.or_else(|| {
                    let spec = c.target.spec()?;
                    Some(spec.cost_usd(input.prompt_tokens(false), u64::from(output_tokens(spec))))
                })
            })
            .collect();
        Ok(Plan {
            attempts: candidates.into_iter().map(|c| c.target).collect(),
            rule: rule_name,
            settings: actions.attempts,
            breaker: policy.breaker,
            privacy: actions.privacy,
            pii_found,
            detector: policy.detector.clone(),
            max_tokens: actions.max_tokens,
            cost_estimates,
            prompt_tokens: input.prompt_tokens(false),
        })
    }

    /// The route for this request: the rule's (or its budget downgrade), the requested
    /// alias, or the one requested model.
    fn route(
        &self,
        registry: &Registry,
        policy: &Policy,
        actions: &Actions,
        input: &RouteInput,
    ) -> Result<(Route, RouteSource), RoutingError> {
        if let Some(downgrade) = &actions.downgrade
            && self.budgets.spent_fraction(input.key_id).is_some_and(|spent| spent > downgrade.spent_fraction)
        {
            return Ok((downgrade.route.clone(), RouteSource::Downgrade));
        }
        if let Some(route) = &actions.route {
            return Ok((route.clone(), RouteSource::Rule));
        }
        if let Some(alias) = policy.aliases.get(input.requested) {
            return Ok((alias.route.clone(), RouteSource::Alias));
        }
        let target = resolve(registry, &self.health, input.requested)?;
        let route = Route {
            label: input.requested.to_owned(),
            targets: vec![target],
            strategy: Strategy::Ordered,
            weights: vec![],
        };
        Ok((route, RouteSource::RequestedModel))
    }
}

/// Where a request's route came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RouteSource {
    Downgrade,
    Rule,
    Alias,
    RequestedModel,
}

/// Why a target was not a candidate.
enum Skip {
    ProviderUnavailable(String),
    WrongPurpose(&'static str),
    NotLocal,
    LacksCapability,
    ContextTooSmall(u32),
    Unhealthy(health::Unavailable),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::ProviderUnavailable(reason) => write!(f, "provider unavailable: {reason}"),
            Skip::WrongPurpose(problem) => f.write_str(problem),
            Skip::NotLocal => f.write_str("not local, and the rule is local_only"),
            Skip::LacksCapability => f.write_str("lacks a capability the request needs (tools, json_schema or vision)"),
            Skip::ContextTooSmall(window) => write!(f, "the prompt does not fit its {window}-token context window"),
            Skip::Unhealthy(why) => write!(f, "{why}"),
        }
    }
}

fn no_candidate(
    input: &RouteInput,
    route: &Route,
    skipped: Vec<(String, Skip)>,
    local_only: bool,
    rule: String,
) -> RoutingError {
    let detail = || {
        if skipped.is_empty() {
            return format!("`{}` names no target", route.label);
        }
        skipped.iter().map(|(name, skip)| format!("{name}: {skip}")).collect::<Vec<_>>().join("; ")
    };
    if local_only {
        return RoutingError::NoLocalTarget { rule, detail: detail() };
    }
    // One explicitly requested model keeps its specific error.
    if let [(name, skip)] = skipped.as_slice()
        && route.targets.len() == 1
        && route.label == input.requested
    {
        match skip {
            Skip::ProviderUnavailable(reason) => {
                let provider = name.split('/').next().unwrap_or_default().to_owned();
                return RoutingError::ProviderUnavailable { provider, reason: reason.clone() };
            }
            Skip::WrongPurpose(problem) => {
                return RoutingError::WrongPurpose { model: input.requested.to_owned(), problem };
            }
            _ => {}
        }
    }
    let retryable = skipped.iter().any(|(_, skip)| matches!(skip, Skip::Unhealthy(_) | Skip::ProviderUnavailable(_)));
    RoutingError::NoTarget { detail: detail(), retryable }
}

fn fits_needs(spec: &ModelSpec, input: &RouteInput) -> bool {
    let needs = input.needs;
    (!needs.tools || spec.has(Capability::Tools))
        && (!needs.json_schema || spec.has(Capability::JsonSchema))
        && (!needs.vision || spec.has(Capability::Vision))
}

/// Whether prompt + expected output fit the window. The cheap estimate decides when it
/// is far below the window; only close calls pay for an exact count.
fn fits_context(spec: &ModelSpec, input: &RouteInput, exact: bool, output_tokens: u32) -> bool {
    let window = u64::from(spec.context_window);
    let output = u64::from(output_tokens);
    if input.prompt_tokens(false) + output <= window / 2 {
        return true;
    }
    input.prompt_tokens(exact) + output <= window
}

fn wrong_purpose(spec: &ModelSpec, purpose: Purpose) -> Option<&'static str> {
    let embeds = spec.has(Capability::Embeddings);
    match purpose {
        Purpose::Chat if embeds && spec.capabilities.len() == 1 => Some("is an embeddings model; use /v1/embeddings"),
        Purpose::Embeddings if !embeds => Some("does not create embeddings"),
        _ => None,
    }
}

/// A requested model name (not an alias): `provider/model`, or a bare id that exactly
/// one usable provider lists.
fn resolve(registry: &Registry, health: &Health, requested: &str) -> Result<Target, RoutingError> {
    // `provider/model` first; a model id may itself contain `/` (`groq/openai/gpt-oss-20b`).
    let mut prefixed_error = None;
    if let Some((provider_id, model)) = requested.split_once('/')
        && let Some(provider) = registry.get(provider_id)
    {
        if provider.spec.model(model).is_some() || (provider.spec.allow_unlisted_models && !model.is_empty()) {
            return Ok(Target::new(provider, model, health));
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
        ([only], _) => Ok(Target::new(only, requested, health)),
        ([], Some(provider)) => Ok(Target::new(provider, requested, health)),
        ([], None) => Err(prefixed_error.unwrap_or_else(|| RoutingError::ModelNotFound {
            message: format!(
                "the model `{requested}` does not exist on this gateway; GET /v1/models lists the models and aliases it serves"
            ),
        })),
        (several, _) => Err(RoutingError::Ambiguous {
            model: requested.to_owned(),
            candidates: several.iter().map(|p| format!("{}/{requested}", p.id())).collect(),
        }),
    }
}
