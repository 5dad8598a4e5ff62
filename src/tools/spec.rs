//! An upstream MCP server as the config describes it (`[[mcp.servers]]`).

use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct ServerSpec {
    /// The prefix of its tools (`name__tool`): letters, digits, `_` and `-`.
    pub name: String,
    pub transport: Transport,
    /// Longest a call may take.
    pub timeout: Duration,
    /// Calls per minute one key may make to each of this server's tools.
    pub rpm_per_key: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// A child process speaking MCP on stdin/stdout.
    Stdio { command: String, args: Vec<String>, env: BTreeMap<String, String> },
    /// Streamable HTTP; header values may carry secrets (`${ENV}` in the config).
    Http { url: String, headers: BTreeMap<String, String> },
}

/// Whether `name` can prefix tool names clients accept.
pub fn valid_server_name(name: &str) -> bool {
    (1..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
