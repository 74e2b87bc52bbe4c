//! The sans-I/O membership core: foca (SWIM) plus what piforge adds on top of it.
//!
//! [`Membership`] takes datagrams, the time and commands as values and returns datagrams to
//! send and [`Event`]s; it owns no socket and no clock, so the simulation harness
//! ([`crate::sim`]) and the UDP agent drive the same code. On top of foca it adds: sealing of
//! every datagram ([`crate::seal`]), a per-name view where the newest generation of a name wins
//! (a restarted node is the same member, dead generations are hidden), `left` vs `failed`
//! (a `Leaving` control message before foca's leave), tags (`State` control messages), a
//! phi-accrual estimate per peer from packet inter-arrival times, reaping, and seed re-joins
//! with backoff. It deliberately does not run handlers or talk HTTP.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use foca::{
    Config, Foca, Identity, NoCustomBroadcast, Notification, PostcardCodec, Runtime, Timer,
};
use piforge_config::ClusterKey;
use rand_node::rngs::StdRng;
use rand_node::{Rng, RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::seal;
use crate::wire::{self, Control, Frame};

/// A member identity: its name, the generation of the process (grows on every restart) and the
/// gossip address. foca treats two identities with the same address as one member and keeps
/// the higher generation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// Member name (the hostname).
    pub name: String,
    /// Generation: larger is newer.
    pub generation: u64,
    /// Gossip address other members send to.
    pub addr: SocketAddr,
}

impl Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(NodeId {
            generation: self.generation + 1,
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, &self.name) > (adversary.generation, &adversary.name)
    }
}

pub use piforge_config::members::MemberState;

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
    /// How often our own state goes to one random member.
    pub sync_interval: Duration,
    /// Expected cluster size (tunes foca's dissemination).
    pub cluster_size_hint: u32,
}

