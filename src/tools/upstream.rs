//! One upstream MCP server, kept connected: connect, list its tools, watch the
//! connection, and after it drops (a stdio server that exited, an HTTP server gone)
//! connect again with exponential backoff.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult, Tool};
use rmcp::service::{NotificationContext, RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, ServiceExt as _};
use tokio::sync::Notify;

use super::naming;
use super::spec::{ServerSpec, Transport};

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a live connection is checked.
const WATCH: Duration = Duration::from_millis(250);

/// The client side of the connection: hears the server's `tools/list_changed`.
#[derive(Clone)]
struct Listener {
    changed: Arc<Notify>,
}

impl ClientHandler for Listener {
    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.changed.notify_one();
    }
}

type Connection = RunningService<RoleClient, Listener>;

/// A tool of this server, with the name clients see.
#[derive(Clone)]
pub struct Exposed {
    pub name: String,
    pub original: String,
    pub tool: Tool,
}

pub struct Upstream {
    pub spec: ServerSpec,
    state: RwLock<State>,
    /// Told when this server's tools appear, change or disappear.
    changes: Arc<Notify>,
}

enum State {
    Down(String),
    Up { connection: Arc<Connection>, tools: Vec<Exposed> },
}

impl Upstream {
    pub fn start(spec: ServerSpec, changes: Arc<Notify>) -> Arc<Upstream> {
        let upstream = Arc::new(Upstream { spec, state: RwLock::new(State::Down("connecting".into())), changes });
        tokio::spawn(upstream.clone().supervise());
        upstream
    }

    /// Its tools while it is up; none while it is down.
    pub fn tools(&self) -> Vec<Exposed> {
        match &*self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner) {
            State::Up { tools, .. } => tools.clone(),
            State::Down(_) => Vec::new(),
        }
    }

    /// Calls `original` on the server, or says why it cannot.
    pub async fn call(
        &self,
        original: &str,
        arguments: Option<rmcp::model::JsonObject>,
    ) -> Result<CallToolResult, String> {
        let connection = match &*self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner) {
            State::Up { connection, .. } => connection.clone(),
            State::Down(why) => return Err(format!("MCP server {} is unavailable: {why}", self.spec.name)),
        };
        let mut params = CallToolRequestParams::new(original.to_owned());
        if let Some(arguments) = arguments {
            params = params.with_arguments(arguments);
        }
        match tokio::time::timeout(self.spec.timeout, connection.call_tool(params)).await {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(error)) => Err(format!("MCP server {}: {error}", self.spec.name)),
            Err(_) => Err(format!("MCP server {} did not answer within {:?}", self.spec.name, self.spec.timeout)),
        }
    }

    fn set(&self, state: State) {
        *self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner) = state;
        self.changes.notify_waiters();
    }

    async fn supervise(self: Arc<Self>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let changed = Arc::new(Notify::new());
            match self.connect(changed.clone()).await {
                Ok(connection) => {
                    let connection = Arc::new(connection);
                    match self.list(&connection).await {
                        Ok(tools) => {
                            tracing::info!(server = %self.spec.name, tools = tools.len(), "MCP server connected");
                            self.set(State::Up { connection: connection.clone(), tools });
                            backoff = FIRST_BACKOFF;
                            self.watch(&connection, &changed).await;
                            tracing::warn!(server = %self.spec.name, "MCP server disconnected; reconnecting");
                            self.set(State::Down("disconnected; reconnecting".into()));
                        }
                        Err(error) => self.set(State::Down(error)),
                    }
                }
                Err(error) => {
                    tracing::warn!(server = %self.spec.name, "MCP server unavailable: {error}");
                    self.set(State::Down(error));
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Until the connection closes, refreshing the tool list when the server says it
    /// changed.
    async fn watch(&self, connection: &Arc<Connection>, changed: &Notify) {
        loop {
            tokio::select! {
                () = changed.notified() => {
                    match self.list(connection).await {
                        Ok(tools) => self.set(State::Up { connection: connection.clone(), tools }),
                        Err(error) => tracing::warn!(server = %self.spec.name, "tools not refreshed: {error}"),
                    }
                }
                () = tokio::time::sleep(WATCH) => {
                    if connection.is_closed() || connection.is_transport_closed() {
                        return;
                    }
                }
            }
        }
    }

    async fn connect(&self, changed: Arc<Notify>) -> Result<Connection, String> {
        connect(&self.spec, Listener { changed }).await
    }

    /// The tools, with renamed ones logged.
    async fn list(&self, connection: &Connection) -> Result<Vec<Exposed>, String> {
        let (tools, collisions) = list(&self.spec, connection).await?;
        for collision in collisions {
            tracing::warn!(server = %self.spec.name, "{collision}");
        }
        Ok(tools)
    }
}

/// Connects once, lists the tools and disconnects: what `switchyard check` reports.
/// Returns the number of tools and any names that had to be changed to stay unique.
pub async fn probe(spec: &ServerSpec) -> Result<(usize, Vec<String>), String> {
    let connection = connect(spec, Listener { changed: Arc::new(Notify::new()) }).await?;
    let listed = list(spec, &connection).await;
    let _ = connection.cancel().await;
    listed.map(|(tools, collisions)| (tools.len(), collisions))
}

async fn connect(spec: &ServerSpec, listener: Listener) -> Result<Connection, String> {
    match &spec.transport {
        Transport::Stdio { command, args, env } => {
            let mut child = tokio::process::Command::new(command);
            child.args(args).envs(env).kill_on_drop(true);
            let transport =
                TokioChildProcess::new(child).map_err(|error| format!("cannot start `{command}`: {error}"))?;
            listener.serve(transport).await.map_err(|error| error.to_string())
        }
        Transport::Http { url, headers } => {
            let custom = crate::providers::http::secret_headers(headers)
                .map_err(|error| format!("headers: {error}"))?
                .into_iter()
                .collect();
            let config = StreamableHttpClientTransportConfig::with_uri(url.as_str()).custom_headers(custom);
            let transport = StreamableHttpClientTransport::from_config(config);
            listener.serve(transport).await.map_err(|error| error.to_string())
        }
    }
}

/// The server's tools with the names clients see, sorted by them, and the names that
/// had to be changed to stay unique.
async fn list(spec: &ServerSpec, connection: &Connection) -> Result<(Vec<Exposed>, Vec<String>), String> {
    let tools = connection.list_all_tools().await.map_err(|error| format!("tools/list failed: {error}"))?;
    let originals: Vec<String> = tools.iter().map(|tool| tool.name.to_string()).collect();
    let (names, collisions) = naming::assign(&spec.name, &originals);
    let mut exposed: Vec<Exposed> = tools
        .into_iter()
        .zip(names)
        .map(|(tool, name)| Exposed { original: tool.name.to_string(), name, tool })
        .collect();
    exposed.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((exposed, collisions))
}
