//! Every `warren` command answers `--help` with a description and at least one example, and
//! `--url`/`WARREN_URL` pick the broker (the flag wins).

mod cli_support;
use cli_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_has_help_with_an_example() {
    let url = "amqp://guest:guest@127.0.0.1:1/%2f";
    let commands: [&[&str]; 20] = [
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
        &["peer"],
        &["perf"],
        &["perf", "throughput"],
        &["perf", "latency"],
        &["perf", "sink"],
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
async fn each_command_shows_its_own_examples() {
    let url = "amqp://guest:guest@127.0.0.1:1/%2f";
    for (command, prefix) in [
        (&["unbind"][..], "warren unbind "),
        (&["delete", "queue"][..], "warren delete queue "),
        (&["perf", "latency"][..], "warren perf latency "),
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let r = warren(url, &args).await.ok();
        let examples: Vec<&str> = r
            .stdout
            .lines()
            .skip_while(|l| !l.starts_with("Example"))
            .map(str::trim_start)
            .filter(|l| l.starts_with("warren "))
            .collect();
        assert!(!examples.is_empty(), "no examples:\n{r}");
        for e in examples {
            assert!(
                e.starts_with(prefix),
                "{e:?} is not a {prefix}example:\n{r}"
            );
        }
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
