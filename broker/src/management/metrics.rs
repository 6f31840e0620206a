//! `/metrics` and `/metrics/per-object` in Prometheus' text format, with RabbitMQ's metric
//! names, types and help texts (`rabbitmq_prometheus`), so RabbitMQ's Grafana dashboards and
//! alert rules read Warren unchanged. On `/metrics` queue metrics are one sum over all
//! queues, as RabbitMQ aggregates them; `/metrics/per-object` has one sample per queue.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::Management;

/// The Prometheus server's routes (no authentication, as RabbitMQ's).
pub fn router(m: Arc<Management>) -> Router {
    Router::new()
        .route("/metrics", get(aggregated))
        .route("/metrics/per-object", get(per_object))
        .route("/metrics/detailed", get(detailed))
        .with_state(m)
}

async fn aggregated(State(m): State<Arc<Management>>) -> impl IntoResponse {
    text(render(&m, false))
}

async fn per_object(State(m): State<Arc<Management>>) -> impl IntoResponse {
    text(render(&m, true))
}

/// `/metrics/detailed?family=...&vhost=...`: only the families asked for, per object, named
/// `rabbitmq_detailed_*`, queues only of the vhosts asked for (all if none), as RabbitMQ's.
/// Families Warren has: connection_churn_metrics, channel_churn_metrics,
/// queue_churn_metrics, queue_coarse_metrics, queue_consumer_count; others are left out, as
/// RabbitMQ leaves out families it does not know.
async fn detailed(
    State(m): State<Arc<Management>>,
    axum::extract::Query(q): axum::extract::Query<Vec<(String, String)>>,
) -> impl IntoResponse {
    let families: Vec<&str> = q
        .iter()
        .filter(|(k, _)| k == "family")
        .map(|(_, v)| v.as_str())
        .collect();
    let vhosts: Vec<&str> = q
        .iter()
        .filter(|(k, _)| k == "vhost")
        .map(|(_, v)| v.as_str())
        .collect();
    text(render_detailed(&m, &families, &vhosts))
}

