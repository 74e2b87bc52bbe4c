//! Command line: clap types and their translation into library calls.
//!
//! `agent` turns node.toml plus flags into an [`AgentRequest`]; the client commands talk to an
//! agent's HTTP API. Nothing here knows gossip; the library never sees clap.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use piforge_config::{ClusterKey, NodeConfig};
use piforge_node::api::TagsRequest;
use piforge_node::membership::MemberState;
use piforge_node::shared::AgentRequest;
use piforge_node::{client, report};

/// piforge-node: the cluster agent of a piforge card, and its client.
#[derive(Debug, Parser)]
#[command(version, help_expected = true, max_term_width = 80)]
pub struct Cli {
    /// More logging (debug); RUST_LOG overrides.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent.
    Agent(AgentArgs),
    /// Print a new random cluster key (64 hex digits).
    Keygen,
    /// List members, like `serf members`.
    Members {
        /// Agent HTTP API.
        #[arg(long, env = "PIFORGE_HTTP", default_value = "127.0.0.1:8080")]
        http: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Only members in this state (alive, suspect, failed, left).
        #[arg(long)]
        status: Option<String>,
        /// Only members with this tag, `k=v` (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Ask the local agent to join a member at ADDR (host:port).
    Join {
        /// Agent HTTP API.
        #[arg(long, env = "PIFORGE_HTTP", default_value = "127.0.0.1:8080")]
        http: String,
        /// Gossip address of any member.
        addr: String,
    },
    /// Ask the local agent to leave the cluster gracefully and exit.
    Leave {
        /// Agent HTTP API.
        #[arg(long, env = "PIFORGE_HTTP", default_value = "127.0.0.1:8080")]
        http: String,
    },
    /// Set or delete tags of the local agent.
    Tags {
        /// Agent HTTP API.
        #[arg(long, env = "PIFORGE_HTTP", default_value = "127.0.0.1:8080")]
        http: String,
        /// set k=v... or delete k...
        #[command(subcommand)]
        op: TagsOp,
    },
    /// Print membership events as they happen.
    Monitor {
        /// Agent HTTP API.
        #[arg(long, env = "PIFORGE_HTTP", default_value = "127.0.0.1:8080")]
        http: String,
    },
    /// Print an Ansible inventory of the alive members.
    Inventory {
        /// Agent HTTP API.
        #[arg(long, env = "PIFORGE_HTTP", default_value = "127.0.0.1:8080")]
        http: String,
        /// Ansible format (the only one).
        #[arg(long)]
        ansible: bool,
        /// Dynamic-inventory JSON instead of INI.
        #[arg(long)]
        json: bool,
        /// Accepted for `ansible-inventory -i` (which passes --list).
        #[arg(long, hide = true)]
        list: bool,
        /// Accepted for `ansible-inventory -i` (host vars are in _meta).
        #[arg(long, hide = true)]
        host: Option<String>,
    },
    /// Render a template over the members; re-render on change.
    Render(RenderArgs),
}

/// `render` flags.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Agent HTTP API.
    #[arg(long, env = "PIFORGE_HTTP", default_value = "127.0.0.1:8080")]
    pub http: String,
    /// Handlebars template (variables: members, alive).
    pub template: PathBuf,
    /// Output file (replaced atomically, only when it changes). Its extension picks
    /// how values are escaped: .html/.htm HTML, .yml/.yaml/.json JSON string, else
    /// line-safe (whitespace and control characters become _).
    #[arg(long)]
    pub dest: PathBuf,
    /// Shell command run after the output changed.
    #[arg(long)]
    pub command: Option<String>,
    /// Quiet time after the last membership event before re-rendering, ms.
    #[arg(long, default_value_t = 1000)]
    pub debounce_ms: u64,
    /// Render once and exit.
    #[arg(long)]
    pub once: bool,
}

