//! Definitions export and import (`/api/definitions[/{vhost}]`), in RabbitMQ's format, so a
//! file exported from RabbitMQ imports into Warren and one exported from Warren imports into
//! RabbitMQ.
//!
//! Export writes what the broker has. Import declares exchanges, then queues, then bindings,
//! over the API's own AMQP connection ([`Session`]); as RabbitMQ, an object that already
//! exists with other properties, or a binding to something missing, is skipped (and logged),
//! not an error. Users (with their password hashes, tags and limits), vhosts, permissions
//! and topic permissions are created or updated first, through [`Access`](crate::access::Access).
//! Policies (`policies`, and Warren's `operator_policies`) are validated before anything
//! changes (400 with RabbitMQ's reasons) and set after the vhosts exist, before the queues
//! are declared.

use std::sync::Arc;

use amq_protocol::types::ShortString;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use serde_json::{json, Map, Value};

use super::client::Session;
use super::{ApiError, Management, User};
use crate::access::{parse_tags, PermissionRecord, TopicPermissionRecord};
use crate::policy::Policy;
use crate::protocol::json::{json_table, table_json};
use crate::vhost::Vhost;

type Api = Result<Response, ApiError>;
type M = State<Arc<Management>>;
type Params = Query<std::collections::HashMap<String, String>>;

/// The RabbitMQ version Warren's exports say they are in (the format they follow).
const RABBIT_VERSION: &str = "3.10.8";

/// Whether an exchange is the broker's own (the default exchange and `amq.*`), which exports
/// leave out.
fn builtin(name: &str) -> bool {
    name.is_empty() || name.starts_with("amq.")
}

/// The policies of `v`, as RabbitMQ exports them (with a `vhost` field when `with_vhost`).
fn policy_list(v: &Vhost, operator: bool, with_vhost: bool) -> Vec<Value> {
    v.policy_defs(operator)
        .iter()
        .map(|p| {
            let mut o = super::policies::policy_json(&v.name, p);
            if !with_vhost {
                if let Value::Object(m) = &mut o {
                    m.remove("vhost");
                }
            }
            o
        })
        .collect()
}

/// The exchanges, queues and bindings of `v`, each with a `vhost` field when `with_vhost`.
fn vhost_objects(v: &Vhost, with_vhost: bool) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let tag = |mut o: Value| {
        if with_vhost {
            o["vhost"] = json!(&*v.name);
        }
        o
    };
    let mut queues: Vec<Value> = v
        .queues()
        .iter()
        .filter(|q| q.spec().exclusive_owner.is_none())
        .map(|q| {
            let s = q.spec();
            tag(
                json!({"name": &**q.name(), "durable": s.durable, "auto_delete": s.auto_delete,
                "arguments": table_json(&s.arguments)}),
            )
        })
        .collect();
    queues.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let exchanges = v
        .exchanges()
        .iter()
        .filter(|x| !builtin(&x.name))
        .map(|x| {
            tag(
                json!({"name": &*x.name, "type": x.kind, "durable": x.durable,
                "auto_delete": x.auto_delete, "internal": x.internal,
                "arguments": table_json(&x.arguments)}),
            )
        })
        .collect();
    let exclusive: Vec<Arc<str>> = v
        .queues()
        .iter()
        .filter(|q| q.spec().exclusive_owner.is_some())
        .map(|q| q.name().clone())
        .collect();
    let bindings = v
        .bindings()
        .iter()
        .filter(|b| !b.source.is_empty() && (b.to_exchange || !exclusive.contains(&b.destination)))
        .map(|b| {
            tag(json!({"source": &*b.source, "destination": &*b.destination,
                "destination_type": if b.to_exchange { "exchange" } else { "queue" },
                "routing_key": b.routing_key, "arguments": table_json(&b.arguments)}))
        })
        .collect();
    (queues, exchanges, bindings)
}

/// `Content-Disposition` for `?download=NAME`, as RabbitMQ's UI asks for.
fn download(q: &Params, body: Value) -> Response {
    let mut r = Json(body).into_response();
    if let Some(name) = q.get("download") {
        let safe: String = name
            .chars()
            .filter(|c| !c.is_control() && *c != '"')
            .collect();
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename={safe}")) {
            r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
    }
    r
}

