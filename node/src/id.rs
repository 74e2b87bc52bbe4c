//! [`NodeId`], the identity of a member process, on its own: the wire format ([`crate::wire`])
//! and the membership core ([`crate::membership`]) both speak it, and neither owns the other.

use std::net::SocketAddr;

use foca::Identity;
use serde::{Deserialize, Serialize};

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
}
