//! One audit record, and the hash that chains it to the one before.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The hash before a chain's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Whether audit records carry prompt and response content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentCapture {
    #[default]
    Off,
    /// PII replaced by class placeholders (`[EMAIL_1]`), as the `redact` privacy rule does.
    Redacted,
    Full,
}

/// An upstream call that failed before the one that answered (or before giving up).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FailedAttempt {
    /// `provider/model`.
    pub target: String,
    pub error: String,
}

/// Who did what, through which route, with what result. Never a key, never a PII value
/// (unless content capture is `full` for the key or team).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// `aud_<chain>_<seq>`: given when the record is written to the database, from its
    /// place in its chain.
    pub id: String,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// `chat`, `embeddings`, `mcp` or `admin`. Fixed names, so not allocated per request
    /// (like `endpoint` and `outcome`): fewer blocks to touch again when it is journaled.
    pub kind: Cow<'static, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The master key (or open mode) acted; otherwise `key_id` says which virtual key.
    #[serde(default)]
    pub admin: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<std::net::IpAddr>,
    pub endpoint: Cow<'static, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// `provider/model` that answered (or was tried last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default)]
    pub attempts: u32,
    /// Every attempt that failed, in order, with its error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_attempts: Vec<FailedAttempt>,
    pub status: u16,
    /// Until the whole answer was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Until the upstream's answer (for a stream: its first content) arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttfb_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// The upstream reported no usage: the tokens were counted by the gateway.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub usage_estimated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Tools the model called in its answer, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Classes only, never values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pii_classes: Vec<String>,
    /// `completed`, `failed` or `cancelled` (the client left mid-stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Cow<'static, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For `admin` records: what was done (`key.create`, `policy.put`, …) and to what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// With content capture on: the request's messages (or embedding input)…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<serde_json::Value>,
    /// …and the answer's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
}

/// SHA-256 over the previous hash and the record's stored JSON text, in hex.
pub fn chain_hash(previous: &str, record_json: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(previous.as_bytes());
    hasher.update(b"\n");
    hasher.update(record_json.as_bytes());
    crate::keys::hex(&hasher.finalize())
}
