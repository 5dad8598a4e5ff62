//! OpenAI ⇄ Ollama translation, as pure functions (the snapshot tests live here).

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Value, json};

use super::wire;
use crate::protocol::chat::{FunctionCallDelta, JsonSchemaFormat};
use crate::protocol::embeddings::{Embedding, EmbeddingVector, EmbeddingsResponse, EncodingFormat};
use crate::protocol::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice, ChunkChoice, Delta, EmbeddingInput,
    EmbeddingsRequest, FunctionCall, MessageContent, ResponseMessage, Role, ToolCall, ToolCallDelta, Usage, random_id,
};
use crate::providers::openai::sse_frame;
use crate::providers::{ProviderError, StreamEvent};

fn unsupported(param: impl Into<String>, message: impl Into<String>) -> ProviderError {
    ProviderError::Unsupported { message: message.into(), param: Some(param.into()) }
}

/// An OpenAI chat request as an Ollama `/api/chat` request.
pub fn chat_request(request: ChatCompletionRequest) -> Result<wire::ChatRequest, ProviderError> {
    if request.n.is_some_and(|n| n > 1) {
        return Err(unsupported("n", "ollama returns one choice per request; `n` must be 1"));
    }
    let mut tool_names_by_id: HashMap<String, String> = HashMap::new();
    let mut messages = Vec::with_capacity(request.messages.len());
    for (i, message) in request.messages.into_iter().enumerate() {
        let role = match message.role {
            Role::System | Role::Developer => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool | Role::Function => "tool",
        };
        let (content, images) = flatten_content(message.content, i)?;
        let mut tool_calls = Vec::new();
        for (j, call) in message.tool_calls.unwrap_or_default().into_iter().enumerate() {
            let Some(function) = call.function else {
                return Err(unsupported(
                    format!("messages[{i}].tool_calls[{j}]"),
                    "ollama supports only function tool calls",
                ));
            };
            let arguments = parse_arguments(&function.arguments).ok_or_else(|| {
                unsupported(
                    format!("messages[{i}].tool_calls[{j}].function.arguments"),
                    "must be a string holding a JSON object",
                )
            })?;
            tool_names_by_id.insert(call.id.clone(), function.name.clone());
            tool_calls.push(wire::ToolCall {
                id: Some(call.id),
                function: wire::ToolCallFunction { index: None, name: function.name, arguments },
            });
        }
        let tool_name = match (&message.tool_call_id, message.role) {
            (Some(id), _) => tool_names_by_id.get(id).cloned().or(message.name),
            (None, Role::Function) => message.name,
            _ => None,
        };
        messages.push(wire::Message {
            role,
            content,
            images,
            tool_calls,
            tool_name,
            tool_call_id: message.tool_call_id,
        });
    }

    let tools = match request.tools {
        None => None,
        Some(tools) => {
            let mut functions = Vec::with_capacity(tools.len());
            for (i, tool) in tools.into_iter().enumerate() {
                let Some(mut function) = tool.function.filter(|_| tool.kind == "function") else {
                    return Err(unsupported(format!("tools[{i}]"), "ollama supports only `function` tools"));
                };
                function.strict = None;
                functions.push(json!({"type": "function", "function": function}));
            }
            filter_tools(functions, request.tool_choice.as_ref())?
        }
    };

    let format = match request.response_format {
        None => None,
        Some(format) => match (format.kind.as_str(), format.json_schema) {
            ("text", _) => None,
            ("json_object", _) => Some(Value::String("json".into())),
            ("json_schema", Some(JsonSchemaFormat { schema: Some(schema), .. })) => Some(schema),
            ("json_schema", _) => {
                return Err(unsupported("response_format.json_schema.schema", "is required"));
            }
            (other, _) => {
                return Err(unsupported("response_format.type", format!("`{other}` is not supported by ollama")));
            }
        },
    };

    let mut options = serde_json::Map::new();
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            options.insert(key.to_owned(), value);
        }
    };
    set("temperature", request.temperature.map(Value::from));
    set("top_p", request.top_p.map(Value::from));
    set("num_predict", request.max_completion_tokens.or(request.max_tokens).map(Value::from));
    set("stop", request.stop.map(|stop| Value::from(stop.into_vec())));
    set("seed", request.seed.map(Value::from));
    set("frequency_penalty", request.frequency_penalty.map(Value::from));
    set("presence_penalty", request.presence_penalty.map(Value::from));

    let think = match request.reasoning_effort.as_deref() {
        None | Some("none") => Value::Bool(false),
        Some("minimal") => Value::from("low"),
        Some("xhigh") => Value::from("max"),
        Some(level @ ("low" | "medium" | "high" | "max")) => Value::from(level),
        Some(other) => {
            return Err(unsupported("reasoning_effort", format!("`{other}` is not a reasoning effort ollama knows")));
        }
    };

    Ok(wire::ChatRequest {
        model: request.model,
        messages,
        tools,
        format,
        options,
        stream: request.stream.unwrap_or(false),
        think,
        keep_alive: request.extra.get("keep_alive").cloned(),
        logprobs: request.logprobs,
        top_logprobs: request.top_logprobs,
    })
}

