//! Tenancy and access control, RabbitMQ's model: users (passwords hashed as RabbitMQ hashes
//! them, tags, per-user limits), virtual hosts (created, deleted with everything in them,
//! per-vhost limits), and per user and vhost `configure`/`write`/`read` permissions plus topic
//! permissions. [`Access`] owns all of it and keeps it in the store's `access` tree (vhosts
//! in the definitions, as their queues are), so it survives restarts; the config file's users
//! seed it on first start.
//!
//! A connection asks for its [`Grant`](grant::Grant) when it opens, and again whenever
//! [`Access::generation`] moved (one atomic load per check), so a change applies to open
//! connections at once.

pub mod grant;
pub mod rate;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};

use crate::auth::is_loopback;
use crate::config::Config;
use crate::registry::Registry;
use crate::store::disk::{Disk, VhostDef};
use crate::vhost::Vhost;
use grant::{expand, Grant, Pattern, TopicGrant};

/// The tags RabbitMQ's management plugin knows.
pub const TAGS: [&str; 5] = [
    "administrator",
    "monitoring",
    "policymaker",
    "management",
    "impersonator",
];
/// Hashing algorithm of new passwords.
pub const SHA256: &str = "rabbit_password_hashing_sha256";
/// Names of per-user limits.
pub const USER_LIMITS: [&str; 4] = [
    "max-connections",
    "max-channels",
    rate::MAX_PUBLISH_RATE,
    rate::MAX_PUBLISH_BYTES_RATE,
];
/// Names of per-vhost limits.
pub const VHOST_LIMITS: [&str; 4] = [
    "max-connections",
    "max-queues",
    rate::MAX_PUBLISH_RATE,
    rate::MAX_PUBLISH_BYTES_RATE,
];

/// A user, as RabbitMQ exports one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserRecord {
    pub name: String,
    pub password_hash: String,
    pub hashing_algorithm: String,
    pub tags: Vec<String>,
    /// `max-connections`, `max-channels` (negative: unlimited).
    #[serde(default)]
    pub limits: BTreeMap<String, i64>,
}

impl UserRecord {
    /// Has tag `t`.
    pub fn has_tag(&self, t: &str) -> bool {
        self.tags.iter().any(|x| x == t)
    }

    /// A limit that applies (set and not negative).
    pub fn limit(&self, name: &str) -> Option<u64> {
        self.limits.get(name).and_then(|&v| u64::try_from(v).ok())
    }
}

/// A user's permissions in a vhost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PermissionRecord {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// A user's topic permissions on one exchange of a vhost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicPermissionRecord {
    pub user: String,
    pub vhost: String,
    pub exchange: String,
    pub write: String,
    pub read: String,
}

/// Why a change was refused; the management API turns these into RabbitMQ's answers.
#[derive(Debug, Clone, PartialEq)]
pub enum AccessError {
    /// No such user, vhost or entry (404).
    NotFound,
    /// Bad input (400), with RabbitMQ's `reason`.
    BadRequest(serde_json::Value),
    /// The store refused the write (500).
    Store(String),
}

/// Why a login failed (logged; the client only learns that it failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// Unknown user or wrong password.
    InvalidCredentials,
    /// A blank password, which RabbitMQ's internal backend never accepts.
    BlankPassword,
    /// A loopback-only user from another address.
    NotLoopback,
    /// A stored hash Warren cannot check (unknown algorithm, malformed).
    Internal,
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LoginError::InvalidCredentials => "invalid credentials",
            LoginError::BlankPassword => "attempted to log in with a blank password",
            LoginError::NotLoopback => {
                "user can only log in via localhost (see loopback_users in the config file)"
            }
            LoginError::Internal => {
                "authentication failed with internal error (unknown hashing algorithm or malformed hash)"
            }
        })
    }
}

#[derive(Default)]
struct State {
    users: BTreeMap<String, UserRecord>,
    /// By (vhost, user).
    permissions: BTreeMap<(String, String), PermissionRecord>,
    /// By (vhost, user, exchange).
    topics: BTreeMap<(String, String, String), TopicPermissionRecord>,
}

const KEY_SEEDED: &[u8] = b"!seeded";
const KIND_USER: u8 = b'u';
const KIND_PERMISSION: u8 = b'p';
const KIND_TOPIC: u8 = b't';

