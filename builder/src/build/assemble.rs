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
use piforge_config::host_keys::{self, HostKeys};
use piforge_config::{Card, ClusterKey, Secret};
use rand::{Rng, SeedableRng};

use crate::acquire::cache::{self, BaseRequest, Cache};
use crate::arch::Arch;
use crate::build::batch::{self, Batch, BatchCard};
use crate::build::customize::{self, ImageFacts, PiBinaries};
use crate::build::keystore::{self, DbCluster, KeyStore};
use crate::build::overlay::{self, LoadedOverlay};
use crate::build::password;
use crate::build::payload::Payload;
use crate::image::{self, ext4, fat::BootFs};
use crate::io::readonly::ReadOnly;
use crate::io::sparse;
use crate::term::progress::Progress;

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
    /// Allow `user` to be root.
    pub allow_root: bool,
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
    /// db overlay: synchronous replication (tag `db-synchronous=on` on the db cards).
    pub db_synchronous: bool,
    /// Architecture, when forced.
    pub arch: Option<Arch>,
    /// Seed for reproducible output: layout, timestamps, ids and ordering. Never secrets: the
    /// cluster key and password salts always come from the OS random number generator.
    pub seed: Option<u64>,
    /// A release image: the Pi binaries, overlays and `cmdline.txt`, but no card (no cluster
    /// key, password, Wi-Fi or SSH keys). `piforge build --from` it adds the user's card.
    pub no_card: bool,
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
    /// MQTT broker of every card (wins over an overlay's `[mqtt]`).
    pub mqtt: Option<crate::build::mqtt::MqttSpec>,
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
    /// The cluster key was made by this build (never with `no_card`).
    pub new_key: bool,
}

/// Runs a build.
pub fn build(req: &BuildRequest) -> anyhow::Result<BuildOutcome> {
    // The seed fixes what must be reproducible (the batch id, hence instance ids and names);
    // secrets never come from it (keystore and password draw from the OS).
    let mut rng = match req.seed {
        Some(s) => rand::rngs::StdRng::seed_from_u64(s),
        None => rand::rngs::StdRng::from_os_rng(),
    };
    check_roles(req)?;
    check_no_card(req)?;

    // 1. Everything the card needs from the user, checked before any big work. A release
    // image (no card) gets a throwaway key that only lets the template validate: it is never
    // stored nor written (the card files are left out of the plan below).
    let (key, new_key) = match &req.key_file {
        _ if req.no_card => (keystore::fresh_key()?, false),
        Some(p) => (keystore::read_key_file(p)?, false),
        None => KeyStore::default_store()?.get_or_create(&req.cluster)?,
    };
    let mut template = template_card(req, key)?;
    let db = db_cluster(req)?;
    if req.db_synchronous && db.is_none() {
        bail!(
            "--db-synchronous: no card applies the db overlay; give some cards the db role, \
             e.g. --role 2..4=db"
        );
    }
    set_db(&mut template, db.as_ref(), req.db_synchronous);

    // 2. Overlays (all that any card uses), checked at build time.
    let overlay_names = all_overlays(req);
    let overlays = load_overlays(req, &overlay_names)?;
    check_tags_on_the_pi(&template, &overlays).context("checking the cloneable image's card")?;

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
    // The same check firstboot repeats on the Pi: never a system account as the card's user.
    if !req.no_card {
        match &facts.passwd {
            Some(passwd) => piforge_config::check_login_user(passwd, &req.user, req.allow_root)
                .map_err(|e| anyhow::anyhow!("--user {}: {e}", req.user))?,
            None => tracing::warn!(
                "the image has no /etc/passwd: the user is checked on the Pi at first boot"
            ),
        }
    }
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
    let mechanisms = crate::image::inspect::first_boot_mechanisms(&cmdline, facts.cloud_init);
    if mechanisms.is_empty() {
        tracing::warn!(
            "the base image's own first boot is unknown (no init=…/raspberrypi-sys-mods/firstboot \
             or resize on cmdline.txt, no cloud-init): not a Raspberry Pi OS image piforge knows; \
             its first boot may fight ours"
        );
    } else {
        tracing::info!(
            first_boot = %crate::image::inspect::mechanisms_text(&mechanisms),
            "the base image's own first boot"
        );
    }
    let mut plan = customize::plan_image(
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
    if req.no_card {
        for path in customize::plan_card(&template, &image_facts, "").keys() {
            plan.remove(path);
        }
    }

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
        set_db(&mut card, db.as_ref(), req.db_synchronous);
        card.validate()
            .with_context(|| format!("checking card {k} ({hostname})"))?;
        check_tags_on_the_pi(&card, &overlays)
            .with_context(|| format!("checking card {k} ({hostname})"))?;
        batch_cards.push(BatchCard {
            index: k,
            hostname,
            role,
            flashed: false,
            host_keys: vec![],
            address: None,
        });
        cards.push(card);
    }
    add_host_keys(&mut cards, &mut batch_cards)?;

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
    batch.save_known_hosts(&req.out)?;
    Ok(BuildOutcome {
        batch,
        image: image_path,
        new_key,
    })
}

