//! The tools MCP clients see: the gateway's own, and the upstream servers' ones the
//! caller's key allows.

use bytes::Bytes;
use rmcp::ErrorData;
use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock, JsonObject, Tool, object};
use serde_json::{Value, json};

use crate::audit::{ContentCapture, Field};
use crate::auth::{AuthError, Principal};
use crate::gateway::Gateway;
use crate::limits::spec::Limits;
use crate::pipeline::{self, ChatOutput, PipelineError, RequestContext, views};
use crate::routing::glob::Glob;
use crate::tools::CallError;

/// The alias `chat` uses when the caller names no model.
const DEFAULT_MODEL: &str = "auto";

/// The gateway's tools, then the upstream tools this caller may use, in a stable order.
pub fn visible(gateway: &Gateway, principal: &Principal) -> Vec<Tool> {
    let mut tools = definitions();
    tools.extend(gateway.tools.tools().into_iter().filter(|tool| may_call(principal, &tool.name)));
    tools
}

const GATEWAY_TOOLS: [&str; 4] = ["chat", "list_models", "explain_route", "usage"];

/// Upstream tools need the key's `tools` globs to allow them; the master key may use all.
/// The gateway's own tools are open to every key: they are the HTTP API's reach.
fn may_call(principal: &Principal, tool: &str) -> bool {
    if GATEWAY_TOOLS.contains(&tool) {
        return true;
    }
    match principal.key() {
        None => true,
        Some(key) => key.record.policy.tools.iter().any(|pattern| Glob::new(pattern).matches(tool)),
    }
}

fn definitions() -> Vec<Tool> {
    let messages = json!({
        "type": "array",
        "description": "OpenAI chat messages ({role, content}); instead of prompt, for a conversation",
        "items": {"type": "object", "properties": {"role": {"type": "string"}, "content": {"type": "string"}},
                  "required": ["role", "content"]}
    });
    let request = json!({
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "description": "The user's message"},
            "messages": messages,
            "model": {"type": "string", "description": "A model (provider/model) or alias; see list_models. Default: auto"},
            "max_tokens": {"type": "integer", "minimum": 1}
        }
    });
    vec![
        Tool::new(
            "chat",
            "Ask a model through the gateway (its routing, limits and audit log apply). Returns the answer and which \
             provider/model served it.",
            object(request.clone()),
        ),
        Tool::new("list_models", "The models and aliases this key may use.", object(json!({"type": "object"}))),
        Tool::new(
            "explain_route",
            "How the gateway would route a chat request (the rule, the candidates and why), without calling a model.",
            object(request),
        ),
        Tool::new("usage", "This key's rate limits, budgets and what it has spent.", object(json!({"type": "object"}))),
    ]
}

/// The caller behind the request, or an MCP error saying why not.
pub async fn authenticate(gateway: &Gateway, context: &RequestContext) -> Result<Principal, ErrorData> {
    pipeline::authenticate(gateway, context).await.map_err(|error| match error {
        AuthError::Unavailable(_) | AuthError::TooManyFailures { .. } => {
            ErrorData::internal_error(error.to_string(), None)
        }
        _ => ErrorData::invalid_request(error.to_string(), Some(json!({"status": 401}))),
    })
}

pub async fn call(
    gateway: &Gateway,
    context: &RequestContext,
    principal: &Principal,
    request: CallToolRequestParams,
) -> Result<CallToolResult, ErrorData> {
    let arguments = request.arguments.unwrap_or_default();
    let outcome = match request.name.as_ref() {
        // Audited by the pipeline, like any chat request.
        "chat" => return chat(gateway, context, &arguments).await,
        "list_models" => {
            let models: Vec<String> = views::available_models(gateway)
                .filter(|model| views::may_use(principal, &model.id))
                .map(|model| model.id)
                .collect();
            Ok(structured(json!({"models": models})))
        }
        "explain_route" => {
            let body = chat_body(&arguments)?;
            match views::explain_route(gateway, context, principal, &body) {
                Ok(trace) => Ok(structured(serde_json::to_value(trace).unwrap_or_default())),
                Err(error) => Ok(failed(&error)),
            }
        }
        "usage" => match principal.key() {
            Some(key) => match views::key_usage(gateway, key).await {
                Ok(report) => Ok(structured(report)),
                Err(error) => Err(ErrorData::internal_error(format!("usage cannot be read: {error}"), None)),
            },
            None => Ok(CallToolResult::error(vec![ContentBlock::text(
                "usage describes a virtual key; the master key has no limits",
            )])),
        },
        upstream => return call_upstream(gateway, context, principal, upstream, arguments).await,
    };
    record_tool_call(gateway, context, principal, request.name.as_ref(), &outcome, None);
    outcome
}

