//! Password handling on the host: a password is hashed here (sha512-crypt, `$6$`) and only the
//! hash reaches the card. A clear-text password never travels as a command-line argument (it
//! would sit in shell history and `ps`): it comes from a file or standard input.
//!
//! sha512-crypt rather than yescrypt: every glibc and busybox on every Raspberry Pi OS release
//! verifies it, and the pure-Rust implementation is small and audited. A yescrypt hash made
//! elsewhere can still be passed in with `--password-hash`.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use rand::TryRngCore;
use rand::rngs::OsRng;

/// Characters of the crypt(3) salt alphabet.
const SALT_ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Hashes `password` with sha512-crypt and a 16-character salt from the OS random number
/// generator. Never from `--seed`: a predictable salt lets one precomputed table serve every
/// card built with that seed (issue 17).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    OsRng
        .try_fill_bytes(&mut bytes)
        .context("reading the OS random number generator")?;
    // 64 characters: a byte modulo 64 is uniform.
    let salt: String = bytes
        .iter()
        .map(|b| SALT_ALPHABET[usize::from(*b) % SALT_ALPHABET.len()] as char)
        .collect();
    hash_with_salt(password, &salt)
}

/// sha512-crypt of `password` with `salt` (characters of [`SALT_ALPHABET`]).
fn hash_with_salt(password: &str, salt: &str) -> anyhow::Result<String> {
    if password.is_empty() {
        bail!(
            "the password is empty; give a non-empty one or leave the password out (SSH keys only)"
        );
    }
    let params = sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_DEFAULT)
        .map_err(|e| anyhow::anyhow!("setting up sha512-crypt: {e:?}"))?;
    let hash = sha_crypt::sha512_crypt_b64(password.as_bytes(), salt.as_bytes(), &params)
        .map_err(|e| anyhow::anyhow!("hashing the password: {e:?}"))?;
    Ok(format!("$6${salt}${hash}"))
}

/// Reads a password from a file (`-` is standard input): its first line, without the line end.
pub fn read_password_file(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the password from stdin")?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("reading password file {}", path.display()))?;
    }
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        bail!(
            "password file {} is empty; its first line is the password",
            path.display()
        );
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha512_crypt_and_its_salt_is_fresh() {
        let h = hash_password("raspberry").unwrap();
        assert!(h.starts_with("$6$"), "{h}");
        assert_eq!(h.split('$').count(), 4, "{h}");
        assert!(!h.contains("raspberry"));
        let salt = h.split('$').nth(2).unwrap();
        assert_eq!(salt.len(), 16);
        assert_eq!(
            hash_with_salt("raspberry", salt).unwrap(),
            h,
            "same salt, same hash"
        );
        assert_ne!(
            hash_password("raspberry").unwrap(),
            h,
            "two hashes shared a salt"
        );
    }

    #[test]
    fn hash_matches_openssl() {
        // A second, independent implementation: OpenSSL's `passwd -6` must compute the same
        // hash for our salt, or glibc on the Pi would not accept the password.
        let h = hash_password("correct horse").unwrap();
        let salt = h.split('$').nth(2).unwrap();
        let out = match std::process::Command::new("openssl")
            .args(["passwd", "-6", "-salt", salt, "correct horse"])
            .output()
        {
            Ok(o) => o,
            Err(e) => panic!("openssl is needed for this test (apt-get install openssl): {e}"),
        };
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), h);
    }

    #[test]
    fn empty_password_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "\n").unwrap();
        assert!(
            read_password_file(&p)
                .unwrap_err()
                .to_string()
                .contains("is empty")
        );
        std::fs::write(&p, "s3cret\nignored\n").unwrap();
        assert_eq!(read_password_file(&p).unwrap(), "s3cret");
    }
}
