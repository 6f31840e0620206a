//! The web dashboard in a real browser: Debian's headless Chromium, driven over the Chrome
//! DevTools protocol by tests/dashboard/drive.mjs (playwright-core; tests/run-all.sh installs
//! chromium and runs `npm ci` there). It signs in (a wrong password first), declares a queue,
//! publishes to it, sees the count change, gets the message back, pages and sorts 10,000
//! queues, closes a client's connection (which this test sees closed with 320), exports
//! definitions, and sets a policy on its queue (seen on the queue's page) and deletes it.
//! With WARREN_SCREENSHOTS=DIR it also writes the README's screenshots there.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::*;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

const MANY_QUEUES: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_real_browser() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is not installed: run `npm ci --prefix tests/dashboard` \
         (tests/run-all.sh does)"
    );
    let t = common::http::target().await;

    // A client whose connection the page closes.
    let given = unique("dashboard-client");
    let conn = lapin::Connection::connect(
        &t.amqp.url,
        lapin::ConnectionProperties::default().with_connection_name(given.as_str().into()),
    )
    .await
    .unwrap();
    let _ch = channel(&conn).await;
    let mut events = Box::pin(conn.events_listener());

    // Enough queues that the page must page them.
    let filler = connect(&t.amqp).await;
    let ch = channel(&filler).await;
    for i in 0..MANY_QUEUES {
        ch.queue_declare(
            format!("dashboard-many-{i:05}").as_str().into(),
            QueueDeclareOptions {
                auto_delete: false,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    }

    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("drive.mjs")
        .current_dir(&dir)
        .env("WARREN_DASHBOARD_URL", format!("{}/", t.http))
        .env("WARREN_CLOSE_CONNECTION", &given)
        .env("WARREN_MANY_QUEUES", MANY_QUEUES.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Ok(shots) = std::env::var("WARREN_SCREENSHOTS") {
        cmd.env("WARREN_SCREENSHOTS", shots);
    }
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), cmd.output())
        .await
        .expect("the browser test finishes within 3 minutes")
        .expect("running node (Debian's nodejs; tests/run-all.sh checks for it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the dashboard test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("step: done"), "{stdout}");

    assert_eq!(
        next_error_event(&mut events).await,
        (
            320,
            "CONNECTION_FORCED - Closed from the Warren dashboard".to_owned()
        ),
        "the client whose connection the page closed is told so"
    );
}
