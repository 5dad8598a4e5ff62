use serde::{Deserialize, Serialize};

use super::JsonObject;

/// Token counts of one request, as OpenAI reports them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    /// `prompt_tokens_details`, `completion_tokens_details` and whatever comes next.
    #[serde(flatten)]
    pub extra: JsonObject,
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            extra: JsonObject::new(),
        }
    }
}

/// The `usage` member of any OpenAI response body; every other member is skipped
/// without being materialised.
#[derive(Debug, Deserialize)]
pub struct UsageField {
    #[serde(default)]
    pub usage: Option<Usage>,
}
