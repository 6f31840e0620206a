//! A browser peer in a real browser: Debian's headless Chromium loads Warren's peer demo
//! (`/peer/demo`, served by `warren serve` with the JavaScript peer at /peer/warren-peer.js)
//! and signals over the WebSocket at /peer/ws; a native `warren peer listen` is on the other
//! side. The page sends 1,000 messages, all over the direct WebRTC path, then cuts the direct
//! path (closes its RTCPeerConnection) and sends 1,000 more, which carry on through the
//! broker; the link goes back to the direct path by itself and 1,000 more go direct: the
//! native peer prints all 3,000 in order, each once, with those paths. Then a native
//! `warren peer send` sends 1,000 messages to the browser; the page cuts that link after 300
//! and it comes back to direct (the native side retries; the last 400 are written once the
//! page saw it back): all arrive in order, the first direct, then relayed, the last direct. A `warren peer send --live` stream of cursor
//! positions moves the page's cursor.
//! Before that, a user claiming another user's peer name is refused (403), as over AMQP.
//! The driver is tests/dashboard/peer.mjs (playwright-core, installed by tests/run-all.sh).

mod binary;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_peer_talks_to_a_native_peer_direct_then_relayed() {
    run_demo(false, 1000).await;
}

/// The same over HTTPS: the page, the script and the WebSocket (wss) all on the TLS port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_peer_signals_over_wss_when_the_api_is_on_https() {
    run_demo(true, 200).await;
}

