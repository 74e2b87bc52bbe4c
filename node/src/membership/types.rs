//! The membership core's public vocabulary: members, events, counters, settings, errors.

use super::*;

/// One member as seen from this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Member name.
    pub name: String,
    /// Gossip address.
    pub addr: SocketAddr,
    /// Generation of the process.
    pub generation: u64,
    /// Current state.
    pub state: MemberState,
    /// Phi-accrual suspicion level (0 for self).
    pub phi: f64,
    /// Phi above which the member shows as suspect.
    pub threshold: f64,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Seconds since this node saw this generation come up.
    pub uptime_secs: u64,
    /// Seconds since the last authenticated datagram from it (`None`: never, or self).
    pub last_seen_secs: Option<f64>,
}

/// What changed, Serf-style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A member (or a new generation of it) came up.
    MemberJoin,
    /// A member left on purpose.
    MemberLeave,
    /// A member was declared down.
    MemberFailed,
    /// A member's tags changed.
    MemberUpdate,
    /// A failed or left member was forgotten.
    MemberReap,
}

impl EventKind {
    /// The event name (`member-join`, ...), as in `PIFORGE_EVENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::MemberJoin => "member-join",
            EventKind::MemberLeave => "member-leave",
            EventKind::MemberFailed => "member-failed",
            EventKind::MemberUpdate => "member-update",
            EventKind::MemberReap => "member-reap",
        }
    }
}

/// A membership event and the member it concerns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The member, as of the event.
    pub member: MemberInfo,
}

/// Packet counters, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Datagrams handed to [`Membership::handle_datagram`].
    pub packets_in: u64,
    /// Datagrams produced for sending.
    pub packets_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes produced for sending.
    pub bytes_out: u64,
    /// Datagrams that failed to open (wrong key, other cluster, tampered): dropped unparsed.
    pub rejected: u64,
    /// Authenticated datagrams that did not decode, or that foca refused.
    pub malformed: u64,
    /// Authenticated datagrams refused as copies of one already accepted (replays).
    pub replayed: u64,
}

/// Everything a membership core needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This node's identity.
    pub id: NodeId,
    /// Cluster name (associated data of every datagram).
    pub cluster: String,
    /// Cluster key.
    pub key: ClusterKey,
    /// Initial tags.
    pub tags: BTreeMap<String, String>,
    /// Seeds to join (and re-join with backoff while alone).
    pub seeds: Vec<SocketAddr>,
    /// SWIM probe period.
    pub probe_period: Duration,
    /// SWIM direct probe timeout.
    pub probe_rtt: Duration,
    /// How long a suspect has to refute before it is failed.
    pub suspect_to_failed: Duration,
    /// Phi threshold for the suspect display.
    pub phi_threshold: f64,
    /// How long failed/left members stay listed.
    pub reap_after: Duration,
    /// Expected cluster size: foca's dissemination is sized for the larger of this and the
    /// number of members actually known.
    pub cluster_size_hint: u32,
}

impl Settings {
    /// Settings with the LAN defaults of node.toml (its `[detector]` defaults, defined once
    /// in `piforge-config`).
    pub fn new(id: NodeId, cluster: &str, key: ClusterKey) -> Settings {
        let d = piforge_config::node::DetectorSettings::default();
        Settings {
            id,
            cluster: cluster.to_string(),
            key,
            tags: BTreeMap::new(),
            seeds: Vec::new(),
            probe_period: Duration::from_millis(d.probe_period_ms),
            probe_rtt: Duration::from_millis(d.probe_rtt_ms),
            suspect_to_failed: Duration::from_millis(d.suspect_to_failed_ms),
            phi_threshold: d.phi_threshold,
            reap_after: Duration::from_secs(d.reap_after_secs),
            cluster_size_hint: 8,
        }
    }
}

/// Why a command was refused.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// foca refused its configuration.
    #[error("invalid gossip timing: {0}")]
    Config(String),
    /// The node has left; it takes no more commands.
    #[error("this node has left the cluster")]
    Left,
    /// Tags the other members would refuse (over the limits of [`piforge_config::tags`]).
    #[error(transparent)]
    Tags(#[from] piforge_config::tags::TagError),
}
