//! Seeds learned at run time (mDNS, `POST /api/join`), as opposed to the configured seeds of
//! node.toml: bounded, expiring, and rate-limited.
//!
//! Anyone on the LAN can answer mDNS with our cluster's name in TXT (it is a hint, not a
//! credential). Without limits each fake instance would add a seed forever and make the node
//! send join datagrams to whatever address it named. So: at most [`MAX_LEARNED`] seeds (the
//! least recently seen goes first), each forgotten [`TTL`] after it was last seen, and an
//! immediate join to a learned seed at most once per [`REJOIN_AFTER`]. A learned seed that is a
//! live member is kept fresh by the membership, so a cluster's own seeds never expire.
//!
//! Pure: addresses and times in, decisions out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Most learned seeds kept at once.
pub const MAX_LEARNED: usize = 32;
/// A learned seed not seen again for this long is forgotten.
pub const TTL: Duration = Duration::from_secs(15 * 60);
/// Least time between two immediate joins to the same learned seed.
pub const REJOIN_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Entry {
    seen: Duration,
    joined: Duration,
}

/// The learned seeds of one node.
#[derive(Debug, Clone, Default)]
pub struct LearnedSeeds {
    seeds: BTreeMap<SocketAddr, Entry>,
    /// Start of the current [`REJOIN_AFTER`] window, and immediate joins granted in it: at
    /// most [`MAX_LEARNED`], so a flood cannot turn the node into a datagram reflector.
    window: (Duration, usize),
}

impl LearnedSeeds {
    /// Records a sighting of `addr` at `now`. Whether to join it now: it is new, or its last
    /// immediate join is at least [`REJOIN_AFTER`] old, and fewer than [`MAX_LEARNED`]
    /// immediate joins went out in the last [`REJOIN_AFTER`].
    pub fn saw(&mut self, addr: SocketAddr, now: Duration) -> bool {
        self.prune(now);
        if now.saturating_sub(self.window.0) >= REJOIN_AFTER {
            self.window = (now, 0);
        }
        let budget = self.window.1 < MAX_LEARNED;
        if let Some(e) = self.seeds.get_mut(&addr) {
            e.seen = now;
            if budget && now.saturating_sub(e.joined) >= REJOIN_AFTER {
                e.joined = now;
                self.window.1 += 1;
                return true;
            }
            return false;
        }
        if self.seeds.len() >= MAX_LEARNED {
            let oldest = self
                .seeds
                .iter()
                .min_by_key(|(a, e)| (e.seen, **a))
                .map(|(a, _)| *a);
            if let Some(a) = oldest {
                self.seeds.remove(&a);
            }
        }
        // Without budget the seed is kept (the lone node's periodic re-join reaches it) but
        // not joined now; `joined` is backdated so the next sighting may join it.
        let joined = if budget {
            self.window.1 += 1;
            now
        } else {
            now.saturating_sub(REJOIN_AFTER)
        };
        self.seeds.insert(addr, Entry { seen: now, joined });
        budget
    }

    /// Marks `addr` as seen now if it is a learned seed (a seed that is a live member never
    /// expires while it is one).
    pub fn touch(&mut self, addr: SocketAddr, now: Duration) {
        if let Some(e) = self.seeds.get_mut(&addr) {
            e.seen = now;
        }
    }

    /// Forgets seeds not seen for [`TTL`].
    pub fn prune(&mut self, now: Duration) {
        self.seeds.retain(|_, e| now.saturating_sub(e.seen) < TTL);
    }

