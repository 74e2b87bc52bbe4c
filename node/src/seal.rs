//! Sealing and opening gossip datagrams with the cluster key (XChaCha20-Poly1305), and the
//! replay window that refuses a datagram seen before.
//!
//! A sealed datagram is `version (1) || session (8) || counter (8) || ciphertext || tag (16)`.
//! The 24-byte XChaCha20 nonce is `session || counter || 8 zero bytes`: `session` is drawn
//! from the OS RNG once per process ([`Sealer::new`]), `counter` grows by one per datagram, so
//! a nonce never repeats under the key and no seeded RNG is involved. Session and counter are
//! authenticated (they are the nonce: change a bit and the tag fails), so a receiver can keep,
//! per session, the highest counter and a window of the 64 before it ([`ReplayGuard`]) and
//! refuse a copy. The associated data is the version byte followed by the cluster name, so a
//! datagram from another cluster (or another framing version) fails to open even under the
//! same key. See `node/PROTOCOL.md`. Nothing is parsed before authentication, and a datagram
//! longer than [`MAX_DATAGRAM`] is refused before any cryptographic work.

use std::collections::HashMap;
use std::time::Duration;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use piforge_config::ClusterKey;

/// Framing version of a sealed datagram (its first byte). 2: session and counter nonce.
pub const VERSION: u8 = 2;
/// Length of the session id.
pub const SESSION_LEN: usize = 8;
/// Length of the counter.
pub const COUNTER_LEN: usize = 8;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed datagram has on top of its plaintext.
pub const OVERHEAD: usize = 1 + SESSION_LEN + COUNTER_LEN + TAG_LEN;
/// Largest plaintext the protocol produces: a `State` with the most and longest tags
/// (`crate::wire::MAX_TAGS` pairs of `crate::wire::MAX_STR` bytes, length-prefixed), the
/// longest name and the frame header, rounded up. Everything else stays under 1,400 bytes.
pub const MAX_PLAINTEXT: usize = 34 * 1024;
/// Longest datagram anyone may send us; longer ones are dropped unopened (the agent's receive
/// buffer is one byte longer, so a longer datagram is seen as such, not truncated).
pub const MAX_DATAGRAM: usize = MAX_PLAINTEXT + OVERHEAD;

/// Why a datagram did not open. Every variant means "drop and count it".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Shorter than the header and tag together.
    #[error("datagram too short ({0} bytes)")]
    TooShort(usize),
    /// Longer than [`MAX_DATAGRAM`]: refused before any AEAD work.
    #[error("datagram too long ({0} bytes)")]
    TooLong(usize),
    /// First byte is not a framing version this build knows.
    #[error("unknown framing version {0}")]
    Version(u8),
    /// Authentication failed: wrong key, wrong cluster name, or tampered bytes.
    #[error("datagram failed authentication")]
    Auth,
}

/// An authenticated datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The sender's session (one per process).
    pub session: u64,
    /// The datagram's number within the session.
    pub counter: u64,
    /// The plaintext.
    pub plaintext: Vec<u8>,
}

fn nonce(session: u64, counter: u64) -> XNonce {
    let mut n = [0u8; 24];
    n[..8].copy_from_slice(&session.to_be_bytes());
    n[8..16].copy_from_slice(&counter.to_be_bytes());
    XNonce::from(n)
}

/// Seals `plaintext` for `cluster` under `key` as datagram `counter` of `session`. The caller
/// must never use a (session, counter) pair twice: use [`Sealer`].
pub fn seal(
    key: &ClusterKey,
    cluster: &str,
    session: u64,
    counter: u64,
    plaintext: &[u8],
) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let aad = associated_data(cluster);
    let ct = cipher
        .encrypt(
            &nonce(session, counter),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.push(VERSION);
    out.extend_from_slice(&session.to_be_bytes());
    out.extend_from_slice(&counter.to_be_bytes());
    out.extend_from_slice(&ct);
    out
}