pub async fn export(State(m): M, Extension(u): Extension<User>, q: Params) -> Api {
    u.admin()?;
    let vhosts = m.registry.vhosts();
    let users: Vec<Value> = m
        .access
        .users()
        .iter()
        .map(super::access::user_json)
        .collect();
    let permissions: Vec<Value> = m
        .access
        .permissions()
        .iter()
        .map(|p| {
            json!({"user": p.user, "vhost": p.vhost, "configure": p.configure,
                "write": p.write, "read": p.read})
        })
        .collect();
    let topic_permissions: Vec<Value> = m
        .access
        .topic_permissions()
        .iter()
        .map(|t| {
            json!({"user": t.user, "vhost": t.vhost, "exchange": t.exchange,
                "write": t.write, "read": t.read})
        })
        .collect();
    let vhost_list: Vec<Value> = vhosts
        .iter()
        .map(|v| {
            let d = v.def();
            let mut metadata = json!({"description": d.description, "tags": d.tags});
            if let Some(t) = &d.default_queue_type {
                metadata["default_queue_type"] = json!(t);
            }
            json!({"name": &*v.name, "limits": d.limits, "metadata": metadata})
        })
        .collect();
    let (mut queues, mut exchanges, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
    let (mut policies, mut operator_policies) = (Vec::new(), Vec::new());
    for v in &vhosts {
        policies.extend(policy_list(v, false, true));
        operator_policies.extend(policy_list(v, true, true));
        let (q, x, b) = vhost_objects(v, true);
        queues.extend(q);
        exchanges.extend(x);
        bindings.extend(b);
    }
    let body = json!({
        "rabbit_version": RABBIT_VERSION,
        "rabbitmq_version": RABBIT_VERSION,
        "product_name": "Warren",
        "product_version": env!("CARGO_PKG_VERSION"),
        "users": users,
        "vhosts": vhost_list,
        "permissions": permissions,
        "topic_permissions": topic_permissions,
        "parameters": [],
        "global_parameters": [],
        "policies": policies,
        "operator_policies": operator_policies,
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    });
    Ok(download(&q, body))
}

pub async fn export_vhost(State(m): M, Path(vhost): Path<String>, q: Params) -> Api {
    let v = m
        .registry
        .vhost(&vhost)
        .ok_or_else(|| ApiError::bad_request("vhost_not_found"))?;
    let (queues, exchanges, bindings) = vhost_objects(&v, false);
    let body = json!({
        "rabbit_version": RABBIT_VERSION,
        "parameters": [],
        "policies": policy_list(&v, false, false),
        "operator_policies": policy_list(&v, true, false),
        "queues": queues,
        "exchanges": exchanges,
        "bindings": bindings,
    });
    Ok(download(&q, body))
}

/// The definitions in a request: JSON (415 for other content types, as RabbitMQ).
fn definitions_body(headers: &HeaderMap, body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().starts_with("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "definitions are imported as application/json",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ApiError::bad_request("failed_to_parse_json")),
    }
}

fn list<'a>(defs: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], ApiError> {
    match defs.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(ApiError::bad_request(format!("'{key}' must be a list"))),
    }
}

fn field<'a>(o: &'a Value, key: &str, what: &str) -> Result<&'a str, ApiError> {
    o.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request(format!("{what} without a '{key}': {o}")))
}

