//! The sans-I/O membership core: foca (SWIM) plus what piforge adds on top of it.
//!
//! [`Membership`] takes datagrams, the time and commands as values and returns datagrams to
//! send and [`Event`]s; it owns no socket and no clock, so the simulation harness
//! ([`crate::sim`]) and the UDP agent drive the same code. On top of foca it adds: sealing of
//! every datagram ([`crate::seal`]), a per-name view where the newest generation of a name wins
//! (a restarted node is the same member, dead generations are hidden), `left` vs `failed`
//! (a `Leaving` control message before foca's leave), tags (`State` control messages), a
//! phi-accrual estimate per peer from packet inter-arrival times, reaping, seed re-joins
//! with backoff, replay protection (a per-session counter window, and remembered generations
//! of reaped members), a full-state push-pull whose interval grows with the cluster as
//! memberlist's does, an immediate gossip round when the membership changes, dissemination
//! settings that follow the cluster's real size, and a Lifeguard-style local health score
//! (a node that notices it was starved waits longer before it declares others down). It
//! deliberately does not run handlers or talk HTTP.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use foca::{Config, Foca, NoCustomBroadcast, Notification, PostcardCodec, Runtime, Timer};
use piforge_config::ClusterKey;
use rand_node::rngs::StdRng;
use rand_node::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::seal::{self, Opened, ReplayGuard, SealError, Sealer};
use crate::wire::{self, Control, Frame};

pub use piforge_config::members::MemberState;

mod control;
mod detector;
mod swim;
mod types;

use detector::{Arrivals, Peer};
pub use types::{Counters, Event, EventKind, MemberInfo, MembershipError, Settings};

type Swim = Foca<NodeId, PostcardCodec, StdRng, NoCustomBroadcast>;

/// The membership core of one node. See the module docs.
pub struct Membership {
    settings: Settings,
    swim: Swim,
    /// Member selection only; nonces come from [`Sealer`] (OS-random session, counter).
    rng: StdRng,
    sealer: Sealer,
    guard: ReplayGuard,
    /// Gossip address -> name of every listed peer (per-datagram lookups stay O(1)).
    by_addr: HashMap<SocketAddr, String>,
    /// Newest generation of every reaped name: a replayed datagram of a forgotten identity
    /// must not bring it back (capped at [`MAX_TOMBSTONES`]).
    reaped: BTreeMap<String, u64>,
    /// Lifeguard-style local health: 0 is healthy; raised when this node notices it was
    /// starved (its own deadlines passed unserved), lowered again while it keeps time.
    health: u32,
    next_health_decay: Duration,
    /// The deadline this core last asked to be woken at, and when input last reached it.
    last_input: Duration,
    /// (cluster-size bucket, health) foca's configuration was last sized for.
    sized_for: (u32, u32),
    /// Earliest time of the next immediate gossip round (one per [`CHANGE_GOSSIP_GAP`]).
    next_change_gossip: Duration,
    change_pending: bool,
    /// No per-peer deadline (join wait, reap) is earlier than this.
    peer_deadline: Duration,
    timers: BTreeMap<(Duration, u64), Timer<NodeId>>,
    timer_seq: u64,
    peers: BTreeMap<String, Peer>,
    tags: BTreeMap<String, String>,
    tags_version: u64,
    outgoing: Vec<(SocketAddr, Vec<u8>)>,
    events: Vec<Event>,
    counters: Counters,
    next_full_sync: Duration,
    next_join: Duration,
    /// Seeds found at run time (mDNS, the API): bounded and expiring ([`crate::seeds`]).
    learned: crate::seeds::LearnedSeeds,
    join_backoff: Duration,
    /// Join attempts since this node was last in a cluster.
    join_tries: u32,
    left: bool,
    leaving_at: Option<Duration>,
    started: Duration,
}

/// Time between the `Leaving` messages and foca's own leave, so members hear "leaving" before
/// they hear "down" and report `left`, never `failed`.
pub const LEAVE_GRACE: Duration = Duration::from_millis(200);

