//! switchyard: an LLM gateway. The OpenAI API in front of OpenAI, DeepSeek, Groq and
//! Ollama, one request path through named phases (see [`pipeline`]).

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod gateway;
pub mod keys;
pub mod limits;
pub mod mcp;
pub mod pipeline;
pub mod protocol;
pub mod providers;
pub mod routing;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tools;
