//! The API's tenancy routes, as RabbitMQ's: users, vhosts, permissions, topic permissions,
//! and vhost and user limits. They change things through [`Access`](crate::access::Access)
//! only, answer RabbitMQ's statuses (201 created, 204 updated or deleted, 404, 400 with its
//! reasons) and are for administrators (401 "Not administrator user" otherwise), except
//! `whoami`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Router};
use serde_json::{json, Value};

use super::list::respond;
use super::{ApiError, Management, User};
use crate::access::{
    parse_tags, AccessError, PermissionRecord, TopicPermissionRecord, UserRecord, USER_LIMITS,
    VHOST_LIMITS,
};

type Api = Result<Response, ApiError>;
type M = State<Arc<Management>>;
type Params = Query<std::collections::HashMap<String, String>>;

/// The routes.
pub fn routes() -> Router<Arc<Management>> {
    Router::new()
        .route("/api/whoami", get(whoami))
        .route(
            "/api/vhosts/{vhost}",
            get(super::api::vhost).put(put_vhost).delete(delete_vhost),
        )
        .route("/api/vhosts/{vhost}/permissions", get(vhost_permissions))
        .route(
            "/api/vhosts/{vhost}/topic-permissions",
            get(vhost_topic_permissions),
        )
        .route("/api/users", get(users))
        .route(
            "/api/users/without-permissions",
            get(users_without_permissions),
        )
        .route("/api/users/bulk-delete", post(bulk_delete))
        .route(
            "/api/users/{user}",
            get(user).put(put_user).delete(delete_user),
        )
        .route("/api/users/{user}/permissions", get(user_permissions))
        .route(
            "/api/users/{user}/topic-permissions",
            get(user_topic_permissions),
        )
        .route("/api/permissions", get(permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(permission)
                .put(put_permission)
                .delete(delete_permission),
        )
        .route("/api/topic-permissions", get(topic_permissions))
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(topic_permission)
                .put(put_topic_permission)
                .delete(delete_topic_permission),
        )
        .route("/api/vhost-limits", get(vhost_limits))
        .route("/api/vhost-limits/{vhost}", get(vhost_limits_of))
        .route(
            "/api/vhost-limits/{vhost}/{name}",
            put(put_vhost_limit).delete(delete_vhost_limit),
        )
        .route("/api/user-limits", get(user_limits))
        .route("/api/user-limits/{user}", get(user_limits_of))
        .route(
            "/api/user-limits/{user}/{name}",
            put(put_user_limit).delete(delete_user_limit),
        )
}

fn ok(v: Value) -> Api {
    Ok(axum::Json(v).into_response())
}

/// 201 for something new, 204 for a change, as RabbitMQ answers a PUT.
fn created(new: bool) -> Api {
    Ok(if new {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    }
    .into_response())
}

fn no_content() -> Api {
    Ok(StatusCode::NO_CONTENT.into_response())
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::NotFound => ApiError::not_found(),
            AccessError::BadRequest(reason) => ApiError::bad_request_value(reason),
            AccessError::Store(why) => ApiError::internal(why),
        }
    }
}

/// The request body as a JSON object (an empty body is `{}`).
fn body(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(o)) => Ok(o),
        _ => Err(ApiError::bad_request("not_json")),
    }
}

fn string(o: &serde_json::Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::bad_request(format!(
            "{key} should be a string, actually was {other}"
        ))),
    }
}

fn required(o: &serde_json::Map<String, Value>, key: &str) -> Result<String, ApiError> {
    string(o, key)?.ok_or_else(|| ApiError::missing(key))
}

async fn whoami(State(m): M, Extension(u): Extension<User>) -> Api {
    let tags = m.access.user(&u.name).map(|r| r.tags).unwrap_or(u.tags);
    ok(json!({ "name": u.name, "tags": tags }))
}

// ---- vhosts ----

