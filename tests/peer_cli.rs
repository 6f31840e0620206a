//! The `warren peer listen` and `warren peer send` commands: the listener prints each message
//! with the path it came by, and the sender prints the path it used, both through a real
//! broker.

use std::time::Duration;

use clap::Parser;
use warren_peer::cli::{run_listen, run_send, PeerCommand};

/// Stands in for the `warren` binary's parser: `warren peer <listen|send> ...`.
#[derive(Parser)]
struct Warren {
    #[command(subcommand)]
    peer: PeerCommand,
}

fn parse(args: &[&str]) -> PeerCommand {
    Warren::try_parse_from(std::iter::once("peer").chain(args.iter().copied()))
        .unwrap()
        .peer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_and_send_print_the_path_of_each_message() {
    let broker = warren::Broker::start(warren::Config::ephemeral())
        .await
        .unwrap();
    let url = broker.url();

    let PeerCommand::Listen(listen) =
        parse(&["listen", "--name", "B", "--count", "2", "--url", &url])
    else {
        panic!("not a listen command")
    };
    let listener = tokio::spawn(async move {
        let mut out = Vec::new();
        run_listen(listen, std::future::pending(), &mut out)
            .await
            .unwrap();
        String::from_utf8(out).unwrap()
    });
    // The listener claims its name asynchronously; the sender retries until it exists.
    let mut sent = None;
    for _ in 0..100 {
        let PeerCommand::Send(send) = parse(&[
            "send", "--to", "B", "--url", &url, "-k", "greeting", "-H", "lang=en", "hello",
        ]) else {
            panic!("not a send command")
        };
        let mut out = Vec::new();
        match run_send(send, &mut out).await {
            Ok(()) => {
                sent = Some(String::from_utf8(out).unwrap());
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let sent = sent.expect("sender never reached B");
    assert!(sent.contains("sent 5 bytes to B direct"), "{sent}");
    assert!(
        sent.contains("1 message(s) to B: 1 direct, 0 relayed"),
        "{sent}"
    );

    // A relay-only sender: the same listener sees it relayed.
    let PeerCommand::Send(send) = parse(&[
        "send",
        "--to",
        "B",
        "--name",
        "S2",
        "--url",
        &url,
        "--relay-only",
        "again",
    ]) else {
        panic!("not a send command")
    };
    let mut out = Vec::new();
    run_send(send, &mut out).await.unwrap();
    let sent = String::from_utf8(out).unwrap();
    assert!(sent.contains("sent 5 bytes to B relayed"), "{sent}");

    let printed = tokio::time::timeout(Duration::from_secs(20), listener)
        .await
        .unwrap()
        .unwrap();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 2, "{printed}");
    assert!(lines[0].starts_with("[direct] from send-"), "{printed}");
    assert!(
        lines[0].ends_with(" #0 rk=greeting lang=en: hello"),
        "{printed}"
    );
    assert!(lines[1].starts_with("[relayed] from S2 #0"), "{printed}");
    assert!(lines[1].ends_with(": again"), "{printed}");
    broker.shutdown().await;
}
