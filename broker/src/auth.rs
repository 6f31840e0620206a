//! Authentication: SASL PLAIN and AMQPLAIN against the broker's users ([`Access`]), and
//! RabbitMQ's password hashes.

use std::net::IpAddr;

use amq_protocol::types::{parsing::parse_field_table, AMQPValue};

use crate::access::{Access, UserRecord};

/// The mechanisms offered in connection.start.
pub const MECHANISMS: &str = "PLAIN AMQPLAIN";
/// Offered to a TLS client that sent a verified certificate: EXTERNAL logs in as the user
/// named by its subject's common name (RabbitMQ's `rabbitmq_auth_mechanism_ssl`).
pub const MECHANISMS_WITH_EXTERNAL: &str = "PLAIN AMQPLAIN EXTERNAL";

/// Why a login failed.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// The client chose a mechanism Warren does not offer.
    UnknownMechanism(String),
    /// The response did not parse, or the user or password is wrong, or the user may not
    /// log in from that address.
    Refused(String),
}

/// Extracts (user, password) from a SASL response.
fn credentials(mechanism: &str, response: &[u8]) -> Result<(String, String), AuthError> {
    let refused = || AuthError::Refused(mechanism.to_owned());
    match mechanism {
        "PLAIN" => {
            let mut parts = response.split(|b| *b == 0);
            let (_authzid, user, pass) = (parts.next(), parts.next(), parts.next());
            match (user, pass, parts.next()) {
                (Some(u), Some(p), None) => Ok((
                    String::from_utf8_lossy(u).into_owned(),
                    String::from_utf8_lossy(p).into_owned(),
                )),
                _ => Err(refused()),
            }
        }
        "AMQPLAIN" => {
            // The response is a field table without its length prefix. Its nesting is bounded
            // before amq-protocol's parser recurses into it.
            crate::protocol::nesting::check_table_body(response).map_err(|_| refused())?;
            let mut buf = (response.len() as u32).to_be_bytes().to_vec();
            buf.extend_from_slice(response);
            let (_, table) = parse_field_table(&buf[..]).map_err(|_| refused())?;
            let get = |k: &str| match table.inner().get(k) {
                Some(AMQPValue::LongString(s)) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
                _ => None,
            };
            match (get("LOGIN"), get("PASSWORD")) {
                (Some(u), Some(p)) => Ok((u, p)),
                _ => Err(refused()),
            }
        }
        other => Err(AuthError::UnknownMechanism(other.to_owned())),
    }
}

/// A password as RabbitMQ stores it (`rabbit_password_hashing_sha256`): base64 of a 4-byte
/// salt followed by SHA-256 of the salt and the password. The salt is derived from the user's
/// name, so a listing shows the same hash every time.
pub fn rabbit_password_hash(name: &str, password: &str) -> String {
    let salt = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    hash_with_salt(&salt.as_ref()[..4], password)
}

pub(crate) fn hash_with_salt(salt: &[u8], password: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(salt);
    ctx.update(password.as_bytes());
    let mut out = salt.to_vec();
    out.extend_from_slice(ctx.finish().as_ref());
    crate::protocol::json::base64(&out)
}

/// Whether `hash`, a password hash as RabbitMQ exports it (base64 of a 4-byte salt followed
/// by the digest of salt and password), is the hash of `password` under `algorithm`
/// (`rabbit_password_hashing_sha256`, the default, or `_sha512`). `None`: an algorithm Warren
/// does not know, or a hash that is not base64 of the right length.
pub fn verify_rabbit_hash(hash: &str, algorithm: &str, password: &str) -> Option<bool> {
    let digest = match algorithm {
        "rabbit_password_hashing_sha256" | "" => &ring::digest::SHA256,
        "rabbit_password_hashing_sha512" => &ring::digest::SHA512,
        _ => return None,
    };
    let raw = crate::protocol::json::from_base64(hash)?;
    if raw.len() != 4 + digest.output_len() {
        return None;
    }
    let (salt, expected) = raw.split_at(4);
    let mut ctx = ring::digest::Context::new(digest);
    ctx.update(salt);
    ctx.update(password.as_bytes());
    // Compared in full whatever differs, so the time taken says nothing about where.
    let diff = ctx
        .finish()
        .as_ref()
        .iter()
        .zip(expected)
        .fold(0u8, |d, (a, b)| d | (a ^ b));
    Some(diff == 0)
}

