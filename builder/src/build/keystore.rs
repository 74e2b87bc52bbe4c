//! Cluster keys on the host. The first build of a cluster name makes a new random 256-bit key;
//! later builds of the same name reuse it, so cards built on different days join one cluster.
//!
//! A key always comes from the OS random number generator, never from `--seed`: the seed makes
//! layout and timestamps reproducible, and must not make a key predictable (issue 17).
//!
//! Keys live in `<config dir>/piforge/clusters/<name>.key` (64 hex digits, mode 0600). The
//! config dir is `$PIFORGE_CONFIG_DIR` when set, else the platform's (XDG on Linux,
//! `~/Library/Application Support` on macOS).
//!
//! The `db` overlay's state of a cluster sits beside its key, in `<name>.db.toml` (0600): the
//! PostgreSQL passwords, made by the first build that uses the overlay from the OS RNG (never
//! from `--seed`), and the names of the cards that bootstrap etcd ([`DbCluster`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use piforge_config::card::DbSecrets;
use piforge_config::{ClusterKey, Secret};
use rand::TryRngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};

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

/// The `db` overlay's state of a cluster, kept on the host like its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DbCluster {
    /// Hostnames of the cards that bootstrap the etcd cluster (tag `db-etcd`), named by the
    /// first build with personalised db cards; later db cards are Patroni replicas that use
    /// them. Empty until such a build.
    pub etcd_initial: Vec<String>,
    /// The passwords every db card carries.
    pub secrets: DbSecrets,
}

/// The most etcd members a cluster bootstraps with: an odd number up to 5 (an even one
/// tolerates no more failures than the odd one below it, and needs one more for a quorum).
pub fn etcd_initial_members(db_cards: &[String]) -> Vec<String> {
    let n = db_cards.len().min(5);
    let n = if n.is_multiple_of(2) {
        n.saturating_sub(1)
    } else {
        n
    };
    db_cards[..n].to_vec()
}

impl KeyStore {
    /// Path of the db state of `cluster`.
    pub fn db_path(&self, cluster: &str) -> PathBuf {
        self.dir.join(format!("{cluster}.db.toml"))
    }

    /// The db state of `cluster`: made (passwords from the OS RNG) on the first build that uses
    /// the db overlay, and given its etcd members from `db_cards` (hostnames of this build's
    /// personalised db cards, in card order) on the first build that has any.
    pub fn db_cluster(&self, cluster: &str, db_cards: &[String]) -> anyhow::Result<DbCluster> {
        let path = self.db_path(cluster);
        let (mut db, mut changed) = match std::fs::read_to_string(&path) {
            Ok(text) => {
                check_private(&path)?;
                let db: DbCluster = toml::from_str(&text).map_err(|e| {
                    anyhow::anyhow!("reading db state {}: {}", path.display(), e.message())
                })?;
                (db, false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Never the build's (possibly seeded) RNG: the OS's.
                let password = || -> anyhow::Result<Secret> {
                    let mut bytes = [0u8; 32];
                    OsRng
                        .try_fill_bytes(&mut bytes)
                        .context("reading the OS random number generator")?;
                    Ok(Secret::new(hex::encode(bytes)))
                };
                let secrets = DbSecrets {
                    superuser_password: password()?,
                    replication_password: password()?,
                    rest_api_password: password()?,
                };
                let db = DbCluster {
                    etcd_initial: vec![],
                    secrets,
                };
                (db, true)
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading db state {}", path.display()));
            }
        };
        if db.etcd_initial.is_empty() && !db_cards.is_empty() {
            db.etcd_initial = etcd_initial_members(db_cards);
            changed = true;
        }
        if changed {
            let text = toml::to_string(&db).expect("db state always serializes");
            write_private(&path, &text)?;
        }
        Ok(db)
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
    let meta = std::fs::metadata(path)
        .with_context(|| format!("reading metadata of {}", path.display()))?;
    let open_bits = crate::io::hostfs::group_other_bits(&meta);
    if open_bits != 0 {
        bail!(
            "{} is open to others (mode bits {:03o}); run `chmod 600 {}`",
            path.display(),
            open_bits,
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
        assert_eq!(store.get("lab").unwrap(), Some(k1.clone()));
        assert_eq!(store.get("nope").unwrap(), None);
        let names: Vec<String> = store.all().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["lab", "other"]);
        assert_eq!(k1, k2);
        assert_ne!(k1, k3);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.path("lab"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn db_state_is_made_once_private_and_names_the_etcd_members_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // A cloneable build with db as default names no etcd members yet.
        let a = store.db_cluster("lab", &[]).unwrap();
        assert!(a.etcd_initial.is_empty());
        let pw = a.secrets.superuser_password.expose();
        assert_eq!(pw.len(), 64);
        assert_ne!(pw, a.secrets.replication_password.expose());
        let b = store
            .db_cluster("lab", &names(&["pi-02", "pi-03", "pi-04", "pi-05"]))
            .unwrap();
        assert_eq!(b.secrets, a.secrets, "later builds reuse the passwords");
        assert_eq!(b.etcd_initial, ["pi-02", "pi-03", "pi-04"]);
        let c = store.db_cluster("lab", &names(&["pi-07"])).unwrap();
        assert_eq!(c, b, "a later db card is a replica, not an etcd member");
        assert_ne!(store.db_cluster("other", &[]).unwrap().secrets, a.secrets);
        let mode = std::fs::metadata(store.db_path("lab"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(store.db_path("lab"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        let e = store.db_cluster("lab", &[]).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && !e.contains(pw), "{e}");
    }

    #[test]
    fn etcd_bootstraps_with_an_odd_number_of_members_up_to_5() {
        let cards: Vec<String> = (1..=7).map(|k| format!("pi-{k:02}")).collect();
        for (n, want) in [(0, 0), (1, 1), (2, 1), (3, 3), (4, 3), (5, 5), (7, 5)] {
            assert_eq!(
                etcd_initial_members(&cards[..n]),
                cards[..want],
                "{n} db cards"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::new(dir.path());
        store.get_or_create("lab").unwrap();
        std::fs::set_permissions(store.path("lab"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let e = store.get_or_create("lab").unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