/// The detailed exposition (see [`detailed`]).
pub fn render_detailed(m: &Management, families: &[&str], vhosts: &[&str]) -> String {
    let mut out = String::with_capacity(4096);
    let one = |v: u64| vec![(String::new(), v)];
    let has = |f: &str| families.contains(&f);
    // RabbitMQ 3.10's connection_churn_metrics holds the channels' and queues' churn too.
    for (family_name, name, help, v) in churn(m) {
        if has("connection_churn_metrics") || has(family_name) {
            family(
                &mut out,
                &format!("rabbitmq_detailed_{name}"),
                "counter",
                help,
                &one(v),
            );
        }
    }
    let in_vhost = |v: &str| vhosts.is_empty() || vhosts.contains(&v);
    if has("queue_coarse_metrics") || has("queue_consumer_count") || has("queue_metrics") {
        queue_families(&mut out, m, &has, &in_vhost);
    }
    if has("connection_coarse_metrics") || has("connection_metrics") {
        // RabbitMQ 3.10 labels a connection's metrics `channel` (with the connection
        // process's pid); Warren's value is the connection's name in the API.
        let conns: Vec<_> = m
            .registry
            .connections()
            .into_iter()
            .filter(|c| in_vhost(&c.vhost))
            .collect();
        let per_conn = |f: &dyn Fn(&crate::registry::ConnectionInfo) -> u64| -> Vec<(String, u64)> {
            conns
                .iter()
                .map(|c| {
                    let name = super::api::connection_name(c);
                    (format!("{{channel=\"{}\"}}", label(&name)), f(c))
                })
                .collect()
        };
        if has("connection_coarse_metrics") {
            family(
                &mut out,
                "rabbitmq_detailed_connection_incoming_bytes_total",
                "counter",
                "Total number of bytes received on a connection",
                &per_conn(&|c| c.counters.recv_oct.load(Relaxed)),
            );
            family(
                &mut out,
                "rabbitmq_detailed_connection_outgoing_bytes_total",
                "counter",
                "Total number of bytes sent on a connection",
                &per_conn(&|c| c.counters.send_oct.load(Relaxed)),
            );
        }
        if has("connection_metrics") {
            family(
                &mut out,
                "rabbitmq_detailed_connection_channels",
                "gauge",
                "Channels on a connection",
                &per_conn(&|c| c.channels().len() as u64),
            );
        }
    }
    if has("channel_metrics") {
        let mut rows = Vec::new();
        for c in m.registry.connections() {
            if !in_vhost(&c.vhost) {
                continue;
            }
            let conn = super::api::connection_name(&c);
            for ch in c.channels() {
                rows.push((
                    format!("{{channel=\"{} ({})\"}}", label(&conn), ch.number),
                    ch,
                ));
            }
        }
        let per_channel = |f: &dyn Fn(&crate::registry::ChannelInfo) -> u64| -> Vec<(String, u64)> {
            rows.iter().map(|(l, ch)| (l.clone(), f(ch))).collect()
        };
        family(
            &mut out,
            "rabbitmq_detailed_channel_consumers",
            "gauge",
            "Consumers on a channel",
            &per_channel(&|ch| u64::from(ch.consumers.load(Relaxed))),
        );
        family(
            &mut out,
            "rabbitmq_detailed_channel_messages_unacked",
            "gauge",
            "Delivered but not yet acknowledged messages",
            &per_channel(&|ch| ch.unacked.load(Relaxed) as u64),
        );
        family(
            &mut out,
            "rabbitmq_detailed_channel_messages_unconfirmed",
            "gauge",
            "Published but not yet confirmed messages",
            &per_channel(&|ch| u64::from(ch.unconfirmed.load(Relaxed))),
        );
        family(
            &mut out,
            "rabbitmq_detailed_channel_messages_uncommitted",
            "gauge",
            "Messages received in a transaction but not yet committed",
            &per_channel(&|ch| u64::from(ch.uncommitted.load(Relaxed))),
        );
        family(
            &mut out,
            "rabbitmq_detailed_channel_acks_uncommitted",
            "gauge",
            "Message acknowledgements in a transaction not yet committed",
            &per_channel(&|ch| u64::from(ch.acks_uncommitted.load(Relaxed))),
        );
        family(
            &mut out,
            "rabbitmq_detailed_consumer_prefetch",
            "gauge",
            "Limit of unacknowledged messages for each consumer",
            &per_channel(&|ch| u64::from(ch.prefetch_count.load(Relaxed))),
        );
        family(
            &mut out,
            "rabbitmq_detailed_channel_prefetch",
            "gauge",
            "Total limit of unacknowledged messages for all consumers on a channel",
            &per_channel(&|ch| u64::from(ch.global_prefetch_count.load(Relaxed))),
        );
    }
    if has("exchange_names") || has("exchange_bindings") {
        let mut names = Vec::new();
        let mut bindings = Vec::new();
        for v in m.registry.vhosts() {
            if !in_vhost(&v.name) {
                continue;
            }
            let mut count: std::collections::HashMap<Arc<str>, u64> = Default::default();
            for b in v.bindings() {
                *count.entry(b.source).or_default() += 1;
            }
            let mut xs = v.exchanges();
            xs.sort_by(|a, b| a.name.cmp(&b.name));
            // As RabbitMQ: the default exchange is not listed.
            for x in xs.iter().filter(|x| !x.name.is_empty()) {
                let l = format!(
                    "{{vhost=\"{}\",exchange=\"{}\",type=\"{}\"}}",
                    label(&v.name),
                    label(&x.name),
                    x.kind
                );
                bindings.push((l.clone(), count.get(&x.name).copied().unwrap_or(0)));
                names.push((l, 1));
            }
        }
        if has("exchange_names") {
            family(
                &mut out,
                "rabbitmq_cluster_exchange_name",
                "gauge",
                "Enumerates exchanges without any additional info. This value is cluster-wide. A cheaper alternative to `exchange_bindings`",
                &names,
            );
        }
        if has("exchange_bindings") {
            family(
                &mut out,
                "rabbitmq_cluster_exchange_bindings",
                "gauge",
                "Number of bindings for an exchange. This value is cluster-wide.",
                &bindings,
            );
        }
    }
    if has("vhost_status") {
        let rows: Vec<(String, u64)> = m
            .registry
            .vhosts()
            .iter()
            .filter(|v| in_vhost(&v.name))
            .map(|v| (format!("{{vhost=\"{}\"}}", label(&v.name)), 1))
            .collect();
        family(
            &mut out,
            "rabbitmq_cluster_vhost_status",
            "gauge",
            "Whether a given vhost is running",
            &rows,
        );
    }
    for (family_name, name, help, v) in node_gauges(m) {
        if has(family_name) {
            family(
                &mut out,
                &format!("rabbitmq_detailed_{name}"),
                "gauge",
                help,
                &one(v),
            );
        }
    }
    identity(&mut out, m, "detailed");
    out
}

