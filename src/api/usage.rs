//! Usage reports: `GET /admin/usage` for admins, `GET /v1/usage` for a key's own
//! limits, budgets and spend.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::admin::Admin;
use super::error::ApiError;
use crate::auth::AuthError;
use crate::gateway::Gateway;
use crate::pipeline::{self, RequestContext};
use crate::store::{UsageFilter, UsageGroup};

/// `GET /admin/usage?group_by=key|team|end_user|model&key=&team=&end_user=&model=&since=&until=`
/// (`since`/`until`: Unix seconds or RFC 3339).
pub async fn admin_usage(
    State(gateway): State<Arc<Gateway>>,
    _: Admin,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let bad = |message: String| ApiError::bad_request(message).into_response();
    let group = match query.get("group_by") {
        None => None,
        Some(name) => match UsageGroup::parse(name) {
            Some(group) => Some(group),
            None => return bad(format!("group_by is key, team, end_user or model, not {name:?}")),
        },
    };
    let times = match period(&query) {
        Ok(times) => times,
        Err(message) => return bad(message),
    };
    let filter = UsageFilter {
        key_id: query.get("key").cloned(),
        team: query.get("team").cloned(),
        end_user: query.get("end_user").cloned(),
        model: query.get("model").cloned(),
        since: times[0],
        until: times[1],
    };
    match gateway.store.usage(&filter, group).await {
        Ok(totals) => Json(json!({ "object": "list", "data": totals })).into_response(),
        Err(error) => ApiError::internal(format!("usage cannot be read: {error}")).into_response(),
    }
}

/// The `since` and `until` query parameters as Unix seconds.
pub(super) fn period(query: &HashMap<String, String>) -> Result<[Option<i64>; 2], String> {
    let mut times = [None, None];
    for (slot, name) in times.iter_mut().zip(["since", "until"]) {
        if let Some(raw) = query.get(name) {
            *slot = Some(
                parse_time(raw).ok_or_else(|| format!("{name} is Unix seconds or an RFC 3339 time, not {raw:?}"))?,
            );
        }
    }
    Ok(times)
}

/// Unix seconds from `1767225600` or `2026-01-01T00:00:00Z`.
fn parse_time(raw: &str) -> Option<i64> {
    raw.parse::<i64>().ok().or_else(|| raw.parse::<jiff::Timestamp>().ok().map(|t| t.as_second()))
}

/// `GET /v1/usage`: the calling key's limits, each budget's use in its current window,
/// and its spend so far.
pub async fn own_usage(State(gateway): State<Arc<Gateway>>, context: RequestContext) -> Response {
    let principal = match pipeline::authenticate(&gateway, &context).await {
        Ok(principal) => principal,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let Some(key) = principal.key() else {
        let error = AuthError::Forbidden("/v1/usage describes a virtual key; the master key has no limits".into());
        return ApiError::from(error).into_response();
    };
    match pipeline::views::key_usage(&gateway, key).await {
        Ok(report) => Json(report).into_response(),
        Err(error) => ApiError::internal(format!("usage cannot be read: {error}")).into_response(),
    }
}