fn key(kind: u8, parts: &[&str]) -> Vec<u8> {
    let mut k = vec![kind];
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p.as_bytes());
    }
    k
}

/// Users, permissions and vhosts of one broker.
pub struct Access {
    state: RwLock<State>,
    registry: Arc<Registry>,
    disk: Option<Arc<Disk>>,
    /// Moves on every change to users, permissions or vhosts.
    generation: AtomicU64,
    /// Users that may only log in from a loopback address.
    loopback_users: Vec<String>,
    /// Applied to vhosts created from now on.
    max_queues_per_connection: usize,
    /// The publish rate limits' token buckets.
    rates: rate::Buckets,
}

fn lock_read(l: &RwLock<State>) -> RwLockReadGuard<'_, State> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn lock_write(l: &RwLock<State>) -> RwLockWriteGuard<'_, State> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// A new salted hash of `password`, as RabbitMQ makes one (`rabbit_password_hashing_sha256`).
pub fn hash_password(password: &str) -> String {
    use ring::rand::SecureRandom;
    let mut salt = [0u8; 4];
    if ring::rand::SystemRandom::new().fill(&mut salt).is_err() {
        // No system randomness: a salt that still differs per call.
        salt = crate::util::random_token(4)
            .as_bytes()
            .try_into()
            .unwrap_or_default();
    }
    crate::auth::hash_with_salt(&salt, password)
}

