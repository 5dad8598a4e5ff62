//! `/admin/keys` and `/admin/teams`: virtual keys and the teams that own them. Every
//! route needs the master key.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::admin::Admin;
use super::error::ApiError;
use super::openai::RequestBody;
use crate::gateway::Gateway;
use crate::keys::{KeyError, NewKey};
use crate::limits::spec::{KeyPolicy, TeamPolicy};
use crate::store::{KeyRecord, TeamRecord};

/// A key as listed: never its secret or hash.
#[derive(Serialize)]
pub struct KeyView {
    id: String,
    name: String,
    team: Option<String>,
    prefix: String,
    #[serde(flatten)]
    policy: KeyPolicy,
    metadata: serde_json::Value,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    created_at: i64,
}

impl From<KeyRecord> for KeyView {
    fn from(key: KeyRecord) -> Self {
        KeyView {
            id: key.id,
            name: key.name,
            team: key.team,
            prefix: key.prefix,
            policy: key.policy,
            metadata: key.metadata,
            expires_at: key.expires_at,
            revoked_at: key.revoked_at,
            created_at: key.created_at,
        }
    }
}

fn bad_request(message: impl Into<String>) -> Response {
    ApiError::bad_request(message).into_response()
}

fn not_found(id: &str) -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", Some("not_found"), None, format!("no live key {id}"))
        .into_response()
}

fn store_failed(error: impl std::fmt::Display) -> Response {
    ApiError::internal(format!("the key store failed: {error}")).into_response()
}

/// `POST /admin/keys`: creates a key; the answer holds its secret, shown this once.
pub async fn create(State(gateway): State<Arc<Gateway>>, admin: Admin, RequestBody(body): RequestBody) -> Response {
    let new: NewKey = match serde_json::from_slice(&body) {
        Ok(new) => new,
        Err(error) => return bad_request(format!("invalid key definition: {error}")),
    };
    match gateway.keys.create(new).await {
        Ok((record, secret)) => {
            admin.audit(&gateway, "key.create", &record.id, StatusCode::CREATED);
            let mut view = serde_json::to_value(KeyView::from(record)).unwrap_or_default();
            view["key"] = serde_json::Value::String(secret);
            (StatusCode::CREATED, Json(view)).into_response()
        }
        Err(KeyError::Invalid(message)) => bad_request(message),
        Err(KeyError::Store(error)) => store_failed(error),
    }
}

/// `GET /admin/keys`
pub async fn list(State(gateway): State<Arc<Gateway>>, _: Admin) -> Response {
    match gateway.store.list_keys().await {
        Ok(keys) => Json(serde_json::json!({
            "object": "list",
            "data": keys.into_iter().map(KeyView::from).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(error) => store_failed(error),
    }
}

/// `POST /admin/keys/{id}/revoke`: effective at once here, within seconds everywhere.
pub async fn revoke(State(gateway): State<Arc<Gateway>>, admin: Admin, Path(id): Path<String>) -> Response {
    match gateway.keys.revoke(&id).await {
        Ok(true) => {
            admin.audit(&gateway, "key.revoke", &id, StatusCode::OK);
            Json(serde_json::json!({ "id": id, "revoked": true })).into_response()
        }
        Ok(false) => not_found(&id),
        Err(error) => store_failed(error),
    }
}

/// `POST /admin/keys/{id}/rotate`: a new secret (shown once); the old one stops working.
pub async fn rotate(State(gateway): State<Arc<Gateway>>, admin: Admin, Path(id): Path<String>) -> Response {
    match gateway.keys.rotate(&id).await {
        Ok(Some(secret)) => {
            admin.audit(&gateway, "key.rotate", &id, StatusCode::OK);
            Json(serde_json::json!({ "id": id, "key": secret })).into_response()
        }
        Ok(None) => not_found(&id),
        Err(KeyError::Invalid(message)) => bad_request(message),
        Err(KeyError::Store(error)) => store_failed(error),
    }
}

/// `PUT /admin/teams/{id}`: a team's limits and budgets, shared by all its keys.
pub async fn put_team(
    State(gateway): State<Arc<Gateway>>,
    admin: Admin,
    Path(id): Path<String>,
    RequestBody(body): RequestBody,
) -> Response {
    let policy: TeamPolicy = match serde_json::from_slice(&body) {
        Ok(policy) => policy,
        Err(error) => return bad_request(format!("invalid team definition: {error}")),
    };
    if let Some(problem) = policy.budgets.iter().find_map(|budget| budget.validate().err()) {
        return bad_request(problem);
    }
    let team = TeamRecord { id: id.clone(), policy };
    match gateway.store.upsert_team(&team, jiff::Timestamp::now().as_second()).await {
        Ok(()) => {
            gateway.keys.invalidate();
            admin.audit(&gateway, "team.put", &id, StatusCode::OK);
            Json(serde_json::json!({ "id": id, "limits": team.policy.limits, "budgets": team.policy.budgets }))
                .into_response()
        }
        Err(error) => store_failed(error),
    }
}
