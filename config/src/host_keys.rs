//! SSH host keys made on the host: the `[host-keys]` section of `card.toml` (private keys,
//! secret, removed from the FAT with the card after first boot) and, with the `ssh` feature,
//! their generation and parsing (builder and firstboot; the node agent does not link it).
//!
//! `piforge build` makes each card's keys from the OS RNG, so the user's `known_hosts` can
//! know a card before it ever boots, and first boot no longer spends seconds (minutes on a
//! Pi Zero) finding RSA primes. The public halves are derived again wherever needed; only the
//! private keys travel.

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Kinds of host key, in the order they are made, written and listed (`ssh_host_<kind>_key`).
pub const KINDS: [&str; 3] = ["ed25519", "ecdsa", "rsa"];

/// Bits of an RSA host key (what `ssh-keygen -A` makes).
pub const RSA_BITS: usize = 3072;

/// Largest private key file accepted on a card (an RSA-4096 key is about 3.4 KB).
pub const MAX_KEY_LEN: usize = 8192;

const PEM_BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const PEM_END: &str = "-----END OPENSSH PRIVATE KEY-----";

/// `[host-keys]`: the card's SSH host private keys in OpenSSH format (secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct HostKeys {
    /// `/etc/ssh/ssh_host_ed25519_key`.
    pub ed25519: Secret,
    /// `/etc/ssh/ssh_host_ecdsa_key` (NIST P-256).
    pub ecdsa: Secret,
    /// `/etc/ssh/ssh_host_rsa_key`.
    pub rsa: Secret,
}

