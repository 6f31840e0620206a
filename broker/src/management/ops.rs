//! The API's operations that change things: declare and delete queues and exchanges, purge,
//! get and publish messages, bind and unbind, close connections. Each runs over the API's own
//! AMQP connection as the requesting user ([`Session`]), so it is checked and answered exactly
//! as the same operation from an AMQP client; RabbitMQ's management plugin works the same way.

use std::sync::Arc;

use amq_protocol::types::{FieldTable, ShortString};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeUnbindOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::Confirmation;
use serde_json::{json, Map, Value};

use super::api::{exchange_name, find_connection, properties_key, quote, vhost_of};
use super::client::{publish_error, Session};
use super::{ApiError, Management, User};
use crate::protocol::json::{base64, from_base64, json_properties, json_table, properties_json};

type Api = Result<Response, ApiError>;
type M = State<Arc<Management>>;
type Params = Query<std::collections::HashMap<String, String>>;

/// The request's JSON body; an empty body is `{}`. Bad JSON is 400 with the parser's reason.
pub(super) fn body_json(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        // RabbitMQ's reason, whatever the fault.
        _ => Err(ApiError::bad_request("not_json")),
    }
}

/// A boolean field (RabbitMQ also takes "true"/"false" as text, as its UI's forms send).
fn flag(b: &Map<String, Value>, key: &str, default: bool) -> Result<bool, ApiError> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(v)) => Ok(*v),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(v) => Err(ApiError::bad_request(format!(
            "'{key}' must be true or false, not {v}"
        ))),
    }
}

/// The `arguments` field as a table.
fn arguments(b: &Map<String, Value>) -> Result<FieldTable, ApiError> {
    match b.get("arguments") {
        None | Some(Value::Null) => Ok(FieldTable::default()),
        // RabbitMQ writes empty arguments as [] in places; take it back.
        Some(Value::Array(a)) if a.is_empty() => Ok(FieldTable::default()),
        Some(v) => {
            json_table(v).ok_or_else(|| ApiError::bad_request("'arguments' must be a JSON object"))
        }
    }
}

/// A text field (`routing_key`...), empty when absent.
fn text<'a>(b: &'a Map<String, Value>, key: &str) -> Result<&'a str, ApiError> {
    match b.get(key) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(ApiError::bad_request(format!(
            "'{key}' must be a string, not {v}"
        ))),
    }
}

/// A name that fits AMQP's short strings.
fn short(s: &str, what: &str) -> Result<ShortString, ApiError> {
    if s.len() > 255 {
        return Err(ApiError::bad_request(format!(
            "{what} is longer than 255 bytes"
        )));
    }
    Ok(s.into())
}

fn status(code: StatusCode) -> Api {
    Ok(code.into_response())
}

/// 201 for something new, 204 for something that was there, as RabbitMQ answers a PUT.
fn created(existed: bool) -> Api {
    status(if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    })
}

fn query_flag(q: &Params, key: &str) -> bool {
    q.get(key).is_some_and(|v| v == "true")
}

pub async fn put_queue(
    State(m): M,
    Extension(user): Extension<User>,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Api {
    let v = m.registry.vhost(&vhost).ok_or_else(ApiError::no_vhost)?;
    let b = body_json(&body)?;
    let options = QueueDeclareOptions {
        passive: false,
        // RabbitMQ's API defaults: transient, as queue.declare's.
        durable: flag(&b, "durable", false)?,
        exclusive: false,
        auto_delete: flag(&b, "auto_delete", false)?,
        nowait: false,
    };
    let args = arguments(&b)?;
    let qname = short(&name, "the queue name")?;
    let existed = v.lookup_queue(&name).is_some();
    Session::run(m.amqp, &user, &vhost, |ch| async move {
        ch.queue_declare(qname, options, args).await
    })
    .await?;
    created(existed)
}

pub async fn delete_queue(
    State(m): M,
    Extension(user): Extension<User>,
    Path((vhost, name)): Path<(String, String)>,
    q: Params,
) -> Api {
    let v = vhost_of(&m, &vhost)?;
    v.lookup_queue(&name).ok_or_else(ApiError::not_found)?;
    let options = QueueDeleteOptions {
        if_unused: query_flag(&q, "if-unused"),
        if_empty: query_flag(&q, "if-empty"),
        nowait: false,
    };
    let qname = short(&name, "the queue name")?;
    Session::run(m.amqp, &user, &vhost, |ch| async move {
        ch.queue_delete(qname, options).await
    })
    .await?;
    status(StatusCode::NO_CONTENT)
}

pub async fn purge_queue(
    State(m): M,
    Extension(user): Extension<User>,
    Path((vhost, name)): Path<(String, String)>,
) -> Api {
    let v = vhost_of(&m, &vhost)?;
    v.lookup_queue(&name).ok_or_else(ApiError::not_found)?;
    let qname = short(&name, "the queue name")?;
    Session::run(m.amqp, &user, &vhost, |ch| async move {
        ch.queue_purge(qname, QueuePurgeOptions::default()).await
    })
    .await?;
    status(StatusCode::NO_CONTENT)
}

/// What `POST .../get` does with the messages it fetched.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AckMode {
    /// Back into the queue, marked redelivered.
    AckRequeueTrue,
    /// Removed (fetched without acknowledgement).
    AckRequeueFalse,
    /// Rejected back into the queue.
    RejectRequeueTrue,
    /// Rejected without requeue: dead-lettered if the queue says so, dropped otherwise.
    RejectRequeueFalse,
}