/// `tags` operations.
#[derive(Debug, Subcommand)]
pub enum TagsOp {
    /// Set tags, `k=v`.
    Set {
        /// Tags, `k=v`.
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// Delete tags by key.
    Delete {
        /// Tag keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

/// `agent` flags; each overrides node.toml.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// node.toml to read.
    #[arg(long, default_value = piforge_config::NODE_CONFIG_PATH)]
    pub config: PathBuf,
    /// Print a commented example config and exit.
    #[arg(long)]
    pub example_config: bool,
    /// Member name.
    #[arg(long)]
    pub name: Option<String>,
    /// Gossip UDP socket, ADDR:PORT.
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Address others reach the gossip socket at, ADDR:PORT.
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// HTTP API and dashboard, ADDR:PORT.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Seed member, HOST:PORT (repeatable; replaces the config's seeds).
    #[arg(long = "seed")]
    pub seeds: Vec<String>,
    /// File holding the cluster key (64 hex digits).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Do not use mDNS discovery.
    #[arg(long)]
    pub no_mdns: bool,
    /// Directory for the generation counter.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Read the SSH host keys and firstboot reports that /api/node serves under this root.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

/// A commented example node.toml (a test keeps it parseable).
pub const EXAMPLE_CONFIG: &str = r#"# /etc/piforge/node.toml: configuration of piforge-node (written by firstboot).
schema-version = 1
# Member name; normally the hostname.
name = "pi-01"
# Gossip UDP socket and HTTP API/dashboard.
bind = "0.0.0.0:7946"
http = "0.0.0.0:8080"
# Address others reach the gossip socket at (default: address of the default route).
# advertise = "192.168.1.21:7946"
# Generation counter lives here (a restart is the same member, a newer generation).
state-dir = "/var/lib/piforge-node"

[cluster]
# Cluster name: also authenticated with every datagram and advertised over mDNS.
name = "lab"
# 256-bit cluster key; make one with `piforge-node keygen`.
key = "0000000000000000000000000000000000000000000000000000000000000000"
# Members to join at start (and to re-join with backoff while alone).
seeds = ["192.168.1.20:7946"]
mdns = true

# Key/value tags advertised to the cluster (role, services, ...).
[tags]
role = "web"

# Failure detection (SWIM) and reaping.
[detector]
probe-period-ms = 1000
probe-rtt-ms = 500
suspect-to-failed-ms = 4000
phi-threshold = 8.0
reap-after-secs = 86400

# Executables run on events; env PIFORGE_EVENT, PIFORGE_EVENT_ID, PIFORGE_SELF_NAME, ...;
# members on stdin. scope = "node" (default): on every node; "cluster": once per event.
# [[handlers]]
# command = "/usr/local/bin/on-member-change"
# events = ["member-join", "member-failed"]
# timeout-secs = 30
# scope = "node"

# JSON POST of every event (with its "id", also in Idempotency-Key), once for the whole
# cluster (scope = "cluster", the default) or from every node (scope = "node").
# [[webhooks]]
# url = "https://alerts.example.com/piforge"
# bearer-token = "..."                      # secret: this file is 0600
# ca = """-----BEGIN CERTIFICATE-----..."""  # default: the system's CA certificates

# Events, retained status (last will "offline") and once-per-cluster alerts over MQTT.
# [mqtt]
# broker = "mqtts://alerts@broker.example.com:8883"   # or mqtt://host:1883, host:port
# password = "..."                                    # secret: this file is 0600
# ca = """-----BEGIN CERTIFICATE-----..."""          # default: the system's CA certificates
# client-cert = """-----BEGIN CERTIFICATE-----..."""  # optional, with client-key
# topic-prefix = "piforge"
"#;

/// Turns node.toml and flags into an agent request.
pub fn agent_request(args: &AgentArgs) -> Result<AgentRequest> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let cfg =
        NodeConfig::parse(&text).with_context(|| format!("parsing {}", args.config.display()))?;
    let key = match &args.key_file {
        Some(f) => {
            let t =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            ClusterKey::from_hex(&t)
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("parsing {}", f.display()))?
        }
        None => cfg.cluster.key.clone(),
    };
    let bind = match args.bind {
        Some(b) => b,
        None => cfg
            .bind
            .parse()
            .with_context(|| format!("parsing bind {:?}", cfg.bind))?,
    };
    let http = match args.http {
        Some(h) => h,
        None => cfg
            .http
            .parse()
            .with_context(|| format!("parsing http {:?}", cfg.http))?,
    };
    let advertise = match (args.advertise, &cfg.advertise) {
        (Some(a), _) => Some(a),
        (None, Some(a)) => Some(
            a.parse()
                .with_context(|| format!("parsing advertise {a:?}"))?,
        ),
        (None, None) => None,
    };
    Ok(AgentRequest {
        name: args.name.clone().unwrap_or(cfg.name),
        cluster: cfg.cluster.name,
        key,
        bind,
        advertise,
        http,
        seeds: if args.seeds.is_empty() {
            cfg.cluster.seeds
        } else {
            args.seeds.clone()
        },
        mdns: cfg.cluster.mdns && !args.no_mdns,
        tags: cfg.tags,
        detector: cfg.detector,
        handlers: cfg.handlers,
        webhooks: cfg.webhooks,
        mqtt: cfg.mqtt,
        state_dir: args
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(cfg.state_dir)),
        root: args.root.clone(),
    })
}