fn boolean(o: &Value, key: &str) -> bool {
    match o.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

fn text(o: &Value, key: &str) -> Option<String> {
    o.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// The policies (`operator`: operator policies) of `defs`, validated before anything
/// changes, with their vhosts (`only`: a per-vhost import puts them all there).
fn parse_policies(
    defs: &Map<String, Value>,
    operator: bool,
    only: Option<&str>,
) -> Result<Vec<(String, Policy)>, ApiError> {
    let key = if operator {
        "operator_policies"
    } else {
        "policies"
    };
    let mut out = Vec::new();
    for p in list(defs, key)? {
        let name = field(p, "name", "a policy")?;
        let vhost = match only {
            Some(v) => v.to_owned(),
            None => field(p, "vhost", "a policy")?.to_owned(),
        };
        let Value::Object(body) = p else {
            return Err(ApiError::bad_request(format!(
                "a policy must be an object: {p}"
            )));
        };
        let policy = Policy::from_body(name, body, operator)
            .map_err(|e| ApiError::bad_request(format!("policy '{name}': {e}")))?;
        out.push((vhost, policy));
    }
    Ok(out)
}

/// Sets parsed policies (their vhosts must exist by now).
fn import_policies(
    m: &Management,
    policies: Vec<(String, Policy)>,
    operator: bool,
) -> Result<(), ApiError> {
    for (vhost, policy) in policies {
        let v = m.registry.vhost(&vhost).ok_or_else(|| {
            ApiError::bad_request(format!(
                "vhost '{vhost}' of policy '{}' does not exist",
                policy.name()
            ))
        })?;
        v.put_policy(operator, policy)
            .map_err(|e| ApiError::internal(format!("cannot store a policy: {e}")))?;
    }
    Ok(())
}

/// Creates or updates the vhosts, users, permissions and topic permissions of `defs`, in
/// that order (an administrator's import).
fn import_tenancy(m: &Management, user: &User, defs: &Map<String, Value>) -> Result<(), ApiError> {
    let access = &m.access;
    for v in list(defs, "vhosts")? {
        let name = field(v, "name", "a vhost")?;
        let meta = v.get("metadata").cloned().unwrap_or(Value::Null);
        let description = text(&meta, "description").or_else(|| text(v, "description"));
        let tags = meta
            .get("tags")
            .or_else(|| v.get("tags"))
            .and_then(parse_tags);
        let dqt = text(&meta, "default_queue_type").or_else(|| text(v, "default_queue_type"));
        access.put_vhost(name, description, tags, dqt, Some(&user.name))?;
        if let Some(Value::Object(limits)) = v.get("limits") {
            for (k, n) in limits {
                if let Some(n) = n.as_i64() {
                    access.set_vhost_limit(name, k, Some(n))?;
                }
            }
        }
    }
    for u in list(defs, "users")? {
        let name = field(u, "name", "a user")?;
        let tags = u.get("tags").and_then(parse_tags).unwrap_or_default();
        let hash = text(u, "password_hash");
        let algorithm = text(u, "hashing_algorithm").unwrap_or_default();
        let password = text(u, "password").filter(|_| hash.is_none());
        access.put_user(
            name,
            password.as_deref(),
            hash.as_deref().map(|h| (h, algorithm.as_str())),
            tags,
        )?;
        if let Some(Value::Object(limits)) = u.get("limits") {
            for (k, n) in limits {
                if let Some(n) = n.as_i64() {
                    access.set_user_limit(name, k, Some(n))?;
                }
            }
        }
    }
    for p in list(defs, "permissions")? {
        access.set_permission(PermissionRecord {
            user: field(p, "user", "a permission")?.to_owned(),
            vhost: field(p, "vhost", "a permission")?.to_owned(),
            configure: field(p, "configure", "a permission")?.to_owned(),
            write: field(p, "write", "a permission")?.to_owned(),
            read: field(p, "read", "a permission")?.to_owned(),
        })?;
    }
    for t in list(defs, "topic_permissions")? {
        access.set_topic_permission(TopicPermissionRecord {
            user: field(t, "user", "a topic permission")?.to_owned(),
            vhost: field(t, "vhost", "a topic permission")?.to_owned(),
            exchange: field(t, "exchange", "a topic permission")?.to_owned(),
            write: field(t, "write", "a topic permission")?.to_owned(),
            read: field(t, "read", "a topic permission")?.to_owned(),
        })?;
    }
    Ok(())
}

/// Declares what `defs` holds for one vhost: exchanges, queues, then bindings. Objects that
/// the broker refuses (inequivalent, a binding to nothing) are skipped and logged, as
/// RabbitMQ's import skips them. Returns how many were skipped.
async fn import_vhost(
    m: &Management,
    user: &User,
    vhost: &str,
    exchanges: Vec<&Value>,
    queues: Vec<&Value>,
    bindings: Vec<&Value>,
) -> Result<usize, ApiError> {
    let mut s = Session::open(m.amqp, user, vhost).await?;
    let mut skipped = 0;
    enum Op {
        Exchange(
            ShortString,
            String,
            ExchangeDeclareOptions,
            lapin::types::FieldTable,
        ),
        Queue(ShortString, QueueDeclareOptions, lapin::types::FieldTable),
        Bind(
            bool,
            ShortString,
            ShortString,
            ShortString,
            lapin::types::FieldTable,
        ),
    }
    let short = |s: &str| -> Result<ShortString, ApiError> {
        if s.len() > 255 {
            return Err(ApiError::bad_request(format!(
                "'{s}' is longer than 255 bytes"
            )));
        }
        Ok(s.into())
    };
    let args = |o: &Value| match o.get("arguments") {
        Some(a @ Value::Object(_)) => Ok(json_table(a).unwrap_or_default()),
        None | Some(Value::Null) => Ok(Default::default()),
        Some(Value::Array(a)) if a.is_empty() => Ok(Default::default()),
        Some(other) => Err(ApiError::bad_request(format!(
            "arguments must be an object, not {other}"
        ))),
    };
    let mut ops = Vec::new();
    for x in exchanges {
        let name = field(x, "name", "an exchange")?;
        if builtin(name) {
            continue;
        }
        ops.push(Op::Exchange(
            short(name)?,
            x.get("type")
                .and_then(Value::as_str)
                .unwrap_or("direct")
                .to_owned(),
            ExchangeDeclareOptions {
                durable: boolean(x, "durable"),
                auto_delete: boolean(x, "auto_delete"),
                internal: boolean(x, "internal"),
                ..Default::default()
            },
            args(x)?,
        ));
    }
    for q in queues {
        ops.push(Op::Queue(
            short(field(q, "name", "a queue")?)?,
            QueueDeclareOptions {
                durable: boolean(q, "durable"),
                auto_delete: boolean(q, "auto_delete"),
                ..Default::default()
            },
            args(q)?,
        ));
    }
    for b in bindings {
        let to_exchange = match b.get("destination_type").and_then(Value::as_str) {
            Some("exchange") => true,
            Some("queue") | None => false,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "destination_type '{other}' is not queue or exchange"
                )))
            }
        };
        ops.push(Op::Bind(
            to_exchange,
            short(field(b, "source", "a binding")?)?,
            short(field(b, "destination", "a binding")?)?,
            short(b.get("routing_key").and_then(Value::as_str).unwrap_or(""))?,
            args(b)?,
        ));
    }
    for op in ops {
        let ch = s.channel.clone();
        let (what, r) = match op {
            Op::Exchange(name, kind, o, a) => (
                format!("exchange '{name}'"),
                ch.exchange_declare(name, lapin::ExchangeKind::Custom(kind), o, a)
                    .await,
            ),
            Op::Queue(name, o, a) => (
                format!("queue '{name}'"),
                ch.queue_declare(name, o, a).await.map(|_| ()),
            ),
            Op::Bind(true, src, dst, key, a) => (
                format!("binding {src} -> {dst}"),
                ch.exchange_bind(dst, src, key, ExchangeBindOptions::default(), a)
                    .await,
            ),
            Op::Bind(false, src, dst, key, a) => (
                format!("binding {src} -> {dst}"),
                ch.queue_bind(dst, src, key, QueueBindOptions::default(), a)
                    .await,
            ),
        };
        if let Err(e) = r {
            let e = s.fail(e).await;
            tracing::warn!(vhost, error = %e, "definitions import skipped {what}");
            skipped += 1;
            // The broker closed the channel: carry on on a new one.
            s.close().await;
            s = Session::open(m.amqp, user, vhost).await?;
        }
    }
    s.close().await;
    Ok(skipped)
}

