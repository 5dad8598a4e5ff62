//! `GET /metrics`: Prometheus counters and histograms of what the gateway does.
//!
//! Labels are bounded: routes are the router's patterns, models are catalog entries (a
//! model a client named that no catalog lists is `unlisted`), keys are key ids (admins
//! create them). End users never become labels: a bot has as many as it has chat users.

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::audit::AuditStats;
use crate::routing::Target;
use crate::routing::health::CircuitState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    provider: String,
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    provider: String,
    model: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    provider: String,
    model: String,
    key: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CostLabels {
    provider: String,
    model: String,
    key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    provider: String,
    model: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Seconds, 5 ms to ~80 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    http_requests: Family<RouteLabels, Counter>,
    http_duration: HistogramFamily<RouteOnly>,
    in_flight: Gauge,
    llm_requests: Family<OutcomeLabels, Counter>,
    llm_duration: HistogramFamily<ModelLabels>,
    time_to_first_token: HistogramFamily<ModelLabels>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<CostLabels, Counter<f64, AtomicU64>>,
    upstream_errors: Family<ErrorLabels, Counter>,
    retries: Family<ModelLabels, Counter>,
    fallbacks: Family<ModelLabels, Counter>,
    rate_limited: Family<LimitLabels, Counter>,
    auth_failures: Counter,
    circuit_state: Family<ModelLabels, Gauge>,
    deployment_in_flight: Family<ModelLabels, Gauge>,
    audit_journaled: Counter,
    audit_stored: Counter,
    audit_pending_bytes: Gauge,
    audit_store_down: Gauge,
    spans_dropped: Counter,
    /// Scrape-time values are brought up to date under this lock.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("switchyard");
        let http_requests = Family::default();
        registry.register("http_requests", "HTTP requests by route pattern and status", http_requests.clone());
        let http_duration = HistogramFamily::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "http_request_duration",
            "HTTP request duration until the response head (streams: until headers)",
            Unit::Seconds,
            http_duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("http_requests_in_flight", "HTTP requests being handled", in_flight.clone());
        let llm_requests = Family::default();
        registry.register(
            "llm_requests",
            "Chat and embeddings requests answered by an upstream, by serving model and outcome (completed, failed, cancelled)",
            llm_requests.clone(),
        );
        let llm_duration = HistogramFamily::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "llm_request_duration",
            "Time from the first upstream attempt to the last byte of the answer",
            Unit::Seconds,
            llm_duration.clone(),
        );
        let time_to_first_token = HistogramFamily::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "llm_time_to_first_token",
            "Streams: time from the first upstream attempt to the first content",
            Unit::Seconds,
            time_to_first_token.clone(),
        );
        let tokens = Family::default();
        registry.register("llm_tokens", "Tokens by serving model, key and direction (input, output)", tokens.clone());
        let cost = Family::default();
        registry.register("llm_cost_usd", "Cost in USD from catalog prices, by serving model and key", cost.clone());
        let upstream_errors = Family::default();
        registry.register("upstream_errors", "Failed upstream attempts by kind", upstream_errors.clone());
        let retries = Family::default();
        registry.register("upstream_retries", "Attempts repeated on the same deployment", retries.clone());
        let fallbacks = Family::default();
        registry.register("upstream_fallbacks", "Deployments given up on for the next target", fallbacks.clone());
        let rate_limited = Family::default();
        registry.register("rate_limited", "Requests refused by a rate limit or budget", rate_limited.clone());
        let auth_failures = Counter::default();
        registry.register(
            "auth_failures",
            "Requests with a missing, unknown, revoked or expired key",
            auth_failures.clone(),
        );
        let circuit_state = Family::default();
        registry.register(
            "circuit_state",
            "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open",
            circuit_state.clone(),
        );
        let deployment_in_flight = Family::default();
        registry.register(
            "deployment_in_flight",
            "Upstream calls in flight per deployment",
            deployment_in_flight.clone(),
        );
        let audit_journaled = Counter::default();
        registry.register(
            "audit_records_journaled",
            "Audit records written to the local journal",
            audit_journaled.clone(),
        );
        let audit_stored = Counter::default();
        registry.register(
            "audit_records_stored",
            "Audit records moved from the journal to the database",
            audit_stored.clone(),
        );
        let audit_pending_bytes = Gauge::default();
        registry.register_with_unit(
            "audit_pending",
            "Journal not yet in the database: the audit queue; it grows while the database is unreachable",
            Unit::Bytes,
            audit_pending_bytes.clone(),
        );
        let audit_store_down = Gauge::default();
        registry.register(
            "audit_store_down",
            "1 while the audit writer cannot reach the database",
            audit_store_down.clone(),
        );
        let spans_dropped = Counter::default();
        registry.register(
            "trace_spans_dropped",
            "Spans not exported because the exporter was behind",
            spans_dropped.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_duration,
            in_flight,
            llm_requests,
            llm_duration,
            time_to_first_token,
            tokens,
            cost,
            upstream_errors,
            retries,
            fallbacks,
            rate_limited,
            auth_failures,
            circuit_state,
            deployment_in_flight,
            audit_journaled,
            audit_stored,
            audit_pending_bytes,
            audit_store_down,
            spans_dropped,
            scrape: Mutex::new(()),
        }
    }

    /// An HTTP request has arrived; the guard counts it when dropped with its status.
    pub fn http_started(&self) -> InFlight<'_> {
        self.in_flight.inc();
        InFlight { metrics: self }
    }

    pub fn http_finished(&self, route: String, status: u16, elapsed: Duration) {
        self.http_requests.get_or_create(&RouteLabels { route: route.clone(), status }).inc();
        self.http_duration.get_or_create(&RouteOnly { route }).observe(elapsed.as_secs_f64());
    }

    /// A settled chat or embeddings request.
    pub fn llm_settled(&self, target: &Target, key: &str, settled: &Settled) {
        let model = model_labels(target);
        self.llm_requests
            .get_or_create(&OutcomeLabels {
                provider: model.provider.clone(),
                model: model.model.clone(),
                outcome: settled.outcome,
            })
            .inc();
        self.llm_duration.get_or_create(&model).observe(settled.duration.as_secs_f64());
        if let Some(first) = settled.time_to_first_token {
            self.time_to_first_token.get_or_create(&model).observe(first.as_secs_f64());
        }
        for (direction, count) in [("input", settled.input_tokens), ("output", settled.output_tokens)] {
            if count > 0 {
                let labels = TokenLabels {
                    provider: model.provider.clone(),
                    model: model.model.clone(),
                    key: key.to_owned(),
                    direction,
                };
                self.tokens.get_or_create(&labels).inc_by(count);
            }
        }
        if settled.cost_usd > 0.0 {
            let labels = CostLabels { provider: model.provider, model: model.model, key: key.to_owned() };
            self.cost.get_or_create(&labels).inc_by(settled.cost_usd);
        }
    }

    /// A failed upstream attempt and what dispatch did next.
    pub fn upstream_failed(&self, target: &Target, kind: &'static str, next: Next) {
        let model = model_labels(target);
        self.upstream_errors
            .get_or_create(&ErrorLabels { provider: model.provider.clone(), model: model.model.clone(), kind })
            .inc();
        match next {
            Next::Retry => self.retries.get_or_create(&model).inc(),
            Next::Fallback => self.fallbacks.get_or_create(&model).inc(),
            Next::GiveUp => 0,
        };
    }

    /// `limit`: `rate`, `budget` or `unavailable`.
    pub fn rate_limited(&self, limit: &'static str) {
        self.rate_limited.get_or_create(&LimitLabels { limit }).inc();
    }

    pub fn auth_failed(&self) {
        self.auth_failures.inc();
    }

    pub fn spans_dropped(&self, count: u64) {
        self.spans_dropped.inc_by(count);
    }

    /// The exposition, with scrape-time values (breakers, audit backlog) brought up to date.
    /// `deployments`: `(provider, model, circuit, in flight)` of catalog models.
    pub fn render(&self, deployments: &[(String, String, CircuitState, u32)], audit: &AuditStats) -> String {
        let _scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        for (provider, model, circuit, in_flight) in deployments {
            let labels = ModelLabels { provider: provider.clone(), model: model.clone() };
            let state = match circuit {
                CircuitState::Closed => 0,
                CircuitState::HalfOpen => 1,
                CircuitState::Open => 2,
            };
            self.circuit_state.get_or_create(&labels).set(state);
            self.deployment_in_flight.get_or_create(&labels).set(i64::from(*in_flight));
        }
        self.audit_journaled.inc_by(audit.journaled.saturating_sub(self.audit_journaled.get()));
        self.audit_stored.inc_by(audit.stored.saturating_sub(self.audit_stored.get()));
        self.audit_pending_bytes.set(audit.pending_bytes as i64);
        self.audit_store_down.set(i64::from(audit.store_down));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Counts a request in flight until dropped.
pub struct InFlight<'a> {
    metrics: &'a Metrics,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}

/// What dispatch did after a failed attempt.
#[derive(Debug, Clone, Copy)]
pub enum Next {
    Retry,
    Fallback,
    GiveUp,
}

/// A settled request's figures.
pub struct Settled {
    /// `completed`, `failed` or `cancelled`.
    pub outcome: &'static str,
    pub duration: Duration,
    pub time_to_first_token: Option<Duration>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
}

/// Provider and model, the model `unlisted` unless its catalog lists it.
fn model_labels(target: &Target) -> ModelLabels {
    let model = if target.spec().is_some() { target.model.clone() } else { "unlisted".to_owned() };
    ModelLabels { provider: target.provider.id().to_owned(), model }
}
