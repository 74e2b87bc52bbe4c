//! `/etc/piforge/node.toml`: the node agent's configuration.
//!
//! Firstboot derives it from the card ([`NodeConfig::from_card`]) and installs it 0600; the
//! agent reads it and lets command-line flags override single values. The agent crate owns
//! runtime behaviour; this file only fixes the format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::SCHEMA_VERSION;
use crate::card::{Card, CardError};
pub use crate::mqtt::{BrokerEndpoint, MqttSettings, redact_url};
use crate::secret::{ClusterKey, Secret};

/// The node agent's configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeConfig {
    /// Must equal [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Member name (the hostname).
    pub name: String,
    /// Cluster membership settings.
    pub cluster: NodeCluster,
    /// Gossip UDP socket, `addr:port`.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// HTTP API and dashboard, `addr:port`.
    #[serde(default = "default_http")]
    pub http: String,
    /// Tags advertised to the cluster.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Address other members reach this node's gossip socket at, `addr:port`; needed when
    /// `bind` is a wildcard (`0.0.0.0`). Unset: the agent picks the address of the default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Directory for state that survives restarts (the generation counter). The agent's own,
    /// matching the unit's `StateDirectory=piforge-node`: `/var/lib/piforge` is firstboot's
    /// identity record, read-only to the hardened node unit.
    #[serde(default = "default_state_dir")]
    pub state_dir: String,
    /// Failure detection and reaping.
    #[serde(default)]
    pub detector: DetectorSettings,
    /// Executables run on membership events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handlers: Vec<EventHandler>,
    /// HTTP endpoints that get every event as a JSON POST.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<Webhook>,
    /// Publish events and per-node status to an MQTT broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttSettings>,
}

/// `[detector]` of node.toml: SWIM timing, the phi-accrual estimate and reaping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DetectorSettings {
    /// How often one random member is probed, in milliseconds.
    #[serde(default = "default_probe_period_ms")]
    pub probe_period_ms: u64,
    /// How long to wait for a direct probe reply before asking others, in milliseconds.
    #[serde(default = "default_probe_rtt_ms")]
    pub probe_rtt_ms: u64,
    /// How long a suspect member has to refute before it is declared failed, in milliseconds.
    #[serde(default = "default_suspect_ms")]
    pub suspect_to_failed_ms: u64,
    /// Phi level above which a peer is flagged on the dashboard (phi-accrual over packet
    /// inter-arrival times; informational, the state comes from SWIM's suspicion).
    #[serde(default = "default_phi_threshold")]
    pub phi_threshold: f64,
    /// How long failed and left members stay listed before they are reaped, in seconds.
    #[serde(default = "default_reap_after_secs")]
    pub reap_after_secs: u64,
}

impl Default for DetectorSettings {
    fn default() -> Self {
        DetectorSettings {
            probe_period_ms: default_probe_period_ms(),
            probe_rtt_ms: default_probe_rtt_ms(),
            suspect_to_failed_ms: default_suspect_ms(),
            phi_threshold: default_phi_threshold(),
            reap_after_secs: default_reap_after_secs(),
        }
    }
}

/// One `[[handlers]]` entry: an executable run for membership events (Serf-style: event name
/// and self in `PIFORGE_*` environment variables, one line per member on stdin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EventHandler {
    /// Path of the executable (run directly, not through a shell).
    pub command: String,
    /// Event names it wants (`member-join`, `member-leave`, `member-failed`, `member-update`,
    /// `member-reap`); empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// Kill the handler after this many seconds.
    #[serde(default = "default_handler_timeout_secs")]
    pub timeout_secs: u64,
    /// `node` (default): runs on every node that sees the event (an LED, a local reload);
    /// `cluster`: runs once per event for the whole cluster, on one of the nodes that carry
    /// this handler.
    #[serde(default = "Scope::node", skip_serializing_if = "Scope::is_node")]
    pub scope: Scope,
}

/// Where an event sink fires: on every node, or once for the whole cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Once per event: one sender chosen from the alive members that carry the same sink.
    Cluster,
    /// On every node that observes the event.
    Node,
}