/// The items that belong to `vhost`.
fn of_vhost<'a>(items: &'a [Value], vhost: &str) -> Vec<&'a Value> {
    items
        .iter()
        .filter(|i| i.get("vhost").and_then(Value::as_str) == Some(vhost))
        .collect()
}

async fn import_into<'a>(
    m: &Management,
    user: &User,
    defs: &'a Map<String, Value>,
    only: Option<&str>,
) -> Api {
    let (queues, exchanges, bindings) = (
        list(defs, "queues")?,
        list(defs, "exchanges")?,
        list(defs, "bindings")?,
    );
    let mut vhosts: Vec<String> = Vec::new();
    for i in queues.iter().chain(exchanges).chain(bindings) {
        let v = match (i.get("vhost").and_then(Value::as_str), only) {
            (_, Some(only)) => only,
            (Some(v), None) => v,
            (None, None) => {
                return Err(ApiError::bad_request(format!("no vhost for {i}")));
            }
        };
        if m.registry.vhost(v).is_none() {
            return Err(ApiError::bad_request(format!(
                "vhost '{v}' does not exist: Warren cannot create virtual hosts yet"
            )));
        }
        if !vhosts.iter().any(|k| k == v) {
            vhosts.push(v.to_owned());
        }
    }
    for v in vhosts {
        // A per-vhost import takes every item into that vhost, as RabbitMQ's.
        let pick = |all: &'a [Value]| -> Vec<&'a Value> {
            match only {
                Some(_) => all.iter().collect(),
                None => of_vhost(all, &v),
            }
        };
        import_vhost(m, user, &v, pick(exchanges), pick(queues), pick(bindings)).await?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn import(
    State(m): M,
    Extension(user): Extension<User>,
    headers: HeaderMap,
    body: Bytes,
) -> Api {
    user.admin()?;
    let defs = definitions_body(&headers, &body)?;
    let policies = parse_policies(&defs, false, None)?;
    let operator_policies = parse_policies(&defs, true, None)?;
    import_tenancy(&m, &user, &defs)?;
    import_policies(&m, policies, false)?;
    import_policies(&m, operator_policies, true)?;
    import_into(&m, &user, &defs, None).await
}

pub async fn import_vhost_defs(
    State(m): M,
    Extension(user): Extension<User>,
    Path(vhost): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Api {
    if m.registry.vhost(&vhost).is_none() {
        return Err(ApiError::no_vhost());
    }
    let defs = definitions_body(&headers, &body)?;
    let policies = parse_policies(&defs, false, Some(&vhost))?;
    let operator_policies = parse_policies(&defs, true, Some(&vhost))?;
    if !(policies.is_empty() && operator_policies.is_empty()) {
        super::policies::allowed(&user, !operator_policies.is_empty(), true)?;
    }
    import_policies(&m, policies, false)?;
    import_policies(&m, operator_policies, true)?;
    import_into(&m, &user, &defs, Some(&vhost)).await
}
