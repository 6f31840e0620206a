//! AMQP over TLS (`amqps`) and the management API over HTTPS, with certificates made at test
//! time (rcgen): lapin and pika connect and move messages; a client certificate logs in with
//! SASL EXTERNAL as the user its common name names; `fail_if_no_peer_cert` turns away clients
//! without one; a plain-text client on the TLS port is refused and nothing else is disturbed;
//! a reload picks up new certificates.
mod cli_support;
mod common;

use std::path::{Path, PathBuf};

use common::*;
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::{Connection, ConnectionProperties};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate with
/// CN=`client_cn`, as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert: String,
    client_key: String,
}

fn make_pki(dir: &Path, ca_name: &str, client_cn: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "warren test server");
    let server = params.signed_by(&server_key, &ca).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, client_cn);
    let client = params.signed_by(&client_key, &ca).unwrap();

    std::fs::create_dir_all(dir).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        cert: write("server.pem", server.pem()),
        key: write("server.key", server_key.serialize_pem()),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(unique(tag));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tls_config(pki: &Pki, verify_peer: bool, fail_if_no_peer_cert: bool) -> warren::Config {
    let mut c = warren::Config::ephemeral();
    c.tls = Some(warren::tls::TlsConfig {
        cert_file: pki.cert.clone(),
        key_file: pki.key.clone(),
        ca_file: Some(pki.ca.clone()),
        verify_peer,
        fail_if_no_peer_cert,
        management: true,
    });
    c.http_bind = Some("127.0.0.1:0".parse().unwrap());
    c
}

/// lapin's TLS settings: trust `ca`, and present the client certificate if given.
fn client_tls(ca: &Path, identity: Option<&Pki>) -> OwnedTLSConfig {
    OwnedTLSConfig {
        identity: identity.map(|p| OwnedIdentity::PKCS8 {
            pem: p.client_cert.clone().into_bytes(),
            key: p.client_key.clone().into_bytes(),
        }),
        cert_chain: Some(std::fs::read_to_string(ca).unwrap()),
    }
}

