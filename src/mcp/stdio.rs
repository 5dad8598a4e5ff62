//! `switchyard mcp`: the MCP server over stdio, for clients that launch a command
//! (Claude Desktop). The pipeline runs in this process, on the given config; the caller
//! is the key in `SWITCHYARD_API_KEY` (or no key, when the config has no master key and
//! the gateway runs open).

use std::sync::Arc;

use rmcp::ServiceExt as _;

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
