//! `/admin`: operating the gateway. Every route needs the master key.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::openai::RequestBody;
use crate::audit::Field;
use crate::auth::AuthError;
use crate::gateway::Gateway;
use crate::pipeline::{self, RequestContext};
use crate::routing::reload::{Change, PolicyChangeError};

/// Proof that the request carries the master key (or the gateway runs in open,
/// loopback-only mode): every `/admin` handler takes one. Virtual keys get 403.
pub struct Admin {
    request_id: String,
    client_ip: Option<std::net::IpAddr>,
}

impl Admin {
    /// Journals an admin action (`key.create`, …) on `subject` with its outcome.
    pub fn audit(&self, gateway: &Gateway, action: &'static str, subject: &str, status: StatusCode) {
        let Some(mut record) = gateway.audit.begin("admin", action, &self.request_id, self.client_ip) else { return };
        record.set(Field::Admin(true));
        record.set(Field::Action(action));
        record.set(Field::Subject(subject));
        record.set(Field::Status(status.as_u16()));
        gateway.audit.record(record);
    }
}

impl FromRequestParts<Arc<Gateway>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Arc<Gateway>) -> Result<Self, ApiError> {
        let Ok(context) = RequestContext::from_request_parts(parts, gateway).await;
        if pipeline::authenticate(gateway, &context).await?.is_admin() {
            Ok(Admin { request_id: context.request_id, client_ip: context.client_ip })
        } else {
            Err(AuthError::Forbidden("virtual keys cannot use /admin; use the master key".into()).into())
        }
    }
}

/// `POST /admin/route/explain`: the routing decision for a chat request, without
/// calling any upstream.
pub async fn explain_route(
    State(gateway): State<Arc<Gateway>>,
    _: Admin,
    context: RequestContext,
    RequestBody(body): RequestBody,
) -> Response {
    match pipeline::views::explain_route(&gateway, &context, &crate::auth::Principal::Master, &body) {
        Ok(trace) => Json(trace).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

#[derive(Serialize)]
struct PolicyView {
    version: u64,
    digest: String,
    files: Vec<PolicyFileView>,
    aliases: Vec<String>,
    rules: Vec<RuleView>,
    history: Vec<Change>,
}

#[derive(Serialize)]
struct PolicyFileView {
    path: String,
    text: String,
}

#[derive(Serialize)]
struct RuleView {
    name: String,
    priority: i64,
    origin: String,
}

/// `GET /admin/policies`: the active policy, its version and the change history.
pub async fn get_policies(State(gateway): State<Arc<Gateway>>, _: Admin) -> Response {
    let policy = gateway.router.policy();
    Json(PolicyView {
        version: policy.version,
        digest: policy.digest.clone(),
        files: policy.sources.iter().map(|f| PolicyFileView { path: f.path.clone(), text: f.text.clone() }).collect(),
        aliases: policy.aliases.keys().cloned().collect(),
        rules: policy
            .rules
            .iter()
            .map(|r| RuleView { name: r.name.clone(), priority: r.priority, origin: r.origin.clone() })
            .collect(),
        history: gateway.policies.history(),
    })
    .into_response()
}

/// `PUT /admin/policies/{name}`: TOML text that replaces (or adds) `policies/<name>.toml`.
pub async fn put_policy(
    State(gateway): State<Arc<Gateway>>,
    admin: Admin,
    Path(name): Path<String>,
    RequestBody(body): RequestBody,
) -> Response {
    let Ok(text) = String::from_utf8(body.to_vec()) else {
        return ApiError::bad_request("the policy must be UTF-8").into_response();
    };
    let result = gateway.policies.put(&gateway.router, &gateway.registry, &name, text, "master key").await;
    if result.is_err() {
        admin.audit(&gateway, "policy.put", &name, StatusCode::BAD_REQUEST);
    }
    match result {
        Ok(version) => {
            Json(serde_json::json!({ "version": version, "digest": gateway.router.policy().digest })).into_response()
        }
        Err(PolicyChangeError::Invalid(problems)) => {
            let listed: Vec<String> = problems.iter().map(ToString::to_string).collect();
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("invalid_policy"),
                None,
                format!("the policy is invalid; the active policy keeps serving:\n{}", listed.join("\n")),
            )
            .into_response()
        }
        Err(error @ (PolicyChangeError::BadName | PolicyChangeError::NoDirectory)) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", None, Some("name"), error.to_string())
                .into_response()
        }
        Err(error @ PolicyChangeError::Io(_)) => ApiError::internal(error.to_string()).into_response(),
    }
}
