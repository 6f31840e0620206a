//! Shared by the `cli_*` tests: build the real `warren` binary once, start an embedded broker,
//! and run the binary against it with a timeout, collecting its exit code and output.
#![allow(dead_code)]

// A test that uses both helper modules compiles this file twice: harmless, each copy
// builds the binary at most once and the second build is a no-op.
#[allow(clippy::duplicate_mod)]
#[path = "../binary/locate.rs"]
mod locate;

use std::fmt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// Longest any one run of the binary may take before the test kills it and fails.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The `warren` binary (see `tests/binary/locate.rs`).
pub fn bin() -> &'static Path {
    locate::warren_bin()
}

/// A broker for one test, in this process, on a free loopback port.
pub async fn broker() -> warren::Broker {
    warren::Broker::start(warren::Config::ephemeral())
        .await
        .expect("starting the broker")
}

/// What one run of the binary did.
pub struct Run {
    /// The command line, for failure messages.
    pub args: Vec<String>,
    /// The exit code (`None` if a signal ended it).
    pub code: Option<i32>,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "warren {}\nexit code: {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

impl Run {
    /// Panics unless the command exited 0.
    pub fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "expected success:\n{self}");
        self
    }

    /// Panics unless the command failed with `code` and printed exactly one `error:` line on
    /// stderr (besides publish's summary) that contains `needle`; never a panic or a Debug dump.
    pub fn fails(self, code: i32, needle: &str) -> Run {
        assert_eq!(self.code, Some(code), "expected exit code {code}:\n{self}");
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(errors.len(), 1, "expected one error line:\n{self}");
        assert!(
            errors[0].contains(needle),
            "expected the error to mention {needle:?}:\n{self}"
        );
        for bad in [
            "panicked",
            "RUST_BACKTRACE",
            "Error {",
            "ErrorKind",
            "ShortString(",
        ] {
            assert!(
                !self.stderr.contains(bad),
                "found {bad:?} on stderr:\n{self}"
            );
        }
        self
    }

    /// stdout's lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// stdout's lines, each parsed as JSON.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}\n{self}"))
            })
            .collect()
    }
}

/// Runs `warren ARGS` against `url` (through WARREN_URL) with no stdin.
pub async fn warren(url: &str, args: &[&str]) -> Run {
    run(url, args, None).await
}

/// Runs `warren ARGS` against `url` with `input` on stdin.
pub async fn warren_with_input(url: &str, args: &[&str], input: &[u8]) -> Run {
    run(url, args, Some(input)).await
}

async fn run(url: &str, args: &[&str], input: Option<&[u8]>) -> Run {
    let mut child = command(url, args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("starting warren");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input).await.expect("writing stdin");
        drop(stdin);
    }
    // On timeout the child is dropped, and kill_on_drop ends it.
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "warren {} did not finish within {TIMEOUT:?}",
                args.join(" ")
            )
        })
        .expect("waiting for warren");
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `warren ARGS` ready to spawn: WARREN_URL set, output piped, killed if dropped.
pub fn command(url: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin());
    cmd.args(args)
        .env("WARREN_URL", url)
        // `warren serve` in tests: management servers on free ports, never RabbitMQ's fixed
        // ones (tests run side by side).
        .env("WARREN_HTTP_BIND", "127.0.0.1:0")
        .env("WARREN_PROMETHEUS_BIND", "127.0.0.1:0")
        .env_remove("WARREN_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Waits for a spawned `warren` to exit, killing it (and failing) after [`TIMEOUT`].
pub async fn finish(child: tokio::process::Child, what: &str) -> Run {
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {TIMEOUT:?}"))
        .expect("waiting for warren");
    Run {
        args: vec![what.to_owned()],
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// (messages, consumers) of `queue`, from `warren declare queue --passive`.
pub async fn queue_counts(url: &str, queue: &str) -> (u64, u64) {
    let r = warren(url, &["declare", "queue", queue, "--passive"])
        .await
        .ok();
    // "queue 'q' exists (3 messages, 1 consumers)"
    let inner = r
        .stdout
        .rsplit_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inner, _)| inner.to_owned())
        .unwrap_or_else(|| panic!("unexpected output:\n{r}"));
    let numbers: Vec<u64> = inner
        .split(',')
        .map(|part| part.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    (numbers[0], numbers[1])
}

/// Polls until `check` holds, for at most [`TIMEOUT`]; no timing is asserted, only progress.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