/// The body of a message as RabbitMQ's API shows it: `(payload, payload_encoding)`. `auto`
/// gives text when the (possibly truncated) body is UTF-8, base64 otherwise.
fn payload(body: &[u8], base64_only: bool) -> (String, &'static str) {
    if !base64_only {
        if let Ok(s) = std::str::from_utf8(body) {
            return (s.to_owned(), "string");
        }
    }
    (base64(body), "base64")
}

pub async fn get_messages(
    State(m): M,
    Extension(user): Extension<User>,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Api {
    let v = vhost_of(&m, &vhost)?;
    v.lookup_queue(&name).ok_or_else(ApiError::not_found)?;
    let b = body_json(&body)?;
    let count = match b.get("count") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        None => return Err(ApiError::missing("count")),
        _ => None,
    }
    .ok_or_else(|| ApiError::bad_request("count must be a non-negative integer"))?;
    let mode = match b.get("ackmode").and_then(Value::as_str) {
        Some("ack_requeue_true") => AckMode::AckRequeueTrue,
        Some("ack_requeue_false") => AckMode::AckRequeueFalse,
        Some("reject_requeue_true") => AckMode::RejectRequeueTrue,
        Some("reject_requeue_false") => AckMode::RejectRequeueFalse,
        Some(other) => {
            return Err(ApiError::bad_request(format!("Invalid ackmode: {other}")));
        }
        None => return Err(ApiError::missing("ackmode")),
    };
    let base64_only = match b.get("encoding").and_then(Value::as_str) {
        Some("auto") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "Unsupported encoding. Please use auto or base64.",
            ))
        }
        None => return Err(ApiError::missing("encoding")),
    };
    let truncate = match b.get("truncate") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_u64().map(|n| n as usize),
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    let qname = short(&name, "the queue name")?;
    let got = Session::run(m.amqp, &user, &vhost, |ch| async move {
        let mut got = Vec::new();
        for _ in 0..count {
            let options = BasicGetOptions {
                no_ack: mode == AckMode::AckRequeueFalse,
            };
            match ch.basic_get(qname.clone(), options).await? {
                Some(message) => got.push(message),
                None => break,
            }
        }
        if mode != AckMode::AckRequeueFalse && !got.is_empty() {
            let requeue = mode != AckMode::RejectRequeueFalse;
            ch.basic_nack(
                0,
                BasicNackOptions {
                    multiple: true,
                    requeue,
                },
            )
            .await?;
        }
        Ok(got)
    })
    .await?;
    let out: Vec<Value> = got
        .iter()
        .map(|g| {
            let d = &g.delivery;
            let shown = match truncate {
                Some(n) if n < d.data.len() => &d.data[..n],
                _ => &d.data[..],
            };
            let (text, encoding) = payload(shown, base64_only);
            let props = properties_json(&d.properties);
            json!({
                "payload_bytes": d.data.len(),
                "redelivered": d.redelivered,
                "exchange": d.exchange.as_str(),
                "routing_key": d.routing_key.as_str(),
                "message_count": g.message_count,
                // RabbitMQ writes empty properties as an empty list.
                "properties": if props.is_empty() { json!([]) } else { Value::Object(props) },
                "payload": text,
                "payload_encoding": encoding,
            })
        })
        .collect();
    Ok(Json(Value::Array(out)).into_response())
}

