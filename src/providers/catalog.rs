//! Provider catalogs: one TOML file per provider in `providers/`, describing how to reach
//! it and what each model costs and can do. A new OpenAI-compatible provider is a new
//! file, with no Rust change.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::{DataFile, EnvString, Problem, UpstreamTimeouts};

/// How the gateway talks to a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    /// `POST {base_url}/chat/completions`, SSE streams (OpenAI, DeepSeek, Groq, vLLM, …).
    Openai,
    /// Ollama's native `/api/chat` (NDJSON streams) and `/api/embed`.
    Ollama,
}

/// Where a model runs: the privacy boundary routing will rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Locality {
    #[default]
    Cloud,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    Tools,
    JsonSchema,
    Vision,
    Streaming,
    Embeddings,
}

/// How prompt tokens are counted before a call (see `routing::tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tokenizer {
    /// OpenAI's GPT-4o-and-later encoding, counted exactly.
    O200kBase,
    /// One token per 4 bytes of UTF-8.
    #[default]
    Estimate,
}

/// A deployment's capacity: `max` calls at once, up to `queue` more waiting at most `wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConcurrencyLimit {
    pub max: u32,
    pub queue: u32,
    pub wait: Duration,
}

/// An upstream API key, read from the environment variable the catalog names.
#[derive(Clone, PartialEq, Eq)]
pub enum ApiKey {
    NotNeeded,
    Present(String),
    Missing { env: String },
}

impl fmt::Debug for ApiKey {
    // Never print the key itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiKey::NotNeeded => f.write_str("NotNeeded"),
            ApiKey::Present(_) => f.write_str("Present(<redacted>)"),
            ApiKey::Missing { env } => write!(f, "Missing {{ env: {env:?} }}"),
        }
    }
}

/// A validated provider catalog.
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    pub id: String,
    pub wire: WireFormat,
    pub base_url: String,
    pub api_key: ApiKey,
    pub locality: Locality,
    /// Accept `provider/<any model>` (a local Ollama serves whatever was pulled).
    pub allow_unlisted_models: bool,
    pub timeouts: UpstreamTimeouts,
    pub tokenizer: Tokenizer,
    /// Per model of this provider; `None`: unlimited.
    pub concurrency: Option<ConcurrencyLimit>,
    pub models: Vec<ModelSpec>,
    /// The date the catalog's prices were read from the provider's price list.
    pub prices_taken: Option<String>,
    /// The file this came from.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub id: String,
    pub context_window: u32,
    pub max_output_tokens: u32,
    /// USD per 1M input tokens.
    pub input_price: f64,
    /// USD per 1M output tokens.
    pub output_price: f64,
    pub capabilities: Vec<Capability>,
    pub locality: Locality,
    /// The provider account's own limits for this model: the gateway keeps traffic under
    /// them (across instances, with Redis) and falls back to the next target when reached.
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

impl ModelSpec {
    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }

    /// Cost in USD of a call with these token counts.
    pub fn cost_usd(&self, input_tokens: u64, output_tokens: u64) -> f64 {
        (input_tokens as f64 * self.input_price + output_tokens as f64 * self.output_price) / 1_000_000.0
    }
}

impl ProviderSpec {
    pub fn model(&self, id: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.id == id)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderFile {
    id: Spanned<String>,
    wire: WireFormat,
    base_url: Spanned<EnvString>,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default)]
    locality: Locality,
    #[serde(default)]
    prices_taken: Option<String>,
    #[serde(default)]
    allow_unlisted_models: bool,
    connect_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    stream_idle_timeout_ms: Option<u64>,
    #[serde(default)]
    tokenizer: Tokenizer,
    /// Calls at once per model (a local Ollama's `OLLAMA_NUM_PARALLEL`); unset: no limit.
    max_concurrency: Option<u32>,
    /// Calls that may wait for a free slot; more are turned away (and fall back).
    #[serde(default)]
    max_queue: u32,
    #[serde(default = "default_queue_timeout_ms")]
    queue_timeout_ms: u64,
    #[serde(default)]
    models: Vec<ModelFile>,
}

fn default_queue_timeout_ms() -> u64 {
    10_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    id: Spanned<String>,
    context_window: u32,
    max_output_tokens: u32,
    input_price: Spanned<f64>,
    output_price: Spanned<f64>,
    capabilities: Vec<Capability>,
    #[serde(default)]
    locality: Option<Locality>,
    rpm: Option<u64>,
    tpm: Option<u64>,
}