/// How often the whole membership table goes to one random member (push-pull anti-entropy)
/// in a cluster of up to [`FULL_SYNC_SCALE_FROM`] members; larger clusters scale it up
/// ([`full_sync_interval`]). memberlist's LAN push-pull interval: 20 s made a 100-member
/// cluster send 1.03x Serf's idle bytes (the table, both ways, was a third of them), and
/// foca's gossip, not the sync, is what spreads news in the first place. A node's first sync
/// comes at a random point of the first interval, so cards started together do not sync in
/// step for ever.
pub const FULL_SYNC_INTERVAL: Duration = Duration::from_secs(30);
/// Cluster size above which the full-state interval grows (memberlist scales push-pull
/// from 32 members the same way).
pub const FULL_SYNC_SCALE_FROM: usize = 32;

/// Full-state sync interval for a cluster of `n` members: the base interval up to
/// [`FULL_SYNC_SCALE_FROM`] members, then one more base interval per doubling, so each node's
/// share of the sync traffic (a table of n entries every interval) grows as n / log n.
pub fn full_sync_interval(n: usize) -> Duration {
    if n <= FULL_SYNC_SCALE_FROM {
        return FULL_SYNC_INTERVAL;
    }
    let doublings = (n as f64 / FULL_SYNC_SCALE_FROM as f64).log2().ceil() as u32;
    FULL_SYNC_INTERVAL * (doublings + 1)
}

/// Members asked to probe indirectly when a direct probe gets no answer (foca's LAN default
/// is 3). With 5, a live member is suspected 3x less often under heavy loss: the bench's
/// 10 % loss run (about 19 % per exchange, both directions filtered) made 68 false `failed`
/// in 5 minutes at 10 nodes with 3 and a 4-transmission floor; the simulator, 0 with these.
const INDIRECT_PROBES: usize = 5;
/// Floor of the times an update (a suspicion, its refutation) is piggy-backed: foca's
/// 4·log10(n+1) gives 4 at 10 nodes, too few for a refutation to outrun the suspicion
/// timeout on a lossy network. Costs bytes only while there are updates.
const MIN_TRANSMISSIONS: u8 = 8;

/// Least time between two immediate gossip rounds after membership changes.
const CHANGE_GOSSIP_GAP: Duration = Duration::from_millis(50);
/// Least time between two answers to one member's state or table request.
const ANSWER_GAP: Duration = Duration::from_secs(1);
/// Most state requests one received table triggers.
const MAX_WANTS_PER_TABLE: usize = 8;
/// Reaped names remembered (name and generation).
pub const MAX_TOMBSTONES: usize = 4096;
/// A deadline served this late means this node was starved (stopped, overloaded).
const STALL: Duration = Duration::from_millis(500);
/// Highest local health score; the suspicion timeout is multiplied by `1 + health`.
const MAX_HEALTH: u32 = 4;
/// One point of local health comes back per this long without a stall.
const HEALTH_DECAY: Duration = Duration::from_secs(5);
/// Bytes of member entries per `Members` datagram.
const FULL_SYNC_BUDGET: usize = 1000;

/// Longest a `member-join` event waits for the member's tags.
pub const JOIN_TAGS_WAIT: Duration = Duration::from_secs(2);

/// Longest pause between two join attempts while alone.
const MAX_JOIN_BACKOFF: Duration = Duration::from_secs(30);
const FIRST_JOIN_BACKOFF: Duration = Duration::from_secs(1);
/// Join attempts made [`FIRST_JOIN_BACKOFF`] apart before the pause starts doubling. Cards
/// (or 100 bench agents) started together try their seed before it listens; doubling from
/// the first miss left some alone for 15 s (tries at 0, 1, 3, 7, 15 s). A try is two small
/// datagrams per seed, so ten a second apart cost nothing.
pub(crate) const FAST_JOIN_TRIES: u32 = 10;

