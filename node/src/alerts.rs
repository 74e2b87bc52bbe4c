//! Once-per-cluster delivery of events (pure): who sends, and how a handover never resends.
//!
//! A sink with `scope = "cluster"` (webhooks by default, handlers on request) is advertised by
//! every node that carries it in the tag [`SINKS_TAG`] (short ids of its sinks). Each such
//! node records every event it observes in an [`Outbox`] together with the *candidates*: the
//! members then alive or suspect that carry the same sink, minus the event's subject. The
//! sender is the lowest-named candidate still alive (or suspect) in the node's current view;
//! only the sender delivers. Once delivered, the sender lists the event's key (a hash of the
//! sink and the [`event_id`]) in its tag [`SENT_TAG`]; the others drop an event as soon as any
//! member's `SENT_TAG` lists its key. If the sender fails or leaves first, the next candidate
//! becomes the sender of what is still pending: a handover sends what was not sent, and an
//! event is never sent twice unless the sender dies between delivering and gossiping its tag
//! (then the receiver sees the same `id` twice and can drop the repeat).
//!
//! Candidates are fixed when the event is observed, so a member that joins later never
//! inherits old events. The tag updates themselves are not events: [`UpdateFilter`] drops a
//! `member-update` that changed nothing but these tags. What this module deliberately does not
//! do: talk to the network, or run anything (that is [`crate::events`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use crate::membership::{Event, EventKind, MemberInfo, MemberState};

/// Tag listing the cluster-scoped sinks a node carries (space-separated short ids).
pub const SINKS_TAG: &str = "alert-sinks";
/// Tag listing the keys of the last events this node delivered (space-separated).
pub const SENT_TAG: &str = "alerts-sent";
/// How many delivered keys a node keeps in [`SENT_TAG`] (13 bytes each, under the 256-byte
/// tag value limit).
pub const SENT_KEEP: usize = 16;
/// How long an undelivered event stays pending before it is dropped (logged).
pub const PENDING_FOR: Duration = Duration::from_secs(600);
/// At most this many events pending per sink; the oldest goes first.
pub const MAX_PENDING: usize = 1024;

/// FNV-1a, 64 bit: a stable hash (the same on every node, version and architecture).
pub fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Tags without the ones this module writes.
pub fn user_tags(tags: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    tags.iter()
        .filter(|(k, _)| k.as_str() != SENT_TAG && k.as_str() != SINKS_TAG)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// The id of an event, the same on every node that observes it:
/// `<kind>/<member>/<generation>`, plus a hash of the tags for `member-update`.
pub fn event_id(e: &Event) -> String {
    let base = format!(
        "{}/{}/{}",
        e.kind.as_str(),
        e.member.name,
        e.member.generation
    );
    if e.kind == EventKind::MemberUpdate {
        let tags: Vec<String> = user_tags(&e.member.tags)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("{base}/{:016x}", fnv(&tags.join("\n")))
    } else {
        base
    }
}

/// The short id of a sink from its description (URL or command, and its events).
pub fn sink_id(description: &str) -> String {
    format!("{:08x}", fnv(description) as u32)
}

/// The key of one event for one sink, as listed in [`SENT_TAG`].
pub fn sent_key(sink: &str, event_id: &str) -> String {
    format!(
        "{:012x}",
        fnv(&format!("{sink} {event_id}")) & 0xffff_ffff_ffff
    )
}

fn words<'a>(m: &'a MemberInfo, tag: &str) -> impl Iterator<Item = &'a str> {
    m.tags.get(tag).map(|v| v.split(' ')).into_iter().flatten()
}

fn up(m: &MemberInfo) -> bool {
    matches!(m.state, MemberState::Alive | MemberState::Suspect)
}

/// One event waiting for its sender.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Its [`sent_key`].
    pub key: String,
    /// Its [`event_id`].
    pub id: String,
    /// This node's sequence number of the event.
    pub seq: u64,
    /// The event.
    pub event: Event,
    candidates: BTreeSet<String>,
    since: Duration,
}

/// The events of one cluster-scoped sink on one node.
#[derive(Debug)]
pub struct Outbox {
    sink: String,
    me: String,
    pending: VecDeque<Pending>,
}

impl Outbox {
    /// An empty outbox for sink `sink` (its [`sink_id`]) on node `me`.
    pub fn new(sink: &str, me: &str) -> Outbox {
        Outbox {
            sink: sink.to_string(),
            me: me.to_string(),
            pending: VecDeque::new(),
        }
    }