impl Settings {
    /// Settings with the LAN defaults of node.toml.
    pub fn new(id: NodeId, cluster: &str, key: ClusterKey) -> Settings {
        Settings {
            id,
            cluster: cluster.to_string(),
            key,
            tags: BTreeMap::new(),
            seeds: Vec::new(),
            probe_period: Duration::from_millis(1000),
            probe_rtt: Duration::from_millis(500),
            suspect_to_failed: Duration::from_millis(5000),
            phi_threshold: 8.0,
            reap_after: Duration::from_secs(24 * 3600),
            sync_interval: Duration::from_secs(3),
            cluster_size_hint: 32,
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

/// Samples of packet inter-arrival times from one peer.
#[derive(Debug, Clone, Default)]
struct Arrivals {
    last: Option<Duration>,
    intervals: VecDeque<f64>,
}

const ARRIVAL_WINDOW: usize = 100;
/// Floor of the mean inter-arrival time, so a burst does not make phi explode.
const MIN_MEAN_SECS: f64 = 0.05;

impl Arrivals {
    fn record(&mut self, now: Duration) {
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
    fn phi(&self, now: Duration) -> f64 {
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
struct Peer {
    id: NodeId,
    /// Whether foca has ever reported this generation up.
    seen_up: bool,
    left: bool,
    down_since: Option<Duration>,
    up_since: Duration,
    tags: BTreeMap<String, String>,
    tags_version: u64,
    arrivals: Arrivals,
    /// A `member-join` waits (until this time at most) for the member's tags, so handlers and
    /// webhooks see a join with tags rather than a join then an update.
    join_pending: Option<Duration>,
}

type Swim = Foca<NodeId, PostcardCodec, StdRng, NoCustomBroadcast>;

/// foca's runtime: collects what foca wants done.
struct Collect {
    now: Duration,
    send: Vec<(SocketAddr, Vec<u8>)>,
    timers: Vec<(Duration, Timer<NodeId>)>,
    notes: Vec<foca::OwnedNotification<NodeId>>,
}

impl Runtime<NodeId> for Collect {
    fn notify(&mut self, n: Notification<'_, NodeId>) {
        self.notes.push(n.to_owned());
    }
    fn send_to(&mut self, to: NodeId, data: &[u8]) {
        self.send.push((to.addr, wire::encode_swim(data)));
    }
    fn submit_after(&mut self, event: Timer<NodeId>, after: Duration) {
        self.timers.push((self.now + after, event));
    }
}

/// The membership core of one node. See the module docs.
pub struct Membership {
    settings: Settings,
    swim: Swim,
    rng: StdRng,
    timers: BTreeMap<(Duration, u64), Timer<NodeId>>,
    timer_seq: u64,
    peers: BTreeMap<String, Peer>,
    tags: BTreeMap<String, String>,
    tags_version: u64,
    outgoing: Vec<(SocketAddr, Vec<u8>)>,
    events: Vec<Event>,
    counters: Counters,
    next_sync: Duration,
    next_full_sync: Duration,
    next_join: Duration,
    /// Seeds found at run time (mDNS, the API): bounded and expiring ([`crate::seeds`]).
    learned: crate::seeds::LearnedSeeds,
    join_backoff: Duration,
    left: bool,
    leaving_at: Option<Duration>,
    started: Duration,
}

/// Time between the `Leaving` messages and foca's own leave, so members hear "leaving" before
/// they hear "down" and report `left`, never `failed`.
pub const LEAVE_GRACE: Duration = Duration::from_millis(200);

/// How often the whole membership table goes to one random member (push-pull anti-entropy).
pub const FULL_SYNC_INTERVAL: Duration = Duration::from_secs(15);
/// Bytes of member entries per `Members` datagram.
const FULL_SYNC_BUDGET: usize = 1000;

/// Longest a `member-join` event waits for the member's tags.
pub const JOIN_TAGS_WAIT: Duration = Duration::from_secs(2);

/// Longest pause between two join attempts while alone.
const MAX_JOIN_BACKOFF: Duration = Duration::from_secs(30);
const FIRST_JOIN_BACKOFF: Duration = Duration::from_secs(1);

impl Membership {
    /// A core starting at time `now`, with its RNG seeded from `seed` (fixed in the harness,
    /// from the OS in the agent).
    pub fn new(
        settings: Settings,
        now: Duration,
        seed: u64,
    ) -> Result<Membership, MembershipError> {
        let mut config = Config::new_lan(
            NonZeroU32::new(settings.cluster_size_hint.max(1)).expect("max(1) is non-zero"),
        );
        config.probe_period = settings.probe_period;
        config.probe_rtt = settings.probe_rtt;
        config.suspect_to_down_after = settings.suspect_to_failed;
        config.remove_down_after = Some(settings.reap_after.max(Duration::from_secs(1)));
        config.max_packet_size = std::num::NonZeroUsize::new(1400 - seal::OVERHEAD - 1)
            .expect("the packet budget is positive");
        let mut swim = Foca::new(
            settings.id.clone(),
            config.clone(),
            StdRng::seed_from_u64(seed),
            PostcardCodec,
        );
        swim.set_config(config)
            .map_err(|e| MembershipError::Config(e.to_string()))?;
        let mut m = Membership {
            tags: settings.tags.clone(),
            settings,
            swim,
            rng: StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15),
            timers: BTreeMap::new(),
            timer_seq: 0,
            peers: BTreeMap::new(),
            tags_version: 1,
            outgoing: Vec::new(),
            events: Vec::new(),
            counters: Counters::default(),
            next_sync: now,
            next_full_sync: now + FULL_SYNC_INTERVAL,
            next_join: now,
            learned: crate::seeds::LearnedSeeds::default(),
            join_backoff: FIRST_JOIN_BACKOFF,
            left: false,
            leaving_at: None,
            started: now,
        };
        m.next_sync = now + m.settings.sync_interval;
        m.tick(now);
        Ok(m)
    }

    /// This node's identity.
    pub fn id(&self) -> &NodeId {
        self.swim.identity()
    }

    /// Whether [`Membership::leave`] was called.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// Sends a join request to `addr` now (seeds are also retried by [`Membership::tick`]).
    pub fn join(&mut self, addr: SocketAddr, now: Duration) {
        if self.left {
            return;
        }
        let placeholder = NodeId {
            name: String::new(),
            generation: 0,
            addr,
        };
        self.with_swim(now, |swim, rt| swim.announce(placeholder, rt));
    }

    /// Adds a seed to re-join while alone (one found by mDNS, or given to `POST /api/join`)
    /// and joins it now, unless it was joined less than [`crate::seeds::REJOIN_AFTER`] ago.
    /// Learned seeds are capped and expire ([`crate::seeds`]); configured ones stay.
    pub fn add_seed(&mut self, addr: SocketAddr, now: Duration) {
        if addr == self.id().addr {
            return;
        }
        if self.settings.seeds.contains(&addr) || self.learned.saw(addr, now) {
            self.join(addr, now);
        }
    }

    /// Configured and learned seeds.
    fn seeds(&self) -> Vec<SocketAddr> {
        let mut v = self.settings.seeds.clone();
        v.extend(
            self.learned
                .addrs()
                .filter(|a| !self.settings.seeds.contains(a)),
        );
        v
    }

    /// How many seeds were learned at run time and are still kept.
    pub fn learned_seeds(&self) -> usize {
        self.learned.len()
    }

    /// Handles one received datagram: open, decode, dispatch. Failures are counted, not returned.
    pub fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8], now: Duration) {
        self.counters.packets_in += 1;
        self.counters.bytes_in += datagram.len() as u64;
        let plain = match seal::open(&self.settings.key, &self.settings.cluster, datagram) {
            Ok(p) => p,
            Err(e) => {
                self.counters.rejected += 1;
                tracing::debug!(%from, error = %e, "dropping datagram");
                return;
            }
        };
        if self.left {
            return;
        }
        if let Some(peer) = self.peers.values_mut().find(|p| p.id.addr == from) {
            peer.arrivals.record(now);
        }
        match wire::decode(&plain) {
            Ok(Frame::Swim(packet)) => {
                let packet = packet.to_vec();
                if !self.with_swim(now, |swim, rt| swim.handle_data(&packet, rt)) {
                    self.counters.malformed += 1;
                }
            }
            Ok(Frame::Control(c)) => self.handle_control(c, from, now),
            Err(e) => {
                self.counters.malformed += 1;
                tracing::debug!(%from, error = %e, "dropping undecodable datagram");
            }
        }
    }

    /// Fires due timers, syncs state, retries seeds and reaps. Call at
    /// [`Membership::next_deadline`] at the latest.
    pub fn tick(&mut self, now: Duration) {
        while let Some((&(at, seq), _)) = self.timers.first_key_value() {
            if at > now {
                break;
            }
            let timer = self.timers.remove(&(at, seq)).expect("key was just seen");
            if !self.left {
                self.with_swim(now, |swim, rt| swim.handle_timer(timer, rt));
            }
        }
        if self.left {
            return;
        }
        if self.leaving_at.is_some_and(|at| now >= at) {
            self.with_swim(now, |swim, rt| swim.leave_cluster(rt));
            self.left = true;
            return;
        }
        if now >= self.next_sync {
            self.next_sync = now + self.settings.sync_interval;
            let active: Vec<SocketAddr> = self.swim.iter_members().map(|m| m.id().addr).collect();
            if !active.is_empty() {
                let to = active[self.rng.random_range(0..active.len())];
                let msg = self.own_state();
                self.send_control(to, &msg);
            }
        }
        if now >= self.next_full_sync {
            self.next_full_sync = now + FULL_SYNC_INTERVAL;
            let active: Vec<SocketAddr> = self.swim.iter_members().map(|m| m.id().addr).collect();
            if !active.is_empty() {
                let to = active[self.rng.random_range(0..active.len())];
                self.send_table(to, true);
            }
        }
        for m in self.swim.iter_members() {
            self.learned.touch(m.id().addr, now);
        }
        self.learned.prune(now);
        if self.swim.num_members() == 0 {
            if now >= self.next_join && !self.seeds().is_empty() {
                for seed in self.seeds() {
                    self.join(seed, now);
                }
                self.next_join = now + self.join_backoff;
                self.join_backoff = (self.join_backoff * 2).min(MAX_JOIN_BACKOFF);
            }
        } else {
            self.join_backoff = FIRST_JOIN_BACKOFF;
            self.next_join = now + FIRST_JOIN_BACKOFF;
        }
        let expired: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| p.join_pending.is_some_and(|t| now >= t))
            .map(|(n, _)| n.clone())
            .collect();
        for name in expired {
            if let Some(p) = self.peers.get_mut(&name) {
                p.join_pending = None;
            }
            self.emit(EventKind::MemberJoin, &name, now);
        }
        self.reap(now);
    }

    /// When [`Membership::tick`] next has something to do.
    pub fn next_deadline(&self) -> Duration {
        let mut d = self.next_sync;
        if let Some(at) = self.leaving_at {
            d = d.min(at);
        }
        d = d.min(self.next_full_sync);
        if let Some((&(at, _), _)) = self.timers.first_key_value() {
            d = d.min(at);
        }
        if self.swim.num_members() == 0 && !self.seeds().is_empty() {
            d = d.min(self.next_join);
        }
        if let Some(e) = self.learned.next_expiry() {
            d = d.min(e);
        }
        if let Some(j) = self.peers.values().filter_map(|p| p.join_pending).min() {
            d = d.min(j);
        }
        if let Some(r) = self.peers.values().filter_map(|p| p.down_since).min() {
            d = d.min(r + self.settings.reap_after);
        }
        d
    }

    /// Sets (or replaces) a tag and tells every member.
    pub fn set_tag(
        &mut self,
        key: &str,
        value: &str,
        now: Duration,
    ) -> Result<(), MembershipError> {
        let mut tags = self.tags.clone();
        tags.insert(key.to_string(), value.to_string());
        self.replace_tags(tags, now)
    }

    /// Sets and deletes tags in one change: all of them or, when the result would break the
    /// limits, none.
    pub fn update_tags(
        &mut self,
        set: &BTreeMap<String, String>,
        delete: &[String],
        now: Duration,
    ) -> Result<(), MembershipError> {
        let mut tags = self.tags.clone();
        tags.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        for k in delete {
            tags.remove(k);
        }
        self.replace_tags(tags, now)
    }

    /// Deletes a tag and tells every member.
    pub fn delete_tag(&mut self, key: &str, now: Duration) -> Result<(), MembershipError> {
        let mut tags = self.tags.clone();
        tags.remove(key);
        self.replace_tags(tags, now)
    }

    fn replace_tags(
        &mut self,
        tags: BTreeMap<String, String>,
        _now: Duration,
    ) -> Result<(), MembershipError> {
        if self.left {
            return Err(MembershipError::Left);
        }
        // Receivers drop a `State` over the limits: refuse here, loudly, instead of
        // announcing a state that makes this node vanish from everyone's view.
        piforge_config::tags::check_tags(&tags)?;
        if tags == self.tags {
            return Ok(());
        }
        self.tags = tags;
        self.tags_version += 1;
        let msg = self.own_state();
        let active: Vec<SocketAddr> = self.swim.iter_members().map(|m| m.id().addr).collect();
        for to in active {
            self.send_control(to, &msg);
        }
        Ok(())
    }

    /// Starts a graceful leave: `Leaving` to every member now, foca's leave [`LEAVE_GRACE`]
    /// later (in [`Membership::tick`]). Once [`Membership::has_left`] the core ignores input;
    /// the caller should send what [`Membership::drain_outgoing`] returns and exit.
    pub fn leave(&mut self, now: Duration) {
        if self.left || self.leaving_at.is_some() {
            return;
        }
        let msg = Control::Leaving {
            id: self.id().clone(),
        };
        let active: Vec<SocketAddr> = self.swim.iter_members().map(|m| m.id().addr).collect();
        if active.is_empty() {
            self.left = true;
            return;
        }
        for to in active {
            self.send_control(to, &msg);
        }
        self.leaving_at = Some(now + LEAVE_GRACE);
    }

    /// Datagrams to send, sealed.
    pub fn drain_outgoing(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.outgoing)
    }

    /// Events since the last call.
    pub fn drain_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Packet counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Phi threshold in use.
    pub fn phi_threshold(&self) -> f64 {
        self.settings.phi_threshold
    }

    /// Every listed member, self first, then by name.
    pub fn members(&self, now: Duration) -> Vec<MemberInfo> {
        let me = self.id();
        let mut out = vec![MemberInfo {
            name: me.name.clone(),
            addr: me.addr,
            generation: me.generation,
            state: if self.left {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            phi: 0.0,
            threshold: self.settings.phi_threshold,
            tags: self.tags.clone(),
            uptime_secs: now.saturating_sub(self.started).as_secs(),
            last_seen_secs: None,
        }];
        // One pass over foca's table, not one per peer: members() is called per HTTP request.
        let suspects: std::collections::HashSet<&NodeId> = self
            .swim
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Suspect)
            .map(|m| m.id())
            .collect();
        out.extend(
            self.peers
                .values()
                .filter(|p| p.seen_up && p.id.name != me.name)
                .map(|p| self.info_with(p, now, suspects.contains(&p.id))),
        );
        out
    }

    fn info(&self, p: &Peer, now: Duration) -> MemberInfo {
        let suspect = self
            .swim
            .iter_membership_state()
            .any(|m| m.id() == &p.id && m.state() == foca::State::Suspect);
        self.info_with(p, now, suspect)
    }

    fn info_with(&self, p: &Peer, now: Duration, suspect: bool) -> MemberInfo {
        let phi = p.arrivals.phi(now);
        let state = if p.left {
            MemberState::Left
        } else if p.down_since.is_some() {
            MemberState::Failed
        } else if suspect {
            MemberState::Suspect
        } else {
            MemberState::Alive
        };
        MemberInfo {
            name: p.id.name.clone(),
            addr: p.id.addr,
            generation: p.id.generation,
            state,
            phi,
            threshold: self.settings.phi_threshold,
            tags: p.tags.clone(),
            uptime_secs: now.saturating_sub(p.up_since).as_secs(),
            last_seen_secs: p.arrivals.last.map(|l| now.saturating_sub(l).as_secs_f64()),
        }
    }

    /// Sends our membership table (self included) in datagram-sized slices.
    fn send_table(&mut self, to: SocketAddr, reply: bool) {
        let mut table: Vec<foca::Member<NodeId>> =
            self.swim.iter_membership_state().cloned().collect();
        table.push(foca::Member::alive(self.id().clone()));
        let mut slice = Vec::new();
        let mut bytes = 0;
        let mut first = true;
        for m in table {
            let size = 24 + m.id().name.len();
            if !slice.is_empty()
                && (bytes + size > FULL_SYNC_BUDGET
                    || slice.len() == wire::MAX_MEMBERS_PER_DATAGRAM)
            {
                let members = std::mem::take(&mut slice);
                self.send_control(
                    to,
                    &Control::Members {
                        reply: first && reply,
                        members,
                    },
                );
                first = false;
                bytes = 0;
            }
            bytes += size;
            slice.push(m);
        }
        if !slice.is_empty() {
            self.send_control(
                to,
                &Control::Members {
                    reply,
                    members: slice,
                },
            );
        }
        // foca's table says only "down"; which of those left on purpose goes as `Leaving`.
        let left: Vec<NodeId> = self
            .peers
            .values()
            .filter(|p| p.left && p.down_since.is_some())
            .map(|p| p.id.clone())
            .collect();
        for id in left {
            self.send_control(to, &Control::Leaving { id });
        }
    }

    fn own_state(&self) -> Control {
        Control::State {
            id: self.id().clone(),
            version: self.tags_version,
            tags: self.tags.clone(),
        }
    }

    fn send_control(&mut self, to: SocketAddr, msg: &Control) {
        let plain = wire::encode_control(msg);
        self.push_sealed(to, &plain);
    }

    fn push_sealed(&mut self, to: SocketAddr, plain: &[u8]) {
        let mut nonce = [0u8; seal::NONCE_LEN];
        self.rng.fill_bytes(&mut nonce);
        let sealed = seal::seal(&self.settings.key, &self.settings.cluster, nonce, plain);
        self.counters.packets_out += 1;
        self.counters.bytes_out += sealed.len() as u64;
        self.outgoing.push((to, sealed));
    }

    /// Runs one foca call with a collecting runtime, then applies what it collected. Returns
    /// whether foca accepted the call.
    fn with_swim(
        &mut self,
        now: Duration,
        f: impl FnOnce(&mut Swim, &mut Collect) -> Result<(), foca::Error>,
    ) -> bool {
        let mut rt = Collect {
            now,
            send: Vec::new(),
            timers: Vec::new(),
            notes: Vec::new(),
        };
        let ok = match f(&mut self.swim, &mut rt) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "foca refused input");
                false
            }
        };
        for (at, t) in rt.timers {
            self.timer_seq += 1;
            self.timers.insert((at, self.timer_seq), t);
        }
        for (to, plain) in rt.send {
            self.push_sealed(to, &plain);
        }
        for n in rt.notes {
            self.on_notification(n, now);
        }
        ok
    }

    fn on_notification(&mut self, n: foca::OwnedNotification<NodeId>, now: Duration) {
        use foca::OwnedNotification as N;
        match n {
            N::MemberUp(id) => self.member_up(id, now),
            N::MemberDown(id) => self.member_down(&id, now),
            N::Rename(_, new) => {
                // A newer generation at the same address (a quick restart): the same member.
                let up = self
                    .swim
                    .iter_membership_state()
                    .any(|m| m.id() == &new && m.state() != foca::State::Down);
                if up {
                    self.member_up(new, now);
                }
            }
            N::Active | N::Idle => {}
            N::Rejoin(id) => {
                tracing::info!(generation = id.generation, "rejoined as a new generation")
            }
            N::Defunct => tracing::warn!("this node was declared down by the cluster"),
        }
    }

    fn member_up(&mut self, id: NodeId, now: Duration) {
        if id.name == self.id().name {
            return;
        }
        let peer = self.peers.entry(id.name.clone()).or_insert_with(|| Peer {
            id: id.clone(),
            seen_up: false,
            left: false,
            down_since: None,
            up_since: now,
            tags: BTreeMap::new(),
            tags_version: 0,
            arrivals: Arrivals::default(),
            join_pending: None,
        });
        if id.generation < peer.id.generation {
            return; // an older generation: hidden
        }
        let newer = id.generation > peer.id.generation;
        let was_up = peer.seen_up && peer.down_since.is_none() && !peer.left;
        if newer {
            peer.tags.clear();
            peer.tags_version = 0;
            peer.arrivals = Arrivals::default();
        }
        if newer || !was_up {
            peer.up_since = now;
        }
        peer.id = id.clone();
        peer.seen_up = true;
        peer.left = false;
        peer.down_since = None;
        if !was_up || newer {
            if peer.tags_version > 0 {
                self.emit(EventKind::MemberJoin, &id.name, now);
            } else {
                peer.join_pending = Some(now + JOIN_TAGS_WAIT);
            }
        }
        let msg = self.own_state();
        self.send_control(id.addr, &msg);
    }

    fn member_down(&mut self, id: &NodeId, now: Duration) {
        let Some(peer) = self.peers.get_mut(&id.name) else {
            return;
        };
        if peer.id != *id || peer.down_since.is_some() {
            return;
        }
        if peer.join_pending.take().is_some() {
            self.emit(EventKind::MemberJoin, &id.name, now);
        }
        let Some(peer) = self.peers.get_mut(&id.name) else {
            return;
        };
        peer.down_since = Some(now);
        let kind = if peer.left {
            EventKind::MemberLeave
        } else {
            EventKind::MemberFailed
        };
        self.emit(kind, &id.name, now);
    }

    fn handle_control(&mut self, c: Control, from: SocketAddr, now: Duration) {
        match c {
            Control::State { id, version, tags } => {
                if id.name == self.id().name {
                    return;
                }
                let Some(peer) = self.peers.get_mut(&id.name) else {
                    // Not up yet in foca: ask it to join us; its State comes again on MemberUp.
                    return;
                };
                if id.generation != peer.id.generation || version <= peer.tags_version {
                    return;
                }
                peer.tags_version = version;
                if peer.join_pending.take().is_some() {
                    peer.tags = tags;
                    self.emit(EventKind::MemberJoin, &id.name, now);
                } else if peer.tags != tags {
                    peer.tags = tags;
                    if peer.seen_up && peer.down_since.is_none() && !peer.left {
                        self.emit(EventKind::MemberUpdate, &id.name, now);
                    }
                }
            }
            Control::Members { reply, members } => {
                let down: Vec<NodeId> = members
                    .iter()
                    .filter(|m| m.state() == foca::State::Down)
                    .map(|m| m.id().clone())
                    .collect();
                // Our own entry is handled by foca (it refutes suspicion of us).
                self.with_swim(now, |swim, rt| {
                    swim.apply_many(members.into_iter(), true, rt)
                });
                for id in down {
                    self.learn_departed(id, false, now);
                }
                if reply {
                    self.send_table(from, false);
                }
            }
            Control::Leaving { id } => {
                let Some(peer) = self.peers.get_mut(&id.name) else {
                    // Never seen up here: a member that left before we joined (the sender's
                    // table sync) or one that came and went between our probes.
                    self.learn_departed(id, true, now);
                    return;
                };
                if peer.id != id || peer.left {
                    return;
                }
                peer.left = true;
                let pending_join = peer.join_pending.take().is_some();
                let already_down = peer.down_since.is_some();
                peer.down_since.get_or_insert(now);
                if pending_join {
                    self.emit(EventKind::MemberJoin, &id.name, now);
                }
                if !already_down {
                    self.emit(EventKind::MemberLeave, &id.name, now);
                }
                // Relay once to two random members, so a lost copy does not turn into "failed".
                let mut active: Vec<SocketAddr> = self
                    .swim
                    .iter_members()
                    .map(|m| m.id().addr)
                    .filter(|a| *a != id.addr)
                    .collect();
                let msg = Control::Leaving { id };
                for _ in 0..2 {
                    if active.is_empty() {
                        break;
                    }
                    let to = active.swap_remove(self.rng.random_range(0..active.len()));
                    self.send_control(to, &msg);
                }
            }
        }
    }

    /// Lists a member this node never saw up but the cluster knows as down (failed, or left
    /// when `left`): a node that joins after a failure shows it like every other member does.
    /// No event: the cluster already reported it, and a late joiner would only repeat the
    /// alert. Ignored when the name is already known (its newest generation wins) or, for a
    /// failure, when foca does not hold that identity as down.
    fn learn_departed(&mut self, id: NodeId, left: bool, now: Duration) {
        if id.name == self.id().name || self.peers.contains_key(&id.name) {
            return;
        }
        if !left
            && !self
                .swim
                .iter_membership_state()
                .any(|m| m.id() == &id && m.state() == foca::State::Down)
        {
            return;
        }
        tracing::debug!(member = %id.name, left, "learned of a member that is already down");
        self.peers.insert(
            id.name.clone(),
            Peer {
                id,
                seen_up: true,
                left,
                down_since: Some(now),
                up_since: now,
                tags: BTreeMap::new(),
                tags_version: 0,
                arrivals: Arrivals::default(),
                join_pending: None,
            },
        );
    }

    fn reap(&mut self, now: Duration) {
        let due: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.down_since
                    .is_some_and(|d| now >= d + self.settings.reap_after)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            self.emit(EventKind::MemberReap, &name, now);
            self.peers.remove(&name);
        }
    }

    fn emit(&mut self, kind: EventKind, name: &str, now: Duration) {
        if let Some(p) = self.peers.get(name) {
            let member = self.info(p, now);
            tracing::info!(event = kind.as_str(), member = %member.name, addr = %member.addr, "membership event");
            self.events.push(Event { kind, member });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_generation_wins_the_address() {
        let a = NodeId {
            name: "a".into(),
            generation: 1,
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        let b = a.renew().unwrap();
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
    }

    #[test]
    fn phi_grows_with_silence() {
        let mut a = Arrivals::default();
        for i in 0..10 {
            a.record(Duration::from_millis(100 * i));
        }
        let last = Duration::from_millis(900);
        assert!(a.phi(last) < 0.01);
        let p1 = a.phi(last + Duration::from_millis(500));
        let p2 = a.phi(last + Duration::from_secs(5));
        assert!(p1 > 1.0 && p2 > 8.0 && p2 > p1, "{p1} {p2}");
    }

    #[test]
    fn state_names_round_trip() {
        for s in ["alive", "suspect", "failed", "left"] {
            assert_eq!(MemberState::parse(s).unwrap().as_str(), s);
        }
        assert!(MemberState::parse("dead").is_none());
    }
}