impl HostKeys {
    /// `(kind, private key)` in [`KINDS`] order.
    pub fn all(&self) -> [(&'static str, &Secret); 3] {
        [
            ("ed25519", &self.ed25519),
            ("ecdsa", &self.ecdsa),
            ("rsa", &self.rsa),
        ]
    }

    /// Checks the shape of each key without parsing it (the `ssh` feature's
    /// [`parse_private`] does that where keys are used). Errors name the key, never its bytes.
    pub fn check_shape(&self) -> Result<(), String> {
        for (kind, k) in self.all() {
            let t = k.expose().trim();
            if t.len() > MAX_KEY_LEN || !t.starts_with(PEM_BEGIN) || !t.ends_with(PEM_END) {
                return Err(format!(
                    "the {kind} key is not an OpenSSH private key of at most {MAX_KEY_LEN} bytes"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(feature = "ssh")]
pub use ssh::*;

#[cfg(feature = "ssh")]
mod ssh {
    use ssh_key::rand_core::CryptoRngCore;
    use ssh_key::{Algorithm, EcdsaCurve, HashAlg, LineEnding, PrivateKey, PublicKey};

    use super::{HostKeys, KINDS, MAX_KEY_LEN};
    use crate::secret::Secret;

    /// One SSH host key pair in OpenSSH format.
    #[derive(Clone)]
    pub struct HostKey {
        /// `ed25519`, `ecdsa` or `rsa` (as in `/etc/ssh/ssh_host_<kind>_key`).
        pub kind: &'static str,
        /// The private key file (mode 0600).
        pub private: Secret,
        /// The `.pub` line with its newline (mode 0644).
        pub public: String,
        /// SHA256 fingerprint (`SHA256:...`).
        pub fingerprint: String,
    }

    impl std::fmt::Debug for HostKey {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("HostKey")
                .field("kind", &self.kind)
                .field("fingerprint", &self.fingerprint)
                .finish_non_exhaustive()
        }
    }

    /// Why a host key could not be made or read.
    #[derive(Debug, thiserror::Error)]
    pub enum HostKeyError {
        /// Not a kind in [`KINDS`].
        #[error("{0:?} is not a host key kind (ed25519, ecdsa, rsa)")]
        Kind(String),
        /// The library failed (a bad RNG, an RSA size below 2048, ...).
        #[error("making the {kind} SSH host key: {reason}")]
        Generate {
            /// Kind.
            kind: &'static str,
            /// The library's error.
            reason: String,
        },
        /// A private key that does not parse, or is of another kind.
        #[error("the {kind} host key is not a usable OpenSSH private key: {reason}")]
        Invalid {
            /// Kind.
            kind: &'static str,
            /// What is wrong (never key material).
            reason: String,
        },
    }

    fn kind_of(kind: &str) -> Result<&'static str, HostKeyError> {
        KINDS
            .iter()
            .copied()
            .find(|k| *k == kind)
            .ok_or_else(|| HostKeyError::Kind(kind.to_string()))
    }

    fn finish(kind: &'static str, mut key: PrivateKey, comment: &str) -> Result<HostKey, String> {
        key.set_comment(comment);
        let private = key.to_openssh(LineEnding::LF).map_err(|e| e.to_string())?;
        let public = key.public_key().to_openssh().map_err(|e| e.to_string())? + "\n";
        Ok(HostKey {
            kind,
            private: Secret::new(private.to_string()),
            public,
            fingerprint: key.public_key().fingerprint(HashAlg::Sha256).to_string(),
        })
    }

    /// Makes a host key of `kind` from `rng`, commented `comment` (e.g. `root@pi-01`).
    /// `rsa_bits` is the RSA size (ignored for the others).
    pub fn generate(
        kind: &str,
        rng: &mut impl CryptoRngCore,
        comment: &str,
        rsa_bits: usize,
    ) -> Result<HostKey, HostKeyError> {
        let kind = kind_of(kind)?;
        let err = |e: ssh_key::Error| HostKeyError::Generate {
            kind,
            reason: e.to_string(),
        };
        let key = match kind {
            "ed25519" => PrivateKey::random(rng, Algorithm::Ed25519).map_err(err)?,
            "ecdsa" => PrivateKey::random(
                rng,
                Algorithm::Ecdsa {
                    curve: EcdsaCurve::NistP256,
                },
            )
            .map_err(err)?,
            _ => {
                let kp = ssh_key::private::RsaKeypair::random(rng, rsa_bits).map_err(err)?;
                PrivateKey::new(kp.into(), "").map_err(err)?
            }
        };
        finish(kind, key, comment).map_err(|reason| HostKeyError::Generate { kind, reason })
    }

    /// Reads a private key of `kind` (as found on a card or on disk), checking that it is
    /// that kind and not encrypted.
    pub fn parse_private(kind: &str, private: &str) -> Result<HostKey, HostKeyError> {
        let kind = kind_of(kind)?;
        let invalid = |reason: String| HostKeyError::Invalid { kind, reason };
        if private.len() > MAX_KEY_LEN {
            return Err(invalid(format!("longer than {MAX_KEY_LEN} bytes")));
        }
        let key = PrivateKey::from_openssh(private).map_err(|e| invalid(e.to_string()))?;
        if key.is_encrypted() {
            return Err(invalid("it is encrypted".into()));
        }
        let alg_ok = match kind {
            "ed25519" => key.algorithm() == Algorithm::Ed25519,
            "ecdsa" => matches!(key.algorithm(), Algorithm::Ecdsa { .. }),
            _ => matches!(key.algorithm(), Algorithm::Rsa { .. }),
        };
        if !alg_ok {
            return Err(invalid(format!("it is a {} key", key.algorithm())));
        }
        let comment = key.comment().to_string();
        finish(kind, key, &comment).map_err(invalid)
    }

    /// Makes the three host keys of a card from `rng` (the OS RNG on the host).
    pub fn generate_card_keys(
        rng: &mut impl CryptoRngCore,
        comment: &str,
    ) -> Result<HostKeys, HostKeyError> {
        let mut k = KINDS
            .iter()
            .map(|kind| generate(kind, rng, comment, super::RSA_BITS).map(|h| h.private));
        Ok(HostKeys {
            ed25519: k.next().expect("three kinds")?,
            ecdsa: k.next().expect("three kinds")?,
            rsa: k.next().expect("three kinds")?,
        })
    }

    /// [`generate_card_keys`] from the operating system's RNG (never a seed: these are
    /// secrets).
    pub fn generate_card_keys_from_os(comment: &str) -> Result<HostKeys, HostKeyError> {
        generate_card_keys(&mut ssh_key::rand_core::OsRng, comment)
    }

    /// One host key of `kind` from the operating system's RNG (RSA: [`super::RSA_BITS`]).
    pub fn generate_from_os(kind: &str, comment: &str) -> Result<HostKey, HostKeyError> {
        generate(
            kind,
            &mut ssh_key::rand_core::OsRng,
            comment,
            super::RSA_BITS,
        )
    }

    impl HostKeys {
        /// The keys parsed, in [`KINDS`] order.
        pub fn parse(&self) -> Result<Vec<HostKey>, HostKeyError> {
            self.all()
                .iter()
                .map(|(kind, k)| parse_private(kind, k.expose()))
                .collect()
        }
    }

    /// The SHA256 fingerprint of a public key line (`ssh-ed25519 AAAA... comment`), if it
    /// parses.
    pub fn public_fingerprint(line: &str) -> Option<String> {
        PublicKey::from_openssh(line.trim())
            .ok()
            .map(|k| k.fingerprint(HashAlg::Sha256).to_string())
    }
}

#[cfg(all(test, feature = "ssh"))]
mod tests {
    use super::*;
    use ssh_key::rand_core::OsRng;

    #[test]
    fn card_keys_round_trip_and_match_their_public_halves() {
        let keys = generate_card_keys(&mut OsRng, "root@pi-01").unwrap();
        keys.check_shape().unwrap();
        let parsed = keys.parse().unwrap();
        assert_eq!(parsed.len(), 3);
        for (p, kind) in parsed.iter().zip(KINDS) {
            assert_eq!(p.kind, kind);
            assert!(p.public.ends_with(" root@pi-01\n"), "{}", p.public);
            assert_eq!(
                public_fingerprint(&p.public).as_deref(),
                Some(p.fingerprint.as_str())
            );
            assert!(!format!("{p:?}").contains("PRIVATE"));
        }
        assert!(parsed[0].public.starts_with("ssh-ed25519 "));
        assert!(parsed[1].public.starts_with("ecdsa-sha2-nistp256 "));
        assert!(parsed[2].public.starts_with("ssh-rsa "));
        // Another draw, other keys.
        let again = generate(KINDS[0], &mut OsRng, "x", 0).unwrap();
        assert_ne!(again.fingerprint, parsed[0].fingerprint);
    }

    #[test]
    fn a_key_of_the_wrong_kind_or_shape_is_refused() {
        let ed = generate("ed25519", &mut OsRng, "x", 0).unwrap();
        let e = parse_private("ecdsa", ed.private.expose()).unwrap_err();
        assert!(
            e.to_string().contains("Ed25519") || e.to_string().contains("ed25519"),
            "{e}"
        );
        assert!(parse_private("ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\nx").is_err());
        assert!(generate("dsa", &mut OsRng, "x", 0).is_err());
        assert!(
            generate("rsa", &mut OsRng, "x", 1).is_err(),
            "RSA below 2048 bits"
        );
        let bad = HostKeys {
            ed25519: ed.private.clone(),
            ecdsa: Secret::new("hunter2"),
            rsa: ed.private.clone(),
        };
        let e = bad.check_shape().unwrap_err();
        assert!(e.contains("ecdsa") && !e.contains("hunter2"), "{e}");
    }
}
