//! `/mcp`: MCP over Streamable HTTP, on the gateway's own port.
//!
//! Stateless: every request stands alone (2026-07-28 clients never open a session; the
//! 2025-11-25 `initialize` handshake is answered without a session id, which that
//! revision allows), so a client is never pinned to one of several instances. A request
//! without a valid key is refused with 401 before it reaches the MCP server.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::StreamableHttpServerConfig;
use rmcp::transport::StreamableHttpService;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use super::GatewayServer;
use crate::api::ApiError;
use crate::gateway::Gateway;
use crate::pipeline;

pub type McpService = StreamableHttpService<GatewayServer, LocalSessionManager>;

/// The MCP service, with the Host and Origin checks of `[mcp]`.
pub fn service(gateway: Arc<Gateway>) -> McpService {
    let settings = &gateway.config.mcp;
    let mut config = StreamableHttpServerConfig::default().with_legacy_session_mode(false).with_sse_keep_alive(None);
    config = if settings.allowed_hosts.iter().any(|host| host == "*") {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(settings.allowed_hosts.clone())
    };
    if !settings.allowed_origins.is_empty() {
        config = config.with_allowed_origins(settings.allowed_origins.clone()).enforce_origin_validation();
    }
    let server = GatewayServer::new(gateway, None);
    StreamableHttpService::new(move || Ok(server.clone()), Arc::new(LocalSessionManager::default()), config)
}

/// Refuses a request whose bearer key is missing or wrong, in OpenAI's error shape with
/// 401, as `/v1` does (MCP clients show it as an authentication failure); passes the
/// caller on to the MCP handler.
pub async fn require_key(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let context = crate::api::request_context(&parts);
    match pipeline::authenticate(&gateway, &context).await {
        // The MCP handler takes the caller from here rather than looking it up again.
        Ok(principal) => parts.extensions.insert(principal),
        Err(error) => return ApiError::from(error).into_response(),
    };
    next.run(Request::from_parts(parts, body)).await
}