async fn put_vhost(
    State(m): M,
    Extension(u): Extension<User>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Api {
    u.admin()?;
    let o = body(&bytes)?;
    let tags = match o.get("tags") {
        None | Some(Value::Null) => None,
        Some(t) => Some(parse_tags(t).ok_or_else(|| ApiError::bad_request("tags"))?),
    };
    // The UI's key first, as RabbitMQ 3.10 reads it; `default_queue_type` too.
    let dqt = match string(&o, "defaultqueuetype")? {
        Some(t) => Some(t),
        None => string(&o, "default_queue_type")?,
    };
    let new = m
        .access
        .put_vhost(&name, string(&o, "description")?, tags, dqt, Some(&u.name))?;
    created(new)
}

async fn delete_vhost(State(m): M, Extension(u): Extension<User>, Path(name): Path<String>) -> Api {
    u.admin()?;
    if m.access.delete_vhost(&name).await? {
        no_content()
    } else {
        Err(ApiError::not_found())
    }
}

// ---- users ----

pub(super) fn user_json(u: &UserRecord) -> Value {
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": u.hashing_algorithm,
        "tags": u.tags,
        "limits": u.limits,
    })
}

async fn users(State(m): M, Extension(u): Extension<User>, Query(q): Params) -> Api {
    u.admin()?;
    ok(respond(
        m.access.users().iter().map(user_json).collect(),
        &q,
    )?)
}

async fn users_without_permissions(State(m): M, Extension(u): Extension<User>) -> Api {
    u.admin()?;
    let perms = m.access.permissions();
    let list: Vec<Value> = m
        .access
        .users()
        .iter()
        .filter(|x| !perms.iter().any(|p| p.user == x.name))
        .map(user_json)
        .collect();
    ok(Value::Array(list))
}

async fn user(State(m): M, Extension(u): Extension<User>, Path(name): Path<String>) -> Api {
    u.admin()?;
    ok(user_json(
        &m.access.user(&name).ok_or_else(ApiError::not_found)?,
    ))
}