impl Scope {
    fn node() -> Scope {
        Scope::Node
    }
    fn cluster() -> Scope {
        Scope::Cluster
    }
    fn is_node(&self) -> bool {
        *self == Scope::Node
    }
    fn is_cluster(&self) -> bool {
        *self == Scope::Cluster
    }
}

/// One `[[webhooks]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Webhook {
    /// `https://host[:port]/path` (TLS, checked against `ca` or the system's roots) or
    /// `http://host[:port]/path`.
    pub url: String,
    /// Event names it wants; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// Sent as `Authorization: Bearer <token>` (secret: node.toml is 0600, never logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
    /// PEM certificates of the CAs trusted for this `https://` URL instead of the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// `cluster` (default): one POST per event for the whole cluster; `node`: every node
    /// that sees the event posts it.
    #[serde(default = "Scope::cluster", skip_serializing_if = "Scope::is_cluster")]
    pub scope: Scope,
}

impl Webhook {
    /// Checks the URL and what goes with it.
    pub fn validate(&self) -> Result<(), String> {
        let tls = if self.url.starts_with("https://") {
            true
        } else if self.url.starts_with("http://") {
            false
        } else {
            return Err(format!(
                "webhook URL {:?} must start with https:// or http://",
                self.url
            ));
        };
        if !tls && self.ca.is_some() {
            return Err(format!("webhook {}: a CA needs an https:// URL", self.url));
        }
        if let Some(ca) = &self.ca
            && !ca.contains("-----BEGIN CERTIFICATE-----")
        {
            return Err(format!(
                "webhook {}: the CA is not PEM (-----BEGIN CERTIFICATE-----)",
                self.url
            ));
        }
        Ok(())
    }
}

/// `[cluster]` of node.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeCluster {
    /// Cluster name (associated data of every sealed datagram).
    pub name: String,
    /// The cluster key (secret).
    pub key: ClusterKey,
    /// Static seeds, `host:port`.
    #[serde(default)]
    pub seeds: Vec<String>,
    /// mDNS discovery on or off.
    #[serde(default = "yes")]
    pub mdns: bool,
}

fn yes() -> bool {
    true
}
fn default_bind() -> String {
    format!("0.0.0.0:{}", crate::DEFAULT_GOSSIP_PORT)
}
fn default_state_dir() -> String {
    "/var/lib/piforge-node".to_string()
}
fn default_probe_period_ms() -> u64 {
    1000
}
fn default_probe_rtt_ms() -> u64 {
    500
}
fn default_suspect_ms() -> u64 {
    4000
}
fn default_phi_threshold() -> f64 {
    8.0
}
fn default_reap_after_secs() -> u64 {
    24 * 3600
}
fn default_handler_timeout_secs() -> u64 {
    30
}
fn default_http() -> String {
    format!("0.0.0.0:{}", crate::DEFAULT_HTTP_PORT)
}

impl NodeConfig {
    /// The node config for the node named `hostname` made from `card`.
    pub fn from_card(card: &Card, hostname: &str) -> NodeConfig {
        NodeConfig {
            schema_version: SCHEMA_VERSION,
            name: hostname.to_string(),
            cluster: NodeCluster {
                name: card.cluster.name.clone(),
                key: card.cluster.key.clone(),
                seeds: card.cluster.seeds.clone(),
                mdns: card.cluster.mdns,
            },
            bind: format!("0.0.0.0:{}", card.node.gossip_port),
            http: format!("0.0.0.0:{}", card.node.http_port),
            tags: card.node.tags.clone(),
            advertise: None,
            state_dir: default_state_dir(),
            detector: DetectorSettings::default(),
            handlers: Vec::new(),
            webhooks: Vec::new(),
            mqtt: card.node.mqtt.clone(),
        }
    }

    /// Parses node.toml text.
    pub fn parse(text: &str) -> Result<NodeConfig, CardError> {
        let c: NodeConfig =
            toml::from_str(text).map_err(|e| CardError::Syntax(e.message().to_string()))?;
        if c.schema_version != SCHEMA_VERSION {
            return Err(CardError::SchemaVersion {
                found: c.schema_version,
            });
        }
        // A node must never announce tags the others would refuse.
        crate::tags::check_tags(&c.tags).map_err(|e| CardError::Invalid {
            field: "tags",
            reason: e.to_string(),
        })?;
        Ok(c)
    }

