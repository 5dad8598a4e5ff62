//! What the gateway tells operators: logs ([`logs`]), Prometheus metrics ([`metrics`])
//! and OpenTelemetry traces ([`trace`], exported by [`otlp`]).

pub mod logs;
pub mod metrics;
pub mod otlp;
pub mod trace;
