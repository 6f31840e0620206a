//! A peer's name belongs to its broker login: a user may claim its own name, or names that
//! start with it and a dot, and sign signals (`reply_to` on `warren.signal`) only with those;
//! administrators and impersonators may use any. So one user cannot take or speak for another
//! user's peer.
mod common;

use common::*;
use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;
use warren_peer::{Peer, PeerConfig, PeerError};

fn config(url: &str, name: &str) -> PeerConfig {
    let mut c = PeerConfig::new(url, name);
    c.udp_bind = vec!["127.0.0.1:0".parse().unwrap()];
    c.mdns = false;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_use_only_names_of_their_login() {
    let broker = warren::Broker::start(warren::Config::ephemeral())
        .await
        .unwrap();
    let access = broker.access().clone();
    for user in ["alice", "bob"] {
        access
            .put_user(user, Some("pw"), None, vec!["management".into()])
            .unwrap();
        access
            .set_permission(warren::access::PermissionRecord {
                user: user.into(),
                vhost: "/".into(),
                configure: ".*".into(),
                write: ".*".into(),
                read: ".*".into(),
            })
            .unwrap();
    }
    let as_user = |u: &str| format!("amqp://{u}:pw@{}/%2f", broker.local_addr());

    // alice may be "alice" and "alice.laptop", never "bob".
    let alice = Peer::start(config(&as_user("alice"), "alice"))
        .await
        .unwrap();
    let laptop = Peer::start(config(&as_user("alice"), "alice.laptop"))
        .await
        .unwrap();
    match Peer::start(config(&as_user("alice"), "bob")).await {
        Err(PeerError::Amqp(e)) => {
            let (code, text) = amqp_error(&e);
            assert_eq!(code, 403, "{text}");
            assert!(
                text.contains("peer name 'bob' does not belong to user 'alice'"),
                "{text}"
            );
        }
        Err(e) => panic!("expected a 403, got {e}"),
        Ok(_) => panic!("alice claimed bob's name"),
    }
    assert!(
        Peer::start(config(&as_user("alice"), "aliceX"))
            .await
            .is_err(),
        "a name that merely starts with the login is not the login's"
    );
    let bob = Peer::start(config(&as_user("bob"), "bob")).await.unwrap();

    // alice cannot send a signal that says it comes from bob.
    let conn = connect_url(&as_user("alice")).await;
    let ch = confirm_channel(&conn).await;
    let forged = ch
        .basic_publish(
            "warren.signal".into(),
            "signal/alice".into(),
            BasicPublishOptions::default(),
            b"",
            BasicProperties::default()
                .with_reply_to("bob".into())
                .with_type("offer".into()),
        )
        .await;
    let err = match forged {
        Ok(c) => c.await.expect_err("a forged reply_to was accepted"),
        Err(e) => e,
    };
    let (code, text) = amqp_error(&err);
    assert_eq!(code, 403);
    assert!(text.contains("peer name 'bob'"), "{text}");
    // A message without a name is refused too.
    let ch = confirm_channel(&conn).await;
    let unsigned = ch
        .basic_publish(
            "warren.signal".into(),
            "signal/alice".into(),
            BasicPublishOptions::default(),
            b"",
            BasicProperties::default(),
        )
        .await;
    let err = match unsigned {
        Ok(c) => c.await.expect_err("a signal without reply_to was accepted"),
        Err(e) => e,
    };
    assert_eq!(amqp_error(&err).0, 403);

    // Real peers of their own names talk as before.
    let link = tokio::time::timeout(std::time::Duration::from_secs(20), laptop.connect("bob"))
        .await
        .expect("connect in time")
        .expect("alice.laptop reaches bob");
    drop(link);
    // An administrator (guest) may use any name, as before.
    let any = Peer::start(config(&broker.url(), "carol")).await.unwrap();
    any.close().await.unwrap();
    for p in [alice, laptop, bob] {
        p.close().await.unwrap();
    }
    drop(conn);
    broker.shutdown().await;
}
