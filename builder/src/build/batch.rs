//! A batch: the output of `piforge build`. One cloneable image plus N card identities.
//!
//! ```text
//! <out>/batch.toml          what was built, from what, and which cards are flashed
//! <out>/<name>.img          the cloneable image (sparse)
//! <out>/cards/<host>.toml   each card's card.toml (0600: it holds the cluster key and the
//!                           card's SSH host private keys)
//! <out>/known_hosts         the cards' SSH host public keys, for `ssh -o UserKnownHostsFile=`
//! ```
//! Cards share the image; personalising a card writes only its card.toml (and cloud-init
//! meta-data) onto a copy's FAT, so a batch costs about one image of disk, not N.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use piforge_config::Card;
use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::io::write_atomic;

/// File name of the batch description inside the output dir.
pub const BATCH_FILE: &str = "batch.toml";

/// Schema version of `batch.toml`.
pub const BATCH_SCHEMA: u32 = 1;

/// `batch.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Batch {
    /// Must equal [`BATCH_SCHEMA`].
    pub schema_version: u32,
    /// Random id of this build (part of every cloud-init instance-id).
    pub id: String,
    /// File name of the cloneable image inside the batch dir.
    pub image: String,
    /// Where the base image came from (catalog name, URL or path).
    pub source: String,
    /// sha256 of the base image download, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha256: Option<String>,
    /// Architecture of the image.
    pub arch: Arch,
    /// Release codename (`bookworm`, `trixie`, ...).
    pub release: String,
    /// Where the boot partition is mounted on the Pi.
    pub boot_mount: String,
    /// The image runs cloud-init.
    pub cloud_init: bool,
    /// Cluster name.
    pub cluster: String,
    /// The cards, in order (card 1 first).
    #[serde(default, rename = "card")]
    pub cards: Vec<BatchCard>,
}

/// One card of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BatchCard {
    /// 1-based position in the batch.
    pub index: u32,
    /// The card's hostname.
    pub hostname: String,
    /// Role given with `--role K=NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Whether `piforge flash` has written this card.
    #[serde(default)]
    pub flashed: bool,
    /// The card's SSH host public keys (`.pub` lines, ed25519, ecdsa, rsa), made by `build`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_keys: Vec<String>,
    /// The address `piforge status` last saw the card at (authenticated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl Batch {
    /// Reads `<dir>/batch.toml`.
    pub fn load(dir: &Path) -> anyhow::Result<Batch> {
        let path = dir.join(BATCH_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (run `piforge build --out {}` first)",
                path.display(),
                dir.display()
            )
        })?;
        let b: Batch =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if b.schema_version != BATCH_SCHEMA {
            bail!(
                "{} has schema-version {}, this piforge reads {BATCH_SCHEMA}; rebuild the batch",
                path.display(),
                b.schema_version
            );
        }
        Ok(b)
    }

    /// Writes `<dir>/batch.toml` (temp file + rename).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let text = toml::to_string(self).context("serializing batch.toml")?;
        write_atomic(&dir.join(BATCH_FILE), text.as_bytes(), 0o644)
    }

    /// Path of the cloneable image.
    pub fn image_path(&self, dir: &Path) -> PathBuf {
        dir.join(&self.image)
    }

    /// The card with 1-based index `k`.
    pub fn card(&self, k: u32) -> anyhow::Result<&BatchCard> {
        self.cards.iter().find(|c| c.index == k).with_context(|| {
            format!(
                "the batch has no card {k} (it has {} cards)",
                self.cards.len()
            )
        })
    }

    /// Re-reads `<dir>/batch.toml`, lets `f` change it and writes it back atomically, under
    /// the batch-wide lock `<dir>/.batch.lock` (the one `flash` records cards under), so
    /// concurrent processes never lose each other's changes.
    pub fn update<T>(dir: &Path, f: impl FnOnce(&mut Batch) -> T) -> anyhow::Result<T> {
        let path = dir.join(".batch.lock");
        let _lock = crate::io::hostfs::lock(&path, true)
            .with_context(|| format!("locking {}", path.display()))?;
        let mut b = Batch::load(dir)?;
        let out = f(&mut b);
        b.save(dir)?;
        Ok(out)
    }

    /// `known_hosts` lines for every card with host keys: `hostname`, `hostname.local` and,
    /// once seen, its address, followed by each key (type and base64; no comment).
    pub fn known_hosts(&self) -> String {
        let mut s = String::new();
        for c in &self.cards {
            let mut names = vec![c.hostname.clone(), format!("{}.local", c.hostname)];
            names.extend(c.address.iter().map(|a| known_hosts_name(a)));
            for k in &c.host_keys {
                let mut f = k.split_whitespace();
                if let (Some(kind), Some(b64)) = (f.next(), f.next()) {
                    s.push_str(&format!("{} {kind} {b64}\n", names.join(",")));
                }
            }
        }
        s
    }

    /// Writes [`Batch::known_hosts`] to `<dir>/known_hosts` (atomically, 0644: public keys).
    pub fn save_known_hosts(&self, dir: &Path) -> anyhow::Result<()> {
        write_atomic(
            &dir.join(KNOWN_HOSTS_FILE),
            self.known_hosts().as_bytes(),
            0o644,
        )
    }

    /// The cloud-init instance-id of a card.
    pub fn instance_id(&self, hostname: &str) -> String {
        format!("piforge-{}-{hostname}", self.id)
    }
}

