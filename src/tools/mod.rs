//! Tools from upstream MCP servers, aggregated under one name space: `server__tool`.
//!
//! Each configured server ([`spec`]) is kept connected by a supervisor ([`upstream`]):
//! stdio servers are started as child processes and restarted with backoff when they
//! exit; HTTP servers are reconnected. While a server is down its tools are not listed,
//! and a call to one says the server is unavailable; the other servers are unaffected.
//! The MCP front door lists and calls these tools for clients; the chat pipeline will
//! execute them server-side from the same [`ToolRegistry`].

mod naming;
mod registry;
pub mod spec;
mod upstream;

pub use naming::exposed_name;
pub use registry::{CallError, ToolRegistry};
pub use spec::{ServerSpec, Transport};
pub use upstream::probe;
