//! `warren policy set|clear|list`: policies and operator policies through the management
//! HTTP API (RabbitMQ's routes, so the same commands set a RabbitMQ node's policies), in the
//! spirit of `rabbitmqctl set_policy`, `clear_policy` and `list_policies`.

use hyper::Method;
use serde_json::{json, Value};

use super::http::{segment, Api, HttpArgs};
use super::render::Format;

#[derive(clap::Subcommand, Debug)]
#[command(after_help = "\
Examples:
  warren policy set limits '^orders\\.' '{\"max-length\": 10000, \"overflow\": \"reject-publish\"}' --apply-to queues
  warren policy set ae '^events$' '{\"alternate-exchange\": \"unrouted\"}' --apply-to exchanges
  warren policy set cap '.*' '{\"max-length-bytes\": 1073741824}' --operator   # operators' ceiling
  warren policy list --vhost /
  warren policy clear limits

The highest-priority policy whose pattern matches a queue or exchange applies, to existing and
new ones at once. For message-ttl, expires, max-length, max-length-bytes and delivery-limit
the lower of policy, operator policy and the queue's own x-argument wins; for the other
settings the queue's own x-argument wins over the policy.")]
pub enum PolicyCommand {
    /// Set (add or replace) a policy.
    Set {
        #[command(flatten)]
        http: HttpArgs,
        name: String,
        /// Regular expression matched against queue or exchange names.
        pattern: String,
        /// The settings, as a JSON object: message-ttl, expires, max-length,
        /// max-length-bytes, overflow, dead-letter-exchange, dead-letter-routing-key,
        /// delivery-limit, max-age, stream-max-segment-size-bytes, alternate-exchange,
        /// queue-mode.
        definition: String,
        #[arg(long, default_value = "/")]
        vhost: String,
        /// queues, classic_queues, quorum_queues, streams, exchanges or all.
        #[arg(long, default_value = "all")]
        apply_to: String,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i64,
        /// An operator policy (limits that cap what users' policies and arguments set).
        #[arg(long)]
        operator: bool,
    },
    /// Remove a policy.
    Clear {
        #[command(flatten)]
        http: HttpArgs,
        name: String,
        #[arg(long, default_value = "/")]
        vhost: String,
        #[arg(long)]
        operator: bool,
    },
    /// List policies (of one vhost, or all).
    List {
        #[command(flatten)]
        http: HttpArgs,
        #[arg(long)]
        vhost: Option<String>,
        #[arg(long)]
        operator: bool,
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
}

fn base(operator: bool) -> &'static str {
    if operator {
        "/api/operator-policies"
    } else {
        "/api/policies"
    }
}

pub async fn policy(cmd: PolicyCommand) -> anyhow::Result<()> {
    match cmd {
        PolicyCommand::Set {
            http,
            name,
            pattern,
            definition,
            vhost,
            apply_to,
            priority,
            operator,
        } => {
            let definition: Value = serde_json::from_str(&definition)
                .map_err(|e| anyhow::anyhow!("the definition is not JSON: {e}"))?;
            if !definition.is_object() {
                anyhow::bail!(
                    "the definition must be a JSON object, such as '{{\"max-length\": 10}}'"
                );
            }
            let api = Api::new(&http)?;
            let path = format!("{}/{}/{}", base(operator), segment(&vhost), segment(&name));
            let body = json!({
                "pattern": pattern,
                "definition": definition,
                "apply-to": apply_to,
                "priority": priority,
            });
            api.call(Method::PUT, &path, Some(body.to_string().into_bytes()), &[])
                .await?;
            println!("policy '{name}' set in vhost '{vhost}'");
        }
        PolicyCommand::Clear {
            http,
            name,
            vhost,
            operator,
        } => {
            let api = Api::new(&http)?;
            let path = format!("{}/{}/{}", base(operator), segment(&vhost), segment(&name));
            api.call(Method::DELETE, &path, None, &[]).await?;
            println!("policy '{name}' cleared in vhost '{vhost}'");
        }
        PolicyCommand::List {
            http,
            vhost,
            operator,
            format,
        } => {
            let api = Api::new(&http)?;
            let path = match vhost {
                Some(v) => format!("{}/{}", base(operator), segment(&v)),
                None => base(operator).to_owned(),
            };
            let items = match api.get(&path).await? {
                Value::Array(a) => a,
                _ => Vec::new(),
            };
            super::tenancy::print_list(
                &items,
                &[
                    "vhost",
                    "name",
                    "pattern",
                    "apply-to",
                    "definition",
                    "priority",
                ],
                format,
            )?;
        }
    }
    Ok(())
}
