//! Request parsing with errors a client can act on: "`messages[1].content`: expected a
//! string or an array of content parts", not "data did not match any variant".
//!
//! The fast path is one typed `serde_json` pass. Only when it fails do we parse again,
//! field by field, to name the field at fault (serde loses paths inside flattened structs).

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::chat::{ChatMessage, FunctionCall, MessageContent, ResponseFormat, Role, Stop, StreamOptions, Tool};
use super::embeddings::{EmbeddingInput, EmbeddingsRequest, EncodingFormat};
use super::{ChatCompletionRequest, JsonObject};

/// A request body the gateway cannot accept; becomes a 400 with `param` set.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidRequest {
    pub message: String,
    pub param: Option<String>,
}

impl InvalidRequest {
    fn at(param: &str, message: impl Into<String>) -> Self {
        let param = param.to_owned();
        InvalidRequest { message: format!("`{param}`: {}", message.into()), param: Some(param) }
    }
}

pub fn chat_request(body: &[u8]) -> Result<ChatCompletionRequest, InvalidRequest> {
    let request: ChatCompletionRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(error) => return Err(explain(body, error, locate_chat_error)),
    };
    if request.model.is_empty() {
        return Err(InvalidRequest::at("model", "must not be empty"));
    }
    if request.messages.is_empty() {
        return Err(InvalidRequest::at("messages", "must contain at least one message"));
    }
    for (i, message) in request.messages.iter().enumerate() {
        if message.role == Role::Tool && message.tool_call_id.is_none() {
            return Err(InvalidRequest::at(
                &format!("messages[{i}].tool_call_id"),
                "is required for a message with role `tool`",
            ));
        }
    }
    Ok(request)
}

pub fn embeddings_request(body: &[u8]) -> Result<EmbeddingsRequest, InvalidRequest> {
    let request: EmbeddingsRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(error) => return Err(explain(body, error, locate_embeddings_error)),
    };
    let empty = match &request.input {
        EmbeddingInput::Text(text) => text.is_empty(),
        EmbeddingInput::Texts(texts) => texts.is_empty() || texts.iter().any(String::is_empty),
        EmbeddingInput::Tokens(tokens) => tokens.is_empty(),
        EmbeddingInput::TokenBatches(batches) => batches.is_empty() || batches.iter().any(Vec::is_empty),
    };
    if empty {
        return Err(InvalidRequest::at("input", "must not be empty or contain empty inputs"));
    }
    Ok(request)
}

/// Turns a failed typed parse into an error that names the field.
fn explain(body: &[u8], error: serde_json::Error, locate: fn(&JsonObject) -> Option<FieldError>) -> InvalidRequest {
    if error.is_syntax() || error.is_eof() {
        return InvalidRequest { message: format!("the request body is not valid JSON: {error}"), param: None };
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return InvalidRequest { message: format!("the request body is not valid JSON: {error}"), param: None };
    };
    let Value::Object(object) = value else {
        return InvalidRequest { message: "the request body must be a JSON object".into(), param: None };
    };
    locate(&object)
        .map(|field| InvalidRequest::at(&field.path, field.detail))
        .unwrap_or_else(|| InvalidRequest { message: friendly(&error.to_string()), param: None })
}

/// What is wrong, and where (`""` for the value being checked itself).
struct FieldError {
    path: String,
    detail: String,
}

impl FieldError {
    fn new(path: &str, detail: impl Into<String>) -> Self {
        FieldError { path: path.to_owned(), detail: detail.into() }
    }

    /// The same error, seen from the enclosing element (`messages[2]`).
    fn within(self, outer: &str) -> Self {
        let path = if self.path.is_empty() { outer.to_owned() } else { format!("{outer}.{}", self.path) };
        FieldError { path, ..self }
    }
}

fn locate_chat_error(body: &JsonObject) -> Option<FieldError> {
    require(body, "model")
        .or_else(|| require(body, "messages"))
        .or_else(|| check::<String>(body, "model"))
        .or_else(|| check::<Vec<Value>>(body, "messages"))
        .or_else(|| locate_message_error(body.get("messages")?.as_array()?))
        .or_else(|| check::<bool>(body, "stream"))
        .or_else(|| check::<StreamOptions>(body, "stream_options"))
        .or_else(|| locate_tools_error(body))
        .or_else(|| check::<bool>(body, "parallel_tool_calls"))
        .or_else(|| check::<ResponseFormat>(body, "response_format"))
        .or_else(|| check::<f64>(body, "temperature"))
        .or_else(|| check::<f64>(body, "top_p"))
        .or_else(|| check::<u32>(body, "max_tokens"))
        .or_else(|| check::<u32>(body, "max_completion_tokens"))
        .or_else(|| check::<Stop>(body, "stop"))
        .or_else(|| check::<u32>(body, "n"))
        .or_else(|| check::<i64>(body, "seed"))
        .or_else(|| check::<f64>(body, "frequency_penalty"))
        .or_else(|| check::<f64>(body, "presence_penalty"))
        .or_else(|| check::<bool>(body, "logprobs"))
        .or_else(|| check::<u32>(body, "top_logprobs"))
        .or_else(|| check::<String>(body, "user"))
        .or_else(|| check::<JsonObject>(body, "metadata"))
        .or_else(|| check::<String>(body, "reasoning_effort"))
}

