//! `piforge build`: base image in, batch out.
//!
//! Order matters for "nothing half-written": every input is read and checked first (key,
//! password, SSH keys, Wi-Fi, overlays, base image, payload for the detected architecture,
//! free space on the FAT); only then is the image copied to a temp file in the output dir,
//! edited through its FAT, synced and renamed into place. `batch.toml` is written last: it is
//! the commit point that `export` and `flash` read. The cached base image is opened read-only.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use piforge_config::card::{Wifi, check_psk};
use piforge_config::{Card, ClusterKey, Secret};
use rand::{Rng, SeedableRng};

use crate::arch::Arch;
use crate::batch::{self, Batch, BatchCard};
use crate::cache::{self, BaseRequest, Cache};
use crate::customize::{self, ImageFacts, PiBinaries};
use crate::image::{self, ext4, fat::BootFs};
use crate::keystore::{self, KeyStore};
use crate::overlay::{self, LoadedOverlay};
use crate::password;
use crate::payload::Payload;
use crate::progress::Progress;
use crate::readonly::ReadOnly;
use crate::sparse;

/// How the password reaches the card.
#[derive(Debug, Clone, PartialEq)]
pub enum PasswordSpec {
    /// No password: SSH keys only.
    None,
    /// First line of this file (`-`: stdin), hashed on the host.
    File(PathBuf),
    /// A ready crypt(3) hash.
    Hash(String),
}

/// Wi-Fi settings as given on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct WifiSpec {
    /// SSID.
    pub ssid: String,
    /// File holding the passphrase.
    pub psk_file: PathBuf,
    /// Regulatory country.
    pub country: String,
}

/// A checked `piforge build`.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// Where the base image comes from.
    pub base: BaseRequest,
    /// Human name of the base (catalog name, URL or path) for batch.toml.
    pub base_name: String,
    /// Number of personalised cards (0: cloneable image only).
    pub cards: u32,
    /// Cluster name.
    pub cluster: String,
    /// Prefix of hostnames.
    pub hostname_prefix: String,
    /// Login user.
    pub user: String,
    /// Password source.
    pub password: PasswordSpec,
    /// Files with SSH public keys.
    pub ssh_keys: Vec<PathBuf>,
    /// Wi-Fi.
    pub wifi: Option<WifiSpec>,
    /// Default overlays: every card without a role (and the cloneable image) gets them.
    pub overlays: Vec<String>,
    /// `(card index, overlay)` roles: the card gets that overlay (or `A,B`: those) instead of
    /// the defaults, and the tag `role=` the first.
    pub roles: Vec<(u32, String)>,
    /// Architecture, when forced.
    pub arch: Option<Arch>,
    /// Seed for reproducible output.
    pub seed: Option<u64>,
    /// Output dir.
    pub out: PathBuf,
    /// Payload dir override.
    pub payload: Option<PathBuf>,
    /// Overlays dir override.
    pub overlays_dir: Option<PathBuf>,
    /// Cache dir.
    pub cache_dir: PathBuf,
    /// Use this cluster key instead of the key store.
    pub key_file: Option<PathBuf>,
    /// Static seeds (`host:port`).
    pub join: Vec<String>,
    /// mDNS discovery.
    pub mdns: bool,
    /// Time zone.
    pub timezone: Option<String>,
    /// Keymap.
    pub keymap: Option<String>,
    /// Locale.
    pub locale: Option<String>,
    /// Draw progress.
    pub progress: bool,
}

/// What a build produced.
#[derive(Debug)]
pub struct BuildOutcome {
    /// The batch written.
    pub batch: Batch,
    /// Path of the cloneable image.
    pub image: PathBuf,
    /// The cluster key was made by this build.
    pub new_key: bool,
}