/// What a member asked us for (each kind is rate-limited on its own).
#[derive(Clone, Copy)]
enum Answer {
    Table = 0,
    State = 1,
}

/// foca's configuration for a cluster of `n` known members (or the size hint, if larger) and a
/// local health score: dissemination repeats grow with log10(n) as memberlist's do; the
/// suspicion timeout is the configured one times `1 + health`.
fn foca_config(s: &Settings, n: usize, health: u32) -> Config {
    let size = u32::try_from(n)
        .unwrap_or(u32::MAX)
        .max(s.cluster_size_hint);
    let mut config = Config::new_lan(NonZeroU32::new(size.max(1)).expect("max(1) is non-zero"));
    config.probe_period = s.probe_period;
    config.probe_rtt = s.probe_rtt;
    config.suspect_to_down_after = s.suspect_to_failed * (1 + health);
    config.num_indirect_probes =
        std::num::NonZeroUsize::new(INDIRECT_PROBES).expect("a non-zero constant");
    config.max_transmissions = config
        .max_transmissions
        .max(std::num::NonZeroU8::new(MIN_TRANSMISSIONS).expect("a non-zero constant"));
    config.remove_down_after = Some(s.reap_after.max(Duration::from_secs(1)));
    config.max_packet_size = std::num::NonZeroUsize::new(1400 - seal::OVERHEAD - 1)
        .expect("the packet budget is positive");
    config
}

/// Cluster sizes that get the same foca configuration: one bucket per doubling.
fn size_bucket(n: usize, s: &Settings) -> u32 {
    let size = u32::try_from(n)
        .unwrap_or(u32::MAX)
        .max(s.cluster_size_hint)
        .max(1);
    32 - size.leading_zeros()
}