fn parse_kv(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("expected k=v, got {s:?}"),
    }
}

/// Runs a client command (everything but `agent`).
pub fn cmd_client(cmd: Command) -> Result<()> {
    match cmd {
        Command::Agent(_) => unreachable!("agent is handled by main"),
        Command::Keygen => {
            let mut k = [0u8; 32];
            rand_node::Rng::fill_bytes(
                &mut rand_node::make_rng::<rand_node::rngs::StdRng>(),
                &mut k,
            );
            println!("{}", ClusterKey::from_bytes(k).to_hex());
        }
        Command::Members {
            http,
            json,
            status,
            tags,
        } => {
            let status = match status {
                Some(s) => Some(MemberState::parse(&s).with_context(|| {
                    format!("unknown status {s:?} (alive, suspect, failed, left)")
                })?),
                None => None,
            };
            let tags = tags
                .iter()
                .map(|t| parse_kv(t))
                .collect::<Result<Vec<_>>>()?;
            let ms = report::filter_members(client::members(&http)?, status, &tags);
            if json {
                println!("{}", serde_json::to_string_pretty(&ms)?);
            } else {
                print!("{}", report::members_table(&ms));
            }
        }
        Command::Join { http, addr } => {
            client::join(&http, &addr)?;
            println!("joining {addr}");
        }
        Command::Leave { http } => {
            client::leave(&http)?;
            println!("leaving");
        }
        Command::Tags { http, op } => {
            let req = match op {
                TagsOp::Set { tags } => TagsRequest {
                    set: tags
                        .iter()
                        .map(|t| parse_kv(t))
                        .collect::<Result<BTreeMap<_, _>>>()?,
                    delete: vec![],
                },
                TagsOp::Delete { keys } => TagsRequest {
                    set: BTreeMap::new(),
                    delete: keys,
                },
            };
            let now = client::tags(&http, &req)?;
            println!("{}", serde_json::to_string(&now)?);
        }
        Command::Monitor { http } => {
            let mut after = None;
            loop {
                let page = client::events(&http, after, 25)?;
                for e in &page.events {
                    let tags: Vec<String> = e
                        .member
                        .tags
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    println!(
                        "{} {} {} {} {}",
                        e.event,
                        e.member.name,
                        e.member.addr,
                        e.member.state.as_str(),
                        tags.join(",")
                    );
                }
                after = Some(page.next);
            }
        }
        Command::Inventory {
            http,
            ansible: _,
            json,
            list,
            host,
        } => {
            if host.is_some() {
                println!("{}", piforge_config::inventory::inventory_host_json());
                return Ok(());
            }
            let ms = client::members(&http)?;
            if json || list {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report::inventory_json(&ms))?
                );
            } else {
                print!("{}", report::inventory_ini(&ms));
            }
        }
        Command::Render(r) => {
            piforge_node::render::RenderRequest {
                http: r.http,
                template: r.template,
                dest: r.dest,
                command: r.command,
                debounce: std::time::Duration::from_millis(r.debounce_ms),
                once: r.once,
            }
            .run()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn example_config_parses() {
        let c = NodeConfig::parse(EXAMPLE_CONFIG).unwrap();
        assert_eq!(c.cluster.name, "lab");
        assert_eq!(c.tags["role"], "web");
    }
}