    /// Records an event this node observed; `view` is its member list at that moment.
    pub fn observe(&mut self, seq: u64, event: Event, view: &[MemberInfo], now: Duration) {
        let id = event_id(&event);
        let key = sent_key(&self.sink, &id);
        if self.pending.iter().any(|p| p.key == key) {
            return;
        }
        let subject = &event.member.name;
        let mut candidates: BTreeSet<String> = view
            .iter()
            .filter(|m| up(m) && &m.name != subject && words(m, SINKS_TAG).any(|s| s == self.sink))
            .map(|m| m.name.clone())
            .collect();
        candidates.insert(self.me.clone());
        if self.pending.len() == MAX_PENDING
            && let Some(old) = self.pending.pop_front()
        {
            tracing::warn!(event = %old.id, "alert queue full: dropping the oldest event");
        }
        self.pending.push_back(Pending {
            key,
            id,
            seq,
            event,
            candidates,
            since: now,
        });
    }

    /// The sender of `p` in `view`: its lowest-named candidate that is still up (this node
    /// always is).
    fn sender<'a>(&'a self, p: &'a Pending, view: &[MemberInfo]) -> Option<&'a str> {
        p.candidates
            .iter()
            .find(|c| **c == self.me || view.iter().any(|m| &m.name == *c && up(m)))
            .map(String::as_str)
    }

    /// Takes the events this node must deliver now (it is their sender and nobody listed them
    /// as sent); forgets those someone else delivered and those pending for too long.
    pub fn due(&mut self, view: &[MemberInfo], now: Duration) -> Vec<Pending> {
        let sent: BTreeSet<&str> = view.iter().flat_map(|m| words(m, SENT_TAG)).collect();
        let mut due = Vec::new();
        let mut keep = VecDeque::new();
        for p in std::mem::take(&mut self.pending) {
            if sent.contains(p.key.as_str()) {
                continue;
            }
            if now.saturating_sub(p.since) > PENDING_FOR {
                tracing::warn!(event = %p.id, "no sender delivered this event in time: dropped");
                continue;
            }
            if self.sender(&p, view) == Some(self.me.as_str()) {
                due.push(p);
            } else {
                keep.push_back(p);
            }
        }
        self.pending = keep;
        due
    }

    /// How many events wait for another sender.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }
}

/// The keys this node delivered, newest last, as the value of its [`SENT_TAG`].
#[derive(Debug, Default)]
pub struct SentList(VecDeque<String>);

impl SentList {
    /// Adds a delivered key; returns the new tag value.
    pub fn push(&mut self, key: String) -> String {
        if self.0.len() == SENT_KEEP {
            self.0.pop_front();
        }
        self.0.push_back(key);
        self.0.iter().cloned().collect::<Vec<_>>().join(" ")
    }
}

/// Drops `member-update` events that changed only this module's tags, so delivering an alert
/// does not raise a new event everywhere.
#[derive(Debug, Default)]
pub struct UpdateFilter {
    seen: HashMap<String, (u64, String, MemberState, u64)>,
}

impl UpdateFilter {
    /// Whether `e` is worth publishing.
    pub fn keep(&mut self, e: &Event) -> bool {
        let m = &e.member;
        let tags: Vec<String> = user_tags(&m.tags)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let now = (
            m.generation,
            m.addr.to_string(),
            m.state,
            fnv(&tags.join("\n")),
        );
        if e.kind == EventKind::MemberReap {
            self.seen.remove(&m.name);
            return true;
        }
        let before = self.seen.insert(m.name.clone(), now.clone());
        !(e.kind == EventKind::MemberUpdate && before == Some(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, state: MemberState, tags: &[(&str, &str)]) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            addr: "10.0.0.1:7946".parse().unwrap(),
            generation: 7,
            state,
            phi: 0.0,
            threshold: 8.0,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            uptime_secs: 0,
            last_seen_secs: None,
        }
    }

    fn failed(name: &str) -> Event {
        Event {
            kind: EventKind::MemberFailed,
            member: m(name, MemberState::Failed, &[]),
        }
    }

    const S: &str = "0000abcd";

    fn view(states: &[(&str, MemberState)], sent: &[(&str, &str)]) -> Vec<MemberInfo> {
        states
            .iter()
            .map(|(n, s)| {
                let mut tags = vec![(SINKS_TAG, S)];
                if let Some((_, v)) = sent.iter().find(|(w, _)| w == n) {
                    tags.push((SENT_TAG, v));
                }
                m(n, *s, &tags)
            })
            .collect()
    }

    #[test]
    fn event_ids_are_the_same_everywhere_and_stable() {
        assert_eq!(event_id(&failed("pi-3")), "member-failed/pi-3/7");
        // A pinned value: the hash must never change between versions (mixed clusters).
        assert_eq!(fnv("a"), 0xaf63dc4c8601ec8c);
        let mut u = Event {
            kind: EventKind::MemberUpdate,
            member: m("x", MemberState::Alive, &[("role", "web")]),
        };
        let id = event_id(&u);
        u.member.tags.insert(SENT_TAG.into(), "abc".into());
        assert_eq!(event_id(&u), id, "internal tags change the id");
        u.member.tags.insert("role".into(), "lb".into());
        assert_ne!(event_id(&u), id);
    }