/// Tags from the API's `tags`: a comma-separated string (parts trimmed) or a list.
pub fn parse_tags(v: &serde_json::Value) -> Option<Vec<String>> {
    match v {
        serde_json::Value::String(s) => Some(
            s.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        serde_json::Value::Array(a) => a
            .iter()
            .map(|t| t.as_str().map(|s| s.trim().to_owned()))
            .collect(),
        _ => None,
    }
}

/// RabbitMQ's 400 reason for a pattern that does not compile.
fn invalid_regexp(pattern: &str, why: &str) -> AccessError {
    AccessError::BadRequest(serde_json::json!(["invalid_regexp", pattern, why]))
}

fn compile(p: &str) -> Result<Pattern, AccessError> {
    Pattern::compile(p).map_err(|e| invalid_regexp(p, &e))
}

impl Access {
    /// Loads users and permissions from the store, or seeds them on first start: the
    /// config file's users (default `guest`/`guest`) as administrators with every permission
    /// on `/`, which is created if it does not exist.
    pub fn open(
        config: &Config,
        registry: Arc<Registry>,
        disk: Option<Arc<Disk>>,
    ) -> Result<Arc<Access>, String> {
        let mut loopback_users = config.loopback_users.clone();
        for u in &config.users {
            loopback_users.retain(|n| n != &u.name || u.loopback_only);
            if u.loopback_only && !loopback_users.contains(&u.name) {
                loopback_users.push(u.name.clone());
            }
        }
        let access = Arc::new(Access {
            state: RwLock::new(State::default()),
            registry,
            disk,
            generation: AtomicU64::new(1),
            loopback_users,
            max_queues_per_connection: config.max_queues_per_connection,
            rates: rate::Buckets::default(),
        });
        let seeded = match &access.disk {
            Some(disk) => {
                let records = disk.access_records().map_err(|e| e.to_string())?;
                let seeded = records.iter().any(|(k, _)| k == KEY_SEEDED);
                access.load(records)?;
                seeded
            }
            None => false,
        };
        if !seeded {
            access.seed(config)?;
        }
        access.apply_config_limits(&config.limits)?;
        Ok(access)
    }

    /// Sets the config file's vhost and user limits (at every start). An unknown limit name
    /// is an error; a vhost or user that does not exist is skipped with a warning.
    fn apply_config_limits(&self, limits: &crate::config::LimitsConfig) -> Result<(), String> {
        for (vhost, set) in &limits.vhosts {
            for (name, value) in set {
                if !VHOST_LIMITS.contains(&name.as_str()) {
                    return Err(format!(
                        "unknown vhost limit {name:?} in [limits.vhosts.{vhost:?}] (known: {})",
                        VHOST_LIMITS.join(", ")
                    ));
                }
                match self.set_vhost_limit(vhost, name, Some(*value)) {
                    Err(AccessError::NotFound) => {
                        tracing::warn!(
                            vhost,
                            "config file sets limits on a vhost that does not exist"
                        );
                        break;
                    }
                    r => r.map_err(|e| format!("{e:?}"))?,
                }
            }
        }
        for (user, set) in &limits.users {
            for (name, value) in set {
                if !USER_LIMITS.contains(&name.as_str()) {
                    return Err(format!(
                        "unknown user limit {name:?} in [limits.users.{user:?}] (known: {})",
                        USER_LIMITS.join(", ")
                    ));
                }
                if self.user(user).is_none() {
                    tracing::warn!(
                        user,
                        "config file sets limits on a user that does not exist"
                    );
                    break;
                }
                self.set_user_limit(user, name, Some(*value))
                    .map_err(|e| format!("{e:?}"))?;
            }
        }
        Ok(())
    }

    fn load(&self, records: Vec<crate::store::kv::Entry>) -> Result<(), String> {
        let mut s = lock_write(&self.state);
        for (k, v) in records {
            let bad = |e: serde_json::Error| {
                format!(
                    "unreadable access record {:?}: {e}",
                    String::from_utf8_lossy(&k)
                )
            };
            match k.first() {
                Some(&KIND_USER) => {
                    let u: UserRecord = serde_json::from_slice(&v).map_err(bad)?;
                    s.users.insert(u.name.clone(), u);
                }
                Some(&KIND_PERMISSION) => {
                    let p: PermissionRecord = serde_json::from_slice(&v).map_err(bad)?;
                    s.permissions.insert((p.vhost.clone(), p.user.clone()), p);
                }
                Some(&KIND_TOPIC) => {
                    let t: TopicPermissionRecord = serde_json::from_slice(&v).map_err(bad)?;
                    s.topics
                        .insert((t.vhost.clone(), t.user.clone(), t.exchange.clone()), t);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn seed(&self, config: &Config) -> Result<(), String> {
        match self.registry.vhost("/") {
            // Recorded, so that it stays when it has no queue or exchange of its own.
            Some(v) => v.set_def(v.def()).map_err(|e| e.to_string())?,
            None => {
                self.create_vhost("/", VhostDef::default())
                    .map_err(|e| format!("{e:?}"))?;
            }
        }
        for u in config.effective_users() {
            let tags = u
                .tags
                .clone()
                .unwrap_or_else(|| vec!["administrator".into()]);
            let record = UserRecord {
                password_hash: hash_password(&u.password),
                hashing_algorithm: SHA256.into(),
                name: u.name.clone(),
                tags,
                limits: BTreeMap::new(),
            };
            self.save_user(record).map_err(|e| format!("{e:?}"))?;
            self.save_permission(PermissionRecord {
                user: u.name.clone(),
                vhost: "/".into(),
                configure: ".*".into(),
                write: ".*".into(),
                read: ".*".into(),
            })
            .map_err(|e| format!("{e:?}"))?;
        }
        self.persist(KEY_SEEDED.to_vec(), Some(b"1".to_vec()))
            .map_err(|e| format!("{e:?}"))
    }

    /// Writes (or removes, `None`) one record and waits until it is on disk.
    fn persist(&self, key: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), AccessError> {
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        disk.put_access(&key, value.as_deref())
            .and_then(|()| disk.flush())
            .map_err(|e| AccessError::Store(e.to_string()))
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Moves whenever users, permissions or vhosts change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    // ---- logins ----

    /// Checks a password login from `peer`.
    pub fn login(
        &self,
        user: &str,
        password: &str,
        peer: IpAddr,
    ) -> Result<UserRecord, LoginError> {
        let record = lock_read(&self.state).users.get(user).cloned();
        let Some(record) = record else {
            // As long as a known user's check, so the time taken does not say which names exist.
            let _ = crate::auth::verify_rabbit_hash(
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                SHA256,
                password,
            );
            return Err(LoginError::InvalidCredentials);
        };
        if password.is_empty() {
            return Err(LoginError::BlankPassword);
        }
        if record.password_hash.is_empty() {
            return Err(LoginError::InvalidCredentials);
        }
        match crate::auth::verify_rabbit_hash(
            &record.password_hash,
            &record.hashing_algorithm,
            password,
        ) {
            Some(true) => {}
            Some(false) => return Err(LoginError::InvalidCredentials),
            None => return Err(LoginError::Internal),
        }
        if self.loopback_users.iter().any(|n| n == user) && !is_loopback(peer) {
            return Err(LoginError::NotLoopback);
        }
        Ok(record)
    }

    /// Checks a SASL EXTERNAL login: the user named by the client certificate's common name
    /// must exist (its password is not asked for), as RabbitMQ's `rabbitmq_auth_mechanism_ssl`.
    pub fn login_external(&self, user: &str, peer: IpAddr) -> Result<UserRecord, LoginError> {
        let record = self.user(user).ok_or(LoginError::InvalidCredentials)?;
        if self.loopback_users.iter().any(|n| n == user) && !is_loopback(peer) {
            return Err(LoginError::NotLoopback);
        }
        Ok(record)
    }

    // ---- users ----

    /// One user.
    pub fn user(&self, name: &str) -> Option<UserRecord> {
        lock_read(&self.state).users.get(name).cloned()
    }

    /// Every user, by name.
    pub fn users(&self) -> Vec<UserRecord> {
        lock_read(&self.state).users.values().cloned().collect()
    }

    fn save_user(&self, u: UserRecord) -> Result<(), AccessError> {
        let v = serde_json::to_vec(&u).map_err(|e| AccessError::Store(e.to_string()))?;
        self.persist(key(KIND_USER, &[&u.name]), Some(v))?;
        lock_write(&self.state).users.insert(u.name.clone(), u);
        self.changed();
        Ok(())
    }

    /// Creates or updates a user (RabbitMQ's `PUT /api/users/{name}`). `password` and
    /// `hash` (with its algorithm) are exclusive; with neither, a new user gets no password
    /// (it cannot log in) and an existing one keeps its own. Returns whether it is new.
    pub fn put_user(
        &self,
        name: &str,
        password: Option<&str>,
        hash: Option<(&str, &str)>,
        tags: Vec<String>,
    ) -> Result<bool, AccessError> {
        if password.is_some() && hash.is_some() {
            return Err(AccessError::BadRequest(
                "both_password_and_password_hash_are_provided".into(),
            ));
        }
        if let Some((h, _)) = hash {
            if !h.is_empty() && crate::protocol::json::from_base64(h).is_none() {
                return Err(AccessError::BadRequest(serde_json::json!([
                    "not_base64",
                    h
                ])));
            }
        }
        let old = self.user(name);
        let created = old.is_none();
        let (password_hash, hashing_algorithm) = match (password, hash, &old) {
            (Some(p), _, _) => (hash_password(p), SHA256.to_owned()),
            (None, Some((h, alg)), _) => (
                h.to_owned(),
                if alg.is_empty() { SHA256 } else { alg }.to_owned(),
            ),
            (None, None, Some(o)) => (o.password_hash.clone(), o.hashing_algorithm.clone()),
            (None, None, None) => (String::new(), SHA256.to_owned()),
        };
        self.save_user(UserRecord {
            name: name.to_owned(),
            password_hash,
            hashing_algorithm,
            tags,
            limits: old.map(|o| o.limits).unwrap_or_default(),
        })?;
        Ok(created)
    }

    /// Deletes a user, its permissions and topic permissions, and closes its connections
    /// (320, as RabbitMQ). `false` if there was no such user.
    pub fn delete_user(&self, name: &str) -> Result<bool, AccessError> {
        if self.user(name).is_none() {
            return Ok(false);
        }
        let (perms, topics) = {
            let s = lock_read(&self.state);
            (
                s.permissions
                    .values()
                    .filter(|p| p.user == name)
                    .map(|p| p.vhost.clone())
                    .collect::<Vec<_>>(),
                s.topics
                    .values()
                    .filter(|t| t.user == name)
                    .map(|t| (t.vhost.clone(), t.exchange.clone()))
                    .collect::<Vec<_>>(),
            )
        };
        for v in perms {
            self.clear_permission(&v, name)?;
        }
        for (v, x) in topics {
            self.persist(key(KIND_TOPIC, &[&v, name, &x]), None)?;
            lock_write(&self.state)
                .topics
                .remove(&(v, name.to_owned(), x));
        }
        self.persist(key(KIND_USER, &[name]), None)?;
        lock_write(&self.state).users.remove(name);
        self.changed();
        self.rates.get(rate::Scope::User, name, None, None);
        for c in self.registry.connections() {
            if c.user == name {
                c.force_close(&format!("user '{name}' is deleted"));
            }
        }
        Ok(true)
    }

    /// Sets (`Some`) or clears (`None`) a per-user limit.
    pub fn set_user_limit(
        &self,
        user: &str,
        name: &str,
        value: Option<i64>,
    ) -> Result<(), AccessError> {
        let Some(mut u) = self.user(user) else {
            return Err(AccessError::BadRequest(serde_json::json!([
                "no_such_user",
                user
            ])));
        };
        match value {
            Some(v) => u.limits.insert(name.to_owned(), v),
            None => u.limits.remove(name),
        };
        let rates = (
            u.limit(rate::MAX_PUBLISH_RATE),
            u.limit(rate::MAX_PUBLISH_BYTES_RATE),
        );
        self.save_user(u)?;
        self.rates.get(rate::Scope::User, user, rates.0, rates.1);
        Ok(())
    }

    // ---- permissions ----

    /// A user's permissions in a vhost.
    pub fn permission(&self, vhost: &str, user: &str) -> Option<PermissionRecord> {
        lock_read(&self.state)
            .permissions
            .get(&(vhost.to_owned(), user.to_owned()))
            .cloned()
    }

    /// Every permission entry, by vhost then user.
    pub fn permissions(&self) -> Vec<PermissionRecord> {
        lock_read(&self.state)
            .permissions
            .values()
            .cloned()
            .collect()
    }

    fn save_permission(&self, p: PermissionRecord) -> Result<(), AccessError> {
        let v = serde_json::to_vec(&p).map_err(|e| AccessError::Store(e.to_string()))?;
        self.persist(key(KIND_PERMISSION, &[&p.vhost, &p.user]), Some(v))?;
        lock_write(&self.state)
            .permissions
            .insert((p.vhost.clone(), p.user.clone()), p);
        self.changed();
        Ok(())
    }

    /// Sets a user's permissions in a vhost; returns whether the entry is new.
    pub fn set_permission(&self, p: PermissionRecord) -> Result<bool, AccessError> {
        for pattern in [&p.configure, &p.write, &p.read] {
            compile(pattern)?;
        }
        if self.user(&p.user).is_none() || self.registry.vhost(&p.vhost).is_none() {
            return Err(AccessError::BadRequest("vhost_or_user_not_found".into()));
        }
        let created = self.permission(&p.vhost, &p.user).is_none();
        self.save_permission(p)?;
        Ok(created)
    }

    /// Removes a user's permissions in a vhost; whether there were any.
    pub fn clear_permission(&self, vhost: &str, user: &str) -> Result<bool, AccessError> {
        if self.permission(vhost, user).is_none() {
            return Ok(false);
        }
        self.persist(key(KIND_PERMISSION, &[vhost, user]), None)?;
        lock_write(&self.state)
            .permissions
            .remove(&(vhost.to_owned(), user.to_owned()));
        self.changed();
        Ok(true)
    }

    /// Every topic permission entry.
    pub fn topic_permissions(&self) -> Vec<TopicPermissionRecord> {
        lock_read(&self.state).topics.values().cloned().collect()
    }

    /// Sets a user's topic permissions on one exchange; returns whether the user had none in
    /// that vhost before (RabbitMQ's 201 against 204).
    pub fn set_topic_permission(&self, t: TopicPermissionRecord) -> Result<bool, AccessError> {
        for pattern in [&t.write, &t.read] {
            compile(pattern)?;
        }
        if self.user(&t.user).is_none() || self.registry.vhost(&t.vhost).is_none() {
            return Err(AccessError::BadRequest("vhost_or_user_not_found".into()));
        }
        let created = !self
            .topic_permissions()
            .iter()
            .any(|x| x.vhost == t.vhost && x.user == t.user);
        let v = serde_json::to_vec(&t).map_err(|e| AccessError::Store(e.to_string()))?;
        self.persist(key(KIND_TOPIC, &[&t.vhost, &t.user, &t.exchange]), Some(v))?;
        lock_write(&self.state)
            .topics
            .insert((t.vhost.clone(), t.user.clone(), t.exchange.clone()), t);
        self.changed();
        Ok(created)
    }

    /// Removes every topic permission of a user in a vhost (or only the one on `exchange`);
    /// whether there were any.
    pub fn clear_topic_permissions(
        &self,
        vhost: &str,
        user: &str,
        exchange: Option<&str>,
    ) -> Result<bool, AccessError> {
        let gone: Vec<String> = self
            .topic_permissions()
            .into_iter()
            .filter(|t| t.vhost == vhost && t.user == user)
            .filter(|t| exchange.is_none_or(|x| x == t.exchange))
            .map(|t| t.exchange)
            .collect();
        for x in &gone {
            self.persist(key(KIND_TOPIC, &[vhost, user, x]), None)?;
            lock_write(&self.state)
                .topics
                .remove(&(vhost.to_owned(), user.to_owned(), x.clone()));
        }
        self.changed();
        Ok(!gone.is_empty())
    }

    /// What `user` may do in `vhost`, compiled; `None` when it has no permissions there.
    /// `client_id` fills `{client_id}` in topic permissions.
    pub fn grant(&self, user: &str, vhost: &str, client_id: Option<&str>) -> Option<Grant> {
        let s = lock_read(&self.state);
        let p = s.permissions.get(&(vhost.to_owned(), user.to_owned()))?;
        // Stored patterns compiled when they were set; one that no longer compiles denies.
        let c = |p: &str| Pattern::compile(p).unwrap_or(Pattern::Never);
        let mut topics = HashMap::new();
        for t in s
            .topics
            .range((vhost.to_owned(), user.to_owned(), String::new())..)
            .take_while(|((v, u, _), _)| v == vhost && u == user)
            .map(|(_, t)| t)
        {
            let e = |p: &str| c(&expand(p, user, vhost, client_id));
            topics.insert(
                t.exchange.clone(),
                TopicGrant {
                    write: e(&t.write),
                    read: e(&t.read),
                },
            );
        }
        Some(Grant {
            user: user.to_owned(),
            vhost: vhost.to_owned(),
            configure: c(&p.configure),
            write: c(&p.write),
            read: c(&p.read),
            topics,
        })
    }

    // ---- vhosts ----

    fn create_vhost(&self, name: &str, def: VhostDef) -> Result<Arc<Vhost>, AccessError> {
        let vhost = Vhost::new(name, self.disk.clone());
        vhost.set_max_queues_per_connection(self.max_queues_per_connection);
        vhost
            .set_def(def)
            .map_err(|e| AccessError::Store(e.to_string()))?;
        self.registry.add_vhost(vhost.clone());
        self.changed();
        Ok(vhost)
    }

    /// Creates a vhost or replaces its description and tags, and its default queue type if
    /// given (`PUT /api/vhosts/{name}`). A vhost created by `creator` gives it every permission
    /// there, as RabbitMQ's management API does. Returns whether it is new.
    pub fn put_vhost(
        &self,
        name: &str,
        description: Option<String>,
        tags: Option<Vec<String>>,
        default_queue_type: Option<String>,
        creator: Option<&str>,
    ) -> Result<bool, AccessError> {
        if let Some(t) = &default_queue_type {
            if !["classic", "quorum", "stream"].contains(&t.as_str()) {
                return Err(AccessError::BadRequest("invalid_queue_type".into()));
            }
        }
        if name.is_empty() || name.len() > 255 {
            return Err(AccessError::BadRequest(
                "vhost names are 1 to 255 bytes long".into(),
            ));
        }
        if let Some(v) = self.registry.vhost(name) {
            // As RabbitMQ: a PUT replaces the description and tags (absent: none).
            let mut def = v.def();
            def.description = description.unwrap_or_default();
            def.tags = tags.unwrap_or_default();
            if default_queue_type.is_some() {
                def.default_queue_type = default_queue_type;
            }
            v.set_def(def)
                .map_err(|e| AccessError::Store(e.to_string()))?;
            return Ok(false);
        }
        self.create_vhost(
            name,
            VhostDef {
                description: description.unwrap_or_default(),
                tags: tags.unwrap_or_default(),
                default_queue_type,
                limits: BTreeMap::new(),
            },
        )?;
        if let Some(user) = creator.filter(|u| self.user(u).is_some()) {
            self.save_permission(PermissionRecord {
                user: user.to_owned(),
                vhost: name.to_owned(),
                configure: ".*".into(),
                write: ".*".into(),
                read: ".*".into(),
            })?;
        }
        Ok(true)
    }

    /// Deletes a vhost with every queue (and its messages), exchange and binding in it,
    /// closes its connections (320 CONNECTION_FORCED, as RabbitMQ) and drops the permissions
    /// on it. `false` if there was no such vhost.
    pub async fn delete_vhost(&self, name: &str) -> Result<bool, AccessError> {
        let Some(vhost) = self.registry.remove_vhost(name) else {
            return Ok(false);
        };
        self.changed();
        for c in self.registry.connections() {
            if &*c.vhost == name {
                c.force_close(&format!("vhost '{name}' is deleted"));
            }
        }
        vhost
            .destroy()
            .await
            .map_err(|e| AccessError::Store(e.text))?;
        let users: Vec<String> = self
            .permissions()
            .into_iter()
            .filter(|p| p.vhost == name)
            .map(|p| p.user)
            .collect();
        for u in users {
            self.clear_permission(name, &u)?;
            self.clear_topic_permissions(name, &u, None)?;
        }
        self.rates.get(rate::Scope::Vhost, name, None, None);
        Ok(true)
    }

    /// Sets (`Some`) or clears (`None`) a vhost limit.
    pub fn set_vhost_limit(
        &self,
        vhost: &str,
        name: &str,
        value: Option<i64>,
    ) -> Result<(), AccessError> {
        let v = self.registry.vhost(vhost).ok_or(AccessError::NotFound)?;
        let mut def = v.def();
        match value {
            Some(n) => def.limits.insert(name.to_owned(), n),
            None => def.limits.remove(name),
        };
        v.set_def(def)
            .map_err(|e| AccessError::Store(e.to_string()))?;
        self.changed();
        self.rates.get(
            rate::Scope::Vhost,
            vhost,
            v.limit(rate::MAX_PUBLISH_RATE),
            v.limit(rate::MAX_PUBLISH_BYTES_RATE),
        );
        Ok(())
    }

    // ---- publish rate limits ----

    /// The publish rate limits a connection of `user` to `vhost` is held to: its vhost's and
    /// its user's buckets, those that exist (shared by all their connections).
    pub fn publish_limits(&self, vhost: &Vhost, user: &str) -> Vec<Arc<rate::PublishLimits>> {
        let u = self.user(user);
        let user_limit = |n| u.as_ref().and_then(|u| u.limit(n));
        [
            self.rates.get(
                rate::Scope::Vhost,
                &vhost.name,
                vhost.limit(rate::MAX_PUBLISH_RATE),
                vhost.limit(rate::MAX_PUBLISH_BYTES_RATE),
            ),
            self.rates.get(
                rate::Scope::User,
                user,
                user_limit(rate::MAX_PUBLISH_RATE),
                user_limit(rate::MAX_PUBLISH_BYTES_RATE),
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Every publish rate limit in use, for the metrics.
    pub fn rate_limits(&self) -> Vec<(rate::Scope, String, Arc<rate::PublishLimits>)> {
        self.rates.all()
    }

    // ---- limits at connection time ----

    /// Whether `user` may open one more connection to `vhost` (RabbitMQ's 530 texts).
    pub fn check_connection_limits(&self, user: &UserRecord, vhost: &Vhost) -> Result<(), String> {
        let conns = self.registry.connections();
        if let Some(max) = vhost.limit("max-connections") {
            let n = conns.iter().filter(|c| *c.vhost == *vhost.name).count() as u64;
            if n >= max {
                return Err(format!(
                    "access to vhost '{}' refused for user '{}': connection limit ({max}) is reached",
                    vhost.name, user.name
                ));
            }
        }
        if let Some(max) = user.limit("max-connections") {
            let n = conns.iter().filter(|c| c.user == user.name).count() as u64;
            if n >= max {
                return Err(format!(
                    "connection refused for user '{}': user connection limit ({max}) is reached",
                    user.name
                ));
            }
        }
        Ok(())
    }

    /// Whether `user` may open one more channel (its `max-channels` over every connection).
    pub fn check_channel_limit(&self, user: &str) -> Result<(), String> {
        let Some(max) = self.user(user).and_then(|u| u.limit("max-channels")) else {
            return Ok(());
        };
        let n: usize = self
            .registry
            .connections()
            .iter()
            .filter(|c| c.user == user)
            .map(|c| c.channels().len())
            .sum();
        if n as u64 >= max {
            return Err(format!(
                "number of channels opened for user '{user}' has reached the maximum allowed user limit of ({max})"
            ));
        }
        Ok(())
    }
}
