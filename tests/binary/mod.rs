//! Runs the real `warren` binary for tests that need a process to kill: finds (or builds)
//! `target/debug/warren`, starts `warren serve` on port 0 with a data directory, and learns
//! the address from its first stdout line.

#![allow(dead_code)]

mod locate;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The `warren` binary of this workspace, built once per test process if needed.
pub fn warren_binary() -> PathBuf {
    locate::warren_bin().to_owned()
}

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let dir = std::env::temp_dir().join(format!("warren-{tag}-{:016x}", h.finish()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a temp dir");
    dir
}

/// The resident memory of process `pid`, in bytes (0 where /proc is missing).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// A running `warren serve` process.
pub struct Server {
    pub child: Child,
    pub url: String,
    /// The management HTTP server: http://127.0.0.1:PORT
    pub http: Option<String>,
    pub stderr_log: PathBuf,
}

impl Server {
    /// Starts `warren serve --bind 127.0.0.1:0 --data-dir DIR` and waits for its address.
    pub async fn start(data_dir: &Path) -> Server {
        match Self::try_start(data_dir).await {
            Ok(s) => s,
            Err((msg, log)) => panic!("warren serve did not start: {msg}\n{log}"),
        }
    }

    /// Like `start`, but returns the process's stderr when it exits instead of listening.
    pub async fn try_start(data_dir: &Path) -> Result<Server, (String, String)> {
        Self::try_start_with(data_dir, &[]).await
    }

    /// Like `start`, with more arguments for `warren serve` (a `--config` file, say).
    pub async fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        match Self::try_start_with(data_dir, extra).await {
            Ok(s) => s,
            Err((msg, log)) => panic!("warren serve did not start: {msg}\n{log}"),
        }
    }

    async fn try_start_with(data_dir: &Path, extra: &[&str]) -> Result<Server, (String, String)> {
        let stderr_log = data_dir.with_extension("stderr.log");
        let log = std::fs::File::create(&stderr_log).expect("creating the stderr log");
        let mut child = Command::new(warren_binary())
            .args([
                "serve",
                "--http-bind",
                "127.0.0.1:0",
                "--prometheus-bind",
                "127.0.0.1:0",
                "--bind",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env("WARREN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("spawning warren serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        let read_log = || std::fs::read_to_string(&stderr_log).unwrap_or_default();
        let line = match first {
            Ok(Ok(Some(line))) => line,
            Ok(_) => {
                let _ = child.wait().await;
                return Err(("exited before listening".into(), read_log()));
            }
            Err(_) => return Err(("no address within 60 s".into(), read_log())),
        };
        let addr = line
            .strip_prefix("warren: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        // The management lines follow in the same write.
        let mut http = None;
        while let Ok(Ok(Some(line))) =
            tokio::time::timeout(Duration::from_millis(200), lines.next_line()).await
        {
            if let Some(a) = line.strip_prefix("warren: management API on ") {
                http = Some(a.trim_end_matches("/api/").to_owned());
                break;
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server {
            child,
            url: format!("amqp://guest:guest@{addr}/%2f"),
            http,
            stderr_log,
        })
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill9(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM (graceful shutdown), and wait.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg(pid.to_string())
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        let _ = self.child.start_kill();
    }
}
