//! `warren serve` on a first run: start-up failures are one line naming the cause once and what
//! to do (a file where the data directory should be, a missing or broken config file, a port in
//! use, an address that is not IP:PORT), a failed bind leaves no data directory behind, `--bind`
//! resolves host names, and the log has no colour codes when stderr is not a terminal and names
//! the user of a refused login (never the password).

mod cli_support;
use cli_support::*;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

/// A fresh, empty directory for one test.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-cli-serve-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}

/// Runs `warren serve ARGS` in `dir`, expecting it to fail at start-up.
async fn serve_fails(dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    let mut cmd = command("amqp://unused", &all);
    cmd.current_dir(dir)
        .env_remove("WARREN_BIND")
        .env_remove("WARREN_DATA_DIR");
    finish(cmd.spawn().expect("starting warren serve"), &all.join(" ")).await
}

/// `warren serve` listening, its address, and its stderr going to `log`.
async fn serve_listening(dir: &Path, args: &[&str], log: &Path) -> (tokio::process::Child, String) {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    let mut cmd = command("amqp://unused", &all);
    cmd.current_dir(dir)
        .env("WARREN_LOG", "info")
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()));
    let mut child = cmd.spawn().expect("starting warren serve");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(TIMEOUT, lines.next_line())
        .await
        .expect("warren serve announced no address")
        .unwrap()
        .unwrap_or_else(|| {
            panic!(
                "warren serve exited:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
    let addr = line
        .strip_prefix("warren: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_failures_say_what_is_wrong_once() {
    let dir = scratch("failures");
    std::fs::write(dir.join("f"), "").unwrap();
    let r = serve_fails(&dir, &["--data-dir", "f", "--bind", "127.0.0.1:0"])
        .await
        .fails(1, "data directory f is a file, not a directory");
    assert!(!r.stderr.contains("File exists"), "{r}");

    // Below a file: the OS's reason, said once.
    let r = serve_fails(&dir, &["--data-dir", "f/sub", "--bind", "127.0.0.1:0"])
        .await
        .fails(1, "f/sub");
    let os = std::io::Error::from_raw_os_error(20).to_string(); // ENOTDIR
    assert_eq!(r.stderr.matches(&os).count(), 1, "{r}");

    let r = serve_fails(&dir, &["--config", "missing.toml"])
        .await
        .fails(1, "missing.toml");
    let os = std::io::Error::from_raw_os_error(2).to_string(); // ENOENT
    assert_eq!(r.stderr.matches(&os).count(), 1, "{r}");

    std::fs::write(dir.join("bad.toml"), "heartbeat = \"often\"\n").unwrap();
    let r = serve_fails(&dir, &["--config", "bad.toml"])
        .await
        .fails(1, "bad.toml");
    assert_eq!(r.stderr.matches("TOML parse error").count(), 1, "{r}");

    serve_fails(&dir, &["--bind", "localhost"])
        .await
        .fails(2, "IP:PORT");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_suggests_bind_and_creates_no_data_directory() {
    let dir = scratch("in-use");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    serve_fails(&dir, &["--bind", &addr, "--data-dir", "data"])
        .await
        .fails(1, "--bind or WARREN_BIND");
    assert!(
        !dir.join("data").exists(),
        "the data directory was created although the broker could not listen"
    );
    drop(taken);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_resolves_host_names_and_the_log_is_plain_and_names_refused_users() {
    let dir = scratch("log");
    let log = dir.join("warren.log");
    let (mut child, addr) =
        serve_listening(&dir, &["--bind", "localhost:0", "--data-dir", "data"], &log).await;
    let ip: std::net::SocketAddr = addr.parse().expect("an IP:PORT address");
    assert!(ip.ip().is_loopback(), "localhost resolved to {ip}");

    let url = format!("amqp://mallory:hunter2-secret@{addr}/%2f");
    warren(&url, &["get", "q"])
        .await
        .fails(1, "(403 ACCESS_REFUSED)");
    eventually("the refused login in the log", || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("login refused")
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let refused = text.lines().find(|l| l.contains("login refused")).unwrap();
    assert!(
        refused.contains("mallory"),
        "the user is not named: {refused}"
    );
    assert!(
        !text.contains("hunter2-secret"),
        "the password is logged:\n{text}"
    );
    assert!(
        !text.contains('\x1b'),
        "colour codes in a log file:\n{text:?}"
    );

    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `warren serve` starts the management API and the Prometheus endpoint (on free ports here:
/// the tests set `WARREN_HTTP_BIND`), prints their addresses after the AMQP line, and a port
/// in use for either stops it with a line naming the flag to change.
#[tokio::test]
async fn serve_prints_and_answers_its_management_endpoints() {
    let dir = scratch("mgmt");
    let mut cmd = command("amqp://unused", &["serve", "--bind", "127.0.0.1:0"]);
    cmd.current_dir(&dir);
    let mut child = cmd.spawn().expect("starting warren serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            tokio::time::timeout(TIMEOUT, lines.next_line())
                .await
                .expect("a line from warren serve")
                .unwrap()
                .expect("warren serve exited"),
        );
    }
    let [amqp, api, metrics] = <[String; 3]>::try_from(got).unwrap();
    assert!(amqp.starts_with("warren: listening on "), "{amqp:?}");
    let api = api
        .strip_prefix("warren: management API on ")
        .unwrap_or_else(|| panic!("{api:?}"))
        .to_owned();
    let metrics = metrics
        .strip_prefix("warren: Prometheus metrics on ")
        .unwrap_or_else(|| panic!("{metrics:?}"))
        .to_owned();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "-u", "guest:guest", &format!("{api}overview")])
        .output()
        .await
        .expect("curl");
    let overview: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(overview["product_name"], "Warren");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", &metrics])
        .output()
        .await
        .expect("curl");
    assert!(String::from_utf8_lossy(&out.stdout).contains("# TYPE rabbitmq_queues gauge"));

    // A persistent message on a durable queue: a group commit, bytes in a segment, and the
    // exposition with the store's metrics still passes promtool.
    let url = amqp.trim_start_matches("warren: listening on ");
    let url = format!("amqp://guest:guest@{url}/%2f");
    warren(&url, &["declare", "queue", "kept", "--durable"])
        .await
        .ok();
    warren(&url, &["publish", "", "kept", "body", "--persistent"])
        .await
        .ok();
    let out = tokio::process::Command::new("curl")
        .args(["-sS", &metrics])
        .output()
        .await
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    assert!(value("warren_store_flush_seconds_count ") >= 1.0);
    assert!(value("warren_store_flush_seconds_bucket{le=\"+Inf\"} ") >= 1.0);
    assert!(value("warren_store_segment_bytes ") > 0.0);
    assert!(value("rabbitmq_disk_space_available_bytes ") > 0.0);
    let file = dir.join("metrics.prom");
    std::fs::write(&file, &text).unwrap();
    let checked = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool (tests/run-all.sh installs it: apt prometheus)");
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // Its HTTP port taken: a second broker says so and which flag moves it.
    let port = api
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let run = serve_fails(&dir, &["--bind", "127.0.0.1:0", "--http-bind", &port]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("--http-bind"), "{run}");
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}
