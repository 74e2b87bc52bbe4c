//! What a node tells `piforge status` about itself (`GET /api/node`), and the first-boot
//! report that firstboot leaves on the root for it.
//!
//! firstboot writes [`RunReport`] as JSON to [`FIRSTBOOT_REPORT_PATH`] (and, after a clone
//! check that changed something, [`REIDENTIFY_REPORT_PATH`]); the agent serves them with its
//! host public keys as [`NodeStatus`]; the host reads that through the authenticated exchange
//! of [`crate::api_auth`]. No secrets in any of it. Data and serde only.

use serde::{Deserialize, Serialize};

/// Where firstboot leaves the report of the first boot (relative to the root).
pub const FIRSTBOOT_REPORT_PATH: &str = "var/lib/piforge/firstboot-report.json";

/// Where the clone check leaves the report of a re-identification (relative to the root).
pub const REIDENTIFY_REPORT_PATH: &str = "var/lib/piforge/reidentify-report.json";

/// [`RunReport::outcome`] of the clone check when the card took a new identity on other
/// hardware (a copied card).
pub const OUTCOME_REIDENTIFIED: &str = "re-identified";

/// [`RunReport::outcome`] of the clone check when it repaired a changed identity on the
/// recorded hardware.
pub const OUTCOME_REPAIRED: &str = "repaired";

/// Path of the node API endpoint serving [`NodeStatus`].
pub const NODE_STATUS_PATH: &str = "/api/node";

/// Largest report the agent serves (a report is a few hundred bytes).
pub const MAX_REPORT_LEN: u64 = 64 * 1024;

/// One timed phase of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// `facts`, `plan`, `identity`, `access`, `network`, ...
    pub name: String,
    /// Wall time, milliseconds.
    pub ms: u64,
}

/// What a firstboot run did, and how long each phase took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// `configured`, `no-card`, `failed` or `re-identified`.
    pub outcome: String,
    /// Why, for `failed` and `no-card` (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The hostname it set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Seconds since the kernel started when the run began (`/proc/uptime`), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_uptime: Option<f64>,
    /// Whole run, milliseconds.
    pub total_ms: u64,
    /// The phases in order.
    pub phases: Vec<Phase>,
    /// Host key kinds still to be made in the background (`ecdsa`, `rsa`), if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_keys_pending: Vec<String>,
}

/// `GET /api/node`: the answering node about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Member name (the hostname).
    pub name: String,
    /// Cluster name.
    pub cluster: String,
    /// The gossip address it advertises, `ip:port`.
    pub addr: String,
    /// Process generation.
    pub generation: u64,
    /// Seconds since the agent started.
    pub agent_uptime: u64,
    /// Its SSH host public keys (`.pub` lines), in `ed25519, ecdsa, rsa` order.
    #[serde(default)]
    pub host_keys: Vec<String>,
    /// The first boot's report, if the node still has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firstboot: Option<RunReport>,
    /// The last re-identification's report (the card was copied to this Pi), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reidentify: Option<RunReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_status_round_trips() {
        let s = NodeStatus {
            name: "lab-01".into(),
            cluster: "lab".into(),
            addr: "10.0.0.1:7946".into(),
            generation: 3,
            agent_uptime: 9,
            host_keys: vec!["ssh-ed25519 AAAA root@lab-01".into()],
            firstboot: Some(RunReport {
                outcome: "configured".into(),
                reason: None,
                hostname: Some("lab-01".into()),
                started_at_uptime: Some(4.5),
                total_ms: 900,
                phases: vec![Phase {
                    name: "plan".into(),
                    ms: 12,
                }],
                host_keys_pending: vec![],
            }),
            reidentify: None,
        };
        let j = serde_json::to_vec(&s).unwrap();
        assert_eq!(serde_json::from_slice::<NodeStatus>(&j).unwrap(), s);
        assert!(!String::from_utf8_lossy(&j).contains("reidentify"));
    }
}