/// Runs a build.
pub fn build(req: &BuildRequest) -> anyhow::Result<BuildOutcome> {
    let mut rng = match req.seed {
        Some(s) => rand::rngs::StdRng::seed_from_u64(s),
        None => rand::rngs::StdRng::from_os_rng(),
    };
    check_roles(req)?;

    // 1. Everything the card needs from the user, checked before any big work.
    let (key, new_key) = match &req.key_file {
        Some(p) => (keystore::read_key_file(p)?, false),
        None => KeyStore::default_store()?.get_or_create(&req.cluster, &mut rng)?,
    };
    let template = template_card(req, key, &mut rng)?;

    // 2. Overlays (all that any card uses), checked at build time.
    let overlay_names = all_overlays(req);
    let overlays = load_overlays(req, &overlay_names)?;

    // 3. The base image, fetched and cached; read its layout and root facts.
    let cache = Cache::new(&req.cache_dir);
    let base = cache::base_image(&req.base, &cache, req.progress)?;
    let mut base_file =
        File::open(&base.path).with_context(|| format!("opening {}", base.path.display()))?;
    let layout = image::read_layout(&mut base_file)
        .with_context(|| format!("reading the partition table of {}", base.path.display()))?;
    let boot = layout
        .boot()
        .with_context(|| format!("examining {}", base.path.display()))?
        .clone();
    let root = layout.root().with_context(|| {
        format!(
            "{} has no ext4 root partition: not a Raspberry Pi OS image",
            base.path.display()
        )
    })?;
    let clone = base_file
        .try_clone()
        .with_context(|| format!("opening {}", base.path.display()))?;
    let facts = ext4::root_facts(ReadOnly(clone), root)
        .with_context(|| format!("reading the root file system of {}", base.path.display()))?;
    let arch = resolve_arch(req.arch, facts.arch, base.entry.as_ref().map(|e| e.arch))?;
    tracing::info!(release = %facts.version_codename, %arch, boot_mount = %facts.boot_mount,
        cloud_init = facts.cloud_init, "base image examined");

    // 4. The Pi binaries for that architecture (checksums and ELF headers checked).
    let bins = Payload::locate(req.payload.as_deref())?.binaries(arch)?;

    // 5. The plan for the cloneable image.
    let image_facts = ImageFacts {
        boot_mount: facts.boot_mount.clone(),
        cloud_init: facts.cloud_init,
    };
    let batch_id = hex::encode(rng.random::<[u8; 6]>());
    let cmdline = BootFs::open(ReadOnly(&mut base_file), &boot)?
        .read("cmdline.txt")?
        .with_context(|| {
            format!(
                "{} has no cmdline.txt on its boot partition",
                base.path.display()
            )
        })?;
    let cmdline = String::from_utf8(cmdline).context("cmdline.txt is not UTF-8")?;
    let mechanisms = crate::inspect::first_boot_mechanisms(&cmdline, facts.cloud_init);
    if mechanisms.is_empty() {
        tracing::warn!(
            "the base image's own first boot is unknown (no init=…/raspberrypi-sys-mods/firstboot \
             or resize on cmdline.txt, no cloud-init): not a Raspberry Pi OS image piforge knows; \
             its first boot may fight ours"
        );
    } else {
        tracing::info!(
            first_boot = %crate::inspect::mechanisms_text(&mechanisms),
            "the base image's own first boot"
        );
    }
    let plan = customize::plan_image(
        &template,
        &image_facts,
        &PiBinaries {
            firstboot: &bins.firstboot,
            node: &bins.node,
        },
        &overlays,
        &cmdline,
        &format!("piforge-{batch_id}-cloneable"),
    );

    // 6. The cards.
    let mut cards = vec![];
    let mut batch_cards = vec![];
    for k in 1..=req.cards {
        let hostname = format!("{}-{k:02}", req.hostname_prefix);
        let role_overlays = req
            .roles
            .iter()
            .find(|(i, _)| *i == k)
            .map(|(_, r)| role_names(r));
        let mut card = template.clone();
        card.identity.hostname = Some(hostname.clone());
        // A card with a role gets its role's overlays instead of the defaults.
        let role = role_overlays.as_ref().map(|names| names[0].clone());
        if let Some(names) = role_overlays {
            card.overlays = names;
        }
        if let Some(r) = &role {
            card.node.tags.insert("role".into(), r.clone());
        }
        card.validate()
            .with_context(|| format!("checking card {k} ({hostname})"))?;
        batch_cards.push(BatchCard {
            index: k,
            hostname,
            role,
            flashed: false,
        });
        cards.push(card);
    }

    // 7. Write: the image through a temp file in the output dir, then the cards, then batch.toml.
    std::fs::create_dir_all(&req.out).with_context(|| format!("creating {}", req.out.display()))?;
    remove_stale_parts(&req.out)?;
    let image_name = format!("{}.img", req.cluster);
    let image_path = req.out.join(&image_name);
    write_image(&base.path, &boot, &plan, &image_path, req.progress)?;
    for c in &cards {
        batch::save_card(&req.out, c)?;
    }
    remove_stale_cards(&req.out, &batch_cards)?;
    let batch = Batch {
        schema_version: batch::BATCH_SCHEMA,
        id: batch_id,
        image: image_name,
        source: req.base_name.clone(),
        source_sha256: base.download_sha256.clone(),
        arch,
        release: facts.version_codename.clone(),
        boot_mount: facts.boot_mount.clone(),
        cloud_init: facts.cloud_init,
        cluster: req.cluster.clone(),
        cards: batch_cards,
    };
    batch.save(&req.out)?;
    Ok(BuildOutcome {
        batch,
        image: image_path,
        new_key,
    })
}

