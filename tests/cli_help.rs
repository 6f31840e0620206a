//! Every `warren` command answers `--help` with a description and at least one example, and
//! `--url`/`WARREN_URL` pick the broker (the flag wins).

mod cli_support;
use cli_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_has_help_with_an_example() {
    let url = "amqp://guest:guest@127.0.0.1:1/%2f";
    let commands: [&[&str]; 15] = [
        &[],
        &["serve"],
        &["publish"],
        &["subscribe"],
        &["consume"],
        &["get"],
        &["declare", "queue"],
        &["declare", "exchange"],
        &["bind"],
        &["unbind"],
        &["delete", "queue"],
        &["delete", "exchange"],
        &["purge"],
        &["declare"],
        &["delete"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let r = warren(url, &args).await.ok();
        assert!(r.stdout.contains("Usage: warren"), "{r}");
        assert!(r.stdout.contains("Example"), "no example:\n{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_flag_beats_the_environment() {
    let b = broker().await;
    // WARREN_URL points nowhere; --url points at the broker.
    let nowhere = "amqp://guest:guest@127.0.0.1:1/%2f";
    warren(nowhere, &["declare", "queue", "url-q", "--url", &b.url()])
        .await
        .ok();
    warren(nowhere, &["declare", "queue", "url-q"])
        .await
        .fails(1, "cannot connect to 127.0.0.1:1");
    b.shutdown().await;
}
