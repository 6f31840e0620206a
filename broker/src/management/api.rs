//! The `/api` routes, answering with RabbitMQ's JSON shapes (`rabbit_mgmt_format`), so its
//! UI habits, `rabbitmqadmin` and scripts (KEDA, monitoring checks) work unchanged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::list::{self, respond};
use super::rates::Sample;
use super::{consumers, definitions, ops, ApiError, Management};
use crate::protocol::json::{base64, table_json};
use crate::queue::QueueHandle;
use crate::registry::{ChannelInfo, ConnectionInfo};
use crate::vhost::{BindingView, ExchangeView, Vhost};

type Api = Result<Response, ApiError>;
type M = State<Arc<Management>>;
type Params = Query<HashMap<String, String>>;
/// Reads one counter from a rate sample.
type Read = fn(&Sample) -> u64;

/// The API's routes, behind Basic authentication.
pub fn router(m: Arc<Management>) -> Router {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/vhosts", get(vhosts))
        .route("/api/queues", get(queues))
        .route("/api/queues/{vhost}", get(queues_of))
        .route(
            "/api/queues/{vhost}/{name}",
            get(queue).put(ops::put_queue).delete(ops::delete_queue),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            delete(ops::purge_queue),
        )
        .route("/api/queues/{vhost}/{name}/get", post(ops::get_messages))
        .route("/api/queues/{vhost}/{name}/bindings", get(queue_bindings))
        .route("/api/exchanges", get(exchanges))
        .route("/api/exchanges/{vhost}", get(exchanges_of))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(exchange)
                .put(ops::put_exchange)
                .delete(ops::delete_exchange),
        )
        .route("/api/exchanges/{vhost}/{name}/publish", post(ops::publish))
        .route(
            "/api/stream/super-streams/{vhost}/{name}",
            axum::routing::put(ops::put_super_stream),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(exchange_bindings_source),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(exchange_bindings_destination),
        )
        .route("/api/bindings", get(bindings))
        .route("/api/bindings/{vhost}", get(bindings_of))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            get(ops::list_binding).post(ops::post_binding),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(ops::get_binding).delete(ops::delete_binding),
        )
        .route("/api/connections", get(connections))
        .route(
            "/api/connections/{name}",
            get(connection).delete(ops::close_connection),
        )
        .route("/api/connections/{name}/channels", get(connection_channels))
        .route("/api/channels", get(channels))
        .route("/api/consumers", get(consumers::consumers))
        .route("/api/consumers/{vhost}", get(consumers::consumers_of))
        .route("/api/aliveness-test/{vhost}", get(ops::aliveness_test))
        .route(
            "/api/definitions",
            get(definitions::export).post(definitions::import),
        )
        .route(
            "/api/definitions/{vhost}",
            get(definitions::export_vhost).post(definitions::import_vhost_defs),
        )
        .route("/api/health/checks/alarms", get(no_alarms))
        .route("/api/health/checks/local-alarms", get(no_alarms))
        .route(
            "/api/health/checks/port-listener/{port}",
            get(port_listener),
        )
        .route("/api/health/checks/virtual-hosts", get(virtual_hosts_ok))
        .route(
            "/api/health/checks/node-is-quorum-critical",
            get(not_quorum_critical),
        )
        .merge(super::access::routes())
        .merge(super::policies::routes())
        .fallback(|| async { ApiError::not_found() })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&m),
            super::authenticate,
        ))
        .with_state(m)
}

pub(super) fn ok(v: Value) -> Api {
    Ok(Json(v).into_response())
}

pub(super) fn details(rate: f64) -> Value {
    json!({ "rate": rate })
}

pub(super) fn vhost_of(m: &Management, name: &str) -> Result<Arc<Vhost>, ApiError> {
    m.registry.vhost(name).ok_or_else(ApiError::not_found)
}

