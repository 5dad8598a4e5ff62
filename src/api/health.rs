//! Liveness and readiness for load balancers and orchestrators.

use std::sync::Arc;

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::gateway::Gateway;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: config is loaded and the database answers (503 when it does not);
/// which providers can serve and why the others cannot; how limits are counted.
pub async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    let providers: Vec<Value> = gateway
        .registry
        .iter()
        .map(|provider| {
            let mut entry = json!({
                "id": provider.id(),
                "wire": format!("{:?}", provider.spec.wire).to_lowercase(),
                "available": provider.is_available(),
                "models": provider.spec.models.len(),
            });
            if let Err(reason) = provider.adapter() {
                entry["reason"] = reason.into();
            }
            entry
        })
        .collect();
    let database = match tokio::time::timeout(Duration::from_secs(2), gateway.store.ping()).await {
        Ok(Ok(())) => json!({"backend": gateway.store.backend.name(), "ok": true}),
        Ok(Err(error)) => json!({"backend": gateway.store.backend.name(), "ok": false, "error": error.to_string()}),
        Err(_) => json!({"backend": gateway.store.backend.name(), "ok": false, "error": "no answer within 2 s"}),
    };
    let ready = database["ok"] == true;
    let body = json!({
        "status": if ready { "ready" } else { "degraded" },
        "config": gateway.config.origin,
        "database": database,
        "limits": {
            "backend": if gateway.limiter.uses_redis() { "redis" } else { "in-process" },
            "redis_failures": gateway.limiter.redis_failures.load(std::sync::atomic::Ordering::Relaxed),
        },
        "providers": providers,
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}
