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
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut random = [0u8; 24];
    // Six random bits per character, the two values past the alphabet drawn again: uniform,
    // and ~3 draws of the generator per id rather than one per character (ids are made on
    // every request).
    let (mut bits, mut left) = (0u64, 0);
    let mut made = 0;
    while made < random.len() {
        if left == 0 {
            (bits, left) = (fastrand::u64(..), 10);
        }
        if let Some(&character) = ALPHABET.get((bits & 63) as usize) {
            random[made] = character;
            made += 1;
        }
        (bits, left) = (bits >> 6, left - 1);
    }
    let mut id = String::with_capacity(prefix.len() + random.len());
    id.push_str(prefix);
    id.push_str(std::str::from_utf8(&random).unwrap_or_default());
    id
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_ids_are_the_prefix_and_24_letters_or_digits_drawn_from_all_62() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2_000 {
            let id = super::random_id("req_");
            let random = id.strip_prefix("req_").unwrap();
            assert_eq!(random.len(), 24, "{id}");
            assert!(random.bytes().all(|byte| byte.is_ascii_alphanumeric()), "{id}");
            seen.extend(random.bytes());
        }
        assert_eq!(seen.len(), 62, "every letter and digit turns up");
        assert_ne!(super::random_id(""), super::random_id(""));
    }
}