    /// The seeds still known, in address order.
    pub fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.seeds.keys().copied()
    }

    /// How many are known.
    pub fn len(&self) -> usize {
        self.seeds.len()
    }

    /// Whether none is known.
    pub fn is_empty(&self) -> bool {
        self.seeds.is_empty()
    }

    /// When the next one expires, if any.
    pub fn next_expiry(&self) -> Option<Duration> {
        self.seeds.values().map(|e| e.seen + TTL).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(i: u32) -> SocketAddr {
        SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 7946))
    }
    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_flood_of_fake_instances_stays_bounded() {
        let mut l = LearnedSeeds::default();
        let mut joins = 0;
        for i in 0..10_000 {
            joins += usize::from(l.saw(a(i), S(1)));
        }
        assert_eq!(l.len(), MAX_LEARNED);
        // The newest are kept; every new one is joined once (no repeats).
        assert!(l.addrs().all(|x| x >= a(10_000 - MAX_LEARNED as u32)));
        // ...and only MAX_LEARNED of them made the node send anything.
        assert_eq!(joins, MAX_LEARNED);
        // A new window grants new joins.
        assert!(l.saw(a(20_000), S(1) + REJOIN_AFTER));
    }

    /// Through the membership core, as mDNS drives it: a flood of fake instances makes a
    /// bounded number of join datagrams, and once they expire a lone node stops sending any.
    #[test]
    fn a_lone_node_flooded_with_fake_seeds_stops_joining_them() {
        use crate::id::NodeId;
        use crate::membership::{Membership, Settings};
        let id = NodeId {
            name: "me".into(),
            generation: 1,
            addr: "127.0.0.1:7946".parse().unwrap(),
        };
        let key = piforge_config::ClusterKey::from_bytes([7; 32]);
        let mut m = Membership::new(Settings::new(id, "lab", key), S(0), 1).unwrap();
        for round in 0..3 {
            for i in 0..1000 {
                m.add_seed(a(i), S(round));
            }
        }
        assert!(m.learned_seeds() <= MAX_LEARNED);
        // A join is two datagrams: foca's announce and the push-pull of our table (issue 15).
        const PER_JOIN: usize = 2;
        let sent_at_once = m.drain_outgoing().len();
        assert!(sent_at_once <= PER_JOIN * MAX_LEARNED, "{sent_at_once}");
        // Alone, the node re-joins its seeds with backoff: only the kept ones, and none once
        // they expired (nobody answered; mDNS no longer names them).
        let mut t = S(3);
        let mut later = 0;
        while t < TTL + S(600) {
            m.tick(t);
            let n = m.drain_outgoing().len();
            if t > TTL + S(5) {
                assert_eq!(n, 0, "still joining expired seeds at {t:?}");
            }
            later += n;
            t += S(1);
        }
        // Re-joins go once a second for the first FAST_JOIN_TRIES, then back off to one round
        // per 30 s: at most ~TTL/30 s + 5 + FAST_JOIN_TRIES rounds of MAX_LEARNED.
        let fast = crate::membership::FAST_JOIN_TRIES as usize;
        let rounds = (TTL.as_secs() / 30 + 5) as usize + fast;
        assert!(
            later <= PER_JOIN * MAX_LEARNED * rounds,
            "{later} join datagrams"
        );
        assert_eq!(m.learned_seeds(), 0);
    }

    #[test]
    fn the_least_recently_seen_goes_first() {
        let mut l = LearnedSeeds::default();
        for i in 0..MAX_LEARNED as u32 {
            l.saw(a(i), S(u64::from(i)));
        }
        l.saw(a(0), S(100)); // seen again: now the freshest
        l.saw(a(999), S(101));
        assert!(l.addrs().any(|x| x == a(0)));
        assert!(!l.addrs().any(|x| x == a(1)), "a(1) was the stalest");
        assert_eq!(l.len(), MAX_LEARNED);
    }

    #[test]
    fn repeated_sightings_join_at_most_once_per_interval_and_expire() {
        let mut l = LearnedSeeds::default();
        assert!(l.saw(a(1), S(0)));
        for t in 1..10 {
            assert!(!l.saw(a(1), S(t)), "joined again after {t} s");
        }
        assert!(l.saw(a(1), S(10)));
        assert_eq!(l.next_expiry(), Some(S(10) + TTL));
        l.prune(S(10) + TTL - S(1));
        assert_eq!(l.len(), 1);
        l.touch(a(1), S(20));
        l.touch(a(2), S(20)); // not a seed: ignored
        l.prune(S(10) + TTL);
        assert_eq!(l.addrs().collect::<Vec<_>>(), [a(1)]);
        l.prune(S(20) + TTL);
        assert!(l.is_empty());
    }
}
