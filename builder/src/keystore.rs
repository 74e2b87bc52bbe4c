//! Cluster keys on the host. The first build of a cluster name makes a new random 256-bit key;
//! later builds of the same name reuse it, so cards built on different days join one cluster.
//!
//! A key always comes from the OS random number generator, never from `--seed`: the seed makes
//! layout and timestamps reproducible, and must not make a key predictable (issue 17).
//!
//! Keys live in `<config dir>/piforge/clusters/<name>.key` (64 hex digits, mode 0600). The
//! config dir is `$PIFORGE_CONFIG_DIR` when set, else the platform's (XDG on Linux,
//! `~/Library/Application Support` on macOS).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use piforge_config::ClusterKey;
use rand::TryRngCore;
use rand::rngs::OsRng;

/// Where keys of named clusters are kept.
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    /// A store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> KeyStore {
        KeyStore { dir: dir.into() }
    }

    /// The store in the user's config dir.
    pub fn default_store() -> anyhow::Result<KeyStore> {
        let base = match std::env::var_os("PIFORGE_CONFIG_DIR") {
            Some(d) => PathBuf::from(d),
            None => dirs::config_dir()
                .context("finding the user's config dir (set PIFORGE_CONFIG_DIR)")?
                .join("piforge"),
        };
        Ok(KeyStore::new(base.join("clusters")))
    }

    /// Path of the key file of `cluster`.
    pub fn path(&self, cluster: &str) -> PathBuf {
        self.dir.join(format!("{cluster}.key"))
    }

    /// The key of `cluster`, made (from the OS random number generator) and stored if this is
    /// the cluster's first build. Returns the key and whether it was new.
    pub fn get_or_create(&self, cluster: &str) -> anyhow::Result<(ClusterKey, bool)> {
        let path = self.path(cluster);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                check_private(&path)?;
                let key = ClusterKey::from_hex(&text)
                    .map_err(|e| anyhow::anyhow!("reading cluster key {}: {e}", path.display()))?;
                Ok((key, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = fresh_key()?;
                write_private(&path, &format!("{}\n", key.to_hex()))?;
                Ok((key, true))
            }
            Err(e) => Err(e).with_context(|| format!("reading cluster key {}", path.display())),
        }
    }
}

/// A new random cluster key from the OS random number generator.
pub fn fresh_key() -> anyhow::Result<ClusterKey> {
    let mut bytes = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut bytes)
        .context("reading the OS random number generator")?;
    Ok(ClusterKey::from_bytes(bytes))
}

/// Reads a key file given by the user (`--key-file`).
pub fn read_key_file(path: &Path) -> anyhow::Result<ClusterKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading key file {}", path.display()))?;
    ClusterKey::from_hex(&text).map_err(|e| anyhow::anyhow!("key file {}: {e}", path.display()))
}

fn check_private(path: &Path) -> anyhow::Result<()> {
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading metadata of {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "cluster key {} is readable by others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        );
    }
    Ok(())
}

/// Writes `text` to `path` with mode 0600, atomically and durably (never a half key).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().expect("key paths have a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    piforge_config::atomic::write_atomic(path, text.as_bytes(), Some(0o600))
        .with_context(|| format!("writing cluster key {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_build_makes_a_key_later_builds_reuse_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        let (k1, new1) = store.get_or_create("lab").unwrap();
        let (k2, new2) = store.get_or_create("lab").unwrap();
        let (k3, _) = store.get_or_create("other").unwrap();
        assert!(new1 && !new2);
        assert_eq!(k1, k2);
        assert_ne!(k1, k3);
        let mode = std::fs::metadata(store.path("lab"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn world_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        store.get_or_create("lab").unwrap();
        std::fs::set_permissions(store.path("lab"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let e = store.get_or_create("lab").unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