/// Text joined by newlines; `data:` image URLs become Ollama's raw base64 `images`.
fn flatten_content(content: Option<MessageContent>, i: usize) -> Result<(String, Vec<String>), ProviderError> {
    let parts = match content {
        None => return Ok((String::new(), Vec::new())),
        Some(MessageContent::Text(text)) => return Ok((text, Vec::new())),
        Some(MessageContent::Parts(parts)) => parts,
    };
    let mut texts = Vec::new();
    let mut images = Vec::new();
    for (j, part) in parts.into_iter().enumerate() {
        match (part.kind.as_str(), part.text, part.image_url) {
            ("text" | "refusal", Some(text), _) => texts.push(text),
            ("image_url", _, Some(image)) => {
                let base64 = image
                    .url
                    .strip_prefix("data:")
                    .and_then(|rest| rest.split_once(";base64,"))
                    .map(|(_, data)| data.to_owned())
                    .ok_or_else(|| {
                        unsupported(
                            format!("messages[{i}].content[{j}].image_url.url"),
                            "ollama cannot fetch image URLs; send the image as a data:image/...;base64, URL",
                        )
                    })?;
                images.push(base64);
            }
            (kind, _, _) => {
                return Err(unsupported(
                    format!("messages[{i}].content[{j}]"),
                    format!("content parts of type `{kind}` are not supported by ollama"),
                ));
            }
        }
    }
    Ok((texts.join("\n"), images))
}

/// Arguments as a JSON object; OpenAI sends them as a string holding JSON.
fn parse_arguments(arguments: &str) -> Option<Value> {
    if arguments.trim().is_empty() {
        return Some(json!({}));
    }
    serde_json::from_str::<Value>(arguments).ok().filter(Value::is_object)
}

/// Ollama has no `tool_choice`: `none` sends no tools, a named choice sends only that tool.
fn filter_tools(tools: Vec<Value>, choice: Option<&Value>) -> Result<Option<Vec<Value>>, ProviderError> {
    let allowed: Vec<&str> = match choice {
        None => return Ok(Some(tools)),
        Some(Value::String(mode)) if mode == "none" => return Ok(None),
        Some(Value::String(_)) => return Ok(Some(tools)),
        Some(choice) => match choice.get("type").and_then(Value::as_str) {
            Some("function") => choice.pointer("/function/name").and_then(Value::as_str).into_iter().collect(),
            Some("allowed_tools") => choice
                .pointer("/allowed_tools/tools")
                .and_then(Value::as_array)
                .map(|tools| tools.iter().filter_map(|t| t.pointer("/function/name").and_then(Value::as_str)).collect())
                .unwrap_or_default(),
            _ => {
                return Err(unsupported("tool_choice", "is not a tool choice ollama can follow"));
            }
        },
    };
    let kept: Vec<Value> = tools
        .into_iter()
        .filter(|tool| tool.pointer("/function/name").and_then(Value::as_str).is_some_and(|n| allowed.contains(&n)))
        .collect();
    if kept.is_empty() {
        return Err(unsupported("tool_choice", "names a tool that is not in `tools`"));
    }
    Ok(Some(kept))
}

/// `done_reason` as an OpenAI `finish_reason`; Ollama says `stop` after tool calls.
fn finish_reason(done_reason: Option<&str>, saw_tool_calls: bool) -> &'static str {
    match done_reason {
        Some("length") => "length",
        _ if saw_tool_calls => "tool_calls",
        _ => "stop",
    }
}

fn created(created_at: Option<&str>) -> u64 {
    created_at
        .and_then(|text| text.parse::<jiff::Timestamp>().ok())
        .map_or_else(|| jiff::Timestamp::now().as_second(), |t| t.as_second())
        .max(0) as u64
}

fn usage(chunk: &wire::ChatChunk) -> Usage {
    Usage::new(chunk.prompt_eval_count.unwrap_or(0), chunk.eval_count.unwrap_or(0))
}

fn openai_tool_call(call: wire::ToolCall) -> ToolCall {
    ToolCall {
        // Ollama servers before v0.12.10 send calls without an id.
        id: call.id.unwrap_or_else(|| random_id("call_")),
        kind: "function".into(),
        function: Some(FunctionCall { name: call.function.name, arguments: call.function.arguments.to_string() }),
        extra: Default::default(),
    }
}

/// A whole `/api/chat` response as an OpenAI `chat.completion`.
pub fn chat_completion(chunk: wire::ChatChunk, id: String) -> ChatCompletion {
    let message = chunk.message.as_ref();
    let tool_calls: Vec<ToolCall> =
        message.map(|m| m.tool_calls.iter().cloned().map(openai_tool_call).collect()).unwrap_or_default();
    let content = message.map(|m| m.content.clone()).filter(|c| !c.is_empty() || tool_calls.is_empty());
    ChatCompletion {
        id,
        object: "chat.completion".into(),
        created: created(chunk.created_at.as_deref()),
        model: chunk.model.clone(),
        choices: vec![Choice {
            index: 0,
            finish_reason: Some(finish_reason(chunk.done_reason.as_deref(), !tool_calls.is_empty()).into()),
            message: ResponseMessage {
                role: Role::Assistant,
                content,
                reasoning_content: message.and_then(|m| m.thinking.clone()).filter(|t| !t.is_empty()),
                tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                refusal: None,
            },
            logprobs: None,
        }],
        usage: Some(usage(&chunk)),
        system_fingerprint: None,
    }
}