/// Gives every card its SSH host keys, made here from the OS RNG (never from `--seed`: they
/// are secrets), one thread a card (RSA prime search dominates). The private keys go into the
/// card (its card.toml: 0600 in the batch, removed from the FAT after first boot), the
/// public halves into the batch, for `known_hosts`.
fn add_host_keys(cards: &mut [Card], batch_cards: &mut [BatchCard]) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let made: Vec<anyhow::Result<(HostKeys, Vec<String>)>> = std::thread::scope(|s| {
        let chunk = cards.len().div_ceil(threads).max(1);
        let handles: Vec<_> = cards
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|c| {
                            let host = c.identity.hostname.as_deref().unwrap_or("pi");
                            let keys =
                                host_keys::generate_card_keys_from_os(&format!("root@{host}"))?;
                            let publics = keys.parse()?.into_iter().map(|k| k.public).collect();
                            Ok((keys, publics))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("host key threads do not panic"))
            .collect()
    });
    for ((card, bc), m) in cards.iter_mut().zip(batch_cards.iter_mut()).zip(made) {
        let (keys, publics) =
            m.with_context(|| format!("making SSH host keys of {}", bc.hostname))?;
        card.host_keys = Some(keys);
        bc.host_keys = publics.iter().map(|p| p.trim().to_string()).collect();
    }
    Ok(())
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
    piforge_config::atomic::sync_parent(dest)?;
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

