//! What the agent shares with the tasks it starts (the HTTP server, the event sinks, mDNS):
//! the checked [`AgentRequest`] it runs from and the [`Shared`] state around the membership
//! core, plus [`start_leave`], which a signal and `POST /api/leave` both call.
//!
//! Its own module so that [`crate::agent`] starts those tasks and they reach the state without
//! importing the agent back. Deliberately no loop and no socket here: that is the agent.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use piforge_config::ClusterKey;
use piforge_config::node::{DetectorSettings, EventHandler, MqttSettings, Webhook};
use tokio::sync::{Notify, broadcast};

use crate::membership::{Event, Membership};

/// Everything the agent needs, checked (built by the CLI from node.toml and flags).
#[derive(Debug, Clone)]
pub struct AgentRequest {
    /// Member name.
    pub name: String,
    /// Cluster name.
    pub cluster: String,
    /// Cluster key.
    pub key: ClusterKey,
    /// Gossip socket to bind.
    pub bind: SocketAddr,
    /// Address to advertise (default: the bound one; for a wildcard bind, the address of the
    /// interface of the default route).
    pub advertise: Option<SocketAddr>,
    /// HTTP socket to bind.
    pub http: SocketAddr,
    /// Seeds, `host:port`.
    pub seeds: Vec<String>,
    /// mDNS discovery.
    pub mdns: bool,
    /// Initial tags.
    pub tags: BTreeMap<String, String>,
    /// Timing.
    pub detector: DetectorSettings,
    /// Event handlers.
    pub handlers: Vec<EventHandler>,
    /// Webhooks.
    pub webhooks: Vec<Webhook>,
    /// MQTT.
    pub mqtt: Option<MqttSettings>,
    /// Where the generation counter lives.
    pub state_dir: PathBuf,
    /// Root under which the files `GET /api/node` reports are read (SSH host public keys,
    /// firstboot's reports): `/` on a Pi, a temp dir in tests.
    pub root: PathBuf,
}

/// How many past events `GET /api/events` can replay.
const EVENT_HISTORY: usize = 1024;

/// State shared by the gossip loop and the HTTP handlers. Locks are never held across `.await`.
pub struct Shared {
    core: Mutex<Membership>,
    clock: Instant,
    /// Wakes the gossip loop after a command changed the core (so it flushes at once).
    pub wake: Notify,
    history: Mutex<VecDeque<(u64, Event)>>,
    next_seq: Mutex<u64>,
    /// Every event with its sequence number.
    pub events: broadcast::Sender<(u64, Event)>,
    /// Cluster name.
    pub cluster: String,
    /// Becomes true once the node has left; sinks say goodbye and stop.
    pub leaving: tokio::sync::watch::Sender<bool>,
    /// Drops updates that only changed the once-per-cluster bookkeeping tags.
    filter: Mutex<crate::alerts::UpdateFilter>,
    /// Proves API answers come from a cluster member (derived from the cluster key).
    pub api_key: piforge_config::api_auth::ApiKey,
    /// Root of the files `GET /api/node` reports.
    pub root: PathBuf,
}

impl Shared {
    /// The state of an agent started from `req`, around its membership `core` whose time zero
    /// is `clock`.
    pub fn new(core: Membership, clock: Instant, req: &AgentRequest) -> Shared {
        let (events, _) = broadcast::channel(256);
        Shared {
            core: Mutex::new(core),
            clock,
            wake: Notify::new(),
            history: Mutex::new(VecDeque::new()),
            next_seq: Mutex::new(0),
            events,
            cluster: req.cluster.clone(),
            leaving: tokio::sync::watch::channel(false).0,
            filter: Mutex::default(),
            api_key: piforge_config::api_auth::ApiKey::derive(&req.key),
            root: req.root.clone(),
        }
    }

    /// Monotonic time since the agent started: the core's clock.
    pub fn now(&self) -> Duration {
        self.clock.elapsed()
    }

    /// Locks the core.
    pub fn core(&self) -> MutexGuard<'_, Membership> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events with a sequence number greater than `after`, and the next sequence number.
    pub fn events_after(&self, after: u64) -> (Vec<(u64, Event)>, u64) {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let next = *self.next_seq.lock().unwrap_or_else(|p| p.into_inner());
        (
            h.iter().filter(|(s, _)| *s > after).cloned().collect(),
            next,
        )
    }

    /// Filters `events`, records them in the history and sends them to every subscriber.
    pub(crate) fn publish(&self, mut events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        {
            let mut f = self.filter.lock().unwrap_or_else(|p| p.into_inner());
            events.retain(|e| f.keep(e));
        }
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let mut seq = self.next_seq.lock().unwrap_or_else(|p| p.into_inner());
        for e in events {
            *seq += 1;
            if h.len() == EVENT_HISTORY {
                h.pop_front();
            }
            h.push_back((*seq, e.clone()));
            let _ = self.events.send((*seq, e)); // no subscriber is fine
        }
    }
}

/// Starts a graceful leave (signal or API).
pub fn start_leave(shared: &Shared, why: &str) {
    tracing::info!(reason = why, "leaving the cluster");
    let now = shared.now();
    shared.core().leave(now);
    shared.wake.notify_one();
}