pub async fn put_exchange(
    State(m): M,
    Extension(user): Extension<User>,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Api {
    let v = m.registry.vhost(&vhost).ok_or_else(ApiError::no_vhost)?;
    if name == "amq.default" {
        return Err(ApiError::access_refused());
    }
    let b = body_json(&body)?;
    // RabbitMQ's API defaults: direct, transient.
    let kind = match b.get("type") {
        Some(Value::String(t)) => t.clone(),
        None | Some(Value::Null) => "direct".to_owned(),
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "'type' must be a string, not {v}"
            )))
        }
    };
    let options = ExchangeDeclareOptions {
        passive: false,
        durable: flag(&b, "durable", false)?,
        auto_delete: flag(&b, "auto_delete", false)?,
        internal: flag(&b, "internal", false)?,
        nowait: false,
    };
    let args = arguments(&b)?;
    let xname = short(&name, "the exchange name")?;
    let existed = v.exchanges().iter().any(|x| *x.name == *name);
    Session::run(m.amqp, &user, &vhost, |ch| async move {
        ch.exchange_declare(xname, lapin::ExchangeKind::Custom(kind), options, args)
            .await
    })
    .await?;
    created(existed)
}

pub async fn delete_exchange(
    State(m): M,
    Extension(user): Extension<User>,
    Path((vhost, name)): Path<(String, String)>,
    q: Params,
) -> Api {
    let v = vhost_of(&m, &vhost)?;
    if name == "amq.default" {
        return Err(ApiError::access_refused());
    }
    if !v.exchanges().iter().any(|x| *x.name == *name) {
        return Err(ApiError::not_found());
    }
    let options = ExchangeDeleteOptions {
        if_unused: query_flag(&q, "if-unused"),
        nowait: false,
    };
    let xname = short(&name, "the exchange name")?;
    Session::run(m.amqp, &user, &vhost, |ch| async move {
        ch.exchange_delete(xname, options).await
    })
    .await?;
    status(StatusCode::NO_CONTENT)
}

/// `POST /api/exchanges/{vhost}/{name}/publish`: publishes one message, mandatory and
/// confirmed, and answers whether it was routed, as RabbitMQ's API does.
pub async fn publish(
    State(m): M,
    Extension(user): Extension<User>,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Api {
    vhost_of(&m, &vhost)?;
    let name = exchange_name(&name).to_owned();
    let b = body_json(&body)?;
    for key in ["properties", "routing_key", "payload", "payload_encoding"] {
        if !b.contains_key(key) {
            return Err(ApiError::missing(key));
        }
    }
    let routing_key = short(text(&b, "routing_key")?, "the routing key")?;
    let properties = json_properties(&b["properties"]).map_err(ApiError::bad_request)?;
    let Some(Value::String(payload)) = b.get("payload") else {
        return Err(ApiError::bad_request("payload must be a string"));
    };
    let data = match b.get("payload_encoding").and_then(Value::as_str) {
        Some("string") => payload.clone().into_bytes(),
        Some("base64") => from_base64(payload)
            .ok_or_else(|| ApiError::bad_request("payload is not valid base64"))?,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "payload_encoding {other} is not string or base64"
            )))
        }
        None => return Err(ApiError::bad_request("payload_encoding must be a string")),
    };
    let xname = short(&name, "the exchange name")?;
    let routed = Session::run_as(
        m.amqp,
        &user,
        &vhost,
        |ch| async move {
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            let confirm = ch
                .basic_publish(
                    xname,
                    routing_key,
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &data,
                    properties,
                )
                .await?
                .await?;
            Ok(matches!(confirm, Confirmation::Ack(None)))
        },
        publish_error,
    )
    .await?;
    Ok(Json(json!({ "routed": routed })).into_response())
}

/// `d` in a binding path: `q` for a queue, `e` for an exchange.
fn to_exchange(kind: &str) -> Result<bool, ApiError> {
    match kind {
        "q" => Ok(false),
        "e" => Ok(true),
        _ => Err(ApiError::not_found()),
    }
}

/// The bindings from `source` to `destination`, as the listing shows them.
fn bindings_between(
    m: &Management,
    vhost: &str,
    source: &str,
    dest_exchange: bool,
    destination: &str,
) -> Result<Vec<crate::vhost::BindingView>, ApiError> {
    let v = vhost_of(m, vhost)?;
    let source = exchange_name(source);
    if !v.exchanges().iter().any(|x| *x.name == *source) {
        return Err(ApiError::not_found());
    }
    let exists = if dest_exchange {
        v.exchanges()
            .iter()
            .any(|x| *x.name == *exchange_name(destination))
    } else {
        v.lookup_queue(destination).is_some()
    };
    if !exists {
        return Err(ApiError::not_found());
    }
    Ok(v.bindings()
        .into_iter()
        .filter(|b| {
            *b.source == *source && b.to_exchange == dest_exchange && *b.destination == *destination
        })
        .collect())
}

