//! Applying a `redact` rule: PII in the request is replaced by placeholders before the
//! request leaves, and the placeholders the model echoes are turned back into the
//! original values in the answer, whole or streamed.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::pii::PiiDetector;
use super::redact::{Redactions, Restorer};
use crate::protocol::{ChatCompletionRequest, EmbeddingInput, EmbeddingsRequest, MessageContent};

/// Replaces PII in every text of a chat request (contents, text parts, tool-call
/// arguments: the same texts routing scanned).
pub fn redact_chat(request: &mut ChatCompletionRequest, detector: &PiiDetector) -> Redactions {
    let mut redactions = Redactions::new();
    for message in &mut request.messages {
        match &mut message.content {
            Some(MessageContent::Text(text)) => redact_text(text, detector, &mut redactions),
            Some(MessageContent::Parts(parts)) => {
                for text in parts.iter_mut().filter_map(|part| part.text.as_mut()) {
                    redact_text(text, detector, &mut redactions);
                }
            }
            None => {}
        }
        for call in message.tool_calls.iter_mut().flatten() {
            if let Some(function) = &mut call.function {
                redact_text(&mut function.arguments, detector, &mut redactions);
            }
        }
    }
    redactions
}

pub fn redact_embeddings(request: &mut EmbeddingsRequest, detector: &PiiDetector) -> Redactions {
    let mut redactions = Redactions::new();
    match &mut request.input {
        EmbeddingInput::Text(text) => redact_text(text, detector, &mut redactions),
        EmbeddingInput::Texts(texts) => texts.iter_mut().for_each(|text| redact_text(text, detector, &mut redactions)),
        EmbeddingInput::Tokens(_) | EmbeddingInput::TokenBatches(_) => {}
    }
    redactions
}

/// `text` with its PII replaced by placeholders (for audit records; nothing to restore).
pub fn redacted(text: &str, detector: &PiiDetector) -> String {
    let findings = detector.scan(text);
    if findings.is_empty() { text.to_owned() } else { Redactions::new().redact(text, &findings) }
}

fn redact_text(text: &mut String, detector: &PiiDetector, redactions: &mut Redactions) {
    let findings = detector.scan(text);
    if !findings.is_empty() {
        *text = redactions.redact(text, &findings);
    }
}

/// A `chat.completion` body with the originals back in each message's content and tool
/// arguments. A body that is not JSON is returned as it came.
pub fn restore_completion(body: Bytes, redactions: &Redactions) -> Bytes {
    let Ok(mut completion) = serde_json::from_slice::<Value>(&body) else { return body };
    for choice in choices(&mut completion) {
        let Some(message) = choice.get_mut("message").and_then(Value::as_object_mut) else { continue };
        if let Some(Value::String(content)) = message.get_mut("content") {
            *content = redactions.restore(content);
        }
        for arguments in tool_arguments(message) {
            *arguments = redactions.restore(arguments);
        }
    }
    serde_json::to_vec(&completion).map(Bytes::from).unwrap_or(body)
}

fn choices(value: &mut Value) -> impl Iterator<Item = &mut Map<String, Value>> {
    value.get_mut("choices").and_then(Value::as_array_mut).into_iter().flatten().filter_map(Value::as_object_mut)
}

fn tool_arguments(message: &mut Map<String, Value>) -> impl Iterator<Item = &mut String> {
    message.get_mut("tool_calls").and_then(Value::as_array_mut).into_iter().flatten().filter_map(|call| {
        match call.get_mut("function")?.get_mut("arguments")? {
            Value::String(arguments) => Some(arguments),
            _ => None,
        }
    })
}

/// Restores placeholders in a stream's SSE frames. A placeholder split across chunks is
/// held back until it is complete, per choice and per tool call; whatever is held is
/// released with the choice's `finish_reason` chunk.
pub struct StreamRestorer {
    redactions: Arc<Redactions>,
    content: BTreeMap<u64, Restorer>,
    /// By (choice, tool call index).
    arguments: BTreeMap<(u64, u64), Restorer>,
}

impl StreamRestorer {
    pub fn new(redactions: Arc<Redactions>) -> Self {
        StreamRestorer { redactions, content: BTreeMap::new(), arguments: BTreeMap::new() }
    }

