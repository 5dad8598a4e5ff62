//! OpenAI wire types shared by every part of the gateway.
//!
//! Requests keep every field they do not model in an `extra` map
//! (`#[serde(flatten)]`), so a field OpenAI adds tomorrow reaches
//! OpenAI-format upstreams unchanged.

pub mod chat;
pub mod embeddings;
pub mod error;
pub mod models;
pub mod parse;
pub mod usage;

pub use chat::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, Choice, ChunkChoice, ContentPart, Delta,
    FunctionCall, MessageContent, ResponseMessage, Role, Stop, Tool, ToolCall, ToolCallDelta,
};
pub use embeddings::{EmbeddingInput, EmbeddingsRequest};
pub use error::{ErrorBody, ErrorEnvelope};
pub use usage::Usage;

/// A JSON object, as `serde_json` represents one.
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// An id in OpenAI's style: `prefix` and 24 random letters and digits (`chatcmpl-…`,
/// `call_…`, `req_…`).
pub fn random_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + 24);
    id.push_str(prefix);
    id.extend((0..24).map(|_| fastrand::alphanumeric()));
    id
}