async fn put_user(
    State(m): M,
    Extension(u): Extension<User>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Api {
    u.admin()?;
    let o = body(&bytes)?;
    let tags = match o.get("tags") {
        None => return Err(ApiError::bad_request("tags_not_present")),
        Some(t) => parse_tags(t).ok_or_else(|| ApiError::bad_request("tags"))?,
    };
    let password = string(&o, "password")?;
    let hash = string(&o, "password_hash")?;
    let algorithm = string(&o, "hashing_algorithm")?.unwrap_or_default();
    let new = m.access.put_user(
        &name,
        password.as_deref(),
        hash.as_deref().map(|h| (h, algorithm.as_str())),
        tags,
    )?;
    created(new)
}

async fn delete_user(State(m): M, Extension(u): Extension<User>, Path(name): Path<String>) -> Api {
    u.admin()?;
    if m.access.delete_user(&name)? {
        no_content()
    } else {
        Err(ApiError::not_found())
    }
}

async fn bulk_delete(State(m): M, Extension(u): Extension<User>, bytes: axum::body::Bytes) -> Api {
    u.admin()?;
    let o = body(&bytes)?;
    let Some(Value::Array(names)) = o.get("users") else {
        return Err(ApiError::missing("users"));
    };
    let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
    if let Some(missing) = names.iter().find(|n| m.access.user(n).is_none()) {
        return Err(ApiError::bad_request_value(json!([
            "no_such_user",
            missing
        ])));
    }
    for n in names {
        m.access.delete_user(n)?;
    }
    no_content()
}

// ---- permissions ----

fn permission_json(p: &PermissionRecord, vhost_first: bool) -> Value {
    if vhost_first {
        json!({"vhost": p.vhost, "user": p.user, "configure": p.configure, "write": p.write, "read": p.read})
    } else {
        json!({"user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read})
    }
}

fn topic_json(t: &TopicPermissionRecord, vhost_first: bool) -> Value {
    if vhost_first {
        json!({"vhost": t.vhost, "user": t.user, "exchange": t.exchange, "write": t.write, "read": t.read})
    } else {
        json!({"user": t.user, "vhost": t.vhost, "exchange": t.exchange, "write": t.write, "read": t.read})
    }
}

async fn permissions(State(m): M, Extension(u): Extension<User>, Query(q): Params) -> Api {
    u.admin()?;
    let all = m.access.permissions();
    ok(respond(
        all.iter().map(|p| permission_json(p, false)).collect(),
        &q,
    )?)
}

/// Whose entries a per-vhost or per-user listing shows.
enum Of {
    Vhost(String),
    User(String),
}

/// `GET /api/{vhosts,users}/{name}/{permissions,topic-permissions}`: the entries of one vhost
/// (vhost first in each, as RabbitMQ writes them) or one user; 404 if it does not exist.
fn listing(m: &Management, u: &User, of: &Of, topic: bool) -> Api {
    u.admin()?;
    match of {
        Of::Vhost(v) => drop(super::api::vhost_of(m, v)?),
        Of::User(n) => drop(m.access.user(n).ok_or_else(ApiError::not_found)?),
    }
    let vhost_first = matches!(of, Of::Vhost(_));
    let keep = |vhost: &str, user: &str| match of {
        Of::Vhost(v) => vhost == v,
        Of::User(n) => user == n,
    };
    let list: Vec<Value> = if topic {
        let all = m.access.topic_permissions();
        all.iter()
            .filter(|t| keep(&t.vhost, &t.user))
            .map(|t| topic_json(t, vhost_first))
            .collect()
    } else {
        let all = m.access.permissions();
        all.iter()
            .filter(|p| keep(&p.vhost, &p.user))
            .map(|p| permission_json(p, vhost_first))
            .collect()
    };
    ok(Value::Array(list))
}

async fn vhost_permissions(
    State(m): M,
    Extension(u): Extension<User>,
    Path(v): Path<String>,
) -> Api {
    listing(&m, &u, &Of::Vhost(v), false)
}

async fn user_permissions(
    State(m): M,
    Extension(u): Extension<User>,
    Path(n): Path<String>,
) -> Api {
    listing(&m, &u, &Of::User(n), false)
}

async fn vhost_topic_permissions(
    State(m): M,
    Extension(u): Extension<User>,
    Path(v): Path<String>,
) -> Api {
    listing(&m, &u, &Of::Vhost(v), true)
}

async fn user_topic_permissions(
    State(m): M,
    Extension(u): Extension<User>,
    Path(n): Path<String>,
) -> Api {
    listing(&m, &u, &Of::User(n), true)
}

async fn permission(
    State(m): M,
    Extension(u): Extension<User>,
    Path((vhost, user)): Path<(String, String)>,
) -> Api {
    u.admin()?;
    let p = m
        .access
        .permission(&vhost, &user)
        .ok_or_else(ApiError::not_found)?;
    ok(permission_json(&p, false))
}

async fn put_permission(
    State(m): M,
    Extension(u): Extension<User>,
    Path((vhost, user)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> Api {
    u.admin()?;
    let o = body(&bytes)?;
    let p = PermissionRecord {
        configure: required(&o, "configure")?,
        write: required(&o, "write")?,
        read: required(&o, "read")?,
        user,
        vhost,
    };
    created(m.access.set_permission(p)?)
}

async fn delete_permission(
    State(m): M,
    Extension(u): Extension<User>,
    Path((vhost, user)): Path<(String, String)>,
) -> Api {
    u.admin()?;
    if m.access.clear_permission(&vhost, &user)? {
        no_content()
    } else {
        Err(ApiError::not_found())
    }
}

// ---- topic permissions ----

async fn topic_permissions(State(m): M, Extension(u): Extension<User>, Query(q): Params) -> Api {
    u.admin()?;
    let all = m.access.topic_permissions();
    ok(respond(
        all.iter().map(|t| topic_json(t, false)).collect(),
        &q,
    )?)
}

async fn topic_permission(
    State(m): M,
    Extension(u): Extension<User>,
    Path((vhost, user)): Path<(String, String)>,
) -> Api {
    u.admin()?;
    let list: Vec<Value> = m
        .access
        .topic_permissions()
        .iter()
        .filter(|t| t.vhost == vhost && t.user == user)
        .map(|t| topic_json(t, false))
        .collect();
    if list.is_empty() {
        return Err(ApiError::not_found());
    }
    ok(Value::Array(list))
}

async fn put_topic_permission(
    State(m): M,
    Extension(u): Extension<User>,
    Path((vhost, user)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> Api {
    u.admin()?;
    let o = body(&bytes)?;
    let t = TopicPermissionRecord {
        exchange: required(&o, "exchange")?,
        write: required(&o, "write")?,
        read: required(&o, "read")?,
        user,
        vhost,
    };
    created(m.access.set_topic_permission(t)?)
}

async fn delete_topic_permission(
    State(m): M,
    Extension(u): Extension<User>,
    Path((vhost, user)): Path<(String, String)>,
) -> Api {
    u.admin()?;
    if m.access.clear_topic_permissions(&vhost, &user, None)? {
        no_content()
    } else {
        Err(ApiError::not_found())
    }
}

// ---- limits ----

/// A limit's value from `{"value": N}`, with RabbitMQ's complaints.
fn limit_value(
    bytes: &[u8],
    name: &str,
    known: &[&str],
    prefix: &str,
    what: &str,
) -> Result<i64, ApiError> {
    let o = body(bytes)?;
    let Some(v) = o.get("value") else {
        return Err(ApiError::missing("value"));
    };
    if !known.contains(&name) {
        return Err(ApiError::bad_request(format!(
            "{prefix}Unrecognised terms [{{<<\"{name}\">>,{v}}}] in {what}\n"
        )));
    }
    v.as_i64().ok_or_else(|| {
        let shown = match v {
            Value::String(s) => format!("<<\"{s}\">>"),
            other => other.to_string(),
        };
        ApiError::bad_request(format!(
            "{prefix}{name} should be a number, actually was {shown}\n"
        ))
    })
}

async fn vhost_limits(State(m): M, Extension(u): Extension<User>) -> Api {
    let list: Vec<Value> = m
        .registry
        .vhosts()
        .iter()
        .filter(|v| u.sees_all() || m.access.permission(&v.name, &u.name).is_some())
        .map(|v| (v.name.clone(), v.def().limits))
        .filter(|(_, l)| !l.is_empty() || !u.sees_all())
        .map(|(name, l)| json!({"vhost": &*name, "value": l}))
        .collect();
    ok(Value::Array(list))
}

async fn vhost_limits_of(State(m): M, Path(vhost): Path<String>) -> Api {
    let v = super::api::vhost_of(&m, &vhost)?;
    let l = v.def().limits;
    ok(if l.is_empty() {
        json!([])
    } else {
        json!([{"vhost": vhost, "value": l}])
    })
}

async fn put_vhost_limit(
    State(m): M,
    Extension(u): Extension<User>,
    Path((vhost, name)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> Api {
    u.admin()?;
    if m.registry.vhost(&vhost).is_none() {
        return Err(ApiError::no_vhost());
    }
    let value = limit_value(
        &bytes,
        &name,
        &VHOST_LIMITS,
        "Validation failed\n\n",
        "limits",
    )?;
    m.access.set_vhost_limit(&vhost, &name, Some(value))?;
    no_content()
}

async fn delete_vhost_limit(
    State(m): M,
    Extension(u): Extension<User>,
    Path((vhost, name)): Path<(String, String)>,
) -> Api {
    u.admin()?;
    if m.registry.vhost(&vhost).is_none() {
        return Err(ApiError::no_vhost());
    }
    m.access.set_vhost_limit(&vhost, &name, None)?;
    no_content()
}

async fn user_limits(State(m): M) -> Api {
    let list: Vec<Value> = m
        .access
        .users()
        .into_iter()
        .filter(|u| !u.limits.is_empty())
        .map(|u| json!({"user": u.name, "value": u.limits}))
        .collect();
    ok(Value::Array(list))
}

async fn user_limits_of(State(m): M, Path(user): Path<String>) -> Api {
    let u = m.access.user(&user).ok_or_else(ApiError::not_found)?;
    ok(if u.limits.is_empty() {
        json!([])
    } else {
        json!([{"user": u.name, "value": u.limits}])
    })
}

async fn put_user_limit(
    State(m): M,
    Extension(u): Extension<User>,
    Path((user, name)): Path<(String, String)>,
    bytes: axum::body::Bytes,
) -> Api {
    u.admin()?;
    let value = limit_value(&bytes, &name, &USER_LIMITS, "", "user-limits")
        .map_err(|e| ApiError::bad_request(e.reason().trim_end().to_owned()))?;
    m.access.set_user_limit(&user, &name, Some(value))?;
    no_content()
}

async fn delete_user_limit(
    State(m): M,
    Extension(u): Extension<User>,
    Path((user, name)): Path<(String, String)>,
) -> Api {
    u.admin()?;
    m.access.set_user_limit(&user, &name, None)?;
    no_content()
}
