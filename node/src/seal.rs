//! Sealing and opening gossip datagrams with the cluster key (XChaCha20-Poly1305).
//!
//! A sealed datagram is `version (1 byte) || nonce (24 bytes) || ciphertext || tag (16 bytes)`;
//! the associated data is the version byte followed by the cluster name, so a datagram from
//! another cluster (or another framing version) fails to open even under the same key. See
//! `node/PROTOCOL.md`. This module only seals and opens bytes: it does not know what the
//! plaintext means (that is [`crate::wire`]) and never parses anything before authentication.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use piforge_config::ClusterKey;

/// Framing version of a sealed datagram (its first byte).
pub const VERSION: u8 = 1;
/// Length of the random nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed datagram has on top of its plaintext.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// Why a datagram did not open. Every variant means "drop and count it".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Shorter than the version, nonce and tag together.
    #[error("datagram too short ({0} bytes)")]
    TooShort(usize),
    /// First byte is not a framing version this build knows.
    #[error("unknown framing version {0}")]
    Version(u8),
    /// Authentication failed: wrong key, wrong cluster name, or tampered bytes.
    #[error("datagram failed authentication")]
    Auth,
}

/// Seals `plaintext` for `cluster` under `key` with the caller's fresh random `nonce`.
pub fn seal(key: &ClusterKey, cluster: &str, nonce: [u8; NONCE_LEN], plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let aad = associated_data(cluster);
    let ct = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("encryption of an in-memory buffer cannot fail");
    let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Opens a datagram sealed by [`seal`]; the plaintext, or why it was refused.
///
/// Pure and total over any input: the fuzzing entry point for the datagram path.
pub fn open(key: &ClusterKey, cluster: &str, datagram: &[u8]) -> Result<Vec<u8>, SealError> {
    if datagram.len() < OVERHEAD {
        return Err(SealError::TooShort(datagram.len()));
    }
    if datagram[0] != VERSION {
        return Err(SealError::Version(datagram[0]));
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&datagram[1..1 + NONCE_LEN]);
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let aad = associated_data(cluster);
    cipher
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &datagram[1 + NONCE_LEN..],
                aad: &aad,
            },
        )
        .map_err(|_| SealError::Auth)
}

fn associated_data(cluster: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + cluster.len());
    aad.push(VERSION);
    aad.extend_from_slice(cluster.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(b: u8) -> ClusterKey {
        ClusterKey::from_bytes([b; 32])
    }

    #[test]
    fn round_trips() {
        let d = seal(&key(1), "lab", [7; 24], b"hello");
        assert_eq!(d.len(), OVERHEAD + 5);
        assert_eq!(d[0], VERSION);
        assert!(!d.windows(5).any(|w| w == b"hello"), "plaintext leaked");
        assert_eq!(open(&key(1), "lab", &d).unwrap(), b"hello");
    }

    #[test]
    fn wrong_key_or_cluster_is_refused() {
        let d = seal(&key(1), "lab", [7; 24], b"hello");
        assert_eq!(open(&key(2), "lab", &d), Err(SealError::Auth));
        assert_eq!(open(&key(1), "lab2", &d), Err(SealError::Auth));
    }

    #[test]
    fn short_and_unknown_version_are_refused() {
        assert_eq!(open(&key(1), "lab", &[1; 40]), Err(SealError::TooShort(40)));
        let mut d = seal(&key(1), "lab", [7; 24], b"");
        assert_eq!(open(&key(1), "lab", &d).unwrap(), b"");
        d[0] = 2;
        assert_eq!(open(&key(1), "lab", &d), Err(SealError::Version(2)));
    }

    proptest! {
        #[test]
        fn any_flipped_bit_is_refused(msg in proptest::collection::vec(any::<u8>(), 0..200),
                                      bit in 0usize..10_000) {
            let d = seal(&key(3), "c", [9; 24], &msg);
            let mut t = d.clone();
            let i = bit % (t.len() * 8);
            t[i / 8] ^= 1 << (i % 8);
            prop_assert!(open(&key(3), "c", &t).is_err());
            prop_assert_eq!(open(&key(3), "c", &d).unwrap(), msg);
        }

        #[test]
        fn open_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = open(&key(0), "c", &data);
        }
    }
}
