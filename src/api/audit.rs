//! `GET /admin/audit`: audit records with filters, oldest first, a page at a time.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::admin::Admin;
use super::error::ApiError;
use crate::gateway::Gateway;
use crate::store::AuditFilter;

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

/// `?key=&team=&end_user=&model=&provider=&status=&since=&until=&limit=&cursor=`
/// (`since`/`until`: Unix seconds or RFC 3339). The answer's `next_cursor` continues.
pub async fn list(
    State(gateway): State<Arc<Gateway>>,
    _: Admin,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let bad = |message: String| ApiError::bad_request(message).into_response();
    let [since, until] = match super::usage::period(&query) {
        Ok(times) => times.map(|time| time.map(|seconds| seconds * 1000)),
        Err(message) => return bad(message),
    };
    let status = match query.get("status").map(|s| s.parse::<i64>()) {
        None => None,
        Some(Ok(status)) => Some(status),
        Some(Err(_)) => return bad("status is a number such as 429".into()),
    };
    let limit = query.get("limit").and_then(|l| l.parse::<i64>().ok()).unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let cursor = match query.get("cursor") {
        None => None,
        Some(raw) => match parse_cursor(raw) {
            Some(cursor) => Some(cursor),
            None => return bad(format!("cursor {raw:?} is not one this gateway gave out")),
        },
    };
    let filter = AuditFilter {
        key_id: query.get("key").cloned(),
        team: query.get("team").cloned(),
        end_user: query.get("end_user").cloned(),
        model: query.get("model").cloned(),
        provider: query.get("provider").cloned(),
        status,
        since_ms: since,
        until_ms: until,
    };
    match gateway.store.audit_query(&filter, cursor, limit).await {
        Ok(rows) => {
            let next_cursor = (rows.len() as i64 == limit)
                .then(|| rows.last().map(|row| format!("{}.{}.{}", row.at_ms, row.seq, row.chain)))
                .flatten();
            let data: Vec<Value> = rows
                .into_iter()
                .map(|row| {
                    let mut record: Value = serde_json::from_str(&row.record).unwrap_or(Value::Null);
                    record["chain"] = json!(row.chain);
                    record["seq"] = json!(row.seq);
                    record["hash"] = json!(row.hash);
                    record
                })
                .collect();
            Json(json!({ "object": "list", "data": data, "next_cursor": next_cursor })).into_response()
        }
        Err(error) => ApiError::internal(format!("the audit log cannot be read: {error}")).into_response(),
    }
}

/// `<at_ms>.<seq>.<chain>` (chain ids contain no dots before the last field).
fn parse_cursor(raw: &str) -> Option<(i64, String, i64)> {
    let mut parts = raw.splitn(3, '.');
    let at_ms = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let chain = parts.next()?.to_owned();
    Some((at_ms, chain, seq))
}