    /// One or more SSE frames in, the same frames with placeholders restored out.
    pub fn frame(&mut self, frame: &[u8]) -> Bytes {
        let Ok(text) = std::str::from_utf8(frame) else { return Bytes::copy_from_slice(frame) };
        let mut out = String::with_capacity(text.len() + 16);
        for event in text.split_inclusive("\n\n") {
            let data = event.trim_end().strip_prefix("data: ").or_else(|| event.trim_end().strip_prefix("data:"));
            match data.map(str::trim).and_then(|json| serde_json::from_str::<Value>(json).ok()) {
                Some(mut chunk) => {
                    self.restore_chunk(&mut chunk);
                    out.push_str("data: ");
                    out.push_str(&chunk.to_string());
                    out.push_str("\n\n");
                }
                None => out.push_str(event),
            }
        }
        Bytes::from(out)
    }

    fn restore_chunk(&mut self, chunk: &mut Value) {
        for choice in choices(chunk) {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let finished = choice.get("finish_reason").is_some_and(|reason| !reason.is_null());
            let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) else { continue };
            let restorer = self.content.entry(index).or_insert_with(|| Restorer::new(self.redactions.clone()));
            let mut content = match delta.get("content") {
                Some(Value::String(piece)) => Some(restorer.push(piece)),
                _ => None,
            };
            if finished {
                let rest = restorer.finish();
                if !rest.is_empty() {
                    content.get_or_insert_with(String::new).push_str(&rest);
                }
            }
            if let Some(content) = content {
                delta.insert("content".into(), Value::String(content));
            }
            for call in delta.get_mut("tool_calls").and_then(Value::as_array_mut).into_iter().flatten() {
                let call_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                let Some(Value::String(arguments)) = call.get_mut("function").and_then(|f| f.get_mut("arguments"))
                else {
                    continue;
                };
                let restorer =
                    self.arguments.entry((index, call_index)).or_insert_with(|| Restorer::new(self.redactions.clone()));
                *arguments = restorer.push(arguments);
            }
            if finished {
                self.flush_arguments(index, delta);
            }
        }
    }

    /// Releases held tool-argument text of a finished choice as extra tool-call deltas.
    fn flush_arguments(&mut self, choice: u64, delta: &mut Map<String, Value>) {
        let held: Vec<(u64, String)> = self
            .arguments
            .range_mut((choice, 0)..=(choice, u64::MAX))
            .map(|((_, call), restorer)| (*call, restorer.finish()))
            .filter(|(_, rest)| !rest.is_empty())
            .collect();
        if held.is_empty() {
            return;
        }
        let calls = delta.entry("tool_calls").or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(calls) = calls {
            for (index, rest) in held {
                calls.push(serde_json::json!({ "index": index, "function": { "arguments": rest } }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_redactions() -> Arc<Redactions> {
        let detector = PiiDetector::default();
        let mut redactions = Redactions::new();
        let text = "write to olena@example.com";
        let _ = redactions.redact(text, &detector.scan(text));
        Arc::new(redactions)
    }

    #[test]
    fn restores_a_placeholder_split_across_stream_chunks() {
        let mut restorer = StreamRestorer::new(sample_redactions());
        let chunk = |content: &str, finish: Option<&str>| {
            let chunk = serde_json::json!({"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":content},"finish_reason":finish}]});
            format!("data: {chunk}\n\n")
        };
        let mut text = String::new();
        for (piece, finish) in [("Mail [EMA", None), ("IL_1] now", None), (" or [EMAIL", None), ("", Some("stop"))] {
            let out = restorer.frame(chunk(piece, finish).as_bytes());
            let out = std::str::from_utf8(&out).unwrap();
            let value: Value = serde_json::from_str(out.trim().strip_prefix("data: ").unwrap()).unwrap();
            text.push_str(value["choices"][0]["delta"]["content"].as_str().unwrap());
        }
        assert_eq!(text, "Mail olena@example.com now or [EMAIL");
    }

    #[test]
    fn restores_complete_bodies_and_tool_arguments() {
        let redactions = sample_redactions();
        let body = serde_json::json!({"choices":[{"index":0,"message":{"role":"assistant","content":"Sent to [EMAIL_1].","tool_calls":[{"id":"1","type":"function","function":{"name":"send","arguments":"{\"to\":\"[EMAIL_1]\"}"}}]}}]});
        let restored = restore_completion(Bytes::from(body.to_string()), &redactions);
        let value: Value = serde_json::from_slice(&restored).unwrap();
        assert_eq!(value["choices"][0]["message"]["content"], "Sent to olena@example.com.");
        assert_eq!(
            value["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"to\":\"olena@example.com\"}"
        );
    }
}
