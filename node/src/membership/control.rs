//! piforge's control messages on top of SWIM: tags (`State`), tables and the full-state
//! push-pull (`Members`), `Leaving`; each sealed, rate-limited per member and kind.

use super::*;

impl Membership {
    /// Sends our membership table (self included) in datagram-sized slices: foca's state
    /// and incarnation of each member, the version of its tags we hold, and whether it left
    /// on purpose (foca's table says only "down").
    pub(super) fn send_table(&mut self, to: SocketAddr, reply: bool) {
        let mut table: Vec<wire::MemberEntry> = self
            .swim
            .iter_membership_state()
            .map(|m| {
                let peer = self.peers.get(&m.id().name).filter(|p| p.id == *m.id());
                wire::MemberEntry {
                    member: m.clone(),
                    tags_version: peer.map_or(0, |p| p.tags_version),
                    left: peer.is_some_and(|p| p.left),
                }
            })
            .collect();
        table.push(wire::MemberEntry {
            member: foca::Member::alive(self.id().clone()),
            tags_version: self.tags_version,
            left: false,
        });
        let mut slice = Vec::new();
        let mut bytes = 0;
        let mut first = true;
        for m in table {
            let size = 28 + m.member.id().name.len();
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
                    reply: first && reply,
                    members: slice,
                },
            );
        }
    }

    pub(super) fn own_state(&self, want: bool) -> Control {
        Control::State {
            id: self.id().clone(),
            version: self.tags_version,
            tags: self.tags.clone(),
            want,
        }
    }

    pub(super) fn send_control(&mut self, to: SocketAddr, msg: &Control) {
        let plain = wire::encode_control(msg);
        self.push_sealed(to, &plain);
    }

    pub(super) fn push_sealed(&mut self, to: SocketAddr, plain: &[u8]) {
        let sealed = self.sealer.seal(plain);
        self.counters.packets_out += 1;
        self.counters.bytes_out += sealed.len() as u64;
        self.outgoing.push((to, sealed));
    }

    /// Whether the peer at `addr` is listed and up, and may get an answer now (at most one
    /// per [`ANSWER_GAP`]): requests from anyone else, or too often, are not answered, so a
    /// datagram cannot make this node send to an address that is not a live member.
    pub(super) fn may_answer(&mut self, addr: SocketAddr, kind: Answer, now: Duration) -> bool {
        let Some(peer) = self.by_addr.get(&addr).and_then(|n| self.peers.get_mut(n)) else {
            return false;
        };
        if !peer.is_up() || peer.id.addr != addr {
            return false;
        }
        let last = &mut peer.last_answer[kind as usize];
        if last.is_some_and(|t| now < t + ANSWER_GAP) {
            return false;
        }
        *last = Some(now);
        true
    }

    pub(super) fn handle_control(&mut self, c: Control, from: SocketAddr, now: Duration) {
        match c {
            Control::State {
                id,
                version,
                tags,
                want,
            } => {
                if id.name == self.id().name {
                    return;
                }
                if !self.peers.contains_key(&id.name) {
                    // A member that knows us, but gossip has not brought it to us: a burst of
                    // joins can spend an update's transmissions before it reaches everyone,
                    // and then the pair waited for a probe or the full sync (20 s for 1 pair
                    // in 9,900 in the bench's 100-agent formation). Its State, authenticated
                    // and sent from the address it names, shows it alive there: foca takes it
                    // (and passes it on), MemberUp asks for its tags. Anything else waits for
                    // gossip: its State comes again on MemberUp.
                    if from != id.addr || self.is_reaped(&id) {
                        return;
                    }
                    let m = foca::Member::alive(id.clone());
                    self.with_swim(now, |swim, rt| {
                        swim.apply_many(std::iter::once(m), true, rt)
                    });
                }
                let Some(peer) = self.peers.get_mut(&id.name) else {
                    return;
                };
                if id.generation != peer.id.generation {
                    return;
                }
                if want && self.may_answer(id.addr, Answer::State, now) {
                    let msg = self.own_state(false);
                    self.send_control(id.addr, &msg);
                }
                let Some(peer) = self.peers.get_mut(&id.name) else {
                    return;
                };
                if version <= peer.tags_version {
                    return;
                }
                peer.tags_version = version;
                if peer.join_pending.take().is_some() {
                    peer.tags = tags;
                    self.emit(EventKind::MemberJoin, &id.name, now);
                } else if peer.tags != tags {
                    peer.tags = tags;
                    if peer.is_up() {
                        self.emit(EventKind::MemberUpdate, &id.name, now);
                    }
                }
            }
            Control::Members { reply, members } => {
                let mut departed = Vec::new();
                let mut stale_tags = Vec::new();
                for e in &members {
                    let id = e.member.id();
                    if e.member.state() == foca::State::Down {
                        departed.push((id.clone(), e.left));
                    } else if let Some(p) = self.peers.get(&id.name)
                        && p.id == *id
                        && e.tags_version > p.tags_version
                        && stale_tags.len() < MAX_WANTS_PER_TABLE
                    {
                        stale_tags.push(id.addr);
                    }
                }
                // Our own entry is handled by foca (it refutes suspicion of us). Members of
                // reaped generations stay out (a replayed table must not bring them back).
                // What we learn from a table is not gossiped on: the sender's table is the
                // cluster's consensus, news to us only, and re-broadcasting a whole table
                // costs every member max_transmissions datagrams per entry.
                let fresh: Vec<foca::Member<NodeId>> = members
                    .into_iter()
                    .map(|e| e.member)
                    .filter(|m| !self.is_reaped(m.id()))
                    .collect();
                self.with_swim(now, |swim, rt| {
                    swim.apply_many(fresh.into_iter(), false, rt)
                });
                for (id, left) in departed {
                    if left {
                        self.on_leaving(id, now, false);
                    } else {
                        self.learn_departed(id, false, now);
                    }
                }
                // Tags we hold older than the sender does: ask those members (missed updates).
                for to in stale_tags {
                    let msg = self.own_state(true);
                    self.send_control(to, &msg);
                }
                if reply && self.may_answer(from, Answer::Table, now) {
                    self.send_table(from, false);
                }
            }
            Control::Leaving { id } => self.on_leaving(id, now, true),
        }
    }

    /// A member left on purpose: list it `left` (never `failed`). With `relay`, pass the news
    /// once to two random members, so a lost copy does not turn into "failed".
    pub(super) fn on_leaving(&mut self, id: NodeId, now: Duration, relay: bool) {
        let Some(peer) = self.peers.get_mut(&id.name) else {
            // Never seen up here: a member that left before we joined (the sender's table
            // sync) or one that came and went between our probes.
            self.learn_departed(id, true, now);
            return;
        };
        if peer.id != id || peer.left {
            return;
        }
        peer.left = true;
        let pending_join = peer.join_pending.take().is_some();
        let already_down = peer.down_since.is_some();
        let down = *peer.down_since.get_or_insert(now);
        self.peer_due(down + self.settings.reap_after);
        if pending_join {
            self.emit(EventKind::MemberJoin, &id.name, now);
        }
        if !already_down {
            self.emit(EventKind::MemberLeave, &id.name, now);
        }
        if !relay {
            return;
        }
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

    /// Lists a member this node never saw up but the cluster knows as down (failed, or left
    /// when `left`): a node that joins after a failure shows it like every other member does.
    /// No event: the cluster already reported it, and a late joiner would only repeat the
    /// alert. Ignored when the name is already known (its newest generation wins) or, for a
    /// failure, when foca does not hold that identity as down.
    pub(super) fn learn_departed(&mut self, id: NodeId, left: bool, now: Duration) {
        if id.name == self.id().name || self.peers.contains_key(&id.name) || self.is_reaped(&id) {
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
        let mut peer = Peer::new(id, now);
        peer.seen_up = true;
        peer.left = left;
        peer.down_since = Some(now);
        self.peer_due(now + self.settings.reap_after);
        self.by_addr.insert(peer.id.addr, peer.id.name.clone());
        self.peers.insert(peer.id.name.clone(), peer);
    }
}