/// Checks a login; returns the user.
pub fn authenticate(
    access: &Access,
    mechanism: &str,
    response: &[u8],
    peer: IpAddr,
    identity: Option<&str>,
) -> Result<UserRecord, AuthError> {
    if mechanism == "EXTERNAL" {
        let Some(name) = identity else {
            // Not offered without a client certificate.
            return Err(AuthError::UnknownMechanism(mechanism.to_owned()));
        };
        return access.login_external(name, peer).map_err(|why| {
            tracing::Span::current().record("user", name);
            tracing::warn!("EXTERNAL login refused: user '{name}' - {why}");
            AuthError::Refused(mechanism.to_owned())
        });
    }
    let (user, pass) = credentials(mechanism, response)?;
    match access.login(&user, &pass, peer) {
        Ok(u) => Ok(u),
        Err(why) => {
            // RabbitMQ's log line: who tried and why, never the password.
            tracing::Span::current().record("user", user.as_str());
            tracing::warn!("{mechanism} login refused: user '{user}' - {why}");
            Err(AuthError::Refused(mechanism.to_owned()))
        }
    }
}

/// Loopback, counting IPv4 addresses a dual-stack (`[::]`) listener sees as IPv4-mapped IPv6
/// (`::ffff:127.0.0.1`).
pub fn is_loopback(peer: IpAddr) -> bool {
    peer.to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmq_hashes_verify_with_their_salt() {
        let h = rabbit_password_hash("guest", "guest");
        assert_eq!(
            verify_rabbit_hash(&h, "rabbit_password_hashing_sha256", "guest"),
            Some(true)
        );
        assert_eq!(
            verify_rabbit_hash(&h, "rabbit_password_hashing_sha256", "nope"),
            Some(false)
        );
        assert_eq!(
            verify_rabbit_hash(&h, "rabbit_password_hashing_sha512", "guest"),
            None
        );
        assert_eq!(
            verify_rabbit_hash("abc", "rabbit_password_hashing_sha256", "guest"),
            None
        );
        assert_eq!(
            verify_rabbit_hash(&h, "rabbit_password_hashing_md5", "guest"),
            None
        );
    }

    #[test]
    fn password_hashes_are_rabbitmqs_sha256_scheme() {
        // guest's hash as RabbitMQ 3.10.8 listed it in /api/users: the same salt gives the
        // same hash here.
        let rabbit = "YvTyMaXWaM5XmxrZeEFxSA6lTnUrdy0Bw1UafM+kiawpkjfr";
        let salt = crate::protocol::json::from_base64(rabbit).unwrap();
        assert_eq!(hash_with_salt(&salt[..4], "guest"), rabbit);
        assert_ne!(hash_with_salt(&salt[..4], "guesT"), rabbit);
        assert_eq!(
            rabbit_password_hash("guest", "guest"),
            rabbit_password_hash("guest", "guest")
        );
    }
    use amq_protocol::auth::{Credentials, SASLMechanism};

    fn access(users: Vec<crate::config::UserConfig>) -> std::sync::Arc<Access> {
        let config = crate::config::Config {
            users,
            ..crate::config::Config::ephemeral()
        };
        Access::open(&config, crate::registry::Registry::new(), None).unwrap()
    }

    fn guest() -> std::sync::Arc<Access> {
        access(Vec::new())
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn name(r: Result<UserRecord, AuthError>) -> Result<String, AuthError> {
        r.map(|u| u.name)
    }

    #[test]
    fn plain_and_amqplain_accept_guest() {
        let c = Credentials::default();
        for (mech_name, mech) in [
            ("PLAIN", SASLMechanism::Plain),
            ("AMQPLAIN", SASLMechanism::AMQPlain),
        ] {
            let resp = c.sasl_auth_string(mech);
            assert_eq!(
                name(authenticate(
                    &guest(),
                    mech_name,
                    resp.as_bytes(),
                    LOCAL,
                    None
                )),
                Ok("guest".into())
            );
        }
    }

    #[test]
    fn wrong_password_is_refused() {
        assert!(authenticate(&guest(), "PLAIN", b"\0guest\0nope", LOCAL, None).is_err());
    }

    #[test]
    fn guest_is_refused_from_a_remote_address() {
        let remote = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
        assert!(authenticate(&guest(), "PLAIN", b"\0guest\0guest", remote, None).is_err());
    }

    #[test]
    fn loopback_only_false_admits_a_remote_address() {
        let users = access(vec![crate::config::UserConfig {
            name: "app".into(),
            password: "secret".into(),
            loopback_only: false,
            tags: None,
        }]);
        let remote = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(
            name(authenticate(
                &users,
                "PLAIN",
                b"\0app\0secret",
                remote,
                None
            )),
            Ok("app".into())
        );
        assert!(authenticate(&users, "PLAIN", b"\0app\0wrong", remote, None).is_err());
    }

    #[test]
    fn mapped_ipv4_loopback_is_loopback() {
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(authenticate(&guest(), "PLAIN", b"\0guest\0guest", mapped, None).is_ok());
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(!is_loopback("::ffff:192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn unknown_mechanism_is_named() {
        assert_eq!(
            name(authenticate(&guest(), "EXTERNAL", b"", LOCAL, None)),
            Err(AuthError::UnknownMechanism("EXTERNAL".into()))
        );
    }
}
