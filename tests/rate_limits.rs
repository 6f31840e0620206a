//! Publish rate limits (Warren's own; RabbitMQ has none): `max-publish-rate` (messages a
//! second) and `max-publish-bytes-rate` (body bytes a second) on a vhost or a user, set with
//! the vhost-limits and user-limits API, `warren limits set`, or the config file. A publisher
//! over its limit is paused (its socket is not read), never refused: every message arrives
//! and is confirmed, and the metrics count the pauses. The checks read the broker's own
//! account of the time it held publishers back, never the test's clock.
mod cli_support;
mod common;

use common::http::*;
use common::*;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::BasicProperties;

/// The `warren_publish_*` samples of the Prometheus endpoint, as (name{labels}, value).
async fn rate_metrics(prometheus: &str) -> Vec<(String, f64)> {
    let r = curl(&[&format!("{prometheus}/metrics")]).await;
    assert_eq!(r.status, 200);
    r.body
        .lines()
        .filter(|l| l.starts_with("warren_publish_"))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn sample(metrics: &[(String, f64)], key: &str) -> Option<f64> {
    metrics.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// Publishes `n` messages of `size` bytes with confirms, all at once, and waits for every
/// confirm; the queue then holds them all.
async fn publish_all(url: &str, queue: &str, n: usize, size: usize) {
    let conn = connect_url(url).await;
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    declare_queue(&ch, queue).await;
    let body = vec![b'r'; size];
    let mut confirms = Vec::with_capacity(n);
    for _ in 0..n {
        confirms.push(
            ch.basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        // Far longer than the limits make it take; a pause must never become a refusal.
        let confirm = tokio::time::timeout(std::time::Duration::from_secs(60), c)
            .await
            .expect("a confirm within a minute")
            .unwrap();
        assert!(confirm.is_ack(), "{confirm:?}");
    }
    assert_eq!(
        message_count(&ch, queue).await,
        n as u32,
        "every message arrived"
    );
    conn.close(200, "done".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhost_byte_rate_pauses_publishers_and_loses_nothing() {
    let t = target().await;
    let prometheus = t.prometheus.clone().expect("the Prometheus endpoint");
    let r = t
        .send(
            "PUT",
            "/api/vhost-limits/%2F/max-publish-bytes-rate",
            r#"{"value": 1000000}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let limits = t.get_json("/api/vhost-limits/%2F").await;
    assert_eq!(
        limits[0]["value"]["max-publish-bytes-rate"], 1_000_000,
        "{limits}"
    );

    // 3 MB at 1 MB/s with a one-second burst: about two seconds of pauses.
    publish_all(&t.amqp.url, &unique("rate-bytes"), 30, 100_000).await;
    let m = rate_metrics(&prometheus).await;
    let at = r#"scope="vhost",name="/""#;
    assert_eq!(
        sample(
            &m,
            &format!(r#"warren_publish_rate_limit{{{at},limit="max-publish-bytes-rate"}}"#)
        ),
        Some(1_000_000.0),
        "{m:?}"
    );
    assert!(
        sample(&m, &format!("warren_publish_throttles_total{{{at}}}")).unwrap_or(0.0) >= 1.0,
        "{m:?}"
    );
    let held = sample(
        &m,
        &format!("warren_publish_throttled_seconds_total{{{at}}}"),
    )
    .unwrap_or(0.0);
    assert!(held >= 1.5, "held back {held} s for 3 MB at 1 MB/s: {m:?}");

    // Cleared, the limit is gone for open and new connections alike.
    let r = t
        .send(
            "DELETE",
            "/api/vhost-limits/%2F/max-publish-bytes-rate",
            "",
            &[],
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    publish_all(&t.amqp.url, &unique("rate-cleared"), 30, 100_000).await;
    let m = rate_metrics(&prometheus).await;
    assert_eq!(
        sample(&m, &format!("warren_publish_throttles_total{{{at}}}")),
        None,
        "{m:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_message_rate_from_the_cli_pauses_that_user_only() {
    let t = target().await;
    let prometheus = t.prometheus.clone().expect("the Prometheus endpoint");
    let user = unique("rate-user");
    let http_url = t.http.replacen("http://", "http://guest:guest@", 1);
    let cli = |args: Vec<String>| {
        let url = t.amqp.url.clone();
        let http_url = http_url.clone();
        async move {
            let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
            all.extend(["--http-url", &http_url]);
            cli_support::warren(&url, &all).await.ok()
        }
    };
    cli(vec!["user".into(), "add".into(), user.clone(), "pw".into()]).await;
    cli([
        "permissions",
        "set",
        "--vhost",
        "/",
        &user,
        ".*",
        ".*",
        ".*",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect())
    .await;
    cli(
        ["limits", "set", "--user", &user, "max-publish-rate", "200"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    )
    .await;
    let url = t.amqp.url.replace("guest:guest@", &format!("{user}:pw@"));
    // 600 messages at 200 a second with a 200-message burst: about two seconds of pauses.
    publish_all(&url, &unique("rate-msgs"), 600, 10).await;
    // guest has no limit: its publishes are never held back.
    publish_all(&t.amqp.url, &unique("rate-free"), 600, 10).await;
    let m = rate_metrics(&prometheus).await;
    let at = format!(r#"scope="user",name="{user}""#);
    assert_eq!(
        sample(
            &m,
            &format!(r#"warren_publish_rate_limit{{{at},limit="max-publish-rate"}}"#)
        ),
        Some(200.0),
        "{m:?}"
    );
    let held = sample(
        &m,
        &format!("warren_publish_throttled_seconds_total{{{at}}}"),
    )
    .unwrap_or(0.0);
    assert!(
        held >= 1.5,
        "held back {held} s for 600 messages at 200/s: {m:?}"
    );
    assert!(
        !m.iter().any(|(k, _)| k.contains(r#"name="guest""#)),
        "guest has no limit: {m:?}"
    );

    // Cleared, the limit's series go at once; set again and the user deleted, they go too.
    let ours = |m: &[(String, f64)]| m.iter().any(|(k, _)| k.contains(&at));
    let limit = |args: &[&str]| cli(args.iter().map(|s| s.to_string()).collect());
    limit(&["limits", "clear", "--user", &user, "max-publish-rate"]).await;
    let m = rate_metrics(&prometheus).await;
    assert!(!ours(&m), "a cleared limit is still reported: {m:?}");
    limit(&["limits", "set", "--user", &user, "max-publish-rate", "200"]).await;
    let m = rate_metrics(&prometheus).await;
    assert!(ours(&m), "a limit set again is not reported: {m:?}");
    limit(&["user", "delete", &user]).await;
    let m = rate_metrics(&prometheus).await;
    assert!(!ours(&m), "a deleted user's limit is still reported: {m:?}");

    // The same for a vhost that is deleted.
    let vhost = unique("rate-vhost");
    let at = format!(r#"scope="vhost",name="{vhost}""#);
    let ours = |m: &[(String, f64)]| m.iter().any(|(k, _)| k.contains(&at));
    let r = t
        .send("PUT", &format!("/api/vhosts/{vhost}"), "", &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let path = format!("/api/vhost-limits/{vhost}/max-publish-rate");
    let r = t.send("PUT", &path, r#"{"value": 100}"#, &[]).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let m = rate_metrics(&prometheus).await;
    assert!(ours(&m), "a vhost's limit is not reported: {m:?}");
    let r = t
        .send("DELETE", &format!("/api/vhosts/{vhost}"), "", &[])
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let m = rate_metrics(&prometheus).await;
    assert!(
        !ours(&m),
        "a deleted vhost's limit is still reported: {m:?}"
    );
}

fn limits(
    vhosts: &[(&str, &str, i64)],
    users: &[(&str, &str, i64)],
) -> warren::config::LimitsConfig {
    let mut l = warren::config::LimitsConfig::default();
    for (v, k, n) in vhosts {
        l.vhosts
            .entry(v.to_string())
            .or_default()
            .insert(k.to_string(), *n);
    }
    for (u, k, n) in users {
        l.users
            .entry(u.to_string())
            .or_default()
            .insert(k.to_string(), *n);
    }
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_in_the_config_file_apply_at_start() {
    let mut config = warren::Config::ephemeral();
    config.prometheus_bind = Some("127.0.0.1:0".parse().unwrap());
    // As `[limits.vhosts."/"]` and `[limits.users.guest]` in the TOML file.
    config.limits = limits(
        &[("/", "max-publish-rate", 300)],
        &[("guest", "max-publish-bytes-rate", 50_000_000)],
    );
    let broker = warren::Broker::start(config).await.unwrap();
    let prometheus = format!("http://{}", broker.prometheus_addr().unwrap());
    publish_all(&broker.url(), &unique("rate-config"), 900, 10).await;
    let m = rate_metrics(&prometheus).await;
    let held = sample(
        &m,
        r#"warren_publish_throttled_seconds_total{scope="vhost",name="/"}"#,
    )
    .unwrap_or(0.0);
    assert!(
        held >= 1.5,
        "held back {held} s for 900 messages at 300/s: {m:?}"
    );
    assert_eq!(
        sample(
            &m,
            r#"warren_publish_rate_limit{scope="user",name="guest",limit="max-publish-bytes-rate"}"#
        ),
        Some(50_000_000.0),
        "{m:?}"
    );

    // An unknown limit name in the file stops the broker from starting.
    let mut bad = warren::Config::ephemeral();
    bad.limits = limits(&[("/", "max-publish-speed", 1)], &[]);
    let err = warren::Broker::start(bad).await.err().expect("refused");
    assert!(err.to_string().contains("max-publish-speed"), "{err}");
}