/// The tags the node will announce, as firstboot merges them (the card's, then each of its
/// overlays' where the card has none), checked against the limits every receiver enforces: a
/// card over them would build, boot, and then silently vanish from its peers' view.
fn check_tags_on_the_pi(card: &Card, overlays: &[LoadedOverlay]) -> anyhow::Result<()> {
    let mut tags = card.node.tags.clone();
    for o in overlays.iter().filter(|o| card.overlays.contains(&o.name)) {
        for (k, v) in &o.manifest.tags {
            tags.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    piforge_config::tags::check_tags(&tags)
        .context("the node's tags (the card's and its overlays') are over the limits")
}

/// The overlay that gets the cluster's PostgreSQL passwords and etcd tags.
const DB_OVERLAY: &str = "db";

/// The overlays card `k` applies: its role's, else the defaults.
fn card_overlays(req: &BuildRequest, k: u32) -> Vec<String> {
    match req.roles.iter().find(|(i, _)| *i == k) {
        Some((_, r)) => role_names(r),
        None => req.overlays.clone(),
    }
}

/// The db state of the cluster when any card (or the cloneable image) applies the db overlay:
/// passwords and etcd members from the key store. Warns when etcd has fewer than 3 members.
fn db_cluster(req: &BuildRequest) -> anyhow::Result<Option<DbCluster>> {
    let db_cards: Vec<String> = (1..=req.cards)
        .filter(|k| card_overlays(req, *k).iter().any(|o| o == DB_OVERLAY))
        .map(|k| format!("{}-{k:02}", req.hostname_prefix))
        .collect();
    if db_cards.is_empty() && !req.overlays.iter().any(|o| o == DB_OVERLAY) {
        return Ok(None);
    }
    let db = KeyStore::default_store()?.db_cluster(&req.cluster, &db_cards)?;
    if db.etcd_initial.len() < 3 {
        tracing::warn!(
            cluster = %req.cluster,
            etcd_members = db.etcd_initial.len(),
            "the db overlay needs 3 personalised db cards for a quorum: with fewer etcd \
             members, losing one stops automatic failover (give --role K..L=db to 3 or 5 cards)"
        );
    }
    Ok(Some(db))
}

/// Gives `card` the db passwords, the tag `db-etcd=N` when it bootstraps etcd and
/// `db-synchronous=on` when asked, if it applies the db overlay; removes them otherwise.
fn set_db(card: &mut Card, db: Option<&DbCluster>, synchronous: bool) {
    let uses_db = card.overlays.iter().any(|o| o == DB_OVERLAY);
    card.node.tags.remove("db-etcd");
    card.node.tags.remove("db-synchronous");
    card.db = None;
    let Some(db) = db.filter(|_| uses_db) else {
        return;
    };
    card.db = Some(db.secrets.clone());
    if let Some(h) = &card.identity.hostname
        && db.etcd_initial.contains(h)
    {
        let n = db.etcd_initial.len().to_string();
        card.node.tags.insert("db-etcd".into(), n);
    }
    if synchronous {
        card.node.tags.insert("db-synchronous".into(), "on".into());
    }
}

/// A release image carries no card, so nothing that would go into one may be asked for.
fn check_no_card(req: &BuildRequest) -> anyhow::Result<()> {
    if !req.no_card {
        return Ok(());
    }
    let asked: Vec<&str> = [
        (req.cards > 0, "--cards"),
        (
            req.password != PasswordSpec::None,
            "--password-file/--password-hash",
        ),
        (!req.ssh_keys.is_empty(), "--ssh-key"),
        (req.wifi.is_some(), "--wifi-ssid"),
        (req.key_file.is_some(), "--key-file"),
        (!req.roles.is_empty(), "--role"),
        (!req.join.is_empty(), "--join"),
    ]
    .into_iter()
    .filter_map(|(set, flag)| set.then_some(flag))
    .collect();
    if !asked.is_empty() {
        bail!(
            "--no-card builds an image without a card, so {} cannot go anywhere; leave them \
             out, or build the cards from this image later (`piforge build --from IMAGE ...`)",
            asked.join(", ")
        );
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
fn template_card(req: &BuildRequest, key: ClusterKey) -> anyhow::Result<Card> {
    let mut card = Card::new(&req.cluster, key);
    card.cluster.seeds = req.join.clone();
    card.cluster.mdns = req.mdns;
    card.identity.hostname_prefix = req.hostname_prefix.clone();
    card.access.user = req.user.clone();
    card.access.allow_root = req.allow_root;
    card.access.password_hash = match &req.password {
        PasswordSpec::None => None,
        PasswordSpec::File(p) => Some(Secret::new(password::hash_password(
            &password::read_password_file(p)?,
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
    if let Some(m) = &req.mqtt {
        card.node.mqtt = Some(m.settings()?);
    }
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
    fn tags_merged_from_overlays_are_checked_at_build_time() {
        let mut card = Card::new("lab", ClusterKey::from_bytes([3; 32]));
        card.node.tags.insert("role".into(), "web".into());
        card.overlays = vec!["many".into()];
        let manifest = |n: usize| {
            let tags: String = (0..n).map(|i| format!("t{i} = \"x\"\n")).collect();
            piforge_config::OverlayManifest::parse(&format!(
                "description = \"tags\"\n[tags]\n{tags}"
            ))
            .unwrap()
        };
        let overlay = |n| LoadedOverlay {
            name: "many".into(),
            manifest: manifest(n),
            files: BTreeMap::new(),
        };
        // role + 63 overlay tags = 64: fine. role + 64 = 65: refused, naming the limit.
        check_tags_on_the_pi(&card, &[overlay(63)]).unwrap();
        let e = format!(
            "{:#}",
            check_tags_on_the_pi(&card, &[overlay(64)]).unwrap_err()
        );
        assert!(e.contains("at most 64"), "{e}");
        // An overlay the card does not use does not count.
        card.overlays = vec![];
        check_tags_on_the_pi(&card, &[overlay(64)]).unwrap();
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
                allow_root: false,
                password: PasswordSpec::None,
                ssh_keys: vec![],
                wifi: None,
                overlays: vec![],
                roles: vec![],
                db_synchronous: false,
                arch: None,
                seed: Some(1),
                no_card: false,
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
                mqtt: None,
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
