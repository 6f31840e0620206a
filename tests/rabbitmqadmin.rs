//! `rabbitmqadmin` 2.x (RabbitMQ's Rust CLI for its HTTP API, from crates.io; tests/run-all.sh
//! installs it) drives Warren's management API: show overview, list, declare, delete, purge,
//! definitions export and import, with the output read back from its markdown tables. With
//! WARREN_TEST_URL and WARREN_TEST_HTTP set, the same test runs against RabbitMQ.

mod common;

use std::collections::HashMap;

use common::http::target;
use common::*;

/// rabbitmqadmin against the API at `http` (http://host:port).
struct Admin {
    host: String,
    port: String,
}

/// What one run printed, and its rows when it printed a table.
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(self, what: &str) -> Out {
        assert_eq!(
            self.code,
            Some(0),
            "rabbitmqadmin {what}: {} {}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// The rows of a markdown table, by column name.
    fn rows(&self) -> Vec<HashMap<String, String>> {
        let mut lines = self.stdout.lines().filter(|l| l.starts_with('|'));
        let cells = |l: &str| -> Vec<String> {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        };
        let Some(header) = lines.next().map(cells) else {
            return Vec::new();
        };
        lines
            .filter(|l| !l.starts_with("|-"))
            .map(|l| header.iter().cloned().zip(cells(l)).collect())
            .collect()
    }
}

impl Admin {
    fn new(http: &str) -> Admin {
        let hostport = http.trim_start_matches("http://").trim_end_matches('/');
        let (host, port) = hostport.rsplit_once(':').expect("host:port");
        Admin {
            host: host.to_owned(),
            port: port.to_owned(),
        }
    }

    async fn run(&self, args: &[&str]) -> Out {
        let out = within(
            "rabbitmqadmin",
            tokio::process::Command::new("rabbitmqadmin")
                .args(["--host", &self.host, "--port", &self.port])
                .args(["--username", "guest", "--password", "guest"])
                .args(["--table-style", "markdown"])
                .args(args)
                // No user's config file or environment decides anything here.
                .env("HOME", std::env::temp_dir())
                .env_remove("RABBITMQADMIN_CONFIG_FILE_PATH")
                .env_remove("RABBITMQADMIN_TARGET_VHOST")
                .output(),
        )
        .await
        .expect(
            "running rabbitmqadmin (install it: cargo install rabbitmqadmin --version 2.35.0 \
             --locked; tests/run-all.sh does)",
        );
        Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn rows(&self, args: &[&str]) -> Vec<HashMap<String, String>> {
        self.run(args).await.ok(&args.join(" ")).rows()
    }
}

fn find<'a>(
    rows: &'a [HashMap<String, String>],
    column: &str,
    value: &str,
) -> Option<&'a HashMap<String, String>> {
    rows.iter()
        .find(|r| r.get(column).map(String::as_str) == Some(value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmqadmin_manages_warren() {
    let t = target().await;
    let a = Admin::new(&t.http);

    let overview = a
        .run(&["show", "overview"])
        .await
        .ok("show overview")
        .stdout;
    assert!(overview.contains("RabbitMQ version"), "{overview}");
    assert!(overview.contains("3.10"), "{overview}");

    let q = unique("ra-q");
    let x = unique("ra-x");
    a.run(&["declare", "queue", "--name", &q, "--durable", "true"])
        .await
        .ok("declare queue");
    a.run(&["declare", "exchange", "--name", &x, "--type", "topic"])
        .await
        .ok("declare exchange");
    a.run(&[
        "declare",
        "binding",
        "--source",
        &x,
        "--destination-type",
        "queue",
        "--destination",
        &q,
        "--routing-key",
        "order.*",
    ])
    .await
    .ok("declare binding");

    let queues = a.rows(&["list", "queues"]).await;
    let row = find(&queues, "name", &q).unwrap_or_else(|| panic!("{q} in {queues:?}"));
    assert_eq!(row["vhost"], "/");
    assert_eq!(row["durable"], "true");
    let exchanges = a.rows(&["list", "exchanges"]).await;
    let row = find(&exchanges, "name", &x).unwrap_or_else(|| panic!("{x} in {exchanges:?}"));
    assert_eq!(row["exchange_type"], "topic");
    let bindings = a.rows(&["list", "bindings"]).await;
    let row = find(&bindings, "source", &x).unwrap_or_else(|| panic!("{x} in {bindings:?}"));
    assert_eq!(row["destination"], q);
    assert_eq!(row["routing_key"], "order.*");

    // Messages published through the binding show in the listing, and purge removes them.
    let conn = connect(&t.amqp).await;
    let ch = confirm_channel(&conn).await;
    for _ in 0..3 {
        publish_confirmed(&ch, &x, "order.new", b"o").await;
    }
    let mut count = String::new();
    for _ in 0..120 {
        let queues = a.rows(&["list", "queues"]).await;
        count = find(&queues, "name", &q).unwrap()["message_count"].clone();
        if count == "3" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(count, "3", "message_count as rabbitmqadmin reads it");
    let connections = a.rows(&["list", "connections"]).await;
    assert!(
        connections
            .iter()
            .any(|c| c.get("username").map(String::as_str) == Some("guest")),
        "{connections:?}"
    );
    a.run(&["purge", "queue", "--name", &q])
        .await
        .ok("purge queue");
    assert_eq!(message_count(&ch, &q).await, 0);

    // Definitions: export to a file, delete, import: back.
    let dir = std::env::temp_dir().join(unique("ra-defs"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("defs.json");
    let file = file.to_str().unwrap();
    a.run(&["definitions", "export", "--file", file])
        .await
        .ok("definitions export");
    let defs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    assert!(defs["queues"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["name"] == q.as_str()));
    a.run(&["delete", "queue", "--name", &q])
        .await
        .ok("delete queue");
    assert!(find(&a.rows(&["list", "queues"]).await, "name", &q).is_none());
    a.run(&["definitions", "import", "--file", file])
        .await
        .ok("definitions import");
    assert!(find(&a.rows(&["list", "queues"]).await, "name", &q).is_some());
    let bindings = a.rows(&["list", "bindings"]).await;
    assert!(
        find(&bindings, "source", &x).is_some(),
        "the binding is back"
    );

    // A missing queue is an error, as against RabbitMQ.
    let out = a
        .run(&["delete", "queue", "--name", &unique("ra-none")])
        .await;
    assert_ne!(out.code, Some(0));
    a.run(&["delete", "exchange", "--name", &x])
        .await
        .ok("delete exchange");
    a.run(&["delete", "queue", "--name", &q])
        .await
        .ok("delete queue");
    std::fs::remove_dir_all(&dir).ok();
}
