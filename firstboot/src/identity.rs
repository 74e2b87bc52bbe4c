//! Who this node is: hostname, machine-id, SSH host keys, DHCP client id and node id, all
//! derived from one random seed, and the record of it in `/var/lib/piforge/identity`.
//!
//! Derivation makes the identity step converge: the record (with the seed) is written first, so
//! a run resumed after a power cut derives the very same machine-id and keys instead of drawing
//! new ones half-way. A fresh seed is drawn only on the first boot and when the hardware serial
//! no longer matches the record (the card was copied to another Pi).
//!
//! The record holds the seed, so it is root-only (0600) like the SSH private keys it can
//! re-derive. Everything here is pure; it does not read the clock, the disk or the RNG.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ssh_key::{HashAlg, PrivateKey};

use crate::facts::Facts;

/// Where the record lives on the root.
pub const IDENTITY_PATH: &str = "var/lib/piforge/identity";

/// Why the identity record could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file is not a record this version understands.
    #[error("identity record is malformed: {0}")]
    Malformed(String),
    /// Generating a host key failed (should not happen with a working RNG).
    #[error("generating the {kind} SSH host key: {reason}")]
    KeyGen {
        /// `ed25519`, `ecdsa` or `rsa`.
        kind: &'static str,
        /// The library's error.
        reason: String,
    },
}

/// `/var/lib/piforge/identity`. `Debug` leaves out the seed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct IdentityRecord {
    /// Format version of this file.
    pub schema_version: u32,
    /// Bumped each time the node re-identifies (1 on first boot).
    pub generation: u32,
    /// Hardware serial the identity belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// First wired MAC at the time (the clone check when the board has no serial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The hostname in use.
    pub hostname: String,
    /// The card's fixed hostname, if it had one (needed again after a clone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_hostname: Option<String>,
    /// Prefix of derived hostnames.
    pub hostname_prefix: String,
    /// Keep the fixed hostname when cloned.
    #[serde(default)]
    pub keep_hostname_on_clone: bool,
    /// Node id (32 hex digits), public.
    pub node_id: String,
    /// SHA-256 of the machine-id (the machine-id itself stays in /etc/machine-id).
    pub machine_id_sha256: String,
    /// SHA256 fingerprints of the SSH host public keys.
    pub ssh_host_keys: Vec<String>,
    /// The `*.wants/` links first boot removed (units it disabled), relative to the root;
    /// checked again after the reboot (systemd's first-boot preset pass may enable them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled: Vec<String>,
    /// The seed everything above derives from (64 hex digits, secret).
    pub seed: String,
    /// Everything derived from the seed is in place. Written `false` first and `true` last,
    /// so a re-identification cut short by a power failure is resumed on the next boot.
    #[serde(default)]
    pub complete: bool,
}

impl std::fmt::Debug for IdentityRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityRecord")
            .field("generation", &self.generation)
            .field("serial", &self.serial)
            .field("mac", &self.mac)
            .field("hostname", &self.hostname)
            .field("node_id", &self.node_id)
            .field("complete", &self.complete)
            .finish_non_exhaustive()
    }
}

impl IdentityRecord {
    /// Parses the record (pure, fuzzable).
    pub fn parse(text: &str) -> Result<IdentityRecord, IdentityError> {
        let r: IdentityRecord =
            toml::from_str(text).map_err(|e| IdentityError::Malformed(e.message().to_string()))?;
        if r.seed_bytes().is_none() {
            return Err(IdentityError::Malformed("seed is not 64 hex digits".into()));
        }
        Ok(r)
    }

    /// The record as TOML.
    pub fn render(&self) -> String {
        format!(
            "# piforge node identity; written by piforge-firstboot. Secret (seed): root only.\n{}",
            toml::to_string(self).expect("an identity record always serializes")
        )
    }

    /// The seed as bytes.
    pub fn seed_bytes(&self) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(&self.seed, &mut out).ok()?;
        Some(out)
    }

    /// True when the record belongs to the hardware described by `facts`: same serial, or
    /// (when either side lacks a serial) the same wired MAC. When nothing can be compared the
    /// answer is yes: an unreadable serial must not churn a node's identity on every boot.
    pub fn matches_hardware(&self, facts: &Facts) -> bool {
        match (&self.serial, &facts.serial) {
            (Some(a), Some(b)) => a == b,
            _ => match (&self.mac, &facts.wired_mac) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            },
        }
    }
}

