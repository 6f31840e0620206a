//! `GET /api/consumers[/{vhost}]`: every consumer of every open channel, from the registry,
//! with the fields RabbitMQ's listing has.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use serde_json::{json, Value};

use super::api::{connection_name, ok, vhost_of};
use super::list::respond;
use super::{ApiError, Management};
use crate::protocol::json::table_json;
use crate::registry::{ChannelInfo, ConnectionInfo, ConsumerInfo};

type Api = Result<axum::response::Response, ApiError>;
type M = State<Arc<Management>>;
type Params = Query<std::collections::HashMap<String, String>>;

fn consumer_json(m: &Management, c: &ConnectionInfo, ch: &ChannelInfo, k: &ConsumerInfo) -> Value {
    let conn = connection_name(c);
    let active = k.active.load(std::sync::atomic::Ordering::Relaxed);
    // RabbitMQ's values: "up" for an ordinary consumer, "single_active" or "waiting" for one
    // that takes turns.
    let status = match (k.single_active, active) {
        (false, _) => "up",
        (true, true) => "single_active",
        (true, false) => "waiting",
    };
    json!({
        "consumer_tag": &*k.tag,
        "queue": {"name": &*k.queue, "vhost": &*c.vhost},
        "channel_details": {
            "name": format!("{conn} ({})", ch.number),
            "number": ch.number,
            "connection_name": conn,
            "node": m.node,
            "peer_host": c.peer.ip().to_string(),
            "peer_port": c.peer.port(),
            "user": c.user,
        },
        "ack_required": k.ack_required,
        "exclusive": k.exclusive,
        "prefetch_count": k.prefetch_count,
        "arguments": table_json(&k.arguments),
        "active": active,
        "activity_status": status,
    })
}

/// The consumers of the connections to `vhost` (every vhost: None).
fn consumers_in(m: &Management, vhost: Option<&str>) -> Vec<Value> {
    let mut out = Vec::new();
    for c in m.registry.connections() {
        if vhost.is_some_and(|v| *c.vhost != *v) {
            continue;
        }
        for ch in c.channels() {
            for k in ch.consumer_list() {
                out.push(consumer_json(m, &c, &ch, &k));
            }
        }
    }
    out
}

pub async fn consumers(State(m): M, Query(q): Params) -> Api {
    ok(respond(consumers_in(&m, None), &q)?)
}

pub async fn consumers_of(State(m): M, Path(vhost): Path<String>, Query(q): Params) -> Api {
    let v = vhost_of(&m, &vhost)?;
    ok(respond(consumers_in(&m, Some(&v.name)), &q)?)
}
