//! What a caller may look at: the models it may use, its own usage, and how a request
//! would be routed. The HTTP API and the MCP tools show the same thing from here.

use serde_json::{Value, json};

use super::{PipelineError, RequestContext};
use crate::auth::Principal;
use crate::gateway::Gateway;
use crate::keys::AuthedKey;
use crate::protocol::models::Model;
use crate::protocol::parse;
use crate::routing::RouteInput;
use crate::routing::explain::{Trace, TraceError};
use crate::routing::glob::Glob;
use crate::store::{StoreError, UsageFilter};

/// The policy's aliases, then every model of every usable provider as `provider/model`.
pub fn available_models(gateway: &Gateway) -> impl Iterator<Item = Model> + '_ {
    let aliases: Vec<Model> = gateway
        .router
        .policy()
        .aliases
        .keys()
        .map(|alias| Model::new(alias.clone(), gateway.started_at, "switchyard"))
        .collect();
    let models =
        gateway.registry.iter().filter(|p| p.is_available()).flat_map(move |provider| {
            provider.spec.models.iter().map(move |model| {
                Model::new(format!("{}/{}", provider.id(), model.id), gateway.started_at, provider.id())
            })
        });
    aliases.into_iter().chain(models)
}

/// Whether a virtual key may use `model` (its `models` globs; empty: everything).
pub fn may_use(principal: &Principal, model: &str) -> bool {
    principal.key().is_none_or(|key| {
        let patterns = &key.record.policy.models;
        patterns.is_empty() || patterns.iter().any(|pattern| Glob::new(pattern).matches(model))
    })
}

/// A virtual key's limits, each budget's use in its current window, and its spend.
pub async fn key_usage(gateway: &Gateway, key: &AuthedKey) -> Result<Value, StoreError> {
    let record = &key.record;
    let budgets = gateway.limiter.budget_use(&format!("key:{}", record.id), &record.policy.budgets).await;
    let filter = UsageFilter { key_id: Some(record.id.clone()), ..UsageFilter::default() };
    let total = gateway.store.usage(&filter, None).await?.into_iter().next().unwrap_or_default();
    Ok(json!({
        "key": { "id": record.id, "name": record.name, "team": record.team },
        "limits": record.policy.limits,
        "end_user_limits": record.policy.end_user_limits,
        "budgets": budgets.into_iter().map(|(budget, used, resets_at)| json!({
            "budget": budget,
            "used": used,
            "remaining": (budget.amount - used).max(0.0),
            "resets_at": jiff::Timestamp::from_second(resets_at).map(|t| t.to_string()).unwrap_or_default(),
        })).collect::<Vec<_>>(),
        "total": total,
    }))
}

/// The routing decision for a chat request body, as `principal` sending it would get it;
/// no upstream is called.
pub fn explain_route(
    gateway: &Gateway,
    context: &RequestContext,
    principal: &Principal,
    body: &[u8],
) -> Result<Trace, PipelineError> {
    let request = parse::chat_request(body)?;
    let mut trace = Trace::default();
    let input = RouteInput::chat(&request, &context.caller(principal));
    if let Err(error) = gateway.router.plan(&gateway.registry, &input, Some(&mut trace)) {
        trace.error = Some(TraceError { status: error.status(), message: error.to_string() });
    }
    Ok(trace)
}
