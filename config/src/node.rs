//! `/etc/piforge/node.toml`: the node agent's configuration.
//!
//! Firstboot derives it from the card ([`NodeConfig::from_card`]) and installs it 0600; the
//! agent reads it and lets command-line flags override single values. The agent crate owns
//! runtime behaviour; this file only fixes the format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::SCHEMA_VERSION;
use crate::card::{Card, CardError};
use crate::secret::ClusterKey;

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
    fn from_card_round_trips() {
        let mut card = Card::new("lab", ClusterKey::from_bytes([1; 32]));
        card.node.tags.insert("role".into(), "lb".into());
        card.node.gossip_port = 7000;
        let n = NodeConfig::from_card(&card, "pi-02");
        assert_eq!(n.bind, "0.0.0.0:7000");
        assert_eq!(n.tags["role"], "lb");
        assert_eq!(NodeConfig::parse(&n.render()).unwrap(), n);
    }
}