/// Opens a datagram sealed by [`seal`]; the session, counter and plaintext, or why it was
/// refused. Does not check for replays (that is [`ReplayGuard`]).
///
/// Pure and total over any input: the fuzzing entry point for the datagram path.
pub fn open(key: &ClusterKey, cluster: &str, datagram: &[u8]) -> Result<Opened, SealError> {
    if datagram.len() < OVERHEAD {
        return Err(SealError::TooShort(datagram.len()));
    }
    if datagram.len() > MAX_DATAGRAM {
        return Err(SealError::TooLong(datagram.len()));
    }
    if datagram[0] != VERSION {
        return Err(SealError::Version(datagram[0]));
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&datagram[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let (session, counter) = (word(1), word(1 + SESSION_LEN));
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let aad = associated_data(cluster);
    let plaintext = cipher
        .decrypt(
            &nonce(session, counter),
            Payload {
                msg: &datagram[1 + SESSION_LEN + COUNTER_LEN..],
                aad: &aad,
            },
        )
        .map_err(|_| SealError::Auth)?;
    Ok(Opened {
        session,
        counter,
        plaintext,
    })
}

fn associated_data(cluster: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + cluster.len());
    aad.push(VERSION);
    aad.extend_from_slice(cluster.as_bytes());
    aad
}

/// The sending side: key, cluster, this process's session and the next counter.
#[derive(Clone)]
pub struct Sealer {
    key: ClusterKey,
    cluster: String,
    session: u64,
    counter: u64,
}

impl Sealer {
    /// A sealer with a fresh session from the OS RNG.
    pub fn new(key: ClusterKey, cluster: &str) -> Sealer {
        use rand_node::TryRng;
        let session = rand_node::rngs::SysRng
            .try_next_u64()
            .expect("the OS random number generator is available");
        Sealer {
            key,
            cluster: cluster.to_string(),
            session,
            counter: 0,
        }
    }

    /// Seals the next datagram.
    pub fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        self.counter += 1;
        seal(
            &self.key,
            &self.cluster,
            self.session,
            self.counter,
            plaintext,
        )
    }

    /// Opens a datagram under the same key and cluster (see [`open`]). Needs no lock on the
    /// membership core: the agent opens outside it.
    pub fn open(&self, datagram: &[u8]) -> Result<Opened, SealError> {
        open(&self.key, &self.cluster, datagram)
    }

    /// This process's session id.
    pub fn session(&self) -> u64 {
        self.session
    }
}

/// Counters a session can lag behind its highest and still be accepted once (reordering).
pub const REPLAY_WINDOW: u64 = 64;
/// Most sessions remembered. Only authenticated datagrams create entries, so only members
/// (holders of the key) fill the table; past the cap the longest-silent session is forgotten.
pub const MAX_SESSIONS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Window {
    highest: u64,
    /// Bit i: counter `highest - i` was seen.
    seen: u64,
    last: Duration,
}

/// Refuses a datagram whose (session, counter) was accepted before, or that is older than the
/// window of its session. Sessions silent for longer than the time-to-live are forgotten: a
/// datagram of a forgotten session is accepted again, so the membership core must not let an
/// old identity back in on that alone (it remembers reaped generations).
#[derive(Debug, Clone)]
pub struct ReplayGuard {
    sessions: HashMap<u64, Window>,
    ttl: Duration,
}

impl ReplayGuard {
    /// A guard forgetting sessions silent for `ttl`.
    pub fn new(ttl: Duration) -> ReplayGuard {
        ReplayGuard {
            sessions: HashMap::new(),
            ttl,
        }
    }

    /// Whether datagram `counter` of `session` is new; records it if so.
    pub fn accept(&mut self, session: u64, counter: u64, now: Duration) -> bool {
        if !self.sessions.contains_key(&session) && self.sessions.len() >= MAX_SESSIONS {
            self.expire(now);
            if self.sessions.len() >= MAX_SESSIONS
                && let Some((&oldest, _)) = self.sessions.iter().min_by_key(|(_, w)| w.last)
            {
                self.sessions.remove(&oldest);
            }
        }
        let w = self.sessions.entry(session).or_insert(Window {
            highest: counter,
            seen: 0,
            last: now,
        });
        if w.seen == 0 && w.highest == counter {
            w.seen = 1;
            w.last = now;
            return true;
        }
        if counter > w.highest {
            let shift = counter - w.highest;
            w.seen = if shift >= REPLAY_WINDOW {
                0
            } else {
                w.seen << shift
            };
            w.seen |= 1;
            w.highest = counter;
            w.last = now;
            return true;
        }
        let back = w.highest - counter;
        if back >= REPLAY_WINDOW || w.seen & (1 << back) != 0 {
            return false;
        }
        w.seen |= 1 << back;
        w.last = now;
        true
    }

    /// Forgets sessions silent for longer than the time-to-live.
    pub fn expire(&mut self, now: Duration) {
        let ttl = self.ttl;
        self.sessions
            .retain(|_, w| now.saturating_sub(w.last) <= ttl);
    }