/// File name of the batch's `known_hosts` inside the output dir.
pub const KNOWN_HOSTS_FILE: &str = "known_hosts";

/// An address as a `known_hosts` host name: IPv6 in brackets is not needed without a port, so
/// the address stays as it is; a `host:port` other than 22 becomes `[host]:port`.
fn known_hosts_name(addr: &str) -> String {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(sa) if sa.port() == 22 => sa.ip().to_string(),
        Ok(sa) => format!("[{}]:{}", sa.ip(), sa.port()),
        Err(_) => addr.to_string(),
    }
}

/// Path of a card's card.toml inside the batch dir.
pub fn card_path(dir: &Path, hostname: &str) -> PathBuf {
    dir.join("cards").join(format!("{hostname}.toml"))
}

/// Writes a card's card.toml into the batch dir, mode 0600 in a 0700 dir.
pub fn save_card(dir: &Path, card: &Card) -> anyhow::Result<()> {
    let host = card
        .identity
        .hostname
        .as_deref()
        .context("a batch card has a fixed hostname")?;
    let cards = dir.join("cards");
    crate::io::hostfs::create_dir_with_mode(&cards, 0o700)
        .with_context(|| format!("creating {}", cards.display()))?;
    write_atomic(&card_path(dir, host), card.render().as_bytes(), 0o600)
}

/// Reads a card's card.toml from the batch dir.
pub fn load_card(dir: &Path, hostname: &str) -> anyhow::Result<Card> {
    let p = card_path(dir, hostname);
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    Card::parse(&text).with_context(|| format!("checking {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use piforge_config::ClusterKey;

    #[test]
    fn batch_and_cards_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let b = Batch {
            schema_version: BATCH_SCHEMA,
            id: "abc".into(),
            image: "lab.img".into(),
            source: "raspios-trixie-arm64-lite".into(),
            source_sha256: None,
            arch: Arch::Arm64,
            release: "trixie".into(),
            boot_mount: "/boot/firmware".into(),
            cloud_init: true,
            cluster: "lab".into(),
            cards: vec![BatchCard {
                index: 1,
                hostname: "pi-01".into(),
                role: None,
                flashed: false,
                host_keys: vec![
                    "ssh-ed25519 AAAAC3Nza root@pi-01".into(),
                    "ssh-rsa AAAAB3Nza root@pi-01".into(),
                ],
                address: None,
            }],
        };
        b.save(d.path()).unwrap();
        assert_eq!(
            b.known_hosts(),
            "pi-01,pi-01.local ssh-ed25519 AAAAC3Nza\npi-01,pi-01.local ssh-rsa AAAAB3Nza\n"
        );
        let seen = Batch::update(d.path(), |b| {
            b.cards[0].address = Some("10.0.0.5".into());
            b.clone()
        })
        .unwrap();
        assert_eq!(Batch::load(d.path()).unwrap(), seen);
        assert!(
            seen.known_hosts()
                .starts_with("pi-01,pi-01.local,10.0.0.5 ssh-ed25519 ")
        );
        assert_eq!(known_hosts_name("[fe80::1]:2222"), "[fe80::1]:2222");
        assert_eq!(known_hosts_name("10.0.0.5:22"), "10.0.0.5");
        let b = seen;
        assert_eq!(Batch::load(d.path()).unwrap(), b);
        let mut card = Card::new("lab", ClusterKey::from_bytes([2; 32]));
        card.identity.hostname = Some("pi-01".into());
        save_card(d.path(), &card).unwrap();
        assert_eq!(load_card(d.path(), "pi-01").unwrap(), card);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(card_path(d.path(), "pi-01"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(b.card(2).unwrap_err().to_string().contains("has 1 cards"));
    }

    #[test]
    fn missing_batch_says_what_to_run() {
        let d = tempfile::tempdir().unwrap();
        let e = format!("{:#}", Batch::load(d.path()).unwrap_err());
        assert!(e.contains("run `piforge build"), "{e}");
    }
}
