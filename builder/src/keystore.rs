//! Cluster keys on the host. The first build of a cluster name makes a new random 256-bit key;
//! later builds of the same name reuse it, so cards built on different days join one cluster.
//!
//! Keys live in `<config dir>/piforge/clusters/<name>.key` (64 hex digits, mode 0600). The
//! config dir is `$PIFORGE_CONFIG_DIR` when set, else the platform's (XDG on Linux,
//! `~/Library/Application Support` on macOS).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use piforge_config::ClusterKey;
use rand::RngCore;

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

    /// The key of `cluster`, if the store has one (never makes one).
    pub fn get(&self, cluster: &str) -> anyhow::Result<Option<ClusterKey>> {
        let path = self.path(cluster);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                check_private(&path)?;
                ClusterKey::from_hex(&text)
                    .map(Some)
                    .map_err(|e| anyhow::anyhow!("reading cluster key {}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading cluster key {}", path.display())),
        }
    }

    /// Every `(cluster, key)` in the store, sorted by name; unreadable entries are skipped
    /// with a warning.
    pub fn all(&self) -> Vec<(String, ClusterKey)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        let mut out: Vec<(String, ClusterKey)> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_str()?.strip_suffix(".key")?.to_string();
                match self.get(&name) {
                    Ok(Some(k)) => Some((name, k)),
                    Ok(None) => None,
                    Err(err) => {
                        tracing::warn!("{err:#}");
                        None
                    }
                }
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The key of `cluster`, made (from `rng`) and stored if this is the cluster's first build.
    /// Returns the key and whether it was new.
    pub fn get_or_create(
        &self,
        cluster: &str,
        rng: &mut impl RngCore,
    ) -> anyhow::Result<(ClusterKey, bool)> {
        let path = self.path(cluster);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                check_private(&path)?;
                let key = ClusterKey::from_hex(&text)
                    .map_err(|e| anyhow::anyhow!("reading cluster key {}: {e}", path.display()))?;
                Ok((key, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                rng.fill_bytes(&mut bytes);
                let key = ClusterKey::from_bytes(bytes);
                write_private(&path, &format!("{}\n", key.to_hex()))?;
                Ok((key, true))
            }
            Err(e) => Err(e).with_context(|| format!("reading cluster key {}", path.display())),
        }
    }
}

/// The cluster keys to check node answers with: the `--key-file` if given; else the store's
/// key of `cluster`; else (no cluster known) every key in the store. Errors when there is
/// none, saying what to pass.
pub fn keys_for(key_file: Option<&Path>, cluster: Option<&str>) -> anyhow::Result<Vec<ClusterKey>> {
    if let Some(p) = key_file {
        return Ok(vec![read_key_file(p)?]);
    }
    let store = KeyStore::default_store()?;
    match cluster {
        Some(c) => match store.get(c)? {
            Some(k) => Ok(vec![k]),
            None => bail!(
                "no key for cluster {c:?} in the key store ({}): answers cannot be \
                 authenticated; give --key-file FILE with the cluster key",
                store.path(c).display()
            ),
        },
        None => {
            let all: Vec<ClusterKey> = store.all().into_iter().map(|(_, k)| k).collect();
            if all.is_empty() {
                bail!(
                    "no cluster keys in the key store ({}): answers cannot be authenticated; \
                     give --cluster NAME or --key-file FILE",
                    store.dir.display()
                );
            }
            Ok(all)
        }
    }
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

/// Writes `text` to `path` with mode 0600 through a temp file and rename (never a half key).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().expect("key paths have a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("key.part");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn first_build_makes_a_key_later_builds_reuse_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (k1, new1) = store.get_or_create("lab", &mut rng).unwrap();
        let (k2, new2) = store.get_or_create("lab", &mut rng).unwrap();
        let (k3, _) = store.get_or_create("other", &mut rng).unwrap();
        assert!(new1 && !new2);
        assert_eq!(store.get("lab").unwrap(), Some(k1.clone()));
        assert_eq!(store.get("nope").unwrap(), None);
        let names: Vec<String> = store.all().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["lab", "other"]);
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
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        store.get_or_create("lab", &mut rng).unwrap();
        std::fs::set_permissions(store.path("lab"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let e = store
            .get_or_create("lab", &mut rng)
            .unwrap_err()
            .to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
