//! `/api/policies` and `/api/operator-policies`, as RabbitMQ's: list (all, per vhost), get,
//! put (201 created, 204 replaced; 400 with RabbitMQ's validation reasons) and delete (204,
//! 404). Policies are for administrators and policymakers (who need permissions in the
//! vhost); operator policies for administrators. Changes go through the vhost
//! ([`Vhost::put_policy`](crate::vhost::Vhost::put_policy)), which applies them to its queues
//! and exchanges at once.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{json, Value};

use super::list::respond;
use super::{ApiError, Management, User};
use crate::policy::{Policy, PolicyDef};

type Api = Result<Response, ApiError>;
type M = State<Arc<Management>>;
type Params = Query<std::collections::HashMap<String, String>>;

/// The routes.
pub fn routes() -> Router<Arc<Management>> {
    let mut r = Router::new();
    for (base, operator) in [("/api/policies", false), ("/api/operator-policies", true)] {
        r = r
            .route(
                base,
                get(move |m: M, u: Extension<User>, q: Params| list(m, u, q, None, operator)),
            )
            .route(
                &format!("{base}/{{vhost}}"),
                get(
                    move |m: M, u: Extension<User>, q: Params, Path(v): Path<String>| {
                        list(m, u, q, Some(v), operator)
                    },
                ),
            )
            .route(
                &format!("{base}/{{vhost}}/{{name}}"),
                get(move |m: M, u: Extension<User>, p: Named| one(m, u, p, operator))
                    .put(
                        move |m: M, u: Extension<User>, p: Named, b: axum::body::Bytes| {
                            put(m, u, p, b, operator)
                        },
                    )
                    .delete(move |m: M, u: Extension<User>, p: Named| delete(m, u, p, operator)),
            );
    }
    r
}

type Named = Path<(String, String)>;

/// A policy as RabbitMQ's API lists it.
pub fn policy_json(vhost: &str, p: &PolicyDef) -> Value {
    json!({
        "vhost": vhost,
        "name": p.name,
        "pattern": p.pattern,
        "apply-to": p.apply_to,
        "definition": p.definition,
        "priority": p.priority,
    })
}

/// Who may read (`write` false) or change policies: administrators and policymakers; for
/// operator policies, administrators (monitoring users may read both).
pub(super) fn allowed(u: &User, operator: bool, write: bool) -> Result<(), ApiError> {
    if u.has("administrator") {
        return Ok(());
    }
    let ok = if operator {
        !write && u.has("monitoring")
    } else {
        u.has("policymaker") || (!write && u.has("monitoring"))
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::access_refused())
    }
}

async fn list(
    State(m): M,
    Extension(u): Extension<User>,
    Query(q): Params,
    vhost: Option<String>,
    operator: bool,
) -> Api {
    allowed(&u, operator, false)?;
    let vhosts = match vhost {
        Some(v) => vec![super::api::vhost_of(&m, &v).map_err(|_| ApiError::no_vhost())?],
        None => m.registry.vhosts(),
    };
    let mut items = Vec::new();
    for v in vhosts {
        for p in v.policies(operator) {
            items.push(policy_json(&v.name, &p.def));
        }
    }
    Ok(axum::Json(respond(items, &q)?).into_response())
}

async fn one(
    State(m): M,
    Extension(u): Extension<User>,
    Path((vhost, name)): Path<(String, String)>,
    operator: bool,
) -> Api {
    allowed(&u, operator, false)?;
    let v = super::api::vhost_of(&m, &vhost)?;
    let p = v.policy(operator, &name).ok_or_else(ApiError::not_found)?;
    Ok(axum::Json(policy_json(&v.name, &p.def)).into_response())
}

async fn put(
    State(m): M,
    Extension(u): Extension<User>,
    Path((vhost, name)): Path<(String, String)>,
    bytes: axum::body::Bytes,
    operator: bool,
) -> Api {
    allowed(&u, operator, true)?;
    let v = super::api::vhost_of(&m, &vhost).map_err(|_| ApiError::no_vhost())?;
    let body = match serde_json::from_slice(&bytes) {
        Ok(Value::Object(o)) => o,
        _ => return Err(ApiError::bad_request("not_json")),
    };
    let policy = Policy::from_body(&name, &body, operator).map_err(ApiError::bad_request)?;
    let new = v
        .put_policy(operator, policy)
        .map_err(|e| ApiError::internal(format!("cannot store the policy: {e}")))?;
    Ok(if new {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    }
    .into_response())
}

async fn delete(
    State(m): M,
    Extension(u): Extension<User>,
    Path((vhost, name)): Path<(String, String)>,
    operator: bool,
) -> Api {
    allowed(&u, operator, true)?;
    let v = super::api::vhost_of(&m, &vhost)?;
    match v.delete_policy(operator, &name) {
        Ok(true) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(false) => Err(ApiError::not_found()),
        Err(e) => Err(ApiError::internal(format!("cannot store the change: {e}"))),
    }
}