pub(super) fn ms_since_epoch(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn overview(State(m): M, Query(q): Params) -> Api {
    let totals = m.registry.message_totals();
    let rate = |f: fn(&Sample) -> u64| m.rates.rate(|s| Some(f(s)));
    let mut message_stats = serde_json::Map::new();
    let fields: [(&str, u64, Read); 12] = [
        ("publish", totals.publish, |s| s.messages.publish),
        ("confirm", totals.confirm, |s| s.messages.confirm),
        ("return_unroutable", totals.return_unroutable, |s| {
            s.messages.return_unroutable
        }),
        ("drop_unroutable", totals.drop_unroutable, |s| {
            s.messages.drop_unroutable
        }),
        ("deliver", totals.deliver, |s| s.messages.deliver),
        ("deliver_no_ack", totals.deliver_no_ack, |s| {
            s.messages.deliver_no_ack
        }),
        ("get", totals.get, |s| s.messages.get),
        ("get_no_ack", totals.get_no_ack, |s| s.messages.get_no_ack),
        ("get_empty", totals.get_empty, |s| s.messages.get_empty),
        ("deliver_get", totals.deliver_get(), |s| {
            s.messages.deliver_get()
        }),
        ("ack", totals.ack, |s| s.messages.ack),
        ("redeliver", totals.redeliver, |s| s.messages.redeliver),
    ];
    for (name, value, read) in fields {
        message_stats.insert(name.into(), json!(value));
        message_stats.insert(format!("{name}_details"), details(rate(read)));
    }
    let (mut ready, mut unacked, mut queues, mut consumers, mut exchanges) = (0, 0, 0, 0, 0);
    for v in m.registry.vhosts() {
        exchanges += v.exchanges().len();
        for qh in v.queues() {
            let c = qh.counters().read();
            ready += c.ready;
            unacked += c.unacked;
            consumers += u64::from(c.consumers);
            queues += 1;
        }
    }
    let conns = m.registry.connections();
    let channels: usize = conns.iter().map(|c| c.channels().len()).sum();
    let churn = &m.registry.churn;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let mut listeners = vec![json!({
        "node": m.node, "protocol": "amqp", "ip_address": m.amqp.ip().to_string(),
        "port": m.amqp.port(), "socket_opts": {"nodelay": true},
    })];
    for (proto, addr) in [("http", m.http), ("http/prometheus", m.prometheus)] {
        if let Some(a) = addr {
            listeners.push(json!({
                "node": m.node, "protocol": proto, "ip_address": a.ip().to_string(),
                "port": a.port(), "socket_opts": {"ip": a.ip().to_string(), "port": a.port()},
            }));
        }
    }
    let version = env!("CARGO_PKG_VERSION");
    let exchange_types: Vec<Value> = crate::exchange::ExchangeKind::ALL
        .iter()
        .map(|k| {
            let t = k.as_str();
            let description = match k {
                crate::exchange::ExchangeKind::ConsistentHash => {
                    "Consistent Hashing Exchange".to_owned()
                }
                crate::exchange::ExchangeKind::Delayed => "Delayed Message Exchange".to_owned(),
                _ => format!("AMQP {t} exchange"),
            };
            json!({"name": t, "description": description, "enabled": true})
        })
        .collect();
    let contexts: Vec<Value> = m
        .http
        .map(|a| {
            vec![json!({
                "node": m.node, "description": "Warren Management", "path": "/",
                "ip": a.ip().to_string(), "port": a.port().to_string(),
            })]
        })
        .unwrap_or_default();
    let v = json!({
        "management_version": version,
        "rates_mode": "basic",
        "exchange_types": exchange_types,
        "product_version": version,
        "product_name": "Warren",
        // What RabbitMQ clients and dashboards branch on: the RabbitMQ release whose
        // behaviour Warren follows.
        "rabbitmq_version": "3.10.8",
        "cluster_name": m.node,
        "erlang_version": "none",
        "erlang_full_version": "none (Warren is written in Rust)",
        "disable_stats": false,
        "enable_queue_totals": false,
        "message_stats": message_stats,
        "churn_rates": {
            "connection_created": load(&churn.connection_created),
            "connection_created_details": details(0.0),
            "connection_closed": load(&churn.connection_closed),
            "connection_closed_details": details(0.0),
            "channel_created": load(&churn.channel_created),
            "channel_created_details": details(0.0),
            "channel_closed": load(&churn.channel_closed),
            "channel_closed_details": details(0.0),
        },
        "queue_totals": {
            "messages": ready + unacked,
            "messages_details": details(m.rates.rate(|s| Some(s.ready + s.unacked))),
            "messages_ready": ready,
            "messages_ready_details": details(m.rates.rate(|s| Some(s.ready))),
            "messages_unacknowledged": unacked,
            "messages_unacknowledged_details": details(m.rates.rate(|s| Some(s.unacked))),
        },
        "object_totals": {
            "channels": channels,
            "connections": conns.len(),
            "consumers": consumers,
            "exchanges": exchanges,
            "queues": queues,
        },
        "statistics_db_event_queue": 0,
        "node": m.node,
        "listeners": listeners,
        "contexts": contexts,
    });
    ok(match q.get("columns") {
        Some(c) => list::pick(&v, c),
        None => v,
    })
}

fn vhost_json(v: &Vhost) -> Value {
    let (mut ready, mut unacked) = (0, 0);
    for q in v.queues() {
        let c = q.counters().read();
        ready += c.ready;
        unacked += c.unacked;
    }
    let def = v.def();
    let mut metadata = json!({"description": def.description, "tags": def.tags});
    if let Some(t) = &def.default_queue_type {
        metadata["default_queue_type"] = json!(t);
    }
    json!({
        "name": &*v.name,
        "description": def.description,
        "tags": def.tags,
        "metadata": metadata,
        "default_queue_type": def.default_queue_type.as_deref().unwrap_or("undefined"),
        "tracing": false,
        "cluster_state": {},
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
    })
}

async fn vhosts(State(m): M, Query(q): Params) -> Api {
    let mut all: Vec<Value> = m.registry.vhosts().iter().map(|v| vhost_json(v)).collect();
    for v in &mut all {
        v["cluster_state"] = json!({ &m.node: "running" });
    }
    ok(respond(all, &q)?)
}

pub(super) async fn vhost(State(m): M, Path(name): Path<String>) -> Api {
    let v = vhost_of(&m, &name)?;
    let mut v = vhost_json(&v);
    v["cluster_state"] = json!({ &m.node: "running" });
    ok(v)
}

fn queue_json(m: &Management, vhost: &str, q: &QueueHandle) -> Value {
    let spec = q.spec();
    let policy = q.policy();
    let c = q.counters().read();
    let rate = |i: usize| details(m.rates.queue_rate(q.counters(), |v| v[i]));
    let mut v = json!({
        "name": &**q.name(),
        "vhost": vhost,
        "type": crate::queue::kind::QueueKind::of(&spec.args).as_str(),
        "durable": spec.durable,
        "auto_delete": spec.auto_delete,
        "exclusive": spec.exclusive_owner.is_some(),
        "arguments": table_json(&spec.arguments),
        "node": m.node,
        "state": "running",
        "consumers": c.consumers,
        // Warren does not measure how often consumers could not take a message: with
        // consumers and nothing waiting, every message went straight to one (1.0).
        "consumer_utilisation": if c.consumers > 0 && c.ready == 0 { 1.0 } else { 0.0 },
        // The bodies of the messages the queue holds in memory (its other memory is not counted).
        "memory": (c.ready_bytes + c.unacked_bytes).saturating_sub(c.paged_out_bytes),
        "messages": c.ready + c.unacked,
        "messages_details": details(m.rates.queue_rate(q.counters(), |v| v[4] + v[5])),
        "messages_ready": c.ready,
        "messages_ready_details": rate(4),
        "messages_unacknowledged": c.unacked,
        "messages_unacknowledged_details": rate(5),
        "messages_persistent": c.persistent,
        "message_bytes": c.ready_bytes + c.unacked_bytes,
        "message_bytes_ready": c.ready_bytes,
        "message_bytes_unacknowledged": c.unacked_bytes,
        "messages_paged_out": c.paged_out,
        "message_bytes_paged_out": c.paged_out_bytes,
        "policy": policy.applied.policy_name(),
        "operator_policy": policy.applied.operator_policy_name(),
        "effective_policy_definition": policy.applied.definition(),
        "exclusive_consumer_tag": null,
        "single_active_consumer_tag": null,
        "message_stats": {
            "publish": c.published,
            "publish_details": rate(0),
            "deliver_get": c.delivered,
            "deliver_get_details": rate(1),
            "ack": c.acked,
            "ack_details": rate(2),
            "redeliver": c.redelivered,
            "redeliver_details": rate(3),
        },
    });
    if let (Some(d), Value::Object(o)) = (&spec.args.dedup, &mut v) {
        o.insert(
            "deduplication".into(),
            dedup_json(c.dedup_duplicates, c.dedup_entries, d.cache_size),
        );
    }
    v
}

fn all_queues(m: &Management, vhosts: &[Arc<Vhost>]) -> Vec<Value> {
    vhosts
        .iter()
        .flat_map(|v| {
            v.queues()
                .into_iter()
                .map(|q| queue_json(m, &v.name, &q))
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn queues(State(m): M, Query(q): Params) -> Api {
    ok(respond(all_queues(&m, &m.registry.vhosts()), &q)?)
}

async fn queues_of(State(m): M, Path(vhost): Path<String>, Query(q): Params) -> Api {
    let v = vhost_of(&m, &vhost)?;
    ok(respond(all_queues(&m, &[v]), &q)?)
}

async fn queue(State(m): M, Path((vhost, name)): Path<(String, String)>) -> Api {
    let v = vhost_of(&m, &vhost)?;
    let q = v.lookup_queue(&name).ok_or_else(ApiError::not_found)?;
    ok(queue_json(&m, &v.name, &q))
}

/// RabbitMQ's `properties_key` of a binding: the URL-quoted routing key (`~` for an empty
/// key without arguments), then, with arguments, `~` and a 32-bit hash of them in base64url
/// (RabbitMQ hashes its internal term; Warren hashes the encoded table: clients never compute
/// it, they copy it from a listing).
pub fn properties_key(key: &str, args: &amq_protocol::types::FieldTable) -> String {
    if key.is_empty() && args.inner().is_empty() {
        return "~".into();
    }
    let mut out = quote(key);
    if !args.inner().is_empty() {
        // The arguments in a canonical text form (sorted keys, typed values).
        let mut canonical: Vec<String> = args
            .inner()
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        canonical.sort();
        let hash = crc32fast::hash(canonical.join("\0").as_bytes());
        let b64 = base64(&hash.to_be_bytes())
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_");
        out.push('~');
        out.push_str(&quote(&b64));
    }
    out
}

pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub(super) fn binding_json(vhost: &str, b: &BindingView) -> Value {
    json!({
        "source": &*b.source,
        "vhost": vhost,
        "destination": &*b.destination,
        "destination_type": if b.to_exchange { "exchange" } else { "queue" },
        "routing_key": b.routing_key,
        "arguments": table_json(&b.arguments),
        "properties_key": properties_key(&b.routing_key, &b.arguments),
    })
}

fn bindings_where(v: &Vhost, keep: impl Fn(&BindingView) -> bool) -> Vec<Value> {
    v.bindings()
        .iter()
        .filter(|b| keep(b))
        .map(|b| binding_json(&v.name, b))
        .collect()
}

async fn queue_bindings(
    State(m): M,
    Path((vhost, name)): Path<(String, String)>,
    Query(q): Params,
) -> Api {
    let v = vhost_of(&m, &vhost)?;
    v.lookup_queue(&name).ok_or_else(ApiError::not_found)?;
    let all = bindings_where(&v, |b| !b.to_exchange && *b.destination == *name);
    ok(Value::Array(list::columns(all, &q)))
}

async fn bindings(State(m): M, Query(q): Params) -> Api {
    let all = m
        .registry
        .vhosts()
        .iter()
        .flat_map(|v| bindings_where(v, |_| true))
        .collect();
    ok(Value::Array(list::columns(all, &q)))
}

async fn bindings_of(State(m): M, Path(vhost): Path<String>, Query(q): Params) -> Api {
    let v = vhost_of(&m, &vhost)?;
    ok(Value::Array(list::columns(
        bindings_where(&v, |_| true),
        &q,
    )))
}

/// The default exchange is `amq.default` in paths, as in RabbitMQ's.
pub(super) fn exchange_name(name: &str) -> &str {
    if name == "amq.default" {
        ""
    } else {
        name
    }
}

fn exchange_json(vhost: &str, x: &ExchangeView) -> Value {
    let mut v = json!({
        "name": &*x.name,
        "vhost": vhost,
        "type": x.kind,
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": table_json(&x.arguments),
        "policy": x.policy.policy_name(),
        "user_who_performed_action": "rmq-internal",
    });
    if let (Some((duplicates, entries, size)), Value::Object(o)) = (x.dedup, &mut v) {
        o.insert(
            "deduplication".into(),
            dedup_json(duplicates, entries, size),
        );
    }
    if let (Some(n), Value::Object(o)) = (x.delayed, &mut v) {
        // The delayed message exchange plugin's field.
        o.insert("messages_delayed".into(), n.into());
    }
    v
}

/// Warren's own field for a deduplicating exchange or queue.
fn dedup_json(duplicates: u64, entries: u64, cache_size: u64) -> Value {
    json!({"duplicates": duplicates, "cache_entries": entries, "cache_size": cache_size})
}

fn all_exchanges(vhosts: &[Arc<Vhost>]) -> Vec<Value> {
    vhosts
        .iter()
        .flat_map(|v| {
            v.exchanges()
                .iter()
                .map(|x| exchange_json(&v.name, x))
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn exchanges(State(m): M, Query(q): Params) -> Api {
    ok(respond(all_exchanges(&m.registry.vhosts()), &q)?)
}

async fn exchanges_of(State(m): M, Path(vhost): Path<String>, Query(q): Params) -> Api {
    ok(respond(all_exchanges(&[vhost_of(&m, &vhost)?]), &q)?)
}

async fn exchange(State(m): M, Path((vhost, name)): Path<(String, String)>) -> Api {
    let v = vhost_of(&m, &vhost)?;
    let name = exchange_name(&name);
    let x = v.exchanges().into_iter().find(|x| &*x.name == name);
    ok(exchange_json(&v.name, &x.ok_or_else(ApiError::not_found)?))
}

async fn exchange_bindings(m: &Management, vhost: &str, name: &str, source: bool) -> Api {
    let v = vhost_of(m, vhost)?;
    let name = exchange_name(name);
    if !v.exchanges().iter().any(|x| &*x.name == name) {
        return Err(ApiError::not_found());
    }
    let all = bindings_where(&v, |b| {
        if source {
            &*b.source == name
        } else {
            b.to_exchange && &*b.destination == name
        }
    });
    ok(Value::Array(all))
}

async fn exchange_bindings_source(State(m): M, Path((vhost, name)): Path<(String, String)>) -> Api {
    exchange_bindings(&m, &vhost, &name, true).await
}

async fn exchange_bindings_destination(
    State(m): M,
    Path((vhost, name)): Path<(String, String)>,
) -> Api {
    exchange_bindings(&m, &vhost, &name, false).await
}

/// A connection's name, as RabbitMQ's: `peer -> local`.
pub fn connection_name(c: &ConnectionInfo) -> String {
    format!("{} -> {}", c.peer, c.local)
}

fn connection_json(m: &Management, c: &ConnectionInfo) -> Value {
    let mut props = serde_json::Map::new();
    let client = &c.client;
    for (k, v) in [
        ("product", &client.product),
        ("version", &client.version),
        ("platform", &client.platform),
        ("connection_name", &client.connection_name),
    ] {
        if let Some(v) = v {
            props.insert(k.into(), json!(v));
        }
    }
    let id = c.id;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    json!({
        "name": connection_name(c),
        "user_provided_name": client.connection_name,
        "node": m.node,
        "type": "network",
        "protocol": "AMQP 0-9-1",
        "state": "running",
        "user": c.user,
        "user_who_performed_action": c.user,
        "vhost": &*c.vhost,
        "host": c.local.ip().to_string(),
        "port": c.local.port(),
        "peer_host": c.peer.ip().to_string(),
        "peer_port": c.peer.port(),
        "ssl": false,
        "auth_mechanism": "PLAIN",
        "connected_at": ms_since_epoch(c.connected_at),
        "client_properties": props,
        "channels": c.channels().len(),
        "channel_max": c.channel_max,
        "frame_max": c.frame_max,
        "timeout": c.heartbeat,
        "recv_oct": load(&c.counters.recv_oct),
        "recv_oct_details": details(m.rates.rate(|s| s.connections.get(&id).map(|v| v[0]))),
        "send_oct": load(&c.counters.send_oct),
        "send_oct_details": details(m.rates.rate(|s| s.connections.get(&id).map(|v| v[1]))),
    })
}

async fn connections(State(m): M, Query(q): Params) -> Api {
    let all = m
        .registry
        .connections()
        .iter()
        .map(|c| connection_json(&m, c))
        .collect();
    ok(respond(all, &q)?)
}

pub(super) fn find_connection(m: &Management, name: &str) -> Result<Arc<ConnectionInfo>, ApiError> {
    m.registry
        .connections()
        .into_iter()
        .find(|c| connection_name(c) == name)
        .ok_or_else(ApiError::not_found)
}

async fn connection(State(m): M, Path(name): Path<String>) -> Api {
    let c = find_connection(&m, &name)?;
    ok(connection_json(&m, &c))
}

fn channel_json(m: &Management, c: &ConnectionInfo, ch: &ChannelInfo) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let n = ch.counters.read();
    let conn = connection_name(c);
    json!({
        "name": format!("{conn} ({})", ch.number),
        "number": ch.number,
        "node": m.node,
        "state": "running",
        "user": c.user,
        "user_who_performed_action": c.user,
        "vhost": &*c.vhost,
        "connection_details": {
            "name": conn,
            "peer_host": c.peer.ip().to_string(),
            "peer_port": c.peer.port(),
        },
        "prefetch_count": ch.prefetch_count.load(Relaxed),
        "global_prefetch_count": ch.global_prefetch_count.load(Relaxed),
        "consumer_count": ch.consumers.load(Relaxed),
        "messages_unacknowledged": ch.unacked.load(Relaxed),
        "messages_unconfirmed": ch.unconfirmed.load(Relaxed),
        "messages_uncommitted": ch.uncommitted.load(Relaxed),
        "acks_uncommitted": ch.acks_uncommitted.load(Relaxed),
        "confirm": ch.confirm.load(Relaxed),
        "transactional": ch.transactional.load(Relaxed),
        "message_stats": {
            "publish": n.publish,
            "confirm": n.confirm,
            "return_unroutable": n.return_unroutable,
            "drop_unroutable": n.drop_unroutable,
            "deliver": n.deliver,
            "deliver_no_ack": n.deliver_no_ack,
            "get": n.get,
            "get_no_ack": n.get_no_ack,
            "get_empty": n.get_empty,
            "deliver_get": n.deliver_get(),
            "ack": n.ack,
            "redeliver": n.redeliver,
        },
    })
}

fn channels_of(m: &Management, conns: &[Arc<ConnectionInfo>]) -> Vec<Value> {
    conns
        .iter()
        .flat_map(|c| {
            c.channels()
                .iter()
                .map(|ch| channel_json(m, c, ch))
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn channels(State(m): M, Query(q): Params) -> Api {
    ok(respond(channels_of(&m, &m.registry.connections()), &q)?)
}

async fn connection_channels(State(m): M, Path(name): Path<String>, Query(q): Params) -> Api {
    let c = find_connection(&m, &name)?;
    ok(respond(channels_of(&m, &[c]), &q)?)
}

/// RabbitMQ's `/api/health/checks/alarms`: 200 without alarms, 503 naming them.
async fn no_alarms(State(m): M) -> Api {
    let s = m.alarms.state();
    if !s.any() {
        return ok(json!({"status": "ok"}));
    }
    let alarms: Vec<Value> = [("memory", s.memory), ("disk", s.disk)]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(r, _)| json!({"node": m.node, "resource": r}))
        .collect();
    let body = json!({"status": "failed",
        "reason": "resource alarm(s) in effect in the cluster", "alarms": alarms});
    Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response())
}

async fn port_listener(State(m): M, Path(port): Path<String>) -> Api {
    let Ok(port) = port.parse::<u16>() else {
        return Err(ApiError::bad_request(format!("invalid port: {port}")));
    };
    let ports: Vec<u16> = [Some(m.amqp), m.http, m.prometheus]
        .into_iter()
        .flatten()
        .map(|a| a.port())
        .collect();
    if ports.contains(&port) {
        return ok(json!({"status": "ok", "port": port}));
    }
    Ok((
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({
            "status": "failed",
            "reason": format!("No active listener on port {port}"),
            "missing": port,
            "ports": ports,
        })),
    )
        .into_response())
}

async fn virtual_hosts_ok() -> Api {
    // Every vhost runs inside the one process: none can be down while the API answers.
    ok(json!({"status": "ok"}))
}

async fn not_quorum_critical() -> Api {
    // A single node: no queue depends on another node for its quorum.
    ok(json!({"status": "ok"}))
}
