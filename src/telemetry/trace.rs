//! Request traces: a root span per request, a child per pipeline phase and per upstream
//! attempt, exported over OTLP when an endpoint is configured.
//!
//! Spans of a request are collected in memory and handed to the exporter together when
//! the request ends (for a stream: when its last frame is sent). With tracing off, or a
//! trace not sampled, nothing is collected: every call below is a branch on `None`.
//!
//! W3C `traceparent` from the client makes the request's root span a child of the
//! client's span; each upstream call carries a `traceparent` naming its attempt span (or,
//! with tracing off, the client's own header, so the client's trace still connects).

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::otlp::Exporter;

tokio::task_local! {
    /// The `traceparent` header for upstream calls made inside this scope.
    pub static UPSTREAM_TRACEPARENT: String;
}

/// A parsed `traceparent`: version 00, trace id, parent span id, sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

impl TraceParent {
    /// `00-<32 hex>-<16 hex>-<2 hex>`; all-zero ids are invalid. Future versions are read
    /// by their first four fields, as the spec asks.
    pub fn parse(header: &str) -> Option<TraceParent> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || !is_lower_hex(version) {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        if !is_lower_hex(trace) || !is_lower_hex(span) || !is_lower_hex(flags) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|id| *id != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|id| *id != 0)?;
        let sampled = u8::from_str_radix(flags, 16).ok()? & 1 == 1;
        Some(TraceParent { trace_id, span_id, sampled })
    }

    pub fn header(&self) -> String {
        format!("00-{:032x}-{:016x}-{:02x}", self.trace_id, self.span_id, u8::from(self.sampled))
    }
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where spans go, and which new traces are kept.
#[derive(Clone, Default)]
pub struct Tracer {
    exporter: Option<Exporter>,
    sample_ratio: f64,
}

impl Tracer {
    pub fn new(exporter: Option<Exporter>, sample_ratio: f64) -> Tracer {
        Tracer { exporter, sample_ratio }
    }

    /// A request's trace: a continuation of the client's when it sent a `traceparent`
    /// (and sampled it), else a new one kept with the configured ratio. `operation` is
    /// the GenAI operation (`chat`, `embeddings`), the root span's first name.
    pub fn request(&self, operation: &'static str, incoming: Option<TraceParent>) -> RequestTrace {
        let untraced = RequestTrace { state: None, incoming, operation };
        let Some(exporter) = &self.exporter else { return untraced };
        let sampled = match incoming {
            Some(parent) => parent.sampled,
            None => self.sample_ratio >= 1.0 || fastrand::f64() < self.sample_ratio,
        };
        if !sampled {
            return untraced;
        }
        let trace_id = incoming.map_or_else(|| fastrand::u128(1..), |parent| parent.trace_id);
        let root = SpanRecord::start(operation, SpanKind::Server, new_span_id(), incoming.map(|p| p.span_id));
        let mut state = TraceState { trace_id, root, started: Instant::now(), spans: Vec::new() };
        state.root.attributes.push(("gen_ai.operation.name", Value::Str(Cow::Borrowed(operation))));
        RequestTrace {
            state: Some(Arc::new(Shared { state: Mutex::new(state), exporter: exporter.clone() })),
            incoming,
            operation,
        }
    }

    /// Sends what is queued; used at shutdown.
    pub async fn flush(&self) {
        if let Some(exporter) = &self.exporter {
            exporter.flush().await;
        }
    }
}

fn new_span_id() -> u64 {
    fastrand::u64(1..)
}

/// One request's trace; cheap to clone (the settlement of a stream keeps one).
#[derive(Clone, Default)]
pub struct RequestTrace {
    state: Option<Arc<Shared>>,
    incoming: Option<TraceParent>,
    operation: &'static str,
}

struct Shared {
    state: Mutex<TraceState>,
    exporter: Exporter,
}

struct TraceState {
    trace_id: u128,
    root: SpanRecord,
    started: Instant,
    spans: Vec<SpanRecord>,
}

impl RequestTrace {
    pub fn is_recording(&self) -> bool {
        self.state.is_some()
    }