/// Whether `props` (from a path, decoded once) names binding `b`: clients send its
/// properties key escaped once or twice, and RabbitMQ takes both.
fn same_props(b: &crate::vhost::BindingView, props: &str) -> bool {
    let key = properties_key(&b.routing_key, &b.arguments);
    key == props || key == quote(props)
}

pub async fn list_binding(
    State(m): M,
    Path((vhost, source, kind, destination)): Path<(String, String, String, String)>,
) -> Api {
    let bs = bindings_between(&m, &vhost, &source, to_exchange(&kind)?, &destination)?;
    let all = bs
        .iter()
        .map(|b| super::api::binding_json(&vhost, b))
        .collect();
    Ok(Json(Value::Array(all)).into_response())
}

pub async fn get_binding(
    State(m): M,
    Path((vhost, source, kind, destination, props)): Path<(String, String, String, String, String)>,
) -> Api {
    let bs = bindings_between(&m, &vhost, &source, to_exchange(&kind)?, &destination)?;
    let b = bs
        .iter()
        .find(|b| same_props(b, &props))
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(super::api::binding_json(&vhost, b)).into_response())
}

pub async fn post_binding(
    State(m): M,
    Extension(user): Extension<User>,
    Path((vhost, source, kind, destination)): Path<(String, String, String, String)>,
    body: Bytes,
) -> Api {
    let dest_exchange = to_exchange(&kind)?;
    bindings_between(&m, &vhost, &source, dest_exchange, &destination)?;
    let b = body_json(&body)?;
    let key = text(&b, "routing_key")?.to_owned();
    let args = arguments(&b)?;
    // RabbitMQ answers with the new binding's address relative to this one, its
    // properties key escaped once more.
    let location = format!(
        "{}/{}",
        quote(&destination),
        quote(&properties_key(&key, &args))
    );
    let (src, dst) = (
        short(exchange_name(&source), "the source")?,
        short(&destination, "the destination")?,
    );
    let rk = short(&key, "the routing key")?;
    Session::run(m.amqp, &user, &vhost, |ch| async move {
        if dest_exchange {
            ch.exchange_bind(dst, src, rk, ExchangeBindOptions::default(), args)
                .await
        } else {
            ch.queue_bind(dst, src, rk, QueueBindOptions::default(), args)
                .await
        }
    })
    .await?;
    let mut r = StatusCode::CREATED.into_response();
    if let Ok(v) = location.parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

pub async fn delete_binding(
    State(m): M,
    Extension(user): Extension<User>,
    Path((vhost, source, kind, destination, props)): Path<(String, String, String, String, String)>,
) -> Api {
    let dest_exchange = to_exchange(&kind)?;
    let bs = bindings_between(&m, &vhost, &source, dest_exchange, &destination)?;
    let b = bs
        .into_iter()
        .find(|b| same_props(b, &props))
        .ok_or_else(ApiError::not_found)?;
    let (src, dst) = (
        short(exchange_name(&source), "the source")?,
        short(&destination, "the destination")?,
    );
    let rk = short(&b.routing_key, "the routing key")?;
    let args = b.arguments.clone();
    Session::run(m.amqp, &user, &vhost, |ch| async move {
        if dest_exchange {
            ch.exchange_unbind(dst, src, rk, ExchangeUnbindOptions::default(), args)
                .await
        } else {
            ch.queue_unbind(dst, src, rk, args).await
        }
    })
    .await?;
    status(StatusCode::NO_CONTENT)
}

/// `DELETE /api/connections/{name}`: the connection is closed with 320 CONNECTION_FORCED and
/// the `X-Reason` header's text, or RabbitMQ's default.
pub async fn close_connection(State(m): M, Path(name): Path<String>, headers: HeaderMap) -> Api {
    let c = find_connection(&m, &name)?;
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Closed via management plugin");
    tracing::info!(connection = %name, reason, "connection closed through the management API");
    c.force_close(reason);
    status(StatusCode::NO_CONTENT)
}

/// `GET /api/aliveness-test/{vhost}`: declares the queue `aliveness-test`, publishes a
/// message to it and gets it back, as RabbitMQ does.
pub async fn aliveness_test(
    State(m): M,
    Extension(user): Extension<User>,
    Path(vhost): Path<String>,
) -> Api {
    vhost_of(&m, &vhost)?;
    const QUEUE: &str = "aliveness-test";
    const BODY: &[u8] = b"test_message";
    let checked = Session::run(m.amqp, &user, &vhost, |ch| async move {
        ch.queue_declare(
            QUEUE.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        ch.basic_publish(
            "".into(),
            QUEUE.into(),
            BasicPublishOptions::default(),
            BODY,
            Default::default(),
        )
        .await?
        .await?;
        let got = ch
            .basic_get(QUEUE.into(), BasicGetOptions { no_ack: true })
            .await?;
        Ok(got.is_some_and(|g| g.delivery.data == BODY))
    })
    .await;
    let (code, body) = match checked {
        Ok(true) => (StatusCode::OK, json!({"status": "ok"})),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "failed", "reason": "the test message did not come back"}),
        ),
        Err(e) if e.status() == StatusCode::UNAUTHORIZED || e.status() == StatusCode::NOT_FOUND => {
            return Err(e)
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "failed", "reason": e.reason()}),
        ),
    };
    Ok((code, Json(body)).into_response())
}

