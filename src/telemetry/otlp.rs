//! Exports finished traces to an OpenTelemetry collector over OTLP/HTTP, JSON encoding
//! (`POST {endpoint}/v1/traces`), in batches, off the request path.
//!
//! The queue is bounded: when the collector is slower than the traffic, whole traces are
//! dropped and counted (`switchyard_trace_spans_dropped_total`); requests never wait on
//! telemetry.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::sync::{mpsc, oneshot};

use super::metrics::Metrics;
use super::trace::{SpanKind, SpanRecord, Value};
use crate::config::TelemetryConfig;

/// Traces waiting for the exporter before new ones are dropped.
const QUEUE: usize = 4096;
/// Spans per POST.
const BATCH_SPANS: usize = 512;
const INTERVAL: Duration = Duration::from_secs(1);

enum Message {
    Trace(u128, Vec<SpanRecord>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Exporter {
    queue: mpsc::Sender<Message>,
    metrics: Arc<Metrics>,
}

impl Exporter {
    /// Starts the export task, or `None` when no endpoint is configured.
    pub fn start(config: &TelemetryConfig, metrics: Arc<Metrics>) -> Result<Option<Exporter>, String> {
        let Some(endpoint) = &config.otlp_endpoint else { return Ok(None) };
        crate::providers::http::install_tls_provider();
        let url = reqwest::Url::parse(&format!("{endpoint}/v1/traces"))
            .map_err(|error| format!("[telemetry] otlp_endpoint {endpoint:?}: {error}"))?;
        let headers =
            crate::providers::http::secret_headers(config.otlp_headers.iter().map(|(name, value)| (name, value)))
                .map_err(|error| format!("[telemetry] otlp_headers: {error}"))?;
        let headers: reqwest::header::HeaderMap = headers.into_iter().collect();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .default_headers(headers)
            .build()
            .map_err(|error| format!("cannot build the OTLP client: {error}"))?;
        let (queue, receiver) = mpsc::channel(QUEUE);
        let resource = resource(&config.service_name);
        tokio::spawn(run(receiver, client, url, resource));
        Ok(Some(Exporter { queue, metrics }))
    }

    pub fn export(&self, trace_id: u128, spans: Vec<SpanRecord>) {
        let count = spans.len() as u64;
        if self.queue.try_send(Message::Trace(trace_id, spans)).is_err() {
            self.metrics.spans_dropped(count);
        }
    }

    /// Posts everything queued so far (at shutdown).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
        }
    }
}

async fn run(mut receiver: mpsc::Receiver<Message>, client: reqwest::Client, url: reqwest::Url, resource: Json) {
    let mut batch: Vec<Json> = Vec::new();
    let mut failures = 0u32;
    loop {
        let message = tokio::time::timeout(INTERVAL, receiver.recv()).await;
        let flush = match message {
            Ok(Some(Message::Trace(trace_id, spans))) => {
                batch.extend(spans.iter().map(|span| encode_span(trace_id, span)));
                if batch.len() < BATCH_SPANS {
                    continue;
                }
                None
            }
            Ok(Some(Message::Flush(done))) => Some(done),
            Ok(None) => return,
            Err(_elapsed) => None,
        };
        if !batch.is_empty() {
            let body = json!({"resourceSpans": [{
                "resource": resource,
                "scopeSpans": [{
                    "scope": {"name": "switchyard", "version": env!("CARGO_PKG_VERSION")},
                    "spans": std::mem::take(&mut batch),
                }],
            }]});
            let request = client.post(url.clone()).header(reqwest::header::CONTENT_TYPE, "application/json");
            match request.body(body.to_string()).send().await {
                Ok(response) if response.status().is_success() => failures = 0,
                outcome => {
                    failures += 1;
                    if failures.is_power_of_two() {
                        let why = match outcome {
                            Ok(response) => format!("status {}", response.status()),
                            Err(error) => error.to_string(),
                        };
                        tracing::warn!(failures, "OTLP export to {url} failed ({why}); those spans are lost");
                    }
                }
            }
        }
        if let Some(done) = flush {
            let _ = done.send(());
        }
    }
}

fn resource(service_name: &str) -> Json {
    json!({"attributes": [
        attribute("service.name", &Value::Str(service_name.to_owned().into())),
        attribute("service.version", &Value::Str(env!("CARGO_PKG_VERSION").into())),
    ]})
}

/// One span in OTLP's JSON encoding: ids in hex, times as decimal strings.
fn encode_span(trace_id: u128, span: &SpanRecord) -> Json {
    let mut encoded = json!({
        "traceId": format!("{trace_id:032x}"),
        "spanId": format!("{:016x}", span.span_id),
        "name": span.name,
        "kind": match span.kind {
            SpanKind::Internal => 1,
            SpanKind::Server => 2,
            SpanKind::Client => 3,
        },
        "startTimeUnixNano": span.start_ns.to_string(),
        "endTimeUnixNano": span.end_ns.to_string(),
        "attributes": span.attributes.iter().map(|(key, value)| attribute(key, value)).collect::<Vec<_>>(),
        "status": match &span.error {
            Some(message) => json!({"code": 2, "message": message}),
            None => json!({"code": 0}),
        },
    });
    if let Some(parent) = span.parent_id {
        encoded["parentSpanId"] = json!(format!("{parent:016x}"));
    }
    encoded
}

fn attribute(key: &str, value: &Value) -> Json {
    let value = match value {
        Value::Str(text) => json!({"stringValue": text}),
        Value::Int(number) => json!({"intValue": number.to_string()}),
        Value::Float(number) => json!({"doubleValue": number}),
        Value::Bool(flag) => json!({"boolValue": flag}),
        Value::List(items) => {
            json!({"arrayValue": {"values": items.iter().map(|item| json!({"stringValue": item})).collect::<Vec<_>>()}})
        }
    };
    json!({"key": key, "value": value})
}