async fn run_demo(tls: bool, count: usize) {
    #[allow(non_snake_case)]
    let COUNT = count;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `npm ci --prefix tests/dashboard` \
         (tests/run-all.sh does)"
    );
    let data = binary::temp_dir(if tls {
        "peer-browser-tls"
    } else {
        "peer-browser"
    });
    let server = if tls {
        // A self-signed certificate for 127.0.0.1; the browser is told to accept it.
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let pki = data.with_extension("pki");
        std::fs::create_dir_all(&pki).unwrap();
        std::fs::write(pki.join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(pki.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        let toml = pki.join("warren.toml");
        std::fs::write(
            &toml,
            format!(
                "[tls]\ncert_file = {:?}\nkey_file = {:?}\nmanagement = true\n",
                pki.join("cert.pem"),
                pki.join("key.pem")
            ),
        )
        .unwrap();
        binary::Server::start_with(&data, &["--config", toml.to_str().unwrap()]).await
    } else {
        binary::Server::start(&data).await
    };
    let http = server.http.clone().expect("the management API address");
    assert_eq!(http.starts_with("https://"), tls, "{http}");
    let curl_tls: &[&str] = if tls { &["-k"] } else { &[] };

    // A user who may claim only its own peer names (peer-alice, peer-alice.*).
    for (method, path, body) in [
        (
            "PUT",
            "/api/users/peer-alice",
            r#"{"password":"alice-pw","tags":""}"#,
        ),
        (
            "PUT",
            "/api/permissions/%2F/peer-alice",
            r#"{"configure":".*","write":".*","read":".*"}"#,
        ),
    ] {
        let out = Command::new("curl")
            .args(["-sS", "-f", "-u", "guest:guest", "-X", method])
            .args(curl_tls)
            .args([
                "-H",
                "content-type: application/json",
                "--data-binary",
                body,
            ])
            .arg(format!("{http}{path}"))
            .output()
            .await
            .expect("curl");
        assert!(out.status.success(), "{method} {path}: {out:?}");
    }

    // The native peer, printing one line per message.
    let mut listen = Command::new(binary::warren_binary())
        .args(["peer", "listen", "--name", "native", "--url", &server.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("warren peer listen");
    let mut listen_err = BufReader::new(listen.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(20), listen_err.next_line())
        .await
        .expect("warren peer listen starts")
        .unwrap()
        .unwrap_or_default();
    assert!(ready.contains("listening as"), "{ready}");
    tokio::spawn(async move { while let Ok(Some(_)) = listen_err.next_line().await {} });
    let mut listen_out = BufReader::new(listen.stdout.take().unwrap()).lines();
    let printed = tokio::spawn(async move {
        let mut lines = Vec::new();
        while lines.len() < 3 * COUNT {
            match tokio::time::timeout(Duration::from_secs(90), listen_out.next_line()).await {
                Ok(Ok(Some(l))) => lines.push(l),
                _ => break,
            }
        }
        lines
    });

    let mut node = Command::new("node");
    node.arg("peer.mjs")
        .current_dir(&dir)
        .env("WARREN_PEER_DEMO", format!("{http}/peer/demo"))
        .env("WARREN_PEER_COUNT", COUNT.to_string())
        .env("WARREN_PEER_IGNORE_TLS", if tls { "1" } else { "" })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Ok(shots) = std::env::var("WARREN_SCREENSHOTS") {
        node.env("WARREN_SCREENSHOTS", shots);
    }
    let mut node = node.spawn().expect("running node");
    let mut node_out = BufReader::new(node.stdout.take().unwrap()).lines();
    let node_err = node.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut s = String::new();
        let mut r = BufReader::new(node_err);
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut r, &mut s).await;
        s
    });
    let mut transcript = Vec::new();
    let mut sender = None;
    let back_direct = std::sync::Arc::new(tokio::sync::Notify::new());
    while let Ok(Ok(Some(line))) =
        tokio::time::timeout(Duration::from_secs(180), node_out.next_line()).await
    {
        println!("{line}");
        if line == "back: direct again" {
            back_direct.notify_one();
        }
        if line.starts_with("step: a live stream") {
            // A live (unordered, no retransmits) stream of cursor positions, paced.
            let mut live = Command::new(binary::warren_binary())
                .args(["peer", "send", "--to", "browser", "--name", "native-cursor"])
                .args(["--live", "-k", "cursor", "--url", &server.url])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("warren peer send --live");
            let mut stdin = live.stdin.take().unwrap();
            tokio::spawn(async move {
                for i in 0..200 {
                    let pos = format!("{},{}\n", 100 + 2 * i, 60 + i);
                    if stdin.write_all(pos.as_bytes()).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                drop(stdin);
                let _ = live.wait().await;
            });
        }
        if line == "sent: done" {
            // The browser is listening: a native peer sends to it.
            let mut send = Command::new(binary::warren_binary())
                .args([
                    "peer",
                    "send",
                    "--to",
                    "browser",
                    "--name",
                    "native-back",
                    "--url",
                    &server.url,
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("warren peer send");
            let mut stdin = send.stdin.take().unwrap();
            // Paced: the page cuts this link after 30% of the messages; 60% are written
            // while it relays and comes back, the last 40% once the page saw it back.
            let back = back_direct.clone();
            tokio::spawn(async move {
                for i in 0..COUNT {
                    if i == COUNT * 6 / 10 {
                        back.notified().await;
                    }
                    if stdin.write_all(format!("r{i}\n").as_bytes()).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2000 / COUNT as u64)).await;
                }
            });
            sender = Some(send);
        }
        transcript.push(line);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), node.wait())
        .await
        .expect("node exits")
        .unwrap();
    let stderr = errors.await.unwrap();
    assert!(
        status.success(),
        "the browser side failed:\n{}\n{stderr}",
        transcript.join("\n")
    );
    let sent = sender.expect("the page finished sending");
    let out = tokio::time::timeout(Duration::from_secs(60), sent.wait_with_output())
        .await
        .expect("warren peer send finishes")
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains(&format!("{COUNT} message(s) to browser")),
        "{report}"
    );

    // What the native peer printed: every message once, in order; the first COUNT direct,
    // most of the next COUNT relayed after the cut, and the last COUNT direct again.
    let lines = printed.await.unwrap();
    assert_eq!(lines.len(), 3 * COUNT, "{:?}", lines.last());
    let mut relayed = 0;
    for (i, l) in lines.iter().enumerate() {
        assert!(l.ends_with(&format!(": m{i}")), "message {i}: {l}");
        assert!(l.contains(" from browser "), "{l}");
        assert!(l.contains("rk=demo"), "{l}");
        if !(COUNT..2 * COUNT).contains(&i) {
            assert!(l.starts_with("[direct]"), "message {i}: {l}");
        } else if l.starts_with("[relayed]") {
            relayed += 1;
        }
    }
    assert!(relayed > COUNT / 2, "after the cut, {relayed} relayed");
    let _ = listen.start_kill();
    server.stop().await;
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(data.with_extension("pki"));
}
