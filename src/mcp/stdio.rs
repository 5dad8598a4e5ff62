//! `switchyard mcp`: the MCP server over stdio, for clients that launch a command
//! (Claude Desktop). Either the pipeline runs in this process on the given config
//! ([`serve`]), or, with `SWITCHYARD_URL`, this process relays to a gateway there
//! ([`relay`]). The caller is the key in `SWITCHYARD_API_KEY` (or no key, when the
//! gateway runs open).

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
};
use rmcp::service::{RequestContext, RoleClient, RoleServer, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ErrorData, ServerHandler, ServiceExt as _};

use super::GatewayServer;
use crate::gateway::Gateway;

pub async fn serve(gateway: Arc<Gateway>, key: Option<String>) -> Result<(), String> {
    let server = GatewayServer::new(gateway.clone(), key);
    let running = server.serve(rmcp::transport::stdio()).await.map_err(|error| format!("MCP over stdio: {error}"))?;
    let _ = running.waiting().await;
    gateway.usage.flush_and_stop().await;
    gateway.audit.flush_and_stop().await;
    gateway.tracer.flush().await;
    Ok(())
}

/// `switchyard mcp` with `SWITCHYARD_URL`: stdio on one side, the gateway's `/mcp` on the
/// other, so a desktop client reaches a remote gateway without a bridge of its own.
pub async fn relay(url: &str, key: Option<String>) -> Result<(), String> {
    let endpoint = format!("{}/mcp", url.trim_end_matches('/'));
    crate::providers::http::install_tls_provider();
    let mut config = StreamableHttpClientTransportConfig::with_uri(endpoint.as_str());
    if let Some(key) = key {
        config = config.auth_header(key);
    }
    let remote = ().serve(StreamableHttpClientTransport::from_config(config)).await;
    let remote = remote.map_err(|error| format!("cannot reach the gateway at {endpoint}: {error}"))?;
    let relay = Relay { remote: Arc::new(remote) };
    let running = relay.serve(rmcp::transport::stdio()).await.map_err(|error| format!("MCP over stdio: {error}"))?;
    let _ = running.waiting().await;
    Ok(())
}

/// Forwards tool listing and calls to the remote gateway.
#[derive(Clone)]
struct Relay {
    remote: Arc<RunningService<RoleClient, ()>>,
}

impl ServerHandler for Relay {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        if let Some(server) = self.remote.peer_info().and_then(|remote| remote.server_info.clone()) {
            info = info.with_server_info(server);
        }
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = self.remote.list_all_tools().await.map_err(remote_error)?;
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let result = self.remote.call_tool(request).await.map_err(remote_error)?;
        Ok(super::forwarded(result).into())
    }
}

/// The gateway's own MCP error as it sent it; a transport failure as an internal error.
fn remote_error(error: ServiceError) -> ErrorData {
    match error {
        ServiceError::McpError(error) => error,
        other => ErrorData::internal_error(format!("the gateway: {other}"), None),
    }
}