    /// Sessions remembered.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is remembered.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> ClusterKey {
        ClusterKey::from_bytes([b; 32])
    }

    fn plain(d: &[u8], k: &ClusterKey, c: &str) -> Result<Vec<u8>, SealError> {
        open(k, c, d).map(|o| o.plaintext)
    }

    #[test]
    fn round_trips() {
        let d = seal(&key(1), "lab", 7, 9, b"hello");
        assert_eq!(d.len(), OVERHEAD + 5);
        assert_eq!(d[0], VERSION);
        assert!(!d.windows(5).any(|w| w == b"hello"), "plaintext leaked");
        let o = open(&key(1), "lab", &d).unwrap();
        assert_eq!(
            (o.session, o.counter, &o.plaintext[..]),
            (7, 9, &b"hello"[..])
        );
    }

    #[test]
    fn wrong_key_or_cluster_is_refused() {
        let d = seal(&key(1), "lab", 7, 1, b"hello");
        assert_eq!(plain(&d, &key(2), "lab"), Err(SealError::Auth));
        assert_eq!(plain(&d, &key(1), "lab2"), Err(SealError::Auth));
    }

    #[test]
    fn short_and_unknown_version_are_refused() {
        assert_eq!(
            plain(&[2; 32], &key(1), "lab"),
            Err(SealError::TooShort(32))
        );
        let mut d = seal(&key(1), "lab", 7, 1, b"");
        assert_eq!(plain(&d, &key(1), "lab").unwrap(), b"");
        d[0] = 1;
        assert_eq!(plain(&d, &key(1), "lab"), Err(SealError::Version(1)));
    }

    /// Security finding 15: an authentic but oversized datagram is refused by its length alone
    /// (before this, every datagram up to 64 KiB went through the AEAD under the core's lock).
    #[test]
    fn oversized_datagrams_are_refused_before_opening() {
        let big = seal(&key(1), "lab", 7, 1, &vec![0u8; MAX_PLAINTEXT + 1]);
        assert_eq!(big.len(), MAX_DATAGRAM + 1);
        assert_eq!(
            plain(&big, &key(1), "lab"),
            Err(SealError::TooLong(MAX_DATAGRAM + 1))
        );
        let max = seal(&key(1), "lab", 7, 2, &vec![0u8; MAX_PLAINTEXT]);
        assert_eq!(plain(&max, &key(1), "lab").unwrap().len(), MAX_PLAINTEXT);
    }

    #[test]
    fn sealer_counts_and_its_sessions_differ() {
        let mut a = Sealer::new(key(1), "lab");
        let b = Sealer::new(key(1), "lab");
        assert_ne!(a.session(), b.session(), "sessions come from the OS RNG");
        let d1 = open(&key(1), "lab", &a.seal(b"x")).unwrap();
        let d2 = open(&key(1), "lab", &a.seal(b"x")).unwrap();
        assert_eq!((d1.counter, d2.counter), (1, 2));
        assert_eq!(d1.session, a.session());
    }

    /// Security finding 7: a copy of an accepted datagram is refused; reordering within the
    /// window is not.
    #[test]
    fn replay_guard_refuses_copies_and_accepts_reordering() {
        let t = Duration::from_secs(1);
        let mut g = ReplayGuard::new(Duration::from_secs(60));
        assert!(g.accept(5, 10, t));
        assert!(!g.accept(5, 10, t), "exact copy");
        assert!(g.accept(5, 12, t));
        assert!(g.accept(5, 11, t), "late but within the window");
        assert!(!g.accept(5, 11, t));
        assert!(g.accept(5, 12 + REPLAY_WINDOW, t));
        assert!(!g.accept(5, 12, t), "older than the window");
        assert!(g.accept(6, 10, t), "sessions are independent");
        // A silent session is forgotten after the TTL (the core's tombstones cover that).
        g.expire(t + Duration::from_secs(61));
        assert!(g.is_empty());
    }

    #[test]
    fn replay_guard_is_bounded() {
        let mut g = ReplayGuard::new(Duration::from_secs(3600));
        for s in 0..(MAX_SESSIONS as u64 + 10) {
            assert!(g.accept(s, 1, Duration::from_millis(s)));
        }
        assert_eq!(g.len(), MAX_SESSIONS);
    }

    proptest! {
        #[test]
        fn any_flipped_bit_is_refused(msg in proptest::collection::vec(any::<u8>(), 0..200),
                                      bit in 0usize..10_000) {
            let d = seal(&key(3), "c", 9, 1, &msg);
            let mut t = d.clone();
            let i = bit % (t.len() * 8);
            t[i / 8] ^= 1 << (i % 8);
            prop_assert!(open(&key(3), "c", &t).is_err());
            prop_assert_eq!(plain(&d, &key(3), "c").unwrap(), msg);
        }

        #[test]
        fn open_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = open(&key(0), "c", &data);
        }
    }
}
