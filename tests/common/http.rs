//! The management API from a test: a broker with its HTTP API on, and `curl` to talk to it.
//! With WARREN_TEST_URL and WARREN_TEST_HTTP set, the same tests run against another broker
//! (RabbitMQ with its management plugin), so each checked field means what it means there.

use std::time::Duration;

use serde_json::Value;

use super::*;

/// A broker with its API.
pub struct Target {
    pub amqp: TestBroker,
    pub http: String,
    pub prometheus: Option<String>,
}

pub async fn target() -> Target {
    if let (Ok(_), Ok(http)) = (
        std::env::var("WARREN_TEST_URL"),
        std::env::var("WARREN_TEST_HTTP"),
    ) {
        return Target {
            amqp: start().await,
            http,
            prometheus: std::env::var("WARREN_TEST_PROMETHEUS").ok(),
        };
    }
    let mut config = warren::Config::ephemeral();
    config.prometheus_bind = Some("127.0.0.1:0".parse().unwrap());
    target_with(config).await
}

/// An embedded Warren with these settings and its HTTP API on 127.0.0.1:0.
pub async fn target_with(mut config: warren::Config) -> Target {
    config.http_bind = Some("127.0.0.1:0".parse().unwrap());
    let broker = warren::Broker::start(config)
        .await
        .expect("starting a broker with its management API");
    let http = format!("http://{}", broker.http_addr().expect("the API is on"));
    let prometheus = broker.prometheus_addr().map(|a| format!("http://{a}"));
    Target {
        amqp: TestBroker {
            url: broker.url(),
            addr: broker.local_addr(),
            broker: Some(broker),
        },
        http,
        prometheus,
    }
}

/// What curl got: status, headers (lower-case names), body.
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

pub async fn curl(args: &[&str]) -> Reply {
    let out = within(
        "curl",
        tokio::process::Command::new("curl")
            .args(["-sS", "-i", "--max-time", "5"])
            .args(args)
            .output(),
    )
    .await
    .expect("running curl (install it: apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| {
        panic!(
            "no HTTP reply from curl {args:?}: {text:?} {:?}",
            out.stderr
        )
    });
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Reply {
        status,
        headers: head.to_lowercase(),
        body: body.to_owned(),
    }
}

impl Target {
    pub async fn get(&self, path: &str) -> Reply {
        curl(&["-u", "guest:guest", &format!("{}{path}", self.http)]).await
    }

    /// `method` on `path` with a JSON body (none if empty) and extra curl arguments.
    pub async fn send(&self, method: &str, path: &str, body: &str, extra: &[&str]) -> Reply {
        let url = format!("{}{path}", self.http);
        let mut args = vec!["-u", "guest:guest", "-X", method];
        if !body.is_empty() {
            args.extend([
                "-H",
                "content-type: application/json",
                "--data-binary",
                body,
            ]);
        }
        args.extend(extra);
        args.push(&url);
        curl(&args).await
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    /// Waits until `check` holds for GET `path` (counters reach the API as queues update them;
    /// RabbitMQ's, every 5 s).
    pub async fn eventually(
        &self,
        path: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        for _ in 0..300 {
            let v = self.get_json(path).await;
            if check(&v) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{what}: GET {path} never showed it: {}",
            self.get_json(path).await
        );
    }
}

pub fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no {name:?} in {list}"))
}