impl Membership {
    /// A core starting at time `now`. `seed` seeds member selection only (fixed in the
    /// harness, from the OS in the agent); the datagram session comes from the OS RNG.
    pub fn new(
        settings: Settings,
        now: Duration,
        seed: u64,
    ) -> Result<Membership, MembershipError> {
        let config = foca_config(&settings, 1, 0);
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
            sealer: Sealer::new(settings.key.clone(), &settings.cluster),
            guard: ReplayGuard::new(settings.reap_after * 2),
            by_addr: HashMap::new(),
            reaped: BTreeMap::new(),
            health: 0,
            next_health_decay: now + HEALTH_DECAY,
            last_input: now,
            sized_for: (size_bucket(1, &settings), 0),
            next_change_gossip: now,
            change_pending: false,
            peer_deadline: Duration::MAX,
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
            next_full_sync: now + FULL_SYNC_INTERVAL,
            next_join: now,
            learned: crate::seeds::LearnedSeeds::default(),
            join_backoff: FIRST_JOIN_BACKOFF,
            join_tries: 0,
            left: false,
            leaving_at: None,
            started: now,
        };
        let stagger = m.rng.random_range(0..FULL_SYNC_INTERVAL.as_millis() as u64);
        m.next_full_sync = now + Duration::from_millis(stagger);
        m.tick(now);
        Ok(m)
    }

    /// A sealer for opening datagrams outside the core's lock (same key, cluster and checks
    /// as [`Membership::handle_datagram`]); feed the result to [`Membership::handle_opened`].
    pub fn opener(&self) -> Sealer {
        self.sealer.clone()
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
        // A push-pull with the seed, as memberlist joins: our table (us) goes to it and its
        // whole table comes back, so the newcomer knows every member in one round trip (a
        // foca feed holds one datagram of members) and can answer their requests for its tags.
        self.send_table(addr, true);
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

    /// Handles one received datagram: open, check for a replay, decode, dispatch. Failures
    /// are counted, not returned.
    pub fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8], now: Duration) {
        let opened = self.sealer.open(datagram);
        self.handle_opened(from, datagram.len(), opened, now);
    }

    /// [`Membership::handle_datagram`] for a datagram of `len` bytes already opened (by
    /// [`Membership::opener`], outside the lock).
    pub fn handle_opened(
        &mut self,
        from: SocketAddr,
        len: usize,
        opened: Result<Opened, SealError>,
        now: Duration,
    ) {
        self.counters.packets_in += 1;
        self.counters.bytes_in += len as u64;
        let opened = match opened {
            Ok(o) => o,
            Err(e) => {
                self.counters.rejected += 1;
                tracing::debug!(%from, error = %e, "dropping datagram");
                return;
            }
        };
        if !self.guard.accept(opened.session, opened.counter, now) {
            self.counters.replayed += 1;
            tracing::debug!(%from, "dropping a replayed datagram");
            return;
        }
        if self.left {
            return;
        }
        self.check_health(now);
        if let Some(peer) = self.by_addr.get(&from).and_then(|n| self.peers.get_mut(n)) {
            peer.arrivals.record(now);
        }
        match wire::decode(&opened.plaintext) {
            Ok(Frame::Swim(packet)) => {
                if !self.with_swim(now, |swim, rt| swim.handle_data(packet, rt)) {
                    self.counters.malformed += 1;
                }
            }
            Ok(Frame::Control(c)) => self.handle_control(c, from, now),
            Err(e) => {
                self.counters.malformed += 1;
                tracing::debug!(%from, error = %e, "dropping undecodable datagram");
            }
        }
        self.gossip_changes(now);
    }

    /// Local health (Lifeguard): input arriving well after the deadline this core asked for
    /// means the process was starved or stopped. Probe timeouts that "expired" meanwhile say
    /// nothing about the peers, so pending timers move forward by the stall, and the health
    /// score goes up (foca then waits longer before turning a suspect into down).
    fn check_health(&mut self, now: Duration) {
        let due = self.next_deadline().max(self.last_input);
        self.last_input = now;
        if now > due + STALL {
            let stall = now - due;
            // Plus one probe timeout: the replies that waited in the socket get read first.
            let grace = self.settings.probe_rtt;
            let timers = std::mem::take(&mut self.timers);
            for ((at, seq), t) in timers {
                self.timers.insert((at.max(due) + stall + grace, seq), t);
            }
            self.health = (self.health + 1).min(MAX_HEALTH);
            self.next_health_decay = now + HEALTH_DECAY;
            tracing::info!(
                stall_ms = stall.as_millis() as u64,
                health = self.health,
                "this node was starved: delaying its own probe verdicts"
            );
        } else if self.health > 0 && now >= self.next_health_decay {
            self.health -= 1;
            self.next_health_decay = now + HEALTH_DECAY;
        }
    }

    /// Local health score (0: healthy; see [`Membership::handle_opened`]).
    pub fn health(&self) -> u32 {
        self.health
    }

    /// Resizes foca's dissemination and suspicion settings when the cluster size crossed a
    /// bucket or the local health changed.
    fn resize(&mut self) {
        let n = self.swim.num_members() + 1;
        let want = (size_bucket(n, &self.settings), self.health);
        if want == self.sized_for {
            return;
        }
        self.sized_for = want;
        if let Err(e) = self
            .swim
            .set_config(foca_config(&self.settings, n, self.health))
        {
            tracing::warn!(error = %e, "foca refused a resized configuration");
        }
    }

    /// One immediate gossip round after a membership change (a join, a failure, a leave),
    /// instead of waiting for foca's next periodic round: each hop of the epidemic then costs
    /// a network delay, not up to a gossip period.
    fn gossip_changes(&mut self, now: Duration) {
        if self.change_pending && now >= self.next_change_gossip && !self.left {
            self.change_pending = false;
            if self.swim.updates_backlog() == 0 {
                return; // learned from a table: nothing to pass on
            }
            self.next_change_gossip = now + CHANGE_GOSSIP_GAP;
            self.with_swim(now, |swim, rt| swim.gossip(rt));
        }
    }

    /// Fires due timers, syncs state, retries seeds and reaps. Call at
    /// [`Membership::next_deadline`] at the latest.
    pub fn tick(&mut self, now: Duration) {
        if !self.left {
            self.check_health(now);
        }
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
        if now >= self.next_full_sync {
            let n = self.swim.num_members();
            self.next_full_sync = now + full_sync_interval(n + 1);
            if n > 0 {
                let i = self.rng.random_range(0..n);
                let to = self.swim.iter_members().nth(i).map(|m| m.id().addr);
                if let Some(to) = to {
                    self.send_table(to, true);
                }
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
                self.join_tries = self.join_tries.saturating_add(1);
                if self.join_tries >= FAST_JOIN_TRIES {
                    self.join_backoff = (self.join_backoff * 2).min(MAX_JOIN_BACKOFF);
                }
                self.next_join = now + self.join_backoff;
            }
        } else {
            self.join_tries = 0;
            self.join_backoff = FIRST_JOIN_BACKOFF;
            self.next_join = now + FIRST_JOIN_BACKOFF;
        }
        if now >= self.peer_deadline {
            // Something per peer is due (a join that waited for tags, a reap): one pass.
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
            let reap_after = self.settings.reap_after;
            self.peer_deadline = self
                .peers
                .values()
                .flat_map(|p| [p.join_pending, p.down_since.map(|d| d + reap_after)])
                .flatten()
                .min()
                .unwrap_or(Duration::MAX);
        }
        if self.health > 0 && now >= self.next_health_decay {
            self.health -= 1;
            self.next_health_decay = now + HEALTH_DECAY;
        }
        self.resize();
        self.gossip_changes(now);
    }

    /// When [`Membership::tick`] next has something to do.
    pub fn next_deadline(&self) -> Duration {
        let mut d = self.next_full_sync;
        if let Some(at) = self.leaving_at {
            d = d.min(at);
        }
        if self.change_pending {
            d = d.min(self.next_change_gossip);
        }
        if self.health > 0 {
            d = d.min(self.next_health_decay);
        }
        if let Some((&(at, _), _)) = self.timers.first_key_value() {
            d = d.min(at);
        }
        if self.swim.num_members() == 0 && !self.seeds().is_empty() {
            d = d.min(self.next_join);
        }
        if let Some(e) = self.learned.next_expiry() {
            d = d.min(e);
        }
        d.min(self.peer_deadline)
    }

    /// Notes a per-peer deadline (join wait, reap), so [`Membership::next_deadline`] stays
    /// O(1): the exact minimum is recomputed in [`Membership::tick`] once it is due.
    fn peer_due(&mut self, at: Duration) {
        self.peer_deadline = self.peer_deadline.min(at);
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
        let msg = self.own_state(false);
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

    /// How this node currently lists `name` (`None`: not listed). Cheaper than
    /// [`Membership::members`] when one member is of interest.
    pub fn state_of(&self, name: &str) -> Option<MemberState> {
        if name == self.id().name {
            return Some(if self.left {
                MemberState::Left
            } else {
                MemberState::Alive
            });
        }
        let p = self.peers.get(name).filter(|p| p.seen_up)?;
        Some(if p.left {
            MemberState::Left
        } else if p.down_since.is_some() {
            MemberState::Failed
        } else if self
            .swim
            .iter_membership_state()
            .any(|m| m.id() == &p.id && m.state() == foca::State::Suspect)
        {
            MemberState::Suspect
        } else {
            MemberState::Alive
        })
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lone(name: &str, port: u16) -> Membership {
        let id = NodeId {
            name: name.into(),
            generation: 1,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        Membership::new(
            Settings::new(id, "lab", ClusterKey::from_bytes([4; 32])),
            Duration::ZERO,
            1,
        )
        .unwrap()
    }

    /// A lone node tries its seed once a second for the first ten tries (cards started
    /// together reach a seed that was not yet listening within a second of it starting),
    /// then ever more slowly, up to every 30 s.
    #[test]
    fn a_lone_node_retries_its_seed_every_second_then_backs_off() {
        let seed: SocketAddr = "127.0.0.1:7999".parse().unwrap();
        let id = NodeId {
            name: "a".into(),
            generation: 1,
            addr: SocketAddr::from(([127, 0, 0, 1], 7001)),
        };
        let mut settings = Settings::new(id, "lab", ClusterKey::from_bytes([4; 32]));
        settings.seeds = vec![seed];
        let mut a = Membership::new(settings, Duration::ZERO, 1).unwrap();
        let mut tries = Vec::new();
        for ms in (0..=120_000u64).step_by(100) {
            let now = Duration::from_millis(ms);
            a.tick(now);
            if a.drain_outgoing().iter().any(|(to, _)| *to == seed) {
                tries.push(ms / 1000);
            }
        }
        assert_eq!(&tries[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "{tries:?}");
        let gaps: Vec<u64> = tries.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(&gaps[9..13], &[2, 4, 8, 16], "{tries:?}");
        assert!(gaps.iter().all(|g| *g <= 30), "{tries:?}");
    }

    /// Security finding 7: a table request (authentic, e.g. captured and replayed from
    /// another address) from an address that is not a live member gets no answer; before,
    /// the whole table went to whatever source address the datagram claimed.
    #[test]
    fn table_requests_from_non_members_are_not_answered() {
        let mut a = lone("a", 7001);
        let _ = a.drain_outgoing();
        let mut stranger = Sealer::new(ClusterKey::from_bytes([4; 32]), "lab");
        let request = stranger.seal(&wire::encode_control(&Control::Members {
            reply: true,
            members: Vec::new(),
        }));
        let victim: SocketAddr = "192.0.2.7:7946".parse().unwrap();
        a.handle_datagram(victim, &request, Duration::from_millis(10));
        assert_eq!(a.counters().malformed, 0);
        let out = a.drain_outgoing();
        assert!(
            out.iter().all(|(to, _)| *to != victim),
            "answered a non-member: {out:?}"
        );
    }

    /// Security finding 15: an authentic datagram longer than the protocol's largest is
    /// dropped as rejected, not opened and parsed.
    #[test]
    fn oversized_datagrams_are_rejected_unopened() {
        let mut a = lone("a", 7002);
        let mut peer = Sealer::new(ClusterKey::from_bytes([4; 32]), "lab");
        let big = peer.seal(&vec![wire::KIND_SWIM; seal::MAX_PLAINTEXT + 100]);
        a.handle_datagram(
            "127.0.0.1:7003".parse().unwrap(),
            &big,
            Duration::from_millis(5),
        );
        let c = a.counters();
        assert_eq!((c.rejected, c.malformed), (1, 0), "{c:?}");
    }

    /// Local health: a core served 3 s after its deadline (SIGSTOP, starvation) raises its
    /// health score and postpones its pending timers instead of firing probe verdicts that
    /// say nothing about its peers.
    #[test]
    fn a_starved_core_lowers_its_confidence_and_postpones_verdicts() {
        let mut a = lone("a", 7004);
        let due = a.next_deadline();
        let late = due + Duration::from_secs(3);
        a.tick(late);
        assert_eq!(a.health(), 1);
        assert!(a.next_deadline() > late, "timers were not postponed");
        // Keeping time for a while brings the score back to 0.
        let mut t = late;
        for _ in 0..100 {
            t = a.next_deadline().max(t);
            a.tick(t);
        }
        assert_eq!(a.health(), 0);
    }

    #[test]
    fn full_sync_interval_grows_with_log_of_size() {
        assert_eq!(full_sync_interval(10), FULL_SYNC_INTERVAL);
        assert_eq!(full_sync_interval(32), FULL_SYNC_INTERVAL);
        assert_eq!(full_sync_interval(64), FULL_SYNC_INTERVAL * 2);
        assert_eq!(full_sync_interval(1000), FULL_SYNC_INTERVAL * 6);
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
