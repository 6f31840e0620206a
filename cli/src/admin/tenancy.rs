//! `warren vhost|user|permissions|limits`: tenancy administration through the management
//! HTTP API (RabbitMQ's routes, so the same commands administer a RabbitMQ node), in the
//! spirit of `rabbitmqctl add_vhost`, `add_user`, `set_permissions` and `set_vhost_limits`.

use hyper::Method;
use serde_json::{json, Value};

use super::http::{segment, Api, HttpArgs};
use super::render::{Format, Table};
use crate::client::Failure;

fn tags_value(tags: &[String]) -> String {
    tags.join(",")
}

async fn put(api: &Api, path: &str, body: Value) -> anyhow::Result<()> {
    api.call(Method::PUT, path, Some(body.to_string().into_bytes()), &[])
        .await?;
    Ok(())
}

async fn delete(api: &Api, path: &str) -> anyhow::Result<()> {
    api.call(Method::DELETE, path, None, &[]).await?;
    Ok(())
}

pub(super) fn print_list(
    items: &[Value],
    columns: &[&str],
    format: Option<Format>,
) -> anyhow::Result<()> {
    let format = format.unwrap_or_else(Format::for_stdout);
    let mut out = std::io::stdout().lock();
    let r = match format {
        Format::Json => serde_json::to_writer_pretty(&mut out, items)
            .map_err(std::io::Error::from)
            .and_then(|()| std::io::Write::write_all(&mut out, b"\n")),
        f => {
            Table::new(columns.iter().map(|c| (*c).to_owned()).collect(), items).write(f, &mut out)
        }
    };
    super::printed(r)
}

#[derive(clap::Subcommand, Debug)]
#[command(after_help = "\
Examples:
  warren vhost add orders --description 'order processing' --tags prod
  warren vhost list
  warren vhost delete orders     # with every queue, exchange and binding in it")]
