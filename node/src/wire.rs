//! What an opened datagram holds: one kind byte, then either a foca (SWIM) packet or one
//! piforge control message (postcard-encoded [`Control`]).
//!
//! This module is pure: bytes in, values out. It does not seal (that is [`crate::seal`]) and
//! does not decide what a message means for the membership view (that is
//! [`crate::membership`]). Decoding enforces size limits on names and tags, so an authenticated
//! but misbehaving member cannot make us keep unbounded data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// Kind byte of a datagram carrying a foca packet.
pub const KIND_SWIM: u8 = 0;
/// Kind byte of a datagram carrying a [`Control`] message.
pub const KIND_CONTROL: u8 = 1;

/// Most tags one node may carry; longest tag key, tag value or node name, in bytes. Defined
/// once in [`piforge_config::tags`], which the builder and `tags set` check too.
pub use piforge_config::tags::{MAX_STR, MAX_TAGS};
/// Most members in one `Members` datagram (keeps it under the 1400-byte budget for names up
/// to ~20 bytes; longer names are sent in smaller slices).
pub const MAX_MEMBERS_PER_DATAGRAM: usize = 64;

/// A piforge message that foca does not carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// "This is me and my tags": sent to a member when it comes up, to every member when the
    /// tags change, and in answer to `want`. Lost updates are found through the tag versions
    /// of the `Members` table and asked for again.
    State {
        /// The sender's identity.
        id: NodeId,
        /// Bumped on every tag change of this generation.
        version: u64,
        /// The sender's tags.
        tags: BTreeMap<String, String>,
        /// "Send me yours": the sender does not have the receiver's current tags.
        want: bool,
    },
    /// "I am leaving on purpose": sent before foca's leave so receivers record `left`, not
    /// `failed`; receivers relay it once.
    Leaving {
        /// Who is leaving.
        id: NodeId,
    },
    /// Anti-entropy (foca has no periodic full-state sync): a slice of the sender's membership
    /// table. Sent every sync period to one random member (`reply: true` asks it to send its
    /// table back), so a member that missed a `down` update learns it within a period instead
    /// of only when its own probe round reaches the dead member.
    Members {
        /// Whether the receiver should answer with its own table.
        reply: bool,
        /// Members with foca's state and incarnation, tag version and `left`.
        members: Vec<MemberEntry>,
    },
}

/// One row of a `Members` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    /// foca's view: identity, incarnation, state.
    pub member: foca::Member<NodeId>,
    /// Version of the member's tags the sender holds (0: none).
    pub tags_version: u64,
    /// The member is down because it left on purpose.
    pub left: bool,
}

/// An opened datagram, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A foca packet, handed to foca unparsed.
    Swim(&'a [u8]),
    /// A piforge control message.
    Control(Control),
}

/// Why an authenticated plaintext was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Zero bytes.
    #[error("empty datagram")]
    Empty,
    /// Kind byte this build does not know.
    #[error("unknown datagram kind {0}")]
    Kind(u8),
    /// Control message that does not decode.
    #[error("malformed control message: {0}")]
    Malformed(String),
    /// Control message over the limits ([`MAX_TAGS`], [`MAX_STR`]).
    #[error("control message over limits")]
    TooLarge,
}

/// Encodes a foca packet as a datagram plaintext.
pub fn encode_swim(packet: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(packet.len() + 1);
    out.push(KIND_SWIM);
    out.extend_from_slice(packet);
    out
}

/// Encodes a control message as a datagram plaintext.
pub fn encode_control(msg: &Control) -> Vec<u8> {
    let mut out = vec![KIND_CONTROL];
    out.extend(postcard::to_allocvec(msg).expect("a control message always serializes"));
    out
}

