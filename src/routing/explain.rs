//! The decision trace: why a request was planned the way it was. Built only when asked
//! for (`POST /admin/route/explain`), by the same planner live traffic uses.

use serde::Serialize;

use super::health::CircuitState;
use super::policy::{AttemptSettings, Privacy};
use super::strategy::Strategy;

#[derive(Debug, Default, Serialize)]
pub struct Trace {
    pub requested_model: String,
    pub policy_version: u64,
    /// Each rule in evaluation order, up to the one that matched.
    pub rules: Vec<RuleCheck>,
    /// `None`: no rule matched and the default applied.
    pub matched_rule: Option<String>,
    /// Classes only, never values.
    pub pii_found: Vec<String>,
    pub privacy: Option<Privacy>,
    /// The alias or target list routed to.
    pub route: Option<String>,
    pub strategy: Option<Strategy>,
    /// The key's budget use moved the request to the rule's downgrade route.
    pub downgraded: bool,
    pub estimated_prompt_tokens: u64,
    pub candidates: Vec<CandidateCheck>,
    /// The attempts in order.
    pub plan: Vec<String>,
    pub attempts: Option<AttemptSettings>,
    pub max_tokens_cap: Option<u32>,
    /// Set when the decision is a refusal.
    pub error: Option<TraceError>,
}

#[derive(Debug, Serialize)]
pub struct RuleCheck {
    pub name: String,
    pub priority: i64,
    pub origin: String,
    pub matched: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CandidateCheck {
    pub target: String,
    pub eligible: bool,
    pub skipped_because: Option<String>,
    pub local: bool,
    pub capabilities_fit: bool,
    pub expected_cost_usd: Option<f64>,
    pub circuit: CircuitState,
    pub latency_ewma_ms: Option<f64>,
    pub in_flight: u32,
}

#[derive(Debug, Serialize)]
pub struct TraceError {
    pub status: u16,
    pub message: String,
}
