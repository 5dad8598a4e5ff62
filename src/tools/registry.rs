//! Every upstream server's tools, looked up by exposed name.

use std::sync::Arc;

use rmcp::model::{CallToolResult, JsonObject, Tool};
use tokio::sync::Notify;

use super::spec::ServerSpec;
use super::upstream::Upstream;

pub struct ToolRegistry {
    servers: Vec<Arc<Upstream>>,
    /// Told whenever any server's tools change (connected, refreshed, lost).
    pub changes: Arc<Notify>,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no tool named `{0}`")]
    Unknown(String),
    #[error("{0}")]
    Unavailable(String),
}

impl ToolRegistry {
    /// Starts a supervisor per server (a no-op without servers).
    pub fn start(specs: &[ServerSpec]) -> ToolRegistry {
        let changes = Arc::new(Notify::new());
        let servers = specs.iter().map(|spec| Upstream::start(spec.clone(), changes.clone())).collect();
        ToolRegistry { servers, changes }
    }

    /// The tools of every server that is up, as clients see them, sorted by name.
    pub fn tools(&self) -> Vec<Tool> {
        let mut tools: Vec<Tool> = self
            .servers
            .iter()
            .flat_map(|server| server.tools())
            .map(|exposed| {
                let mut tool = exposed.tool;
                tool.name = exposed.name.into();
                tool
            })
            .collect();
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        tools
    }

    /// The server a tool name belongs to (by its prefix), even while that server is down.
    pub fn server_of(&self, name: &str) -> Option<&ServerSpec> {
        self.upstream_of(name).map(|server| &server.spec)
    }

    fn upstream_of(&self, name: &str) -> Option<&Arc<Upstream>> {
        let (prefix, _) = name.split_once("__")?;
        self.servers.iter().find(|server| server.spec.name == prefix)
    }

    pub async fn call(&self, name: &str, arguments: Option<JsonObject>) -> Result<CallToolResult, CallError> {
        let Some(server) = self.upstream_of(name) else { return Err(CallError::Unknown(name.to_owned())) };
        let tools = server.tools();
        let Some(exposed) = tools.iter().find(|exposed| exposed.name == name) else {
            return match tools.is_empty() {
                true => Err(CallError::Unavailable(format!("MCP server {} is unavailable", server.spec.name))),
                false => Err(CallError::Unknown(name.to_owned())),
            };
        };
        server.call(&exposed.original, arguments).await.map_err(CallError::Unavailable)
    }
}
