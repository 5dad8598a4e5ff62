use serde::{Deserialize, Serialize};

/// OpenAI's error envelope: `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

impl ErrorEnvelope {
    pub fn new(message: impl Into<String>, kind: &str, param: Option<&str>, code: Option<&str>) -> Self {
        ErrorEnvelope {
            error: ErrorBody {
                message: message.into(),
                kind: kind.to_owned(),
                param: param.map(str::to_owned),
                code: code.map(str::to_owned),
            },
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising four strings cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
