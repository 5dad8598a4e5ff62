//! Integration tests: the real binary over HTTP, in front of mock providers that speak
//! OpenAI's and Ollama's wire formats.

mod audit;
mod chat_ollama;
mod chat_openai;
mod cli;
mod errors;
mod limits;
mod mcp;
mod models_embeddings;
mod privacy;
pub mod python_sdk;
mod routing;
mod support;
mod telemetry;