async fn connect_tls(url: &str, tls: OwnedTLSConfig) -> lapin::Result<Connection> {
    let builder = lapin::DefaultConnectionBuilder::new()?
        .with_uri_str(url.to_owned())
        .with_properties(ConnectionProperties::default())
        .with_tls_config(tls);
    within("a TLS connection", builder.connect()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_moves_messages_over_amqps_and_plain_text_on_the_tls_port_is_refused() {
    let dir = temp_dir("tls-basic");
    let pki = make_pki(&dir, "Warren test CA", "nobody");
    let broker = warren::Broker::start(tls_config(&pki, false, false))
        .await
        .unwrap();
    let tls_addr = broker.amqps_addr().expect("an amqps listener");
    let url = format!("amqps://guest:guest@localhost:{}/%2f", tls_addr.port());
    let conn = connect_tls(&url, client_tls(&pki.ca, None)).await.unwrap();
    let ch = confirm_channel(&conn).await;
    let q = declare_queue(&ch, "over-tls").await;
    for i in 0..100 {
        publish_confirmed(&ch, "", &q, format!("m{i}").as_bytes()).await;
    }
    let got = drain(&ch, &q).await;
    assert_eq!(got.len(), 100);
    assert_eq!(got[99], "m99");

    // A plain-text AMQP client on the TLS port: the handshake fails and its socket closes;
    // the TLS connection above carries on.
    let mut raw = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    raw.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let mut seen = Vec::new();
    loop {
        match within("the plain client's socket to close", raw.read(&mut buf)).await {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        !seen.starts_with(b"AMQP"),
        "a plain-text client must not get an AMQP answer on the TLS port: {seen:?}"
    );
    publish_confirmed(&ch, "", &q, b"still here").await;
    assert_eq!(drain(&ch, &q).await, vec!["still here"]);

    // The management API answers over HTTPS, trusted through the same CA.
    let http = broker.http_addr().unwrap();
    let r = common::http::curl(&[
        "--cacert",
        pki.ca.to_str().unwrap(),
        "-u",
        "guest:guest",
        &format!("https://localhost:{}/api/overview", http.port()),
    ])
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["product_name"], "Warren");
    drop(conn);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_log_in_with_external_and_are_required_when_configured() {
    let dir = temp_dir("tls-external");
    let pki = make_pki(&dir, "Warren test CA", "cert-user");
    let broker = warren::Broker::start(tls_config(&pki, true, true))
        .await
        .unwrap();
    let access = broker.access().clone();
    access.put_user("cert-user", None, None, vec![]).unwrap();
    access
        .set_permission(warren::access::PermissionRecord {
            user: "cert-user".into(),
            vhost: "/".into(),
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        })
        .unwrap();
    let port = broker.amqps_addr().unwrap().port();

    // EXTERNAL: no password, the certificate's CN is the user.
    let url = format!("amqps://localhost:{port}/%2f?auth_mechanism=external");
    let conn = connect_tls(&url, client_tls(&pki.ca, Some(&pki)))
        .await
        .expect("EXTERNAL with a client certificate");
    let ch = channel(&conn).await;
    declare_queue(&ch, "as-cert-user").await;
    let who = broker
        .registry()
        .connections()
        .iter()
        .map(|c| c.user.clone())
        .collect::<Vec<_>>();
    assert_eq!(who, vec!["cert-user".to_owned()]);
    drop(conn);

    // PLAIN still works with a certificate.
    let url = format!("amqps://guest:guest@localhost:{port}/%2f");
    drop(
        connect_tls(&url, client_tls(&pki.ca, Some(&pki)))
            .await
            .expect("PLAIN over a verified TLS connection"),
    );
    // No certificate: fail_if_no_peer_cert refuses the handshake.
    let refused = connect_tls(&url, client_tls(&pki.ca, None)).await;
    assert!(refused.is_err(), "a client without a certificate got in");
    // A certificate from another CA: refused too.
    let other = make_pki(&dir.join("other"), "Another CA", "cert-user");
    let refused = connect_tls(&url, client_tls(&pki.ca, Some(&other))).await;
    assert!(refused.is_err(), "a certificate of an unknown CA got in");
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_picks_up_new_certificates_for_new_connections() {
    let dir = temp_dir("tls-reload");
    let first = make_pki(&dir.join("first"), "First CA", "x");
    let broker = warren::Broker::start(tls_config(&first, false, false))
        .await
        .unwrap();
    let url = format!(
        "amqps://guest:guest@localhost:{}/%2f",
        broker.amqps_addr().unwrap().port()
    );
    let old = connect_tls(&url, client_tls(&first.ca, None))
        .await
        .unwrap();
    // The files are replaced by a certificate of another CA...
    let second = make_pki(&dir.join("second"), "Second CA", "x");
    std::fs::copy(&second.cert, &first.cert).unwrap();
    std::fs::copy(&second.key, &first.key).unwrap();
    // ...which only counts once reloaded.
    assert!(connect_tls(&url, client_tls(&second.ca, None))
        .await
        .is_err());
    broker.reload_tls().expect("reloading");
    drop(
        connect_tls(&url, client_tls(&second.ca, None))
            .await
            .expect("the new certificate after the reload"),
    );
    assert!(connect_tls(&url, client_tls(&first.ca, None))
        .await
        .is_err());
    // Open connections keep going.
    let ch = confirm_channel(&old).await;
    let q = declare_queue(&ch, "after-reload").await;
    publish_confirmed(&ch, "", &q, b"m").await;
    // A broken file: the reload fails and the certificate in use stays.
    std::fs::write(&first.key, "not a key").unwrap();
    assert!(broker.reload_tls().is_err());
    drop(
        connect_tls(&url, client_tls(&second.ca, None))
            .await
            .expect("still the second certificate"),
    );
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// pika (Python's `ssl`) over TLS, from the virtual environment tests/run-all.sh makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_connects_over_tls() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run tests/run-all.sh (it makes the Python environment with pika), or \
         python3 -m venv target/pyenv && target/pyenv/bin/pip install pika",
        python.display()
    );
    let dir = temp_dir("tls-pika");
    let pki = make_pki(&dir, "Warren test CA", "nobody");
    let broker = warren::Broker::start(tls_config(&pki, false, false))
        .await
        .unwrap();
    let port = broker.amqps_addr().unwrap().port();
    let script = r#"
import ssl, sys, pika
ctx = ssl.create_default_context(cafile=sys.argv[1])
params = pika.ConnectionParameters(host="localhost", port=int(sys.argv[2]),
    credentials=pika.PlainCredentials("guest", "guest"),
    ssl_options=pika.SSLOptions(ctx, "localhost"))
conn = pika.BlockingConnection(params)
ch = conn.channel()
ch.queue_declare("pika-tls", exclusive=True)
ch.confirm_delivery()
for i in range(10):
    ch.basic_publish("", "pika-tls", b"m%d" % i)
got = []
while True:
    m, _, body = ch.basic_get("pika-tls", auto_ack=True)
    if m is None:
        break
    got.append(body.decode())
print(",".join(got), conn._impl._transport._sock.version())
conn.close()
"#;
    let out = within(
        "pika over TLS",
        tokio::process::Command::new(&python)
            .args(["-c", script, pki.ca.to_str().unwrap(), &port.to_string()])
            .output(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pika failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let (bodies, version) = stdout.trim().split_once(' ').unwrap();
    assert_eq!(bodies, expected.join(","));
    assert!(version == "TLSv1.3" || version == "TLSv1.2", "{version}");
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_broker_with_unusable_tls_files_does_not_start() {
    let mut c = warren::Config::ephemeral();
    c.tls = Some(warren::tls::TlsConfig {
        cert_file: "/nonexistent/cert.pem".into(),
        key_file: "/nonexistent/key.pem".into(),
        ca_file: None,
        verify_peer: false,
        fail_if_no_peer_cert: false,
        management: false,
    });
    let err = warren::Broker::start(c).await.err().expect("refused");
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
}

/// The `warren` tools speak amqps too: publish and get (lapin), and perf (its own client),
/// trusting the test CA through WARREN_CACERT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_and_perf_work_over_amqps() {
    let dir = temp_dir("tls-cli");
    let pki = make_pki(&dir, "Warren test CA", "nobody");
    let broker = warren::Broker::start(tls_config(&pki, false, false))
        .await
        .unwrap();
    let url = format!(
        "amqps://guest:guest@localhost:{}/%2f",
        broker.amqps_addr().unwrap().port()
    );
    let run = |args: Vec<String>| {
        let ca = pki.ca.clone();
        let url = url.clone();
        async move {
            let out = within(
                "warren over amqps",
                tokio::process::Command::new(cli_support::bin())
                    .args(&args)
                    .env("WARREN_URL", &url)
                    .env("WARREN_CACERT", &ca)
                    .output(),
            )
            .await
            .unwrap();
            let text = format!(
                "warren {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{text}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    run(s(&["declare", "queue", "cli-tls"])).await;
    run(s(&["publish", "", "cli-tls", "over tls", "--confirm"])).await;
    let got = run(s(&["get", "cli-tls"])).await;
    assert!(got.contains("over tls"), "{got}");
    let perf = run(s(&[
        "perf",
        "throughput",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--json",
    ]))
    .await;
    let summary: serde_json::Value =
        serde_json::from_str(perf.trim().lines().last().unwrap()).unwrap();
    assert!(summary["received"].as_u64().unwrap() > 0, "{perf}");
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
