//! foca (SWIM) underneath: its runtime, its notifications turned into the per-name view
//! (newest generation wins), member up/down, reaping and the events that come of them.

use super::*;

/// foca's runtime: collects what foca wants done.
pub(super) struct Collect {
    pub(super) now: Duration,
    pub(super) send: Vec<(SocketAddr, Vec<u8>)>,
    pub(super) timers: Vec<(Duration, Timer<NodeId>)>,
    pub(super) notes: Vec<foca::OwnedNotification<NodeId>>,
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

impl Membership {
    /// Runs one foca call with a collecting runtime, then applies what it collected. Returns
    /// whether foca accepted the call.
    pub(super) fn with_swim(
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

    pub(super) fn on_notification(&mut self, n: foca::OwnedNotification<NodeId>, now: Duration) {
        use foca::OwnedNotification as N;
        match n {
            N::MemberUp(id) => {
                self.change_pending = true;
                self.member_up(id, now)
            }
            N::MemberDown(id) => {
                self.change_pending = true;
                self.member_down(&id, now)
            }
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

    pub(super) fn member_up(&mut self, id: NodeId, now: Duration) {
        if id.name == self.id().name || self.is_reaped(&id) {
            return;
        }
        let peer = self
            .peers
            .entry(id.name.clone())
            .or_insert_with(|| Peer::new(id.clone(), now));
        if id.generation < peer.id.generation {
            return; // an older generation: hidden
        }
        let newer = id.generation > peer.id.generation;
        let was_up = peer.is_up();
        if newer {
            peer.tags.clear();
            peer.tags_version = 0;
            peer.arrivals = Arrivals::default();
        }
        if newer || !was_up {
            peer.up_since = now;
        }
        let old_addr = std::mem::replace(&mut peer.id, id.clone()).addr;
        peer.seen_up = true;
        peer.left = false;
        peer.down_since = None;
        let want = peer.tags_version == 0;
        if !was_up || newer {
            if peer.tags_version > 0 {
                self.emit(EventKind::MemberJoin, &id.name, now);
            } else {
                peer.join_pending = Some(now + JOIN_TAGS_WAIT);
                self.peer_deadline = self.peer_deadline.min(now + JOIN_TAGS_WAIT);
            }
        }
        self.index(&id.name, old_addr, id.addr);
        // Our state to the newcomer, and a request for its own when we do not have it yet:
        // its join event (which carries its tags) then waits one round trip, not for the
        // newcomer to learn about us.
        if !was_up || newer {
            let msg = self.own_state(want);
            self.send_control(id.addr, &msg);
        }
    }

    /// Keeps the address index in step with a peer's (possibly new) address.
    pub(super) fn index(&mut self, name: &str, old: SocketAddr, new: SocketAddr) {
        if old != new && self.by_addr.get(&old).is_some_and(|n| n == name) {
            self.by_addr.remove(&old);
        }
        self.by_addr.insert(new, name.to_string());
    }

    /// Whether `id` is a generation of a reaped name (or older): never listed again.
    pub(super) fn is_reaped(&self, id: &NodeId) -> bool {
        self.reaped
            .get(&id.name)
            .is_some_and(|&g| id.generation <= g)
    }

    pub(super) fn member_down(&mut self, id: &NodeId, now: Duration) {
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
        self.peer_deadline = self.peer_deadline.min(now + self.settings.reap_after);
        let kind = if peer.left {
            EventKind::MemberLeave
        } else {
            EventKind::MemberFailed
        };
        self.emit(kind, &id.name, now);
    }

    pub(super) fn reap(&mut self, now: Duration) {
        let due: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.down_since
                    .is_some_and(|d| now >= d + self.settings.reap_after)
            })
            .map(|(n, _)| n.clone())
            .collect();
        let due_is_empty = due.is_empty();
        for name in due {
            self.emit(EventKind::MemberReap, &name, now);
            if let Some(p) = self.peers.remove(&name) {
                if self.by_addr.get(&p.id.addr) == Some(&name) {
                    self.by_addr.remove(&p.id.addr);
                }
                let g = self.reaped.entry(name).or_insert(0);
                *g = (*g).max(p.id.generation);
            }
            if self.reaped.len() > MAX_TOMBSTONES
                && let Some(oldest) = self
                    .reaped
                    .iter()
                    .min_by_key(|(_, g)| **g)
                    .map(|(n, _)| n.clone())
            {
                self.reaped.remove(&oldest);
            }
        }
        if !due_is_empty {
            self.guard.expire(now);
        }
    }

    pub(super) fn emit(&mut self, kind: EventKind, name: &str, now: Duration) {
        if let Some(p) = self.peers.get(name) {
            // Only an update can concern a suspect; the others skip the scan of foca's table.
            let member = if kind == EventKind::MemberUpdate {
                self.info(p, now)
            } else {
                self.info_with(p, now, false)
            };
            tracing::info!(event = kind.as_str(), member = %member.name, addr = %member.addr, "membership event");
            self.events.push(Event { kind, member });
        }
    }
}
