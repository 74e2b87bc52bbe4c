//! What this node knows of each peer besides foca's view: its address, generation, tags and a
//! phi-accrual estimate from packet inter-arrival times.

use super::*;

/// Samples of packet inter-arrival times from one peer.
#[derive(Debug, Clone, Default)]
pub(super) struct Arrivals {
    pub(super) last: Option<Duration>,
    pub(super) intervals: VecDeque<f64>,
}

const ARRIVAL_WINDOW: usize = 100;
/// Floor of the mean inter-arrival time, so a burst does not make phi explode.
const MIN_MEAN_SECS: f64 = 0.05;

impl Arrivals {
    pub(super) fn record(&mut self, now: Duration) {
        if let Some(last) = self.last {
            let dt = now.saturating_sub(last).as_secs_f64();
            if self.intervals.len() == ARRIVAL_WINDOW {
                self.intervals.pop_front();
            }
            self.intervals.push_back(dt);
        }
        self.last = Some(now);
    }

    /// Phi under an exponential inter-arrival model (as chitchat and Cassandra do):
    /// `phi = t / mean * log10(e)`.
    pub(super) fn phi(&self, now: Duration) -> f64 {
        let Some(last) = self.last else { return 0.0 };
        if self.intervals.is_empty() {
            return 0.0;
        }
        let mean = self.intervals.iter().sum::<f64>() / self.intervals.len() as f64;
        let t = now.saturating_sub(last).as_secs_f64();
        t / mean.max(MIN_MEAN_SECS) * std::f64::consts::LOG10_E
    }
}

#[derive(Debug, Clone)]
pub(super) struct Peer {
    pub(super) id: NodeId,
    /// Whether foca has ever reported this generation up.
    pub(super) seen_up: bool,
    pub(super) left: bool,
    pub(super) down_since: Option<Duration>,
    pub(super) up_since: Duration,
    pub(super) tags: BTreeMap<String, String>,
    pub(super) tags_version: u64,
    pub(super) arrivals: Arrivals,
    /// A `member-join` waits (until this time at most) for the member's tags, so handlers and
    /// webhooks see a join with tags rather than a join then an update.
    pub(super) join_pending: Option<Duration>,
    /// When we last answered this member's request for our table, and for our state (rate
    /// limits, one per kind: a join asks for both at once).
    pub(super) last_answer: [Option<Duration>; 2],
}

impl Peer {
    pub(super) fn new(id: NodeId, now: Duration) -> Peer {
        Peer {
            id,
            seen_up: false,
            left: false,
            down_since: None,
            up_since: now,
            tags: BTreeMap::new(),
            tags_version: 0,
            arrivals: Arrivals::default(),
            join_pending: None,
            last_answer: [None; 2],
        }
    }

    pub(super) fn is_up(&self) -> bool {
        self.seen_up && self.down_since.is_none() && !self.left
    }
}