/// `rabbitmq_identity_info` and `rabbitmq_build_info`: every dashboard joins on them.
fn identity(out: &mut String, m: &Management, endpoint: &str) {
    family(
        out,
        "rabbitmq_identity_info",
        "untyped",
        "RabbitMQ node & cluster identity info",
        &[(
            format!(
                "{{rabbitmq_node=\"{n}\",rabbitmq_cluster=\"{n}\",rabbitmq_endpoint=\"{endpoint}\"}}",
                n = label(&m.node)
            ),
            1,
        )],
    );
    let version = env!("CARGO_PKG_VERSION");
    family(
        out,
        "rabbitmq_build_info",
        "untyped",
        "RabbitMQ & Erlang/OTP version info",
        &[(
            format!(
                "{{rabbitmq_version=\"3.10.8\",prometheus_plugin_version=\"{version}\",\
                 prometheus_client_version=\"{version}\",erlang_version=\"none\",\
                 product_name=\"Warren\",product_version=\"{version}\"}}"
            ),
            1,
        )],
    );
}

fn text(body: String) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// One metric family: `# TYPE` then `# HELP`, as RabbitMQ prints them, then its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "# HELP {name} {help}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

use crate::alarms::{disk_free_bytes, resident_bytes};

fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The whole exposition.
pub fn render(m: &Management, per_object: bool) -> String {
    let mut out = String::with_capacity(8192);
    let one = |v: u64| vec![(String::new(), v)];
    identity(
        &mut out,
        m,
        if per_object {
            "per-object"
        } else {
            "aggregated"
        },
    );
    let conns = m.registry.connections();
    let channels: usize = conns.iter().map(|c| c.channels().len()).sum();
    let queues = queue_rows(m, &|_| true);
    let consumers: u64 = queues.iter().map(|q| u64::from(q.1.consumers)).sum();
    family(
        &mut out,
        "rabbitmq_connections",
        "gauge",
        "Connections currently open",
        &one(conns.len() as u64),
    );
    family(
        &mut out,
        "rabbitmq_channels",
        "gauge",
        "Channels currently open",
        &one(channels as u64),
    );
    family(
        &mut out,
        "rabbitmq_consumers",
        "gauge",
        "Consumers currently connected",
        &one(consumers),
    );
    family(
        &mut out,
        "rabbitmq_queues",
        "gauge",
        "Queues available",
        &one(queues.len() as u64),
    );
    for (_, name, help, v) in churn(m) {
        family(
            &mut out,
            &format!("rabbitmq_{name}"),
            "counter",
            help,
            &one(v),
        );
    }
    // `/metrics` sums each queue gauge over every queue, as RabbitMQ's aggregated endpoint.
    for (_, name, help, f) in QUEUE_GAUGES {
        let samples = if per_object {
            queues.iter().map(|(l, c)| (l.clone(), f(c))).collect()
        } else {
            one(queues.iter().map(|(_, c)| f(c)).sum())
        };
        family(
            &mut out,
            &format!("rabbitmq_{name}"),
            "gauge",
            help,
            &samples,
        );
    }
    let t = m.registry.message_totals();
    let amqp = "{protocol=\"amqp091\"}".to_owned();
    let typed = "{protocol=\"amqp091\",queue_type=\"rabbit_classic_queue\"}".to_owned();
    for (name, help, labels, v) in [
        ("rabbitmq_global_messages_received_total", "Total number of messages received from publishers", &amqp, t.publish),
        ("rabbitmq_global_messages_received_confirm_total", "Total number of messages received from publishers expecting confirmations", &amqp, t.received_confirm),
        ("rabbitmq_global_messages_routed_total", "Total number of messages routed to queues or streams", &amqp, t.routed),
        ("rabbitmq_global_messages_unroutable_dropped_total", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", &amqp, t.drop_unroutable),
        ("rabbitmq_global_messages_unroutable_returned_total", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", &amqp, t.return_unroutable),
        ("rabbitmq_global_messages_confirmed_total", "Total number of messages confirmed to publishers", &amqp, t.confirm),
        ("rabbitmq_global_messages_delivered_total", "Total number of messages delivered to consumers", &typed, t.deliver_get()),
        ("rabbitmq_global_messages_delivered_consume_manual_ack_total", "Total number of messages delivered to consumers using basic.consume with manual acknowledgment", &typed, t.deliver),
        ("rabbitmq_global_messages_delivered_consume_auto_ack_total", "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment", &typed, t.deliver_no_ack),
        ("rabbitmq_global_messages_delivered_get_manual_ack_total", "Total number of messages delivered to consumers using basic.get with manual acknowledgment", &typed, t.get),
        ("rabbitmq_global_messages_delivered_get_auto_ack_total", "Total number of messages delivered to consumers using basic.get with automatic acknowledgment", &typed, t.get_no_ack),
        ("rabbitmq_global_messages_get_empty_total", "Total number of times basic.get operations fetched no message", &typed, t.get_empty),
        ("rabbitmq_global_messages_redelivered_total", "Total number of messages redelivered to consumers", &typed, t.redeliver),
        ("rabbitmq_global_messages_acknowledged_total", "Total number of messages acknowledged by consumers", &typed, t.ack),
    ] {
        family(&mut out, name, "counter", help, &[(labels.clone(), v)]);
    }
    use crate::queue::dead_letter::Reason;
    for (reason, help) in [
        (Reason::DeliveryLimit, "Total number of messages dead-lettered due to delivery-limit exceeded"),
        (Reason::Expired, "Total number of messages dead-lettered due to message TTL exceeded"),
        (Reason::Maxlen, "Total number of messages dead-lettered due to overflow drop-head or reject-publish-dlx"),
        (Reason::Rejected, "Total number of messages dead-lettered due to basic.reject or basic.nack"),
    ] {
        let by = &m.registry.counters.dead_lettered[reason.index()];
        let samples: Vec<(String, u64)> = [(1, "at_most_once"), (0, "disabled")]
            .iter()
            .map(|&(i, strategy)| {
                (
                    format!("{{queue_type=\"rabbit_classic_queue\",dead_letter_strategy=\"{strategy}\"}}"),
                    by[i].load(Relaxed),
                )
            })
            .collect();
        family(
            &mut out,
            &format!("rabbitmq_global_messages_dead_lettered_{}_total", reason.as_str()),
            "counter",
            help,
            &samples,
        );
    }
    family(
        &mut out,
        "warren_messages_deduplicated_total",
        "counter",
        "Messages dropped as duplicates by a deduplicating exchange or queue (x-message-deduplication)",
        &one(m.registry.counters.messages_deduplicated.load(Relaxed)),
    );
    if let Some(disk) = &m.disk {
        let (cumulative, sum) = disk.flush_times().read();
        let name = "warren_store_flush_seconds";
        let _ = writeln!(out, "# TYPE {name} histogram");
        let _ = writeln!(
            out,
            "# HELP {name} Time a group commit took: segment files synced, then the store's index flushed"
        );
        let bounds = crate::store::disk::FlushTimes::BOUNDS;
        for (i, n) in cumulative.iter().enumerate() {
            let le = bounds.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(
            out,
            "{name}_count {}",
            cumulative.last().copied().unwrap_or(0)
        );
        family(
            &mut out,
            "warren_store_segment_bytes",
            "gauge",
            "Bytes in message segment files on disk",
            &one(disk.segment_bytes()),
        );
        family(
            &mut out,
            "warren_store_paged_bytes",
            "gauge",
            "Bytes in page files: deep queues' messages paged out of memory",
            &one(disk.pager().bytes()),
        );
        family(
            &mut out,
            "warren_store_page_write_failures_total",
            "counter",
            "Blocks of messages that could not be paged out (they stayed in memory)",
            &one(disk.pager().failed_writes()),
        );
    }
    publish_rate_limits(&mut out, m);
    let alarms = m.alarms.state();
    for (name, help, on) in [
        (
            "rabbitmq_alarms_memory_used_watermark",
            "is set when a node hits the memory watermark",
            alarms.memory,
        ),
        (
            "rabbitmq_alarms_free_disk_space_watermark",
            "is set when a node hits the free disk space watermark",
            alarms.disk,
        ),
    ] {
        family(&mut out, name, "gauge", help, &one(u64::from(on)));
    }
    for (_, name, help, v) in node_gauges(m) {
        family(
            &mut out,
            &format!("rabbitmq_{name}"),
            "gauge",
            help,
            &one(v),
        );
    }
    family(
        &mut out,
        "warren_uptime_seconds",
        "gauge",
        "Seconds since the management servers started",
        &one(m.started.elapsed().as_secs()),
    );
    out
}

/// The publish rate limits in use (Warren's own; RabbitMQ has none): each limit, and how
/// often and how long its connections were held back by it.
fn publish_rate_limits(out: &mut String, m: &Management) {
    let limits = m.access.rate_limits();
    if limits.is_empty() {
        return;
    }
    let labels = |scope: crate::access::rate::Scope, name: &str| {
        format!("scope=\"{}\",name=\"{}\"", scope.as_str(), label(name))
    };
    let mut rates = Vec::new();
    let mut throttles = Vec::new();
    let mut seconds = Vec::new();
    for (scope, name, l) in &limits {
        let at = labels(*scope, name);
        for (limit, bucket) in [
            (crate::access::rate::MAX_PUBLISH_RATE, &l.messages),
            (crate::access::rate::MAX_PUBLISH_BYTES_RATE, &l.bytes),
        ] {
            if let Some(b) = bucket {
                rates.push((format!("{{{at},limit=\"{limit}\"}}"), b.rate()));
            }
        }
        throttles.push((format!("{{{at}}}"), l.throttles.load(Relaxed)));
        seconds.push((at, l.throttled_micros.load(Relaxed)));
    }
    family(
        out,
        "warren_publish_rate_limit",
        "gauge",
        "A publish rate limit: messages or body bytes a second, per vhost or user",
        &rates,
    );
    family(
        out,
        "warren_publish_throttles_total",
        "counter",
        "Times a publishing connection stopped reading to keep to a rate limit",
        &throttles,
    );
    let name = "warren_publish_throttled_seconds_total";
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(
        out,
        "# HELP {name} Time publishing connections spent not reading to keep to a rate limit"
    );
    for (at, micros) in seconds {
        let _ = writeln!(out, "{name}{{{at}}} {}", micros as f64 / 1e6);
    }
}

type Counts = crate::queue::counters::QueueCounts;

/// The queue gauges, in `/metrics` (summed), `/metrics/per-object` and `/metrics/detailed`:
/// (the detailed families that hold it, name after `rabbitmq_` or `rabbitmq_detailed_`, help,
/// reading).
#[allow(clippy::type_complexity)]
const QUEUE_GAUGES: &[(&[&str], &str, &str, fn(&Counts) -> u64)] = &[
    (
        &["queue_coarse_metrics"],
        "queue_messages_ready",
        "Messages ready to be delivered to consumers",
        |c| c.ready,
    ),
    (
        &["queue_coarse_metrics"],
        "queue_messages_unacked",
        "Messages delivered to consumers but not yet acknowledged",
        |c| c.unacked,
    ),
    (
        &["queue_coarse_metrics"],
        "queue_messages",
        "Sum of ready and unacknowledged messages - total queue depth",
        |c| c.ready + c.unacked,
    ),
    (
        &["queue_consumer_count", "queue_metrics"],
        "queue_consumers",
        "Consumers on a queue",
        |c| u64::from(c.consumers),
    ),
    // As the API's consumer_utilisation: with consumers and nothing waiting, every message
    // went straight to one.
    (
        &["queue_metrics"],
        "queue_consumer_capacity",
        "Consumer capacity",
        |c| u64::from(c.consumers > 0 && c.ready == 0),
    ),
    (
        &["queue_metrics"],
        "queue_consumer_utilisation",
        "Same as consumer capacity",
        |c| u64::from(c.consumers > 0 && c.ready == 0),
    ),
    (
        &["queue_metrics"],
        "queue_process_memory_bytes",
        "Memory in bytes used by the queue (Warren: the bodies of its messages)",
        |c| c.ready_bytes + c.unacked_bytes,
    ),
    (
        &["queue_metrics"],
        "queue_messages_bytes",
        "Size in bytes of ready and unacknowledged messages",
        |c| c.ready_bytes + c.unacked_bytes,
    ),
    (
        &["queue_metrics"],
        "queue_messages_ready_bytes",
        "Size in bytes of ready messages",
        |c| c.ready_bytes,
    ),
    (
        &["queue_metrics"],
        "queue_messages_unacked_bytes",
        "Size in bytes of all unacknowledged messages",
        |c| c.unacked_bytes,
    ),
    (
        &["queue_metrics"],
        "queue_messages_persistent",
        "Persistent messages",
        |c| c.persistent,
    ),
    (
        &["queue_metrics"],
        "queue_messages_paged_out",
        "Messages paged out to disk",
        |c| c.paged_out,
    ),
    (
        &["queue_metrics"],
        "queue_messages_paged_out_bytes",
        "Size in bytes of messages paged out to disk",
        |c| c.paged_out_bytes,
    ),
];

/// Every queue of the vhosts `in_vhost` takes, with its labels and counts.
fn queue_rows(m: &Management, in_vhost: &dyn Fn(&str) -> bool) -> Vec<(String, Counts)> {
    let mut rows = Vec::new();
    for v in m.registry.vhosts() {
        if !in_vhost(&v.name) {
            continue;
        }
        for q in v.queues() {
            rows.push((
                format!(
                    "{{vhost=\"{}\",queue=\"{}\"}}",
                    label(&v.name),
                    label(q.name())
                ),
                q.counters().read(),
            ));
        }
    }
    rows
}

/// The queue gauges of the detailed families asked for, one sample per queue.
fn queue_families(
    out: &mut String,
    m: &Management,
    has: &dyn Fn(&str) -> bool,
    in_vhost: &dyn Fn(&str) -> bool,
) {
    let queues = queue_rows(m, in_vhost);
    for (families, name, help, f) in QUEUE_GAUGES {
        if families.iter().any(|f| has(f)) {
            let samples: Vec<_> = queues.iter().map(|(l, c)| (l.clone(), f(c))).collect();
            family(
                out,
                &format!("rabbitmq_detailed_{name}"),
                "gauge",
                help,
                &samples,
            );
        }
    }
}

/// The broker-wide churn counters: (the detailed family that holds it besides
/// connection_churn_metrics, name after `rabbitmq_` or `rabbitmq_detailed_`, help, value).
fn churn(m: &Management) -> [(&'static str, &'static str, &'static str, u64); 7] {
    let churn = &m.registry.churn;
    let counters = &m.registry.counters;
    let (c, ch, q) = (
        "connection_churn_metrics",
        "channel_churn_metrics",
        "queue_churn_metrics",
    );
    [
        (
            c,
            "connections_opened_total",
            "Total number of connections opened",
            churn.connection_created.load(Relaxed),
        ),
        (
            c,
            "connections_closed_total",
            "Total number of connections closed or terminated",
            churn.connection_closed.load(Relaxed),
        ),
        (
            ch,
            "channels_opened_total",
            "Total number of channels opened",
            churn.channel_created.load(Relaxed),
        ),
        (
            ch,
            "channels_closed_total",
            "Total number of channels closed",
            churn.channel_closed.load(Relaxed),
        ),
        (
            q,
            "queues_declared_total",
            "Total number of queues declared",
            counters.queues_declared.load(Relaxed),
        ),
        (
            q,
            "queues_created_total",
            "Total number of queues created",
            counters.queues_created.load(Relaxed),
        ),
        (
            q,
            "queues_deleted_total",
            "Total number of queues deleted",
            counters.queues_deleted.load(Relaxed),
        ),
    ]
}

/// The node's gauges this platform can read: (the detailed family that holds it, name after
/// `rabbitmq_` or `rabbitmq_detailed_`, help, value).
fn node_gauges(m: &Management) -> Vec<(&'static str, &'static str, &'static str, u64)> {
    let (coarse, node) = ("node_coarse_metrics", "node_metrics");
    [
        (
            coarse,
            "process_open_fds",
            "Open file descriptors",
            open_fds(),
        ),
        (
            coarse,
            "process_resident_memory_bytes",
            "Memory used in bytes",
            resident_bytes(),
        ),
        (
            coarse,
            "disk_space_available_bytes",
            "Disk space available in bytes",
            m.disk.as_ref().and_then(|d| disk_free_bytes(d.path())),
        ),
        (
            node,
            "process_max_fds",
            "Open file descriptors limit",
            max_fds(),
        ),
        (
            node,
            "resident_memory_limit_bytes",
            "Memory high watermark in bytes",
            Some(m.alarms.memory_limit()),
        ),
        (
            node,
            "disk_space_available_limit_bytes",
            "Free disk space low watermark in bytes",
            Some(m.alarms.disk_free_limit()),
        ),
    ]
    .into_iter()
    .filter_map(|(f, name, help, v)| Some((f, name, help, v?)))
    .collect()
}