/// `PUT /api/stream/super-streams/{vhost}/{name}` (RabbitMQ's stream management plugin):
/// `{"partitions": N, "arguments": {...}}` declares a partitioned stream, as
/// `warren declare stream NAME --partitions N` does. The arguments are the partitions'
/// retention (`max-age`, `max-length-bytes`, `stream-max-segment-size-bytes`, with or without
/// `x-`) and the exchange's `hash-header` or `hash-property`. RabbitMQ's `binding-keys` form is
/// refused: Warren's partitions are picked by a consistent hash, not by binding keys.
pub async fn put_super_stream(
    State(m): M,
    Extension(user): Extension<User>,
    Path((vhost, name)): Path<(String, String)>,
    body: Bytes,
) -> Api {
    use crate::stream::partitions::{self, MAX_PARTITIONS};
    let v = m.registry.vhost(&vhost).ok_or_else(ApiError::no_vhost)?;
    let b = body_json(&body)?;
    if b.contains_key("binding-keys") {
        return Err(ApiError::bad_request(
            "binding-keys are not supported: Warren routes to a partition by a consistent hash \
             of the key; give partitions",
        ));
    }
    let partitions = match b.get("partitions") {
        None | Some(Value::Null) => {
            return Err(ApiError::bad_request(
                "Must specify partitions or binding keys",
            ))
        }
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        Some(_) => None,
    }
    .ok_or_else(|| ApiError::bad_request("The partitions must be a number"))?;
    if partitions < 1 {
        return Err(ApiError::bad_request(
            "The partition number must be greater than 0",
        ));
    }
    if partitions > i64::from(MAX_PARTITIONS) {
        return Err(ApiError::bad_request(format!(
            "The partition number must not exceed {MAX_PARTITIONS}"
        )));
    }
    let mut stream_args = Map::new();
    let mut exchange_args = Map::new();
    match b.get("arguments") {
        None | Some(Value::Null) => {}
        Some(Value::Object(a)) => {
            for (k, val) in a {
                let key = k.strip_prefix("x-").unwrap_or(k);
                match key {
                    "max-age" | "max-length-bytes" | "stream-max-segment-size-bytes" => {
                        stream_args.insert(format!("x-{key}"), val.clone());
                    }
                    "hash-header" | "hash-property" => {
                        exchange_args.insert(key.to_owned(), val.clone());
                    }
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "unknown argument '{k}' (known: max-age, max-length-bytes, \
                             stream-max-segment-size-bytes, hash-header, hash-property)"
                        )))
                    }
                }
            }
        }
        Some(_) => return Err(ApiError::bad_request("'arguments' must be a JSON object")),
    }
    let table = |m: Map<String, Value>| {
        json_table(&Value::Object(m))
            .ok_or_else(|| ApiError::bad_request("'arguments' must be a JSON object"))
    };
    let (stream_args, exchange_args) = (table(stream_args)?, table(exchange_args)?);
    short(&name, "the stream name")?;
    short(
        &partitions::partition_name(&name, partitions as u32 - 1),
        "the partition name",
    )?;
    let existed = v.exchanges().iter().any(|x| *x.name == *name);
    Session::run(m.amqp, &user, &vhost, |ch| async move {
        partitions::declare(&ch, &name, partitions as u32, &stream_args, exchange_args).await
    })
    .await?;
    created(existed)
}