pub enum VhostCommand {
    /// Create a virtual host (or update its description, tags and default queue type). The
    /// user of --http-url gets every permission in it, as RabbitMQ's API gives.
    Add {
        #[command(flatten)]
        http: HttpArgs,
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// Comma-separated.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// classic, quorum or stream.
        #[arg(long)]
        default_queue_type: Option<String>,
    },
    /// Delete a virtual host and everything in it; its connections are closed.
    Delete {
        #[command(flatten)]
        http: HttpArgs,
        name: String,
    },
    /// List virtual hosts.
    List {
        #[command(flatten)]
        http: HttpArgs,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
}

pub async fn vhost(cmd: VhostCommand) -> anyhow::Result<()> {
    match cmd {
        VhostCommand::Add {
            http,
            name,
            description,
            tags,
            default_queue_type,
        } => {
            let api = Api::new(&http)?;
            let mut body = json!({});
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            if !tags.is_empty() {
                body["tags"] = json!(tags_value(&tags));
            }
            if let Some(t) = default_queue_type {
                body["default_queue_type"] = json!(t);
                body["defaultqueuetype"] = json!(t);
            }
            put(&api, &format!("/api/vhosts/{}", segment(&name)), body).await?;
            println!("vhost '{name}' added");
        }
        VhostCommand::Delete { http, name } => {
            let api = Api::new(&http)?;
            delete(&api, &format!("/api/vhosts/{}", segment(&name))).await?;
            println!("vhost '{name}' deleted");
        }
        VhostCommand::List { http, format } => {
            let api = Api::new(&http)?;
            let items = as_list(api.get("/api/vhosts").await?);
            print_list(&items, &["name", "description", "tags", "messages"], format)?;
        }
    }
    Ok(())
}

fn as_list(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("items") {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

#[derive(clap::Subcommand, Debug)]
#[command(after_help = "\
Examples:
  warren user add app s3cret --tags management
  warren user passwd app n3w-s3cret
  warren user tags app monitoring,management
  warren user list
  warren user delete app          # its connections are closed")]
pub enum UserCommand {
    /// Create a user (its password hashed as RabbitMQ hashes them), or replace its password
    /// and tags.
    Add {
        #[command(flatten)]
        http: HttpArgs,
        name: String,
        password: String,
        /// administrator, monitoring, policymaker, management, impersonator (comma-separated).
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// Delete a user and its permissions; its connections are closed.
    Delete {
        #[command(flatten)]
        http: HttpArgs,
        name: String,
    },
    /// Change a user's password (its tags stay).
    Passwd {
        #[command(flatten)]
        http: HttpArgs,
        name: String,
        password: String,
    },
    /// Set a user's tags (its password stays); none clears them.
    Tags {
        #[command(flatten)]
        http: HttpArgs,
        name: String,
        #[arg(value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// List users.
    List {
        #[command(flatten)]
        http: HttpArgs,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
}

pub async fn user(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            http,
            name,
            password,
            tags,
        } => {
            let api = Api::new(&http)?;
            let body = json!({"password": password, "tags": tags_value(&tags)});
            put(&api, &format!("/api/users/{}", segment(&name)), body).await?;
            println!("user '{name}' added");
        }
        UserCommand::Delete { http, name } => {
            let api = Api::new(&http)?;
            delete(&api, &format!("/api/users/{}", segment(&name))).await?;
            println!("user '{name}' deleted");
        }
        UserCommand::Passwd {
            http,
            name,
            password,
        } => {
            let api = Api::new(&http)?;
            let path = format!("/api/users/{}", segment(&name));
            let current = api.get(&path).await?;
            let body = json!({"password": password, "tags": current["tags"].clone()});
            put(&api, &path, body).await?;
            println!("password of user '{name}' changed");
        }
        UserCommand::Tags { http, name, tags } => {
            let api = Api::new(&http)?;
            let path = format!("/api/users/{}", segment(&name));
            let current = api.get(&path).await?;
            // The stored hash goes back as it is (RabbitMQ's API would otherwise wipe it).
            let body = json!({
                "password_hash": current["password_hash"].clone(),
                "hashing_algorithm": current["hashing_algorithm"].clone(),
                "tags": tags_value(&tags),
            });
            put(&api, &path, body).await?;
            println!("tags of user '{name}' set to [{}]", tags.join(", "));
        }
        UserCommand::List { http, format } => {
            let api = Api::new(&http)?;
            let items = as_list(api.get("/api/users").await?);
            print_list(&items, &["name", "tags"], format)?;
        }
    }
    Ok(())
}

#[derive(clap::Subcommand, Debug)]
#[command(after_help = "\
Examples:
  warren permissions set app --vhost orders '^app-' '.*' '.*'   # configure, write, read
  warren permissions set-topic app --vhost orders amq.topic '^{username}\\.' '.*'
  warren permissions list --vhost orders
  warren permissions clear app --vhost orders

Patterns are regular expressions matched anywhere in the name; an empty pattern denies.")]
pub enum PermissionsCommand {
    /// Set a user's configure, write and read patterns in a vhost.
    Set {
        #[command(flatten)]
        http: HttpArgs,
        user: String,
        #[arg(long, default_value = "/")]
        vhost: String,
        configure: String,
        write: String,
        read: String,
    },
    /// Remove a user's permissions in a vhost.
    Clear {
        #[command(flatten)]
        http: HttpArgs,
        user: String,
        #[arg(long, default_value = "/")]
        vhost: String,
    },
    /// Set a user's topic permissions on one topic exchange (write and read patterns on
    /// routing keys; {username}, {vhost} and {client_id} are expanded).
    SetTopic {
        #[command(flatten)]
        http: HttpArgs,
        user: String,
        #[arg(long, default_value = "/")]
        vhost: String,
        exchange: String,
        write: String,
        read: String,
    },
    /// Remove a user's topic permissions in a vhost.
    ClearTopic {
        #[command(flatten)]
        http: HttpArgs,
        user: String,
        #[arg(long, default_value = "/")]
        vhost: String,
    },
    /// List permissions (of one vhost or one user).
    List {
        #[command(flatten)]
        http: HttpArgs,
        #[arg(long)]
        vhost: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// Topic permissions instead.
        #[arg(long)]
        topic: bool,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
}

pub async fn permissions(cmd: PermissionsCommand) -> anyhow::Result<()> {
    match cmd {
        PermissionsCommand::Set {
            http,
            user,
            vhost,
            configure,
            write,
            read,
        } => {
            let api = Api::new(&http)?;
            let path = format!("/api/permissions/{}/{}", segment(&vhost), segment(&user));
            put(
                &api,
                &path,
                json!({"configure": configure, "write": write, "read": read}),
            )
            .await?;
            println!("permissions of user '{user}' in vhost '{vhost}' set");
        }
        PermissionsCommand::Clear { http, user, vhost } => {
            let api = Api::new(&http)?;
            let path = format!("/api/permissions/{}/{}", segment(&vhost), segment(&user));
            delete(&api, &path).await?;
            println!("permissions of user '{user}' in vhost '{vhost}' cleared");
        }
        PermissionsCommand::SetTopic {
            http,
            user,
            vhost,
            exchange,
            write,
            read,
        } => {
            let api = Api::new(&http)?;
            let path = format!(
                "/api/topic-permissions/{}/{}",
                segment(&vhost),
                segment(&user)
            );
            put(
                &api,
                &path,
                json!({"exchange": exchange, "write": write, "read": read}),
            )
            .await?;
            println!("topic permissions of user '{user}' on '{exchange}' in vhost '{vhost}' set");
        }
        PermissionsCommand::ClearTopic { http, user, vhost } => {
            let api = Api::new(&http)?;
            let path = format!(
                "/api/topic-permissions/{}/{}",
                segment(&vhost),
                segment(&user)
            );
            delete(&api, &path).await?;
            println!("topic permissions of user '{user}' in vhost '{vhost}' cleared");
        }
        PermissionsCommand::List {
            http,
            vhost,
            user,
            topic,
            format,
        } => {
            let api = Api::new(&http)?;
            let kind = if topic {
                "topic-permissions"
            } else {
                "permissions"
            };
            let path = match (&vhost, &user) {
                (Some(v), Some(u)) if !topic => {
                    format!("/api/permissions/{}/{}", segment(v), segment(u))
                }
                (Some(v), _) => format!("/api/vhosts/{}/{kind}", segment(v)),
                (None, Some(u)) => format!("/api/users/{}/{kind}", segment(u)),
                (None, None) => format!("/api/{kind}"),
            };
            let mut items = match api.get(&path).await? {
                o @ Value::Object(_) if !o.as_object().is_some_and(|m| m.contains_key("items")) => {
                    vec![o]
                }
                other => as_list(other),
            };
            if let Some(u) = &user {
                items.retain(|i| i["user"] == u.as_str());
            }
            let columns: &[&str] = if topic {
                &["user", "vhost", "exchange", "write", "read"]
            } else {
                &["user", "vhost", "configure", "write", "read"]
            };
            print_list(&items, columns, format)?;
        }
    }
    Ok(())
}

#[derive(clap::Subcommand, Debug)]
#[command(after_help = "\
Examples:
  warren limits set --vhost orders max-connections 100
  warren limits set --vhost orders max-queues 500
  warren limits set --user app max-channels 20
  warren limits set --vhost orders max-publish-rate 5000        # messages a second
  warren limits set --user app max-publish-bytes-rate 10485760  # body bytes a second
  warren limits clear --vhost orders max-queues
  warren limits list

A negative value means no limit; 0 refuses everything.")]
pub enum LimitsCommand {
    /// Set a vhost limit (max-connections, max-queues) or a user limit (max-connections,
    /// max-channels); on Warren, either also takes max-publish-rate (messages a second) and
    /// max-publish-bytes-rate (body bytes a second), enforced by pausing the publisher.
    Set {
        #[command(flatten)]
        http: HttpArgs,
        #[arg(long, conflicts_with = "user", required_unless_present = "user")]
        vhost: Option<String>,
        #[arg(long)]
        user: Option<String>,
        name: String,
        value: i64,
    },
    /// Remove a limit.
    Clear {
        #[command(flatten)]
        http: HttpArgs,
        #[arg(long, conflicts_with = "user", required_unless_present = "user")]
        vhost: Option<String>,
        #[arg(long)]
        user: Option<String>,
        name: String,
    },
    /// List vhost limits (or user limits with --users).
    List {
        #[command(flatten)]
        http: HttpArgs,
        #[arg(long)]
        users: bool,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
}

fn limit_path(vhost: &Option<String>, user: &Option<String>, name: &str) -> anyhow::Result<String> {
    match (vhost, user) {
        (Some(v), None) => Ok(format!(
            "/api/vhost-limits/{}/{}",
            segment(v),
            segment(name)
        )),
        (None, Some(u)) => Ok(format!("/api/user-limits/{}/{}", segment(u), segment(name))),
        _ => Err(Failure::new("give --vhost or --user").into()),
    }
}

pub async fn limits(cmd: LimitsCommand) -> anyhow::Result<()> {
    match cmd {
        LimitsCommand::Set {
            http,
            vhost,
            user,
            name,
            value,
        } => {
            let api = Api::new(&http)?;
            put(
                &api,
                &limit_path(&vhost, &user, &name)?,
                json!({"value": value}),
            )
            .await?;
            println!("limit {name} set to {value}");
        }
        LimitsCommand::Clear {
            http,
            vhost,
            user,
            name,
        } => {
            let api = Api::new(&http)?;
            delete(&api, &limit_path(&vhost, &user, &name)?).await?;
            println!("limit {name} cleared");
        }
        LimitsCommand::List {
            http,
            users,
            format,
        } => {
            let api = Api::new(&http)?;
            let (path, key) = if users {
                ("/api/user-limits", "user")
            } else {
                ("/api/vhost-limits", "vhost")
            };
            let items: Vec<Value> = as_list(api.get(path).await?)
                .into_iter()
                .flat_map(|i| {
                    let owner = i[key].clone();
                    match i["value"].as_object() {
                        Some(m) => m
                            .iter()
                            .map(|(k, v)| json!({key: owner.clone(), "limit": k, "value": v}))
                            .collect::<Vec<_>>(),
                        None => Vec::new(),
                    }
                })
                .collect();
            print_list(&items, &[key, "limit", "value"], format)?;
        }
    }
    Ok(())
}
