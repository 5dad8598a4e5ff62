//! The policy language as written in `policies/*.toml` (see `policies/default.toml` for
//! a commented example). Validation and compilation are in the parent module.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::Privacy;
use crate::routing::strategy::Strategy;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Names clients may send as `model`, each expanding to candidate targets.
    #[serde(default)]
    pub aliases: BTreeMap<String, Spanned<AliasFile>>,
    #[serde(default)]
    pub rules: Vec<Spanned<RuleFile>>,
    /// What applies when no rule matches; its settings are also every rule's defaults.
    #[serde(default)]
    pub default: Option<Spanned<RuleFile>>,
    /// Admin-defined PII classes: `name = "regex"`.
    #[serde(default)]
    pub pii_classes: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    pub circuit_breaker: Option<Spanned<BreakerFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasFile {
    pub targets: Vec<Spanned<String>>,
    #[serde(default)]
    pub strategy: Option<Strategy>,
    #[serde(default)]
    pub weights: Option<Spanned<Vec<u32>>>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub name: Option<Spanned<String>>,
    /// Higher runs first; equal priorities keep file order.
    pub priority: Option<i64>,
    pub when: Option<Spanned<WhenFile>>,
    pub targets: Option<Vec<Spanned<String>>>,
    pub strategy: Option<Strategy>,
    pub weights: Option<Spanned<Vec<u32>>>,
    pub privacy: Option<Privacy>,
    pub reject: Option<Spanned<RejectFile>>,
    pub max_tokens: Option<u32>,
    pub expected_output_tokens: Option<u32>,
    pub retries: Option<u32>,
    pub backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub first_byte_timeout_ms: Option<u64>,
    pub total_timeout_ms: Option<u64>,
    pub downgrade: Option<Spanned<DowngradeFile>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WhenFile {
    pub model: Option<Vec<String>>,
    pub key: Option<Vec<String>>,
    pub team: Option<Vec<String>>,
    pub user: Option<Vec<String>>,
    pub tags: Option<Vec<String>>,
    pub prompt_tokens: Option<Spanned<TokenRangeFile>>,
    pub needs: Option<Vec<NeedName>>,
    pub pii: Option<Spanned<PiiConditionFile>>,
    pub time: Option<Spanned<TimeWindowFile>>,
    pub last_user_message: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRangeFile {
    pub min: Option<u64>,
    pub max: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum PiiConditionFile {
    /// `"any"`
    Any(String),
    /// `["email", "secret"]`
    Classes(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindowFile {
    /// `"22:00"`; the window may cross midnight (`from` later than `to`).
    pub from: String,
    pub to: String,
    /// An IANA zone such as `Europe/Kyiv`; default UTC.
    pub timezone: Option<String>,
    /// `["mon", "tue", …]`; default every day.
    pub days: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectFile {
    pub status: u16,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DowngradeFile {
    /// Share of the key's budget already spent, 0–100.
    pub budget_spent_percent: f64,
    /// An alias or target list used instead.
    pub to: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerFile {
    pub consecutive_failures: Option<u32>,
    pub error_rate: Option<f64>,
    pub window: Option<u32>,
    pub cooldown_ms: Option<u64>,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NeedName {
    Tools,
    JsonSchema,
    Vision,
}
