//! Gossip datagrams arrive from anyone on the LAN. Three layers must hold on any bytes:
//! opening (authentication first: nothing unauthenticated is parsed), the wire decoder, and
//! the membership core fed with bytes sealed with the right key (a compromised or buggy
//! member), which drives foca's decoder and our control messages.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use piforge_config::ClusterKey;
use piforge_node::id::NodeId;
use piforge_node::membership::{Membership, Settings};
use piforge_node::{seal, wire};

const CLUSTER: &str = "fuzz";

fuzz_target!(|data: &[u8]| {
    let key = ClusterKey::from_bytes([7; 32]);
    // Random bytes almost never authenticate; when they fail, nothing else may look at them.
    if let Ok(opened) = seal::open(&key, CLUSTER, data) {
        let _ = wire::decode(&opened.plaintext);
    }
    let _ = wire::decode(data);

    // An authenticated datagram with arbitrary contents, through the real core.
    // Twice with the same counter: the second is a replay and must be dropped unparsed.
    let sealed = seal::seal(&key, CLUSTER, 1, 1, data);
    let me: SocketAddr = "127.0.0.1:7946".parse().expect("a literal address");
    let from: SocketAddr = "127.0.0.2:7946".parse().expect("a literal address");
    let id = NodeId { name: "pi-01".into(), generation: 1, addr: me };
    let Ok(mut m) = Membership::new(Settings::new(id, CLUSTER, key), Duration::ZERO, 1) else {
        return;
    };
    m.handle_datagram(from, &sealed, Duration::from_millis(10));
    let before = m.counters();
    m.handle_datagram(from, &sealed, Duration::from_millis(20));
    assert_eq!(m.counters().replayed, before.replayed + u64::from(data.len() <= seal::MAX_PLAINTEXT));
    m.tick(Duration::from_secs(2));
    let _ = m.drain_outgoing();
    let _ = m.drain_events();
    let _ = m.members(Duration::from_secs(2));
});