/// A tool of an upstream MCP server: the key's permission, its per-tool rate limit, the
/// call with the server's timeout, and an audit record whatever happens.
async fn call_upstream(
    gateway: &Gateway,
    context: &RequestContext,
    principal: &Principal,
    name: &str,
    arguments: JsonObject,
) -> Result<CallToolResult, ErrorData> {
    let started = std::time::Instant::now();
    let capture = gateway.audit.capture_for(principal);
    let audited = |outcome: &Result<CallToolResult, ErrorData>| {
        let arguments = match capture {
            ContentCapture::Off => None,
            ContentCapture::Redacted => {
                let detector = &gateway.router.policy().detector;
                Some(Value::String(crate::routing::privacy::redacted(
                    &Value::Object(arguments.clone()).to_string(),
                    detector,
                )))
            }
            ContentCapture::Full => Some(Value::Object(arguments.clone())),
        };
        record_tool_call(gateway, context, principal, name, outcome, Some((started.elapsed(), arguments)));
    };
    let Some(server) = gateway.tools.server_of(name) else {
        let outcome = Err(ErrorData::invalid_params(format!("no tool named `{name}`"), None));
        audited(&outcome);
        return outcome;
    };
    if !may_call(principal, name) {
        let outcome = Err(ErrorData::invalid_request(
            format!("this key may not use tool `{name}`"),
            Some(json!({"status": 403})),
        ));
        audited(&outcome);
        return outcome;
    }
    if let (Some(rpm), Some(key)) = (server.rpm_per_key, principal.key()) {
        let limits = Limits { rpm: Some(rpm), tpm: None, concurrent: None };
        if let Err(refused) =
            gateway.limiter.admit_deployment(&format!("tool:{name}:key:{}", key.record.id), limits, 0).await
        {
            let mut limited = CallToolResult::error(vec![ContentBlock::text(refused.to_string())]);
            limited.structured_content = Some(json!({"status": 429, "error": refused.to_string()}));
            let outcome = Ok(limited);
            audited(&outcome);
            return outcome;
        }
    }
    let outcome = match gateway.tools.call(name, Some(arguments.clone())).await {
        Ok(result) => Ok(super::forwarded(result)),
        Err(CallError::Unknown(name)) => Err(ErrorData::invalid_params(format!("no tool named `{name}`"), None)),
        Err(CallError::Unavailable(why)) => Ok(CallToolResult::error(vec![ContentBlock::text(why)])),
    };
    audited(&outcome);
    outcome
}

/// `chat`: the request through the whole pipeline, answered in one piece.
async fn chat(
    gateway: &Gateway,
    context: &RequestContext,
    arguments: &JsonObject,
) -> Result<CallToolResult, ErrorData> {
    let body = chat_body(arguments)?;
    let mut audit = gateway.audit.begin("chat", "mcp:chat", &context.request_id, context.client_ip);
    match pipeline::chat(gateway, context, &body, &mut audit).await {
        Ok((ChatOutput::Complete(answer), route)) => {
            let completion: Value = serde_json::from_slice(&answer).unwrap_or_default();
            let text = completion["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_owned();
            let mut result = CallToolResult::success(vec![ContentBlock::text(text.clone())]);
            result.structured_content =
                Some(json!({"answer": text, "target": route.target, "rule": route.rule, "attempts": route.attempts}));
            Ok(result)
        }
        Ok((ChatOutput::Stream(_), _)) => Err(ErrorData::internal_error("a stream where none was asked for", None)),
        Err(error) => {
            let result = failed(&error);
            crate::api::record_refusal(gateway, context, audit, error);
            Ok(result)
        }
    }
}

/// A chat completion request from the tool's arguments.
fn chat_body(arguments: &JsonObject) -> Result<Bytes, ErrorData> {
    let messages = match (arguments.get("messages"), arguments.get("prompt").and_then(Value::as_str)) {
        (Some(messages), _) => messages.clone(),
        (None, Some(prompt)) => json!([{"role": "user", "content": prompt}]),
        (None, None) => return Err(ErrorData::invalid_params("give `prompt` or `messages`", None)),
    };
    let mut body = json!({
        "model": arguments.get("model").and_then(Value::as_str).unwrap_or(DEFAULT_MODEL),
        "messages": messages,
    });
    if let Some(max_tokens) = arguments.get("max_tokens") {
        body["max_tokens"] = max_tokens.clone();
    }
    Ok(Bytes::from(body.to_string()))
}

fn structured(value: Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(value.to_string())]);
    result.structured_content = Some(value);
    result
}

/// A refusal the model should see and can act on (a limit, a policy, a bad request).
fn failed(error: &PipelineError) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(error.to_string())])
}

/// The audit record of a tool call other than `chat`. `call`: an upstream call's
/// duration and captured arguments.
fn record_tool_call(
    gateway: &Gateway,
    context: &RequestContext,
    principal: &Principal,
    tool: &str,
    outcome: &Result<CallToolResult, ErrorData>,
    call: Option<(std::time::Duration, Option<Value>)>,
) {
    let Some(mut record) = gateway.audit.begin("mcp", "mcp:tools/call", &context.request_id, context.client_ip) else {
        return;
    };
    record.set_principal(principal);
    record.set(Field::Action(&format!("tool.{tool}")));
    record.set(Field::Tools(&[tool]));
    if let Some(end_user) = pipeline::end_user_of(context, None) {
        record.set(Field::EndUser(&end_user));
    }
    let status = match outcome {
        Ok(result) if result.is_error != Some(true) => 200,
        // A refusal of ours says its status; an upstream's error is a bad gateway.
        Ok(result) => result.structured_content.as_ref().and_then(|data| data["status"].as_u64()).unwrap_or(502) as u16,
        Err(error) => error.data.as_ref().and_then(|data| data["status"].as_u64()).unwrap_or(400) as u16,
    };
    record.set(Field::Status(status));
    record.set(Field::Outcome(if status == 200 { "completed" } else { "failed" }));
    let error = match outcome {
        Ok(result) if result.is_error == Some(true) => {
            result.content.first().and_then(|content| content.as_text()).map(|text| text.text.as_str())
        }
        Err(error) => Some(error.message.as_ref()),
        Ok(_) => None,
    };
    if let Some(error) = error {
        record.set(Field::Error(error));
    }
    if let Some((elapsed, arguments)) = call {
        record.set(Field::LatencyMs(elapsed.as_millis() as u64));
        if let Some(arguments) = &arguments {
            record.set(Field::Prompt(arguments));
        }
    }
    gateway.audit.record(record);
}
