//! The member list as the node's HTTP API serves it (`GET /api/members`): [`ApiMember`] and
//! [`MemberState`]. The agent produces it, and both `piforge-node` (CLI, templates) and the
//! host's `piforge inventory` read it, so the JSON shape is defined here, once.
//!
//! Only data and its serde form; this module does no I/O and knows nothing about gossip.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The state of a member as piforge reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemberState {
    /// Answering probes.
    Alive,
    /// Suspected by SWIM (not yet refuted, not yet failed). Phi is reported next to the state
    /// but does not drive it: with SWIM a node talks directly to few peers, so per-pair
    /// inter-arrival times are too sparse in large clusters (see node/README.md).
    Suspect,
    /// Declared down without having said goodbye.
    Failed,
    /// Left on purpose.
    Left,
}

impl MemberState {
    /// The lowercase name used in JSON, metrics and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Failed => "failed",
            MemberState::Left => "left",
        }
    }

    /// Parses [`MemberState::as_str`] output.
    pub fn parse(s: &str) -> Option<MemberState> {
        [
            MemberState::Alive,
            MemberState::Suspect,
            MemberState::Failed,
            MemberState::Left,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// One member in `GET /api/members`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiMember {
    /// Member name.
    pub name: String,
    /// Gossip address, `ip:port`.
    pub addr: String,
    /// IP of the gossip address.
    pub ip: String,
    /// Gossip port.
    pub port: u16,
    /// Process generation.
    pub generation: u64,
    /// alive, suspect, failed or left.
    pub state: MemberState,
    /// Phi-accrual suspicion level.
    pub phi: f64,
    /// Phi threshold.
    pub threshold: f64,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Seconds since this generation came up (as seen by the answering node).
    pub uptime: u64,
    /// Seconds since the last datagram from it; `null` for self.
    pub last_seen: Option<f64>,
}

impl ApiMember {
    /// A member as a fresh listing shows it: gossip at `ip` on the default port, first
    /// generation, no suspicion, no uptime, never heard from. For sample member lists (the
    /// builder's overlay check) and tests; change fields with `..` struct update syntax.
    pub fn listed(name: &str, ip: &str, state: MemberState, tags: &[(&str, &str)]) -> ApiMember {
        ApiMember {
            name: name.to_string(),
            addr: format!("{ip}:{}", crate::DEFAULT_GOSSIP_PORT),
            ip: ip.to_string(),
            port: crate::DEFAULT_GOSSIP_PORT,
            generation: 1,
            state,
            phi: 0.0,
            threshold: 8.0,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            uptime: 0,
            last_seen: None,
        }
    }
}

/// Parses the body of `GET /api/members`.
pub fn parse_members(json: &[u8]) -> Result<Vec<ApiMember>, serde_json::Error> {
    serde_json::from_slice(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for s in ["alive", "suspect", "failed", "left"] {
            assert_eq!(MemberState::parse(s).unwrap().as_str(), s);
        }
        assert_eq!(MemberState::parse("dead"), None);
    }

    #[test]
    fn member_json_round_trips() {
        let m = ApiMember {
            generation: 7,
            phi: 1.5,
            uptime: 3,
            ..ApiMember::listed("pi-1", "10.0.0.1", MemberState::Suspect, &[("role", "web")])
        };
        assert_eq!((m.addr.as_str(), m.port), ("10.0.0.1:7946", 7946));
        let json = serde_json::to_vec(&vec![m.clone()]).unwrap();
        assert!(String::from_utf8_lossy(&json).contains("\"state\":\"suspect\""));
        assert_eq!(parse_members(&json).unwrap(), vec![m]);
        assert!(parse_members(b"[{\"name\":1}]").is_err());
    }
}