/// Parses every provider file; problems go to `problems`, valid providers are returned.
pub fn parse_all(files: &[DataFile], defaults: UpstreamTimeouts, problems: &mut Vec<Problem>) -> Vec<ProviderSpec> {
    let mut seen = HashSet::new();
    let mut providers = Vec::new();
    for file in files {
        let parsed: ProviderFile = match toml::from_str(&file.text) {
            Ok(parsed) => parsed,
            Err(error) => {
                problems.push(Problem::from_toml(&file.path, &file.text, &error));
                continue;
            }
        };
        let before = problems.len();
        let at = |span: std::ops::Range<usize>, message: String| {
            Problem::at_span(&file.path, &file.text, Some(span), message)
        };
        let id = parsed.id.get_ref().clone();
        if !is_valid_id(&id) {
            problems.push(at(
                parsed.id.span(),
                format!("provider id {id:?} must be lowercase letters, digits, `-` or `_`"),
            ));
        } else if !seen.insert(id.clone()) {
            problems.push(at(parsed.id.span(), format!("provider id {id:?} is defined by another file too")));
        }
        let base_url = normalise_base_url(parsed.base_url.get_ref(), parsed.wire);
        if let Err(message) = base_url.as_ref() {
            problems.push(at(parsed.base_url.span(), message.clone()));
        }
        let mut model_ids = HashSet::new();
        for model in &parsed.models {
            if model.id.get_ref().is_empty() || !model_ids.insert(model.id.get_ref().as_str()) {
                problems
                    .push(at(model.id.span(), format!("model id {:?} is empty or listed twice", model.id.get_ref())));
            }
            for price in [&model.input_price, &model.output_price] {
                if !price.get_ref().is_finite() || *price.get_ref() < 0.0 {
                    problems.push(at(price.span(), "a price must be a number ≥ 0 (USD per 1M tokens)".into()));
                }
            }
        }
        if problems.len() > before {
            continue;
        }
        let api_key = match parsed.api_key_env {
            None => ApiKey::NotNeeded,
            Some(env) => match std::env::var(&env) {
                Ok(key) if !key.trim().is_empty() => ApiKey::Present(key.trim().to_owned()),
                _ => ApiKey::Missing { env },
            },
        };
        let ms = |value: Option<u64>, default: Duration| value.map_or(default, Duration::from_millis);
        providers.push(ProviderSpec {
            id,
            wire: parsed.wire,
            base_url: base_url.unwrap_or_default(),
            api_key,
            locality: parsed.locality,
            allow_unlisted_models: parsed.allow_unlisted_models,
            timeouts: UpstreamTimeouts {
                connect: ms(parsed.connect_timeout_ms, defaults.connect),
                request: ms(parsed.request_timeout_ms, defaults.request),
                stream_idle: ms(parsed.stream_idle_timeout_ms, defaults.stream_idle),
            },
            tokenizer: parsed.tokenizer,
            concurrency: parsed.max_concurrency.map(|max| ConcurrencyLimit {
                max,
                queue: parsed.max_queue,
                wait: Duration::from_millis(parsed.queue_timeout_ms),
            }),
            models: parsed
                .models
                .into_iter()
                .map(|m| ModelSpec {
                    id: m.id.into_inner(),
                    context_window: m.context_window,
                    max_output_tokens: m.max_output_tokens,
                    input_price: m.input_price.into_inner(),
                    output_price: m.output_price.into_inner(),
                    capabilities: m.capabilities,
                    locality: m.locality.unwrap_or(parsed.locality),
                    rpm: m.rpm,
                    tpm: m.tpm,
                })
                .collect(),
            prices_taken: parsed.prices_taken,
            source: file.path.clone(),
        });
    }
    providers
}

fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Trims a trailing `/`; for Ollama also accepts `OLLAMA_HOST`'s scheme-less `host:port`.
fn normalise_base_url(raw: &str, wire: WireFormat) -> Result<String, String> {
    let trimmed = raw.trim().trim_end_matches('/');
    let url = if wire == WireFormat::Ollama && !trimmed.contains("://") {
        format!("http://{trimmed}")
    } else {
        trimmed.to_owned()
    };
    let host = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    if host.is_none_or(str::is_empty) {
        return Err(format!("base_url {raw:?} must be an http:// or https:// URL"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> UpstreamTimeouts {
        UpstreamTimeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(2),
            stream_idle: Duration::from_secs(3),
        }
    }

    fn parse(text: &str) -> (Vec<ProviderSpec>, Vec<Problem>) {
        let mut problems = Vec::new();
        let files = [DataFile { path: "p.toml".into(), text: text.into() }];
        (parse_all(&files, defaults(), &mut problems), problems)
    }

    #[test]
    fn ollama_host_without_scheme_is_accepted() {
        let (providers, problems) = parse("id = \"ollama\"\nwire = \"ollama\"\nbase_url = \"0.0.0.0:11434/\"\n");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(providers[0].base_url, "http://0.0.0.0:11434");
        assert_eq!(providers[0].api_key, ApiKey::NotNeeded);
    }

    #[test]
    fn problems_point_at_the_value() {
        let text = "id = \"x\"\nwire = \"openai\"\nbase_url = \"ftp://nope\"\n[[models]]\nid = \"m\"\ncontext_window = 1\nmax_output_tokens = 1\ninput_price = -1.0\noutput_price = 0.0\ncapabilities = []\n";
        let (providers, problems) = parse(text);
        assert!(providers.is_empty());
        let rendered: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(rendered.len(), 2, "{rendered:?}");
        assert!(rendered[0].starts_with("p.toml:3:12: base_url"), "{rendered:?}");
        assert!(rendered[1].starts_with("p.toml:8:15: a price"), "{rendered:?}");
    }

    #[test]
    fn unknown_keys_and_wire_formats_are_errors() {
        let (_, problems) = parse("id = \"x\"\nwire = \"grpc\"\nbase_url = \"http://h\"\n");
        assert_eq!(problems[0].line, 2);
        let (_, problems) = parse("id = \"x\"\nwire = \"openai\"\nbase_url = \"http://h\"\nbase_ulr = 1\n");
        assert_eq!(problems[0].line, 4);
    }

    #[test]
    fn missing_key_makes_the_provider_unavailable_not_invalid() {
        let (providers, problems) = parse(
            "id = \"x\"\nwire = \"openai\"\nbase_url = \"http://h\"\napi_key_env = \"SWITCHYARD_TEST_SURELY_UNSET_KEY\"\n",
        );
        assert!(problems.is_empty());
        assert_eq!(providers[0].api_key, ApiKey::Missing { env: "SWITCHYARD_TEST_SURELY_UNSET_KEY".into() });
    }
}
