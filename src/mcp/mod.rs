//! The MCP front door: the gateway's own tools (`chat`, `list_models`, `explain_route`,
//! `usage`) and the tools of the upstream MCP servers a key may use (`server__tool`, from
//! [`crate::tools`]), served over Streamable HTTP at `/mcp` ([`http`]) and over stdio by
//! `switchyard mcp` ([`stdio`]). Every call goes through the caller's key, its limits and
//! the audit log; `chat` through the whole pipeline, as on the HTTP API.

pub mod http;
pub mod stdio;
mod tools;

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult, PaginatedRequestParams,
    ResultType, ServerCapabilities, ServerConfig, SubscriptionFilter,
};
use rmcp::service::{RequestContext as McpContext, RoleServer, SubscriptionContext};
use rmcp::{ErrorData, ServerHandler};

use crate::auth::Principal;
use crate::gateway::Gateway;
use crate::pipeline::RequestContext;

/// One MCP server over the gateway; cheap to clone (one per session or request).
#[derive(Clone)]
pub struct GatewayServer {
    gateway: Arc<Gateway>,
    /// Over stdio there are no HTTP headers: the key from `SWITCHYARD_API_KEY`.
    stdio_key: Option<Arc<str>>,
}

impl GatewayServer {
    pub fn new(gateway: Arc<Gateway>, stdio_key: Option<String>) -> GatewayServer {
        GatewayServer { gateway, stdio_key: stdio_key.map(Arc::from) }
    }

    /// The request as the pipeline sees it, and its caller: from the HTTP request that
    /// carried the MCP message (whose key `/mcp`'s middleware has checked), or the stdio
    /// key.
    async fn caller(&self, mcp: &McpContext<RoleServer>) -> Result<(RequestContext, Principal), ErrorData> {
        let Some(parts) = mcp.extensions.get::<axum::http::request::Parts>() else {
            let context = RequestContext {
                request_id: crate::protocol::random_id("req_"),
                authorization: self.stdio_key.as_ref().map(|key| format!("Bearer {key}")),
                ..RequestContext::default()
            };
            let principal = tools::authenticate(&self.gateway, &context).await?;
            return Ok((context, principal));
        };
        let context = crate::api::request_context(parts);
        let principal = match parts.extensions.get::<Principal>() {
            Some(principal) => principal.clone(),
            None => tools::authenticate(&self.gateway, &context).await?,
        };
        Ok((context, principal))
    }
}

/// A result from another MCP server, ready for our clients: an older revision leaves out
/// `resultType`, which current clients need.
fn forwarded(mut result: CallToolResult) -> CallToolResult {
    result.result_type.get_or_insert(ResultType::COMPLETE);
    result
}

impl ServerHandler for GatewayServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_tool_list_changed().build())
            .with_server_info(Implementation::new("switchyard", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "switchyard is an LLM gateway. `chat` sends a prompt to a model or alias through the gateway's \
                 routing, limits and audit log; `list_models` shows what this key may use; `explain_route` shows \
                 how a request would be routed; `usage` shows this key's limits, budgets and spend.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: McpContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let (_, principal) = self.caller(&context).await?;
        Ok(ListToolsResult::with_all_items(tools::visible(&self.gateway, &principal)))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: McpContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let (context, principal) = self.caller(&context).await?;
        tools::call(&self.gateway, &context, &principal, request).await.map(Into::into)
    }

    fn accepted_subscription_filter(&self, requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    /// A 2026-07-28 client's `subscriptions/listen`: told whenever upstream tools
    /// appear, change or disappear.
    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                () = self.gateway.tools.changes.notified() => {
                    if context.sink().notify_tool_list_changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}