/// Copies `base` to a temp file beside `dest`, writes `plan` into its FAT, syncs and renames.
/// On any error the temp file is removed and `dest` is untouched.
fn write_image(
    base: &Path,
    boot: &image::Partition,
    plan: &customize::FatFiles,
    dest: &Path,
    progress: bool,
) -> anyhow::Result<()> {
    let dir = dest.parent().expect("output paths have a parent");
    let mut tmp = tempfile::Builder::new()
        .prefix(".piforge-")
        .suffix(".img.part")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    let size = std::fs::metadata(base)
        .with_context(|| format!("reading {}", base.display()))?
        .len();
    let bar = Progress::maybe(progress, "copying base image", Some(size));
    sparse::copy_sparse(base, tmp.as_file_mut(), |n| bar.set_position(n))?;
    bar.finish();
    {
        let fs = BootFs::open(tmp.as_file_mut(), boot)?;
        check_space(&fs, plan)?;
        for (path, bytes) in plan {
            fs.write(path, bytes)?;
        }
        fs.flush()?;
    }
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("syncing {}", tmp.path().display()))?;
    tmp.persist(dest)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming to {}", dest.display()))?;
    Ok(())
}

/// Refuses a plan that cannot fit, before the first byte of it is written.
pub fn check_space<T: std::io::Read + std::io::Write + std::io::Seek>(
    fs: &BootFs<T>,
    plan: &customize::FatFiles,
) -> anyhow::Result<()> {
    let free = fs.free_bytes()?;
    let mut replaced = 0u64;
    for path in plan.keys() {
        if let Some(old) = fs.read(path)? {
            replaced += old.len() as u64;
        }
    }
    // Cluster slack and new directory clusters: allow 64 KiB plus 4 KiB a file.
    let needed = customize::total_bytes(plan) + 65536 + 4096 * plan.len() as u64;
    if needed > free + replaced {
        return Err(image::ImageError::FatFull {
            needed,
            free: free + replaced,
        }
        .into());
    }
    Ok(())
}

/// The overlays of a role: `lb` or `lb,metrics` (the first names the role).
fn role_names(role: &str) -> Vec<String> {
    role.split(',').map(|n| n.trim().to_string()).collect()
}

