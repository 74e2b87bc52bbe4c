//! Proof of cluster membership for the node's HTTP API answers.
//!
//! mDNS and plain HTTP on the LAN are unauthenticated: anyone can advertise `_piforge._udp`
//! and answer `GET /api/members`. The host (`piforge inventory`, `piforge status`) therefore
//! sends a fresh random challenge with each request (`?challenge=<64 hex>`), and the node
//! answers with `X-Piforge-Auth: <64 hex>`, an HMAC-SHA256 over the challenge, the request
//! path and the exact body bytes, keyed by a key derived from the cluster key. Only a holder
//! of the cluster key can make it; a fresh challenge makes a recorded answer useless; the body
//! and path are covered, so nothing can be swapped in transit.
//!
//! The API key is derived (HMAC of a fixed label under the cluster key), never the cluster key
//! itself, so the gossip encryption and the API tags never share a key. Pure functions: the
//! caller draws the challenge from its OS RNG and does the HTTP.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::ClusterKey;

/// Query parameter carrying the client's challenge.
pub const CHALLENGE_PARAM: &str = "challenge";

/// Response header carrying the node's proof (lower case, as HTTP/2 and `http` spell it).
pub const AUTH_HEADER: &str = "x-piforge-auth";

/// Bytes of a challenge.
pub const CHALLENGE_LEN: usize = 32;

/// Label the API key is derived with (a new label is a new, incompatible protocol version).
const KEY_LABEL: &[u8] = b"piforge node api v1";

type HmacSha256 = Hmac<Sha256>;

/// The key that authenticates API answers of the cluster holding `key`.
#[derive(Clone)]
pub struct ApiKey([u8; 32]);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(crate::secret::REDACTED)
    }
}

impl ApiKey {
    /// Derives the API key from the cluster key.
    pub fn derive(key: &ClusterKey) -> ApiKey {
        let mut m = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes any key size");
        m.update(KEY_LABEL);
        ApiKey(m.finalize().into_bytes().into())
    }

    fn mac(&self, challenge: &[u8; CHALLENGE_LEN], path: &str, body: &[u8]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key size");
        m.update(challenge);
        // The path is length-prefixed so no (path, body) pair can pass for another.
        m.update(&(path.len() as u64).to_be_bytes());
        m.update(path.as_bytes());
        m.update(body);
        m
    }

    /// The proof for answering `path` with `body` to `challenge`, as 64 hex digits.
    pub fn sign(&self, challenge: &[u8; CHALLENGE_LEN], path: &str, body: &[u8]) -> String {
        hex::encode(self.mac(challenge, path, body).finalize().into_bytes())
    }

    /// Whether `proof` (hex, from the header) proves that a holder of the cluster key answered
    /// `path` with exactly `body` to `challenge`. Compared in constant time.
    pub fn verify(
        &self,
        challenge: &[u8; CHALLENGE_LEN],
        path: &str,
        body: &[u8],
        proof: &str,
    ) -> bool {
        let mut tag = [0u8; 32];
        if hex::decode_to_slice(proof.trim(), &mut tag).is_err() {
            return false;
        }
        self.mac(challenge, path, body).verify_slice(&tag).is_ok()
    }
}

/// Parses a challenge from the query string: exactly 64 hex digits.
pub fn parse_challenge(s: &str) -> Option<[u8; CHALLENGE_LEN]> {
    let mut out = [0u8; CHALLENGE_LEN];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_binds_key_challenge_path_and_body() {
        let k = ApiKey::derive(&ClusterKey::from_bytes([1; 32]));
        let other = ApiKey::derive(&ClusterKey::from_bytes([2; 32]));
        let c = [7u8; 32];
        let p = k.sign(&c, "/api/members", b"[]");
        assert_eq!(p.len(), 64);
        assert!(k.verify(&c, "/api/members", b"[]", &p));
        assert!(!other.verify(&c, "/api/members", b"[]", &p), "wrong key");
        assert!(
            !k.verify(&[8; 32], "/api/members", b"[]", &p),
            "old challenge"
        );
        assert!(!k.verify(&c, "/api/node", b"[]", &p), "other path");
        assert!(!k.verify(&c, "/api/members", b"[ ]", &p), "changed body");
        assert!(!k.verify(&c, "/api/member", b"s[]", &p), "path/body split");
        assert!(!k.verify(&c, "/api/members", b"[]", "zz"));
        assert!(!k.verify(&c, "/api/members", b"[]", ""));
        assert_ne!(
            ApiKey::derive(&ClusterKey::from_bytes([1; 32])).0,
            [1; 32],
            "the API key is not the cluster key"
        );
        assert_eq!(format!("{k:?}"), crate::secret::REDACTED);
    }

    #[test]
    fn challenges_are_64_hex_digits() {
        assert_eq!(parse_challenge(&"ab".repeat(32)), Some([0xab; 32]));
        assert_eq!(parse_challenge(&"ab".repeat(31)), None);
        assert_eq!(parse_challenge(&"ab".repeat(33)), None);
        assert_eq!(parse_challenge(&"zz".repeat(32)), None);
    }
}
