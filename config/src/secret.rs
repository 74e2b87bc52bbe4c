//! Secret values: the cluster key and strings such as a Wi-Fi PSK or a password hash.
//!
//! Both serialize as their real value (they must reach the card), but `Debug` and `Display`
//! print `<redacted>`, so a secret never reaches a log line by accident.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a redacted secret prints as.
pub const REDACTED: &str = "<redacted>";

/// The 256-bit symmetric key that seals every gossip datagram of a cluster.
///
/// In TOML it is 64 lowercase hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; 32]);

impl ClusterKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ClusterKey(bytes)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses 64 hex digits (surrounding white space is ignored, so a key file with a trailing
    /// newline works).
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| {
            format!(
                "a cluster key is 64 hex digits (256 bits); got {} characters",
                s.chars().count()
            )
        })?;
        Ok(ClusterKey(out))
    }

    /// The key as 64 lowercase hex digits. Only for writing it where it belongs.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for ClusterKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ClusterKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ClusterKey::from_hex(&s).map_err(serde::de::Error::custom)
    }
}

/// A secret string (Wi-Fi PSK, password hash).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret value. Only for writing it where it belongs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_through_hex_and_never_debugs() {
        let k = ClusterKey::from_bytes([0xab; 32]);
        assert_eq!(ClusterKey::from_hex(&k.to_hex()).unwrap(), k);
        assert_eq!(
            ClusterKey::from_hex(&format!("{}\n", k.to_hex())).unwrap(),
            k
        );
        assert_eq!(format!("{k:?}"), REDACTED);
        assert!(!format!("{:?}", Secret::new("hunter22")).contains("hunter"));
    }

    #[test]
    fn short_key_is_refused() {
        let e = ClusterKey::from_hex("abcd").unwrap_err();
        assert!(e.contains("64 hex digits"), "{e}");
        assert!(ClusterKey::from_hex(&"zz".repeat(32)).is_err());
    }
}