fn check_roles(req: &BuildRequest) -> anyhow::Result<()> {
    let mut seen = vec![];
    for (k, name) in &req.roles {
        if *k == 0 || *k > req.cards {
            bail!(
                "--role {k}={name}: there is no card {k} (the batch has {} cards; \
                 give --cards N)",
                req.cards
            );
        }
        if seen.contains(k) {
            bail!(
                "--role {k}={name}: card {k} already has a role; give one --role per card \
                 (several overlays: --role {k}=A,B)"
            );
        }
        seen.push(*k);
        if role_names(name).iter().any(String::is_empty) {
            bail!(
                "--role {k}={name:?} names no overlay: write --role {k}=NAME with an overlay \
                 from the overlays directory"
            );
        }
    }
    Ok(())
}

/// Every overlay any card uses: the defaults and all roles' overlays, sorted.
fn all_overlays(req: &BuildRequest) -> Vec<String> {
    let mut names: Vec<String> = req.overlays.clone();
    for (_, r) in &req.roles {
        names.extend(role_names(r));
    }
    names.sort();
    names.dedup();
    names
}

fn load_overlays(req: &BuildRequest, names: &[String]) -> anyhow::Result<Vec<LoadedOverlay>> {
    if names.is_empty() {
        return Ok(vec![]);
    }
    let dir = overlay::overlays_dir(req.overlays_dir.as_deref()).context(
        "no overlays directory found: give --overlays DIR (the repository's overlays/ works)",
    )?;
    names.iter().map(|n| overlay::load(&dir, n)).collect()
}

/// The card every card of the batch starts from (and the cloneable image carries).
fn template_card(req: &BuildRequest, key: ClusterKey, rng: &mut impl Rng) -> anyhow::Result<Card> {
    let mut card = Card::new(&req.cluster, key);
    card.cluster.seeds = req.join.clone();
    card.cluster.mdns = req.mdns;
    card.identity.hostname_prefix = req.hostname_prefix.clone();
    card.access.user = req.user.clone();
    card.access.password_hash = match &req.password {
        PasswordSpec::None => None,
        PasswordSpec::File(p) => Some(Secret::new(password::hash_password(
            &password::read_password_file(p)?,
            rng,
        )?)),
        PasswordSpec::Hash(h) => Some(Secret::new(h.clone())),
    };
    for p in &req.ssh_keys {
        card.access.ssh_authorized_keys.extend(read_ssh_keys(p)?);
    }
    if let Some(w) = &req.wifi {
        let text = std::fs::read_to_string(&w.psk_file)
            .with_context(|| format!("reading Wi-Fi passphrase file {}", w.psk_file.display()))?;
        let psk = text.lines().next().unwrap_or("").to_string();
        check_psk(&psk).map_err(|e| anyhow::anyhow!("{}: {e}", w.psk_file.display()))?;
        card.network.wifi = Some(Wifi {
            ssid: w.ssid.clone(),
            psk: Secret::new(psk),
            country: w.country.clone(),
            hidden: false,
        });
    }
    card.locale.timezone = req.timezone.clone();
    card.locale.keymap = req.keymap.clone();
    card.locale.locale = req.locale.clone();
    card.overlays = req.overlays.clone();
    card.validate().context("checking the card")?;
    Ok(card)
}

/// Reads an OpenSSH public key file (one or more keys, `authorized_keys` style).
fn read_ssh_keys(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading SSH key file {}", path.display()))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    for k in &keys {
        if k.contains("PRIVATE KEY") {
            bail!("{} is a private key; give the .pub file", path.display());
        }
        let kind = k.split_whitespace().next().unwrap_or("");
        if !(kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-")) {
            bail!(
                "{}: {kind:?} is not an OpenSSH public key type",
                path.display()
            );
        }
    }
    if keys.is_empty() {
        bail!("SSH key file {} holds no key", path.display());
    }
    Ok(keys)
}