    /// `chat`, `embeddings`, …
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// An attribute of the request's root span.
    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        if let Some(shared) = &self.state {
            shared.lock().root.set(key, value.into());
        }
    }

    /// Renames the root span (`chat gpt-4o` once the model is known).
    pub fn rename(&self, name: String) {
        if let Some(shared) = &self.state {
            shared.lock().root.name = Cow::Owned(name);
        }
    }

    /// Marks the request failed.
    pub fn fail(&self, message: &str) {
        if let Some(shared) = &self.state {
            shared.lock().root.error = Some(message.to_owned());
        }
    }

    /// A child of the root span; it ends when dropped.
    pub fn span(&self, name: &'static str) -> Span {
        self.child(Cow::Borrowed(name), SpanKind::Internal, None)
    }

    fn child(&self, name: Cow<'static, str>, kind: SpanKind, parent: Option<u64>) -> Span {
        let Some(shared) = &self.state else {
            return Span { trace: self.clone(), record: None };
        };
        let parent = parent.unwrap_or_else(|| shared.lock().root.span_id);
        Span {
            trace: self.clone(),
            record: Some(Box::new(SpanRecord::start(name, kind, new_span_id(), parent.into()))),
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, TraceState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Shared {
    /// The last holder is gone: the request is over. The root span ends now and the
    /// whole trace goes to the exporter.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let mut spans = std::mem::take(&mut state.spans);
        let mut root =
            std::mem::replace(&mut state.root, SpanRecord::start(Cow::Borrowed(""), SpanKind::Internal, 0, None));
        root.end_ns = root.start_ns + state.started.elapsed().as_nanos() as u64;
        spans.push(root);
        self.exporter.export(state.trace_id, spans);
    }
}

/// A phase or an upstream attempt. Ends when dropped.
pub struct Span {
    trace: RequestTrace,
    record: Option<Box<SpanRecord>>,
}

impl Span {
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some(record) = &mut self.record {
            record.set(key, value.into());
        }
    }

    pub fn fail(&mut self, message: &str) {
        if let Some(record) = &mut self.record {
            record.error = Some(message.to_owned());
        }
    }

    /// A client span under this one: an upstream call, named `chat gpt-4o`.
    pub fn client(&self, name: String) -> Span {
        let parent = self.record.as_ref().map(|record| record.span_id);
        self.trace.child(Cow::Owned(name), SpanKind::Client, parent)
    }

    /// The `traceparent` for a call made within this span: this span as the parent, or
    /// the client's header unchanged when this request is not traced.
    pub fn traceparent(&self) -> Option<String> {
        match (&self.trace.state, &self.record) {
            (Some(shared), Some(record)) => {
                let trace_id = shared.lock().trace_id;
                Some(TraceParent { trace_id, span_id: record.span_id, sampled: true }.header())
            }
            _ => self.trace.incoming.map(|parent| parent.header()),
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let (Some(shared), Some(mut record)) = (&self.trace.state, self.record.take()) {
            record.end_ns = now_ns().max(record.start_ns);
            shared.lock().spans.push(*record);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Internal,
    Server,
    Client,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(Cow<'static, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<String>),
}

impl From<&'static str> for Value {
    fn from(value: &'static str) -> Self {
        Value::Str(Cow::Borrowed(value))
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Str(Cow::Owned(value))
    }
}

impl From<u64> for Value {
    fn from(value: u64) -> Self {
        Value::Int(value.min(i64::MAX as u64) as i64)
    }
}

impl From<u16> for Value {
    fn from(value: u16) -> Self {
        Value::Int(i64::from(value))
    }
}

impl From<u32> for Value {
    fn from(value: u32) -> Self {
        Value::Int(i64::from(value))
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Value::Float(value)
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

impl From<Vec<String>> for Value {
    fn from(value: Vec<String>) -> Self {
        Value::List(value)
    }
}

/// A finished (or running) span as the exporter sees it.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub name: Cow<'static, str>,
    pub kind: SpanKind,
    pub span_id: u64,
    pub parent_id: Option<u64>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Vec<(&'static str, Value)>,
    pub error: Option<String>,
}

impl SpanRecord {
    fn start(name: impl Into<Cow<'static, str>>, kind: SpanKind, span_id: u64, parent_id: Option<u64>) -> SpanRecord {
        SpanRecord {
            name: name.into(),
            kind,
            span_id,
            parent_id,
            start_ns: now_ns(),
            end_ns: 0,
            attributes: Vec::new(),
            error: None,
        }
    }

    fn set(&mut self, key: &'static str, value: Value) {
        match self.attributes.iter_mut().find(|(existing, _)| *existing == key) {
            Some((_, slot)) => *slot = value,
            None => self.attributes.push((key, value)),
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trip_and_rejects() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(header).expect("valid");
        assert_eq!(parsed.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parsed.span_id, 0x00f067aa0ba902b7);
        assert!(parsed.sampled);
        assert_eq!(parsed.header(), header);
        assert!(!TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled);
        // A later version with extra fields is read by its first four.
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }
}
