//! `warren vhost|user|permissions|limits` through the management HTTP API, checked with a
//! real AMQP client logging in as the user they made. With WARREN_TEST_URL and
//! WARREN_TEST_HTTP set (RabbitMQ's AMQP and management URLs) the same test administers
//! RabbitMQ.

mod cli_support;
mod common;

use cli_support::warren;
use common::{channel, connect_url, expect_refused, unique, TestBroker};
use lapin::types::FieldTable;

struct Target {
    amqp: TestBroker,
    http_url: String,
}

async fn target() -> Target {
    let t = common::http::target().await;
    let http_url = t.http.replacen("http://", "http://guest:guest@", 1);
    Target {
        amqp: t.amqp,
        http_url,
    }
}

impl Target {
    async fn run(&self, args: &[&str]) -> cli_support::Run {
        let mut all = args.to_vec();
        all.extend(["--http-url", &self.http_url]);
        warren(&self.amqp.url, &all).await
    }

    fn url(&self, user: &str, password: &str, vhost: &str) -> String {
        let base = self
            .amqp
            .url
            .replace("guest:guest@", &format!("{user}:{password}@"));
        format!("{}/{vhost}", &base[..base.rfind('/').unwrap()])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhosts_users_permissions_and_limits_are_administered_from_the_cli() {
    let t = target().await;
    let vhost = unique("cli-v");
    let user = unique("cli-u");
    t.run(&["vhost", "add", &vhost, "--description", "from the cli"])
        .await
        .ok();
    let r = t.run(&["vhost", "list", "--format", "tsv"]).await.ok();
    assert!(
        r.lines()
            .iter()
            .any(|l| l.starts_with(&format!("{vhost}\tfrom the cli"))),
        "{r}"
    );
    t.run(&["user", "add", &user, "pw1", "--tags", "management"])
        .await
        .ok();
    t.run(&[
        "permissions",
        "set",
        &user,
        "--vhost",
        &vhost,
        "^app-",
        ".*",
        ".*",
    ])
    .await
    .ok();
    let r = t
        .run(&["permissions", "list", "--vhost", &vhost, "--format", "tsv"])
        .await
        .ok();
    assert!(
        r.lines()
            .contains(&format!("{user}\t{vhost}\t^app-\t.*\t.*").as_str()),
        "{r}"
    );

    // The user logs in and gets what the permissions say.
    let conn = connect_url(&t.url(&user, "pw1", &vhost)).await;
    let ch = channel(&conn).await;
    ch.queue_declare("app-1".into(), Default::default(), FieldTable::default())
        .await
        .expect("inside ^app-");
    let (code, _) = expect_refused(
        "outside ^app-",
        ch.queue_declare("other".into(), Default::default(), FieldTable::default()),
    )
    .await;
    assert_eq!(code, 403);
    drop(conn);

    // A new password replaces the old one; the tags stay.
    t.run(&["user", "passwd", &user, "pw2"]).await.ok();
    let r = t.run(&["user", "list", "--format", "tsv"]).await.ok();
    assert!(
        r.lines().contains(&format!("{user}\tmanagement").as_str()),
        "{r}"
    );
    drop(connect_url(&t.url(&user, "pw2", &vhost)).await);
    let refused = lapin::Connection::connect(
        &t.url(&user, "pw1", &vhost),
        lapin::ConnectionProperties::default(),
    )
    .await;
    assert!(refused.is_err(), "the old password still works");
    // New tags; the password stays.
    t.run(&["user", "tags", &user, "monitoring,management"])
        .await
        .ok();
    let r = t.run(&["user", "list", "--format", "json"]).await.ok();
    let users: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let me = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == user.as_str())
        .unwrap();
    assert_eq!(me["tags"], serde_json::json!(["monitoring", "management"]));
    drop(connect_url(&t.url(&user, "pw2", &vhost)).await);

    // Limits.
    t.run(&["limits", "set", "--vhost", &vhost, "max-queues", "7"])
        .await
        .ok();
    t.run(&["limits", "set", "--user", &user, "max-channels", "3"])
        .await
        .ok();
    let r = t.run(&["limits", "list", "--format", "tsv"]).await.ok();
    assert!(
        r.lines()
            .contains(&format!("{vhost}\tmax-queues\t7").as_str()),
        "{r}"
    );
    let r = t
        .run(&["limits", "list", "--users", "--format", "tsv"])
        .await
        .ok();
    assert!(
        r.lines()
            .contains(&format!("{user}\tmax-channels\t3").as_str()),
        "{r}"
    );
    t.run(&["limits", "clear", "--vhost", &vhost, "max-queues"])
        .await
        .ok();
    t.run(&["limits", "set", "--vhost", &vhost, "max-bogus", "1"])
        .await
        .fails(1, "Unrecognised terms");

    // Errors come back as one line with the API's reason.
    t.run(&[
        "permissions",
        "set",
        "nobody-at-all",
        "--vhost",
        &vhost,
        ".*",
        ".*",
        ".*",
    ])
    .await
    .fails(1, "vhost_or_user_not_found");
    t.run(&["permissions", "clear", &user, "--vhost", &vhost])
        .await
        .ok();
    t.run(&["user", "delete", &user]).await.ok();
    t.run(&["vhost", "delete", &vhost]).await.ok();
    t.run(&["vhost", "delete", &vhost])
        .await
        .fails(1, "not found");
}