fn resolve_arch(
    forced: Option<Arch>,
    detected: Option<Arch>,
    catalog: Option<Arch>,
) -> anyhow::Result<Arch> {
    match (forced, detected.or(catalog)) {
        (Some(f), Some(d)) if f != d => bail!(
            "--arch {f} does not match the image, which is {d}; leave --arch out or pick the \
             {f} image"
        ),
        (Some(f), _) => Ok(f),
        (None, Some(d)) => Ok(d),
        (None, None) => bail!("cannot tell the image's architecture; give --arch arm64|armhf"),
    }
}

/// Removes temp images left by a build that was killed (a clean failure removes its own).
fn remove_stale_parts(out: &Path) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".piforge-") && name.ends_with(".part") {
            tracing::info!(file = %e.path().display(), "removing a leftover of an interrupted build");
            std::fs::remove_file(e.path())
                .with_context(|| format!("removing {}", e.path().display()))?;
        }
    }
    Ok(())
}

fn remove_stale_cards(out: &Path, cards: &[BatchCard]) -> anyhow::Result<()> {
    let dir = out.join("cards");
    let keep: BTreeMap<String, ()> = cards
        .iter()
        .map(|c| (format!("{}.toml", c.hostname), ()))
        .collect();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".toml") && !keep.contains_key(&name) {
            std::fs::remove_file(e.path())
                .with_context(|| format!("removing stale card {}", e.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_resolution() {
        assert_eq!(
            resolve_arch(None, Some(Arch::Armhf), Some(Arch::Arm64)).unwrap(),
            Arch::Armhf
        );
        assert_eq!(
            resolve_arch(Some(Arch::Arm64), None, None).unwrap(),
            Arch::Arm64
        );
        let e = resolve_arch(Some(Arch::Arm64), Some(Arch::Armhf), None).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        assert!(resolve_arch(None, None, None).is_err());
    }

    #[test]
    fn roles_replace_the_defaults_and_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let mut req = BuildArgsFixture::request(d.path());
        req.overlays = vec!["web".into()];
        req.roles = vec![(1, "lb,metrics".into()), (3, "web".into())];
        check_roles(&req).unwrap();
        assert_eq!(all_overlays(&req), ["lb", "metrics", "web"]);
        assert_eq!(role_names("lb,metrics"), ["lb", "metrics"]);
        req.roles = vec![(1, "lb".into()), (1, "web".into())];
        let e = check_roles(&req).unwrap_err().to_string();
        assert!(e.contains("already has a role"), "{e}");
        req.roles = vec![(4, "lb".into())];
        let e = check_roles(&req).unwrap_err().to_string();
        assert!(e.contains("there is no card 4"), "{e}");
        req.roles = vec![(2, "".into())];
        let e = check_roles(&req).unwrap_err().to_string();
        assert!(e.contains("names no overlay"), "{e}");
    }

    struct BuildArgsFixture;

    impl BuildArgsFixture {
        fn request(dir: &Path) -> BuildRequest {
            BuildRequest {
                base: BaseRequest::File(dir.join("base.img")),
                base_name: "base.img".into(),
                cards: 3,
                cluster: "lab".into(),
                hostname_prefix: "pi".into(),
                user: "pi".into(),
                password: PasswordSpec::None,
                ssh_keys: vec![],
                wifi: None,
                overlays: vec![],
                roles: vec![],
                arch: None,
                seed: Some(1),
                out: dir.join("out"),
                payload: None,
                overlays_dir: None,
                cache_dir: dir.join("cache"),
                key_file: None,
                join: vec![],
                mdns: true,
                timezone: None,
                keymap: None,
                locale: None,
                progress: false,
            }
        }
    }

    #[test]
    fn ssh_keys_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        std::fs::write(&p, "# mine\nssh-ed25519 AAAAC3 me@laptop\n\n").unwrap();
        assert_eq!(read_ssh_keys(&p).unwrap(), ["ssh-ed25519 AAAAC3 me@laptop"]);
        std::fs::write(&p, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
        assert!(
            read_ssh_keys(&p)
                .unwrap_err()
                .to_string()
                .contains("private key")
        );
    }
}