/// Decodes an opened datagram. Pure; the fuzzing entry point after [`crate::seal::open`].
pub fn decode(plaintext: &[u8]) -> Result<Frame<'_>, WireError> {
    let (&kind, rest) = plaintext.split_first().ok_or(WireError::Empty)?;
    match kind {
        KIND_SWIM => Ok(Frame::Swim(rest)),
        KIND_CONTROL => {
            let msg: Control =
                postcard::from_bytes(rest).map_err(|e| WireError::Malformed(e.to_string()))?;
            check_limits(&msg)?;
            Ok(Frame::Control(msg))
        }
        k => Err(WireError::Kind(k)),
    }
}

fn check_limits(msg: &Control) -> Result<(), WireError> {
    let id = match msg {
        Control::State { id, tags, .. } => {
            if tags.len() > MAX_TAGS
                || tags
                    .iter()
                    .any(|(k, v)| k.len() > MAX_STR || v.len() > MAX_STR)
            {
                return Err(WireError::TooLarge);
            }
            id
        }
        Control::Leaving { id } => id,
        Control::Members { members, .. } => {
            if members.len() > MAX_MEMBERS_PER_DATAGRAM
                || members.iter().any(|m| m.member.id().name.len() > MAX_STR)
            {
                return Err(WireError::TooLarge);
            }
            return Ok(());
        }
    };
    if id.name.len() > MAX_STR {
        return Err(WireError::TooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id() -> NodeId {
        NodeId {
            name: "pi-01".into(),
            generation: 42,
            addr: "10.0.0.1:7946".parse().unwrap(),
        }
    }

    fn entry(member: foca::Member<NodeId>) -> MemberEntry {
        MemberEntry {
            member,
            tags_version: 2,
            left: false,
        }
    }

    /// The largest `State` the limits allow fits [`crate::seal::MAX_PLAINTEXT`], the bound the
    /// receiver enforces before opening anything (security finding 15).
    #[test]
    fn the_largest_state_fits_the_datagram_bound() {
        let long = "x".repeat(MAX_STR);
        let tags = (0..MAX_TAGS)
            .map(|i| (format!("{i:02}{}", &long[2..]), long.clone()))
            .collect();
        let msg = encode_control(&Control::State {
            id: NodeId {
                name: long.clone(),
                generation: u64::MAX,
                addr: "[ffff::1]:65535".parse().unwrap(),
            },
            version: u64::MAX,
            tags,
            want: true,
        });
        assert!(decode(&msg).is_ok());
        assert!(msg.len() <= crate::seal::MAX_PLAINTEXT, "{}", msg.len());
    }

    #[test]
    fn control_round_trips() {
        let mut tags = BTreeMap::new();
        tags.insert("role".to_string(), "web".to_string());
        for msg in [
            Control::State {
                id: id(),
                version: 3,
                tags,
                want: true,
            },
            Control::Leaving { id: id() },
            Control::Members {
                reply: true,
                members: vec![entry(foca::Member::new(id(), 3, foca::State::Suspect))],
            },
        ] {
            assert_eq!(decode(&encode_control(&msg)).unwrap(), Frame::Control(msg));
        }
        assert_eq!(decode(&encode_swim(b"xyz")).unwrap(), Frame::Swim(b"xyz"));
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(decode(&[]), Err(WireError::Empty));
        assert_eq!(decode(&[9, 1, 2]), Err(WireError::Kind(9)));
        assert!(matches!(
            decode(&[KIND_CONTROL, 0xff]),
            Err(WireError::Malformed(_))
        ));
        let mut tags = BTreeMap::new();
        for i in 0..=MAX_TAGS {
            tags.insert(format!("k{i}"), String::new());
        }
        let big = encode_control(&Control::State {
            id: id(),
            version: 1,
            tags,
            want: false,
        });
        assert_eq!(decode(&big), Err(WireError::TooLarge));
        let many = encode_control(&Control::Members {
            reply: false,
            members: vec![entry(foca::Member::alive(id())); MAX_MEMBERS_PER_DATAGRAM + 1],
        });
        assert_eq!(decode(&many), Err(WireError::TooLarge));
    }

    proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&data);
        }
    }
}