    /// Renders node.toml text (with the key: it is installed 0600).
    pub fn render(&self) -> String {
        toml::to_string(self).expect("a node config always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_limit_tags_are_refused_at_parse() {
        let mut card = Card::new("lab", ClusterKey::from_bytes([1; 32]));
        card.node.tags = (0..=crate::tags::MAX_TAGS)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        let text = NodeConfig::from_card(&card, "pi-01").render();
        let e = NodeConfig::parse(&text).unwrap_err().to_string();
        assert!(e.contains("at most 64"), "{e}");
        card.node.tags.pop_last();
        let text = NodeConfig::from_card(&card, "pi-01").render();
        assert!(NodeConfig::parse(&text).is_ok());
    }

    #[test]
    fn from_card_round_trips() {
        let mut card = Card::new("lab", ClusterKey::from_bytes([1; 32]));
        card.node.tags.insert("role".into(), "lb".into());
        card.node.gossip_port = 7000;
        let n = NodeConfig::from_card(&card, "pi-02");
        assert_eq!(n.bind, "0.0.0.0:7000");
        assert_eq!(n.tags["role"], "lb");
        assert_eq!(NodeConfig::parse(&n.render()).unwrap(), n);
    }

    #[test]
    fn agent_sections_round_trip_and_default() {
        let mut n = NodeConfig::from_card(&Card::new("lab", ClusterKey::from_bytes([2; 32])), "a");
        n.advertise = Some("10.0.0.5:7946".into());
        n.detector.phi_threshold = 12.5;
        n.handlers.push(EventHandler {
            command: "/usr/local/bin/on-event".into(),
            events: vec!["member-join".into()],
            timeout_secs: 5,
            scope: Scope::Cluster,
        });
        n.webhooks.push(Webhook {
            url: "https://127.0.0.1:9000/hook".into(),
            events: vec![],
            bearer_token: Some(Secret::new("tok")),
            ca: Some("-----BEGIN CERTIFICATE-----\n".into()),
            scope: Scope::Node,
        });
        n.mqtt = Some(MqttSettings {
            topic_prefix: "lab".into(),
            password: Some(Secret::new("pw")),
            ..MqttSettings::plain("mqtts://u@127.0.0.1:1883")
        });
        let text = n.render();
        assert!(
            text.contains("[[handlers]]") && text.contains("phi-threshold"),
            "{text}"
        );
        assert_eq!(NodeConfig::parse(&text).unwrap(), n);
        // A minimal file gets every default.
        let min = format!(
            "schema-version = 1\nname = \"a\"\n[cluster]\nname = \"lab\"\nkey = \"{}\"\n",
            "00".repeat(32)
        );
        let m = NodeConfig::parse(&min).unwrap();
        assert_eq!(m.detector, DetectorSettings::default());
        assert_eq!(m.state_dir, "/var/lib/piforge-node");
        assert!(m.handlers.is_empty() && m.mqtt.is_none());
    }

    #[test]
    fn sink_scopes_default_to_node_for_handlers_and_cluster_for_webhooks() {
        let text = format!(
            "schema-version = 1\nname = \"a\"\n[cluster]\nname = \"lab\"\nkey = \"{}\"\n\
             [[handlers]]\ncommand = \"/x\"\n[[webhooks]]\nurl = \"http://h/x\"\n",
            "00".repeat(32)
        );
        let n = NodeConfig::parse(&text).unwrap();
        assert_eq!(n.handlers[0].scope, Scope::Node);
        assert_eq!(n.webhooks[0].scope, Scope::Cluster);
        assert!(n.webhooks[0].validate().is_ok());
        let bad = Webhook {
            url: "ftp://h/x".into(),
            ..n.webhooks[0].clone()
        };
        assert!(bad.validate().unwrap_err().contains("https://"));
    }

    #[test]
    fn unknown_detector_key_is_refused() {
        let text = format!(
            "schema-version = 1\nname = \"a\"\n[cluster]\nname = \"lab\"\nkey = \"{}\"\n\
             [detector]\nphi = 3.0\n",
            "00".repeat(32)
        );
        assert!(NodeConfig::parse(&text).is_err());
    }
}