fn locate_message_error(messages: &[Value]) -> Option<FieldError> {
    messages.iter().enumerate().find_map(|(i, message)| {
        let Some(fields) = message.as_object() else {
            return Some(FieldError::new("", "must be an object").within(&format!("messages[{i}]")));
        };
        require(fields, "role")
            .or_else(|| check::<Role>(fields, "role"))
            .or_else(|| check::<MessageContent>(fields, "content"))
            .or_else(|| check::<String>(fields, "name"))
            .or_else(|| check::<String>(fields, "tool_call_id"))
            .or_else(|| {
                let calls = fields.get("tool_calls")?;
                let Some(calls) = calls.as_array() else {
                    return Some(FieldError::new("tool_calls", "must be an array"));
                };
                calls.iter().enumerate().find_map(|(j, call)| {
                    let call = call.as_object()?;
                    require(call, "id")
                        .or_else(|| check::<String>(call, "id"))
                        .or_else(|| check::<FunctionCall>(call, "function"))
                        .map(|e| e.within(&format!("tool_calls[{j}]")))
                })
            })
            .or_else(|| check_value::<ChatMessage>(message, ""))
            .map(|e| e.within(&format!("messages[{i}]")))
    })
}

fn locate_tools_error(body: &JsonObject) -> Option<FieldError> {
    check::<Vec<Value>>(body, "tools").or_else(|| {
        let tools = body.get("tools")?.as_array()?;
        tools.iter().enumerate().find_map(|(i, tool)| {
            let fields = tool.as_object()?;
            require(fields, "type").or_else(|| check_value::<Tool>(tool, "")).map(|e| e.within(&format!("tools[{i}]")))
        })
    })
}

fn locate_embeddings_error(body: &JsonObject) -> Option<FieldError> {
    require(body, "model")
        .or_else(|| require(body, "input"))
        .or_else(|| check::<String>(body, "model"))
        .or_else(|| check::<EmbeddingInput>(body, "input"))
        .or_else(|| check::<EncodingFormat>(body, "encoding_format"))
        .or_else(|| check::<u32>(body, "dimensions"))
        .or_else(|| check::<String>(body, "user"))
}

fn require(object: &JsonObject, field: &str) -> Option<FieldError> {
    (!object.contains_key(field)).then(|| FieldError::new(field, "is required"))
}

/// Deserialises `object[field]` (if present and not null) as `T`.
fn check<T: DeserializeOwned>(object: &JsonObject, field: &str) -> Option<FieldError> {
    check_value::<T>(object.get(field)?, field)
}

/// Deserialises `value` as `T`, reporting the path below `path` where it fails.
fn check_value<T: DeserializeOwned>(value: &Value, path: &str) -> Option<FieldError> {
    if value.is_null() {
        return None;
    }
    let error = serde_path_to_error::deserialize::<_, T>(value).err()?;
    let inner = error.path().to_string();
    let detail = friendly(&error.into_inner().to_string());
    Some(match (path.is_empty(), inner == ".") {
        (_, true) => FieldError::new(path, detail),
        (true, false) => FieldError::new(&inner, detail),
        (false, false) => FieldError::new(&format!("{path}.{inner}"), detail),
    })
}

/// Replaces serde's wording for untagged enums with what the field accepts.
fn friendly(message: &str) -> String {
    let replacements = [
        ("untagged enum MessageContent", "expected a string or an array of content parts"),
        ("untagged enum Stop", "expected a string or an array of strings"),
        ("untagged enum EmbeddingInput", "expected a string, an array of strings, or token ids"),
    ];
    for (needle, replacement) in replacements {
        if message.contains(needle) {
            return replacement.to_owned();
        }
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param_of(body: &str) -> Option<String> {
        chat_request(body.as_bytes()).unwrap_err().param
    }

    #[test]
    fn names_the_field_at_fault() {
        assert_eq!(param_of(r#"{"messages":[{"role":"user","content":"x"}]}"#).as_deref(), Some("model"));
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"}"#).as_deref(),
            Some("temperature")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"role":"user","content":"x"},{"role":"user","content":5}]}"#)
                .as_deref(),
            Some("messages[1].content")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#).as_deref(),
            Some("messages[0].role")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":{}}}]}]}"#).as_deref(),
            Some("messages[0].tool_calls[0].function.arguments")
        );
        assert_eq!(param_of(r#"{"model":"m","messages":[]}"#).as_deref(), Some("messages"));
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#).as_deref(),
            Some("messages[0].tool_call_id")
        );
    }

    #[test]
    fn untagged_errors_say_what_is_accepted() {
        let error = chat_request(br#"{"model":"m","messages":[{"role":"user","content":5}]}"#).unwrap_err();
        assert!(error.message.contains("a string or an array of content parts"), "{}", error.message);
    }

    #[test]
    fn syntax_errors_have_no_param() {
        let error = chat_request(b"{\"model\": ").unwrap_err();
        assert_eq!(error.param, None);
        assert!(error.message.contains("not valid JSON"));
    }
}