/// How the node names itself (from the card, or from the record after the card is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePolicy {
    /// Fixed name from the card.
    pub fixed: Option<String>,
    /// Prefix of derived names.
    pub prefix: String,
    /// Keep the fixed name when cloned.
    pub keep_on_clone: bool,
}

/// Everything derived from a seed on given hardware.
#[derive(Clone)]
pub struct Identity {
    /// Hostname.
    pub hostname: String,
    /// `/etc/machine-id` contents without the newline (32 hex digits, UUID v4 shaped).
    pub machine_id: String,
    /// Node id, 32 hex digits.
    pub node_id: String,
    /// The seed.
    pub seed: [u8; 32],
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("hostname", &self.hostname)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// 32 bytes for `label`, derived from the seed.
pub fn derive(seed: &[u8; 32], label: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"piforge-firstboot\0");
    h.update(label.as_bytes());
    h.update(b"\0");
    h.update(seed);
    h.finalize().into()
}

/// The last 6 hex digits of the serial, else of the wired MAC, else of the seed.
pub fn hardware_suffix(facts: &Facts, seed: &[u8; 32]) -> String {
    let tail = |s: &str| {
        let hex: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (hex.len() >= 6).then(|| hex[hex.len() - 6..].to_ascii_lowercase())
    };
    facts
        .serial
        .as_deref()
        .and_then(tail)
        .or_else(|| facts.wired_mac.as_deref().and_then(tail))
        .unwrap_or_else(|| hex::encode(&derive(seed, "hostname")[..3]))
}

/// The hostname: the fixed one, or `<prefix>-<suffix>`. After a clone a fixed name is kept only
/// when the policy says so.
pub fn hostname(policy: &NamePolicy, facts: &Facts, seed: &[u8; 32], cloned: bool) -> String {
    match &policy.fixed {
        Some(f) if !cloned || policy.keep_on_clone => f.clone(),
        _ => format!("{}-{}", policy.prefix, hardware_suffix(facts, seed)),
    }
}

/// The identity for `seed` on this hardware.
pub fn identity(policy: &NamePolicy, facts: &Facts, seed: [u8; 32], cloned: bool) -> Identity {
    let mut m = derive(&seed, "machine-id");
    // Shaped like a random (v4) UUID, as systemd-machine-id-setup makes them.
    m[6] = (m[6] & 0x0f) | 0x40;
    m[8] = (m[8] & 0x3f) | 0x80;
    Identity {
        hostname: hostname(policy, facts, &seed, cloned),
        machine_id: hex::encode(&m[..16]),
        node_id: hex::encode(&derive(&seed, "node-id")[..16]),
        seed,
    }
}

/// SHA-256 of a machine-id, hex.
pub fn machine_id_hash(machine_id: &str) -> String {
    hex::encode(Sha256::digest(machine_id.trim().as_bytes()))
}

/// A valid `/etc/machine-id`: 32 lower-case hex digits, not all zero.
pub fn valid_machine_id(text: &str) -> bool {
    let t = text.trim_end_matches('\n');
    t.len() == 32
        && t.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        && t.bytes().any(|c| c != b'0')
}

