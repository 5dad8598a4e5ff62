//! Liveness and readiness for load balancers and orchestrators.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::gateway::Gateway;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: config is loaded; which providers can serve and why the others cannot.
pub async fn readyz(State(gateway): State<Arc<Gateway>>) -> Json<Value> {
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
    Json(json!({"status": "ready", "config": gateway.config.origin, "providers": providers}))
}