/// Turns Ollama stream lines into OpenAI chunks, keeping what must stay constant across
/// a stream (id, created) and what OpenAI clients rely on (role first, tool call indexes).
pub struct StreamTranslator {
    id: String,
    created: Option<u64>,
    model: String,
    include_usage: bool,
    sent_role: bool,
    next_tool_index: u32,
}

impl StreamTranslator {
    pub fn new(id: String, include_usage: bool) -> Self {
        StreamTranslator {
            id,
            created: None,
            model: String::new(),
            include_usage,
            sent_role: false,
            next_tool_index: 0,
        }
    }

    /// The events for one non-error line, appended to `out`.
    pub fn on_chunk(&mut self, mut chunk: wire::ChatChunk, out: &mut Vec<StreamEvent>) {
        if self.created.is_none() {
            self.created = Some(created(chunk.created_at.as_deref()));
            self.model = chunk.model.clone();
        }
        let message = chunk.message.take().unwrap_or_default();
        let thinking = message.thinking.filter(|t| !t.is_empty());
        // The first chunk carries the role; later ones only what is new.
        if !message.content.is_empty() || thinking.is_some() || !self.sent_role {
            let delta = Delta {
                role: (!self.sent_role).then_some(Role::Assistant),
                content: Some(message.content),
                reasoning_content: thinking,
                tool_calls: None,
            };
            self.sent_role = true;
            out.push(self.frame(delta, None));
        }
        // Each Ollama call arrives whole: one delta per call, id and name sent once.
        for call in message.tool_calls {
            let call = openai_tool_call(call);
            let delta = Delta {
                tool_calls: Some(vec![ToolCallDelta {
                    index: self.next_tool_index,
                    id: Some(call.id),
                    kind: Some("function".into()),
                    function: call
                        .function
                        .map(|f| FunctionCallDelta { name: Some(f.name), arguments: Some(f.arguments) }),
                }]),
                ..Delta::default()
            };
            self.next_tool_index += 1;
            out.push(self.frame(delta, None));
        }
        if chunk.done {
            let reason = finish_reason(chunk.done_reason.as_deref(), self.next_tool_index > 0);
            out.push(self.frame(Delta::default(), Some(reason)));
            let usage = usage(&chunk);
            if self.include_usage {
                out.push(self.usage_frame(usage.clone()));
            }
            out.push(StreamEvent::Usage(usage));
        }
    }

    fn frame(&self, delta: Delta, finish_reason: Option<&str>) -> StreamEvent {
        let chunk = ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created.unwrap_or_default(),
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish_reason.map(str::to_owned),
                logprobs: None,
            }],
            usage: self.include_usage.then_some(None),
            system_fingerprint: None,
        };
        StreamEvent::Frame(to_frame(&chunk))
    }

    fn usage_frame(&self, usage: Usage) -> StreamEvent {
        let chunk = ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created.unwrap_or_default(),
            model: self.model.clone(),
            choices: Vec::new(),
            usage: Some(Some(usage)),
            system_fingerprint: None,
        };
        StreamEvent::Frame(to_frame(&chunk))
    }
}

fn to_frame(chunk: &ChatCompletionChunk) -> Bytes {
    // Serialising our own chunk type cannot fail.
    sse_frame(&serde_json::to_vec(chunk).unwrap_or_default())
}

/// An OpenAI embeddings request as an Ollama `/api/embed` request.
pub fn embed_request(request: EmbeddingsRequest) -> Result<wire::EmbedRequest, ProviderError> {
    let input = match request.input {
        EmbeddingInput::Text(text) => vec![text],
        EmbeddingInput::Texts(texts) => texts,
        EmbeddingInput::Tokens(_) | EmbeddingInput::TokenBatches(_) => {
            return Err(unsupported("input", "ollama embeds text only; send strings, not token ids"));
        }
    };
    Ok(wire::EmbedRequest { model: request.model, input, dimensions: request.dimensions, truncate: true })
}

pub fn embeddings_response(response: wire::EmbedResponse, format: EncodingFormat) -> EmbeddingsResponse {
    let tokens = response.prompt_eval_count.unwrap_or(0);
    EmbeddingsResponse {
        object: "list".into(),
        model: response.model,
        data: response
            .embeddings
            .into_iter()
            .enumerate()
            .map(|(index, values)| Embedding {
                object: "embedding".into(),
                index,
                embedding: EmbeddingVector::encode(values, format),
            })
            .collect(),
        usage: Usage { prompt_tokens: tokens, completion_tokens: 0, total_tokens: tokens, extra: Default::default() },
    }
}