/// DHCP client identifier (RFC 4361: type 255, IAID, DUID-UUID) derived from the machine-id,
/// as colon-separated hex. The IAID follows the interface name, the DUID the machine.
pub fn dhcp_client_id(machine_id: &str, iface: &str) -> String {
    let iaid = Sha256::digest(iface.as_bytes());
    let mut duid = Sha256::new();
    duid.update(b"piforge-dhcp-duid\0");
    duid.update(machine_id.trim().as_bytes());
    let duid = duid.finalize();
    let mut bytes = vec![0xff];
    bytes.extend_from_slice(&iaid[..4]);
    bytes.extend_from_slice(&[0x00, 0x04]);
    bytes.extend_from_slice(&duid[..16]);
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `/etc/hosts` with the `127.0.1.1` line naming `hostname` (replacing `raspberrypi` or
/// whatever was there; appended if missing). Other lines keep their bytes.
pub fn hosts_with(text: &str, hostname: &str) -> String {
    let line = format!("127.0.1.1\t{hostname}");
    let mut out = String::with_capacity(text.len() + 32);
    let mut done = false;
    for l in text.split_inclusive('\n') {
        let body = l.trim_end_matches('\n');
        if body.split_whitespace().next() == Some("127.0.1.1") {
            if !done {
                out.push_str(&line);
                out.push('\n');
                done = true;
            }
        } else {
            out.push_str(body);
            out.push('\n');
        }
    }
    if !done {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

pub use piforge_config::host_keys::{HostKey, RSA_BITS};

/// The host key of `kind` for `seed`, commented `root@<hostname>` like `ssh-keygen -A`.
/// Deterministic: the same seed gives the same key (a run resumed after a power cut writes
/// what the interrupted one would have).
pub fn host_key(
    seed: &[u8; 32],
    hostname: &str,
    kind: &str,
    rsa_bits: usize,
) -> Result<HostKey, IdentityError> {
    let mut rng = ChaCha20Rng::from_seed(derive(seed, &format!("ssh-host-key-{kind}")));
    piforge_config::host_keys::generate(kind, &mut rng, &format!("root@{hostname}"), rsa_bits)
        .map_err(|e| IdentityError::KeyGen {
            kind: match kind {
                "ed25519" => "ed25519",
                "ecdsa" => "ecdsa",
                _ => "rsa",
            },
            reason: e.to_string(),
        })
}

/// The three host keys for `seed` (see [`host_key`]). `rsa_bits == 0` leaves out the RSA key
/// (a test hook: RSA generation dominates some tests' run time).
pub fn host_keys(
    seed: &[u8; 32],
    hostname: &str,
    rsa_bits: usize,
) -> Result<Vec<HostKey>, IdentityError> {
    piforge_config::host_keys::KINDS
        .iter()
        .filter(|k| !(**k == "rsa" && rsa_bits == 0))
        .map(|k| host_key(seed, hostname, k, rsa_bits))
        .collect()
}

/// The fingerprint of a `.pub` line, if it parses.
pub fn public_fingerprint(line: &str) -> Option<String> {
    ssh_key::PublicKey::from_openssh(line.trim())
        .ok()
        .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
}

/// Whether a private key file parses and belongs to the public fingerprint.
pub fn private_matches(private: &str, fingerprint: &str) -> bool {
    PrivateKey::from_openssh(private)
        .is_ok_and(|k| k.public_key().fingerprint(HashAlg::Sha256).to_string() == fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{NetworkStack, Release};
    use std::collections::BTreeMap;

    fn facts(serial: Option<&str>, mac: Option<&str>) -> Facts {
        Facts {
            serial: serial.map(Into::into),
            macs: BTreeMap::new(),
            wired_mac: mac.map(Into::into),
            release: Release::Bookworm,
            net: NetworkStack::NetworkManager,
            cloud_init: false,
            boot_mount: None,
        }
    }

    fn policy() -> NamePolicy {
        NamePolicy {
            fixed: None,
            prefix: "pi".into(),
            keep_on_clone: false,
        }
    }

    #[test]
    fn hostname_from_serial_then_mac_then_seed() {
        let seed = [3u8; 32];
        let f = facts(Some("100000002a3f9a2c"), Some("dc:a6:32:01:02:03"));
        assert_eq!(hostname(&policy(), &f, &seed, false), "pi-3f9a2c");
        let f = facts(None, Some("dc:a6:32:01:02:03"));
        assert_eq!(hostname(&policy(), &f, &seed, false), "pi-010203");
        let f = facts(None, None);
        let h = hostname(&policy(), &f, &seed, false);
        assert_eq!(h.len(), "pi-".len() + 6);
        assert_ne!(h, hostname(&policy(), &f, &[4u8; 32], false));
        let mut fixed = policy();
        fixed.fixed = Some("web-1".into());
        let f = facts(Some("100000002a3f9a2c"), None);
        assert_eq!(hostname(&fixed, &f, &seed, false), "web-1");
        assert_eq!(hostname(&fixed, &f, &seed, true), "pi-3f9a2c");
        fixed.keep_on_clone = true;
        assert_eq!(hostname(&fixed, &f, &seed, true), "web-1");
    }

    #[test]
    fn machine_id_is_valid_and_seeded() {
        let f = facts(Some("1"), None);
        let a = identity(&policy(), &f, [1; 32], false);
        let b = identity(&policy(), &f, [2; 32], false);
        assert!(valid_machine_id(&a.machine_id), "{}", a.machine_id);
        assert_ne!(a.machine_id, b.machine_id);
        assert_ne!(a.node_id, a.machine_id);
        assert_eq!(
            a.machine_id,
            identity(&policy(), &f, [1; 32], false).machine_id
        );
        assert!(!valid_machine_id("uninitialized\n"));
        assert!(!valid_machine_id(""));
        assert!(!format!("{a:?}").contains(&a.machine_id));
    }

    #[test]
    fn client_id_follows_machine_id() {
        let a = dhcp_client_id("0123456789abcdef0123456789abcdef", "eth0");
        assert!(a.starts_with("ff:"));
        assert_eq!(a.split(':').count(), 1 + 4 + 2 + 16);
        assert_ne!(
            a,
            dhcp_client_id("1123456789abcdef0123456789abcdef", "eth0")
        );
        let b = dhcp_client_id("0123456789abcdef0123456789abcdef", "wlan0");
        assert_eq!(a[15..], b[15..], "same DUID on every interface");
        assert_ne!(a, b);
    }

    #[test]
    fn hosts_line_is_replaced_or_added() {
        let stock = "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n\n127.0.1.1\traspberrypi\n";
        let h = hosts_with(stock, "pi-3f9a2c");
        assert!(h.ends_with("127.0.1.1\tpi-3f9a2c\n"));
        assert!(!h.contains("raspberrypi"));
        assert_eq!(hosts_with(&h, "pi-3f9a2c"), h);
        assert_eq!(
            hosts_with("127.0.0.1 localhost", "x"),
            "127.0.0.1 localhost\n127.0.1.1\tx\n"
        );
    }

    #[test]
    fn host_keys_are_deterministic_openssh() {
        let a = host_keys(&[9; 32], "pi-1", 2048).unwrap();
        let b = host_keys(&[9; 32], "pi-1", 2048).unwrap();
        let c = host_keys(&[8; 32], "pi-1", 2048).unwrap();
        assert_eq!(a.len(), 3);
        for ((x, y), z) in a.iter().zip(&b).zip(&c) {
            assert_eq!(x.private.expose(), y.private.expose());
            assert_ne!(x.fingerprint, z.fingerprint);
            assert!(
                x.private
                    .expose()
                    .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")
            );
            assert!(x.public.ends_with(" root@pi-1\n"), "{}", x.public);
            assert_eq!(
                public_fingerprint(&x.public).as_deref(),
                Some(x.fingerprint.as_str())
            );
            assert!(private_matches(x.private.expose(), &x.fingerprint));
            assert!(!private_matches(x.private.expose(), &z.fingerprint));
        }
        assert!(a[0].public.starts_with("ssh-ed25519 "));
        assert!(a[1].public.starts_with("ecdsa-sha2-nistp256 "));
        assert!(a[2].public.starts_with("ssh-rsa "));
    }

    proptest::proptest! {
        #[test]
        fn hosts_edit_converges_and_keeps_other_lines(text in "\\PC{0,300}", h in "[a-z][a-z0-9-]{0,20}") {
            let once = hosts_with(&text, &h);
            proptest::prop_assert_eq!(hosts_with(&once, &h), once.clone());
            let named = once
                .lines()
                .filter(|l| l.split_whitespace().next() == Some("127.0.1.1"))
                .count();
            proptest::prop_assert_eq!(named, 1);
            let _ = IdentityRecord::parse(&text);
            let _ = public_fingerprint(&text);
            let _ = private_matches(&text, "SHA256:x");
        }
    }

    #[test]
    fn record_round_trips() {
        let r = IdentityRecord {
            schema_version: 1,
            generation: 1,
            serial: Some("abc123".into()),
            mac: None,
            hostname: "pi-abc123".into(),
            fixed_hostname: None,
            hostname_prefix: "pi".into(),
            keep_hostname_on_clone: false,
            node_id: "00".repeat(16),
            machine_id_sha256: "11".repeat(32),
            ssh_host_keys: vec!["SHA256:x".into()],
            disabled: vec!["etc/systemd/system/multi-user.target.wants/x.service".into()],
            seed: "22".repeat(32),
            complete: true,
        };
        assert_eq!(IdentityRecord::parse(&r.render()).unwrap(), r);
        assert!(!format!("{r:?}").contains(&r.seed), "Debug hides the seed");
        assert!(IdentityRecord::parse("generation = 1").is_err());
        assert!(r.matches_hardware(&facts(Some("abc123"), None)));
        assert!(!r.matches_hardware(&facts(Some("abc124"), None)));
        assert!(
            r.matches_hardware(&facts(None, Some("x"))),
            "no serial read: keep"
        );
        let mut with_mac = r.clone();
        with_mac.mac = Some("dc:a6:32:01:02:03".into());
        assert!(!with_mac.matches_hardware(&facts(None, Some("dc:a6:32:09:09:09"))));
        assert!(with_mac.matches_hardware(&facts(None, Some("dc:a6:32:01:02:03"))));
    }
}
