//! `warren declare stream` with retention, `warren subscribe --offset` (first, an offset, an
//! interval, a time, last), and their refusals.

mod cli_support;
use cli_support::*;

async fn stream_broker(dir: &std::path::Path) -> warren::Broker {
    let mut c = warren::Config::ephemeral();
    c.persistence = true;
    c.data_dir = dir.to_owned();
    warren::Broker::start(c).await.expect("starting the broker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_a_stream_and_read_it_from_any_offset() {
    let dir = std::env::temp_dir().join(format!("warren-cli-streams-{}", std::process::id()));
    let b = stream_broker(&dir).await;
    let url = b.url();
    let r = warren(
        &url,
        &[
            "declare",
            "stream",
            "events",
            "--max-age",
            "7D",
            "--max-bytes",
            "10GB",
        ],
    )
    .await
    .ok();
    assert!(r.stdout.contains("declared stream 'events'"), "{r}");
    for body in ["a", "b", "c", "d"] {
        warren(&url, &["publish", "", "events", body, "--confirm"])
            .await
            .ok();
    }
    let read = |args: Vec<&'static str>| {
        let url = url.clone();
        async move {
            let mut all = vec!["subscribe", "events"];
            all.extend(args);
            warren(&url, &all).await.ok()
        }
    };
    assert_eq!(
        read(vec!["--offset", "first", "--count", "4"])
            .await
            .lines(),
        ["a", "b", "c", "d"]
    );
    assert_eq!(
        read(vec!["--offset", "2", "--count", "2"]).await.lines(),
        ["c", "d"]
    );
    assert_eq!(
        read(vec!["--offset", "1h", "--count", "4"]).await.lines(),
        ["a", "b", "c", "d"]
    );
    assert_eq!(
        read(vec!["--offset", "2020-01-01T00:00:00Z", "--count", "1"])
            .await
            .lines(),
        ["a"]
    );
    assert_eq!(
        read(vec!["--offset", "last", "--count", "1"]).await.lines(),
        ["d"]
    );
    // The offset is in each message's headers.
    let r = read(vec!["--offset", "3", "--count", "1", "--format", "json"]).await;
    let j = &r.json_lines()[0];
    assert_eq!(j["headers"]["x-stream-offset"], 3, "{r}");

    warren(&url, &["subscribe", "events", "--offset", "soon"])
        .await
        .fails(2, "is not first, last, next");
    warren(
        &url,
        &["declare", "stream", "bad", "--max-bytes", "10 parsecs"],
    )
    .await
    .fails(2, "unknown unit");
    b.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