    #[test]
    fn only_the_lowest_live_candidate_sends_and_a_handover_sends_once() {
        use MemberState::*;
        let t0 = Duration::ZERO;
        let v0 = view(
            &[("a", Alive), ("b", Alive), ("c", Alive), ("d", Alive)],
            &[],
        );
        let mut boxes: Vec<Outbox> = ["a", "b", "c"].iter().map(|n| Outbox::new(S, n)).collect();
        // d fails: everyone observes it; a is the sender.
        for b in &mut boxes {
            b.observe(1, failed("d"), &v0, t0);
        }
        let due: Vec<usize> = boxes.iter_mut().map(|b| b.due(&v0, t0).len()).collect();
        assert_eq!(due, [1, 0, 0]);
        // a delivers and lists the key; b and c forget the event.
        let key = sent_key(S, "member-failed/d/7");
        let v1 = view(
            &[("a", Alive), ("b", Alive), ("c", Alive), ("d", Failed)],
            &[("a", &key)],
        );
        assert!(boxes[1].due(&v1, t0).is_empty() && boxes[1].waiting() == 0);
        assert!(boxes[2].due(&v1, t0).is_empty() && boxes[2].waiting() == 0);
        // a then fails too: b (not c) sends that, and nobody resends d's failure.
        let v2 = view(
            &[("a", Failed), ("b", Alive), ("c", Alive), ("d", Failed)],
            &[("a", &key)],
        );
        for b in &mut boxes[1..] {
            b.observe(2, failed("a"), &v2, t0);
        }
        let b_due = boxes[1].due(&v2, t0);
        assert_eq!(b_due.len(), 1);
        assert_eq!(b_due[0].id, "member-failed/a/7");
        assert!(boxes[2].due(&v2, t0).is_empty());
    }

    #[test]
    fn a_sender_that_dies_before_delivering_is_replaced() {
        use MemberState::*;
        let v0 = view(&[("a", Alive), ("b", Alive), ("c", Alive)], &[]);
        let mut b = Outbox::new(S, "b");
        b.observe(1, failed("c"), &v0, Duration::ZERO);
        assert!(b.due(&v0, Duration::ZERO).is_empty());
        // Suspect still counts as up: no early takeover.
        let v1 = view(&[("a", Suspect), ("b", Alive), ("c", Failed)], &[]);
        assert!(b.due(&v1, Duration::ZERO).is_empty());
        let v2 = view(&[("a", Failed), ("b", Alive), ("c", Failed)], &[]);
        assert_eq!(b.due(&v2, Duration::ZERO).len(), 1);
    }

    #[test]
    fn members_without_the_sink_and_late_joiners_are_not_senders() {
        use MemberState::*;
        // `a` has no such sink: `b` sends.
        let mut v = view(&[("b", Alive), ("c", Alive)], &[]);
        v.insert(0, m("a", Alive, &[(SINKS_TAG, "ffffffff")]));
        let mut b = Outbox::new(S, "b");
        b.observe(1, failed("x"), &v, Duration::ZERO);
        assert_eq!(b.due(&v, Duration::ZERO).len(), 1);
        // `a0` joins after the event with the sink: it is not a candidate of that event.
        let mut c = Outbox::new(S, "c");
        let v0 = view(&[("b", Alive), ("c", Alive)], &[]);
        c.observe(1, failed("x"), &v0, Duration::ZERO);
        let v1 = view(&[("a0", Alive), ("b", Failed), ("c", Alive)], &[]);
        assert_eq!(c.due(&v1, Duration::ZERO).len(), 1);
    }

    #[test]
    fn stale_events_expire_and_the_queue_is_bounded() {
        use MemberState::*;
        let v = view(&[("a", Alive), ("b", Alive)], &[]);
        let mut b = Outbox::new(S, "b");
        for i in 0..(MAX_PENDING + 5) {
            b.observe(i as u64, failed(&format!("x{i}")), &v, Duration::ZERO);
        }
        assert_eq!(b.waiting(), MAX_PENDING);
        assert!(b.due(&v, PENDING_FOR + Duration::from_secs(1)).is_empty());
        assert_eq!(b.waiting(), 0);
    }

    #[test]
    fn sent_list_fits_a_tag_and_internal_updates_are_filtered() {
        let mut l = SentList::default();
        let mut v = String::new();
        for i in 0..40 {
            v = l.push(sent_key(S, &i.to_string()));
        }
        assert_eq!(v.split(' ').count(), SENT_KEEP);
        assert!(v.len() <= 256, "{}", v.len());

        let mut f = UpdateFilter::default();
        let join = Event {
            kind: EventKind::MemberJoin,
            member: m("x", MemberState::Alive, &[("role", "web")]),
        };
        assert!(f.keep(&join));
        let mut upd = join.clone();
        upd.kind = EventKind::MemberUpdate;
        upd.member.tags.insert(SENT_TAG.into(), "k1".into());
        assert!(!f.keep(&upd), "an alerts-sent change is not an event");
        upd.member.tags.insert("role".into(), "lb".into());
        assert!(f.keep(&upd), "a real tag change is");
    }
}
