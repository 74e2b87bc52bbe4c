//! `piforge inspect IMAGE`: what is in an image — partitions, release, boot mount, network
//! stack, the card (secrets redacted), the overlays it carries and the kernel command line. Read-only: the image is
//! opened through [`ReadOnly`], so inspecting can never change it.

use std::fs::File;
use std::path::Path;

use anyhow::Context;
use piforge_config::{CARD_DIR, CARD_PATH, Card, OverlayManifest};
use serde::Serialize;

use crate::acquire::catalog::FirstbootGen;
use crate::image::{self, ext4, fat::BootFs};
use crate::io::readonly::ReadOnly;

/// Everything `inspect` reports.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// Image size in bytes.
    pub size: u64,
    /// Partition table, e.g. `mbr 0x1a2b3c4d`.
    pub table: String,
    /// Partitions.
    pub partitions: Vec<PartInfo>,
    /// Release codename, when the root file system could be read.
    pub release: Option<String>,
    /// Pretty name of the OS.
    pub os: Option<String>,
    /// Where the boot partition is mounted.
    pub boot_mount: Option<String>,
    /// Network stack.
    pub network: Option<String>,
    /// cloud-init present.
    pub cloud_init: Option<bool>,
    /// Architecture.
    pub arch: Option<String>,
    /// `cmdline.txt`.
    pub cmdline: Option<String>,
    /// How the stock image does its own first boot (empty: unknown), from `cmdline.txt` and
    /// cloud-init's presence: what piforge's first boot has to cooperate with.
    pub first_boot: Vec<FirstbootGen>,
    /// Files under `piforge/` on the FAT.
    pub payload: Vec<String>,
    /// The card, secrets redacted.
    pub card: Option<toml::Value>,
    /// Why the card could not be read, if it is there but broken.
    pub card_error: Option<String>,
    /// Overlays under `piforge/overlays/` on the FAT.
    pub overlays: Vec<OverlayInfo>,
}

/// One overlay carried by the image.
#[derive(Debug, Serialize)]
pub struct OverlayInfo {
    /// Directory name.
    pub name: String,
    /// Whether the image's card applies it (the cloneable image's defaults).
    pub applied: bool,
    /// The manifest, if it parses.
    pub manifest: Option<OverlayManifest>,
    /// Why the manifest could not be read.
    pub error: Option<String>,
}

/// One partition.
#[derive(Debug, Serialize)]
pub struct PartInfo {
    /// 1-based number.
    pub number: u32,
    /// Start, bytes.
    pub start: u64,
    /// Length, bytes.
    pub len: u64,
    /// Partition type.
    pub part_type: String,
    /// File system.
    pub fs: String,
    /// File system label.
    pub label: Option<String>,
    /// PARTUUID.
    pub partuuid: String,
}

/// The stock first-boot mechanisms of an image, from its `cmdline.txt` (our own arguments are
/// ignored) and whether cloud-init is installed: Bookworm's
/// `init=/usr/lib/raspberrypi-sys-mods/firstboot`, Trixie's ` resize` (initramfs and
/// `rpi-resize.service`), cloud-init. Empty when none is recognised.
pub fn first_boot_mechanisms(cmdline: &str, cloud_init: bool) -> Vec<FirstbootGen> {
    let line = piforge_config::cmdline::remove(cmdline);
    let mut out = vec![];
    let args: Vec<&str> = line.split_whitespace().collect();
    if args
        .iter()
        .any(|a| a.starts_with("init=") && a.ends_with("/raspberrypi-sys-mods/firstboot"))
    {
        out.push(FirstbootGen::SysMods);
    }
    if args.contains(&"resize") {
        out.push(FirstbootGen::Resize);
    }
    if cloud_init {
        out.push(FirstbootGen::CloudInit);
    }
    out
}

/// `init= sys-mods`, `initramfs resize + cloud-init`, or `unknown`.
pub fn mechanisms_text(m: &[FirstbootGen]) -> String {
    if m.is_empty() {
        return "unknown".into();
    }
    m.iter()
        .map(|g| match g {
            FirstbootGen::SysMods => "init= sys-mods",
            FirstbootGen::Resize => "initramfs resize",
            FirstbootGen::CloudInit => "cloud-init",
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

/// Inspects the image at `path`.
pub fn inspect(path: &Path) -> anyhow::Result<Inspection> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = f
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let layout = image::read_layout(&mut f)
        .with_context(|| format!("reading the partition table of {}", path.display()))?;
    let table = match &layout.table {
        image::TableKind::Mbr { disk_signature } => format!("mbr 0x{disk_signature:08x}"),
        image::TableKind::Gpt { disk_guid } => format!("gpt {disk_guid}"),
    };
    let partitions = layout
        .partitions
        .iter()
        .map(|p| PartInfo {
            number: p.number,
            start: p.start,
            len: p.len,
            part_type: match &p.part_type {
                image::PartType::Mbr(t) => format!("0x{t:02x}"),
                image::PartType::Gpt(g) => g.clone(),
            },
            fs: format!("{:?}", p.fs).to_lowercase(),
            label: p.label.clone(),
            partuuid: layout.partuuid(p.number),
        })
        .collect();
    let mut out = Inspection {
        size,
        table,
        partitions,
        release: None,
        os: None,
        boot_mount: None,
        network: None,
        cloud_init: None,
        arch: None,
        cmdline: None,
        first_boot: vec![],
        payload: vec![],
        card: None,
        card_error: None,
        overlays: vec![],
    };
    if let Some(root) = layout.root() {
        let clone = f
            .try_clone()
            .with_context(|| format!("opening {}", path.display()))?;
        match ext4::root_facts(ReadOnly(clone), root) {
            Ok(facts) => {
                out.release = Some(facts.version_codename.clone());
                out.os = Some(facts.pretty_name.clone());
                out.boot_mount = Some(facts.boot_mount.clone());
                out.network = Some(format!("{:?}", facts.network));
                out.cloud_init = Some(facts.cloud_init);
                out.arch = facts.arch.map(|a| a.to_string());
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the root file system"),
        }
    }
    let boot = layout
        .boot()
        .with_context(|| format!("examining {}", path.display()))?
        .clone();
    let fs = BootFs::open(ReadOnly(&mut f), &boot)?;
    out.cmdline = fs
        .read("cmdline.txt")?
        .map(|b| String::from_utf8_lossy(&b).trim_end().to_string());
    if let Some(c) = &out.cmdline {
        out.first_boot = first_boot_mechanisms(c, out.cloud_init.unwrap_or(false));
    }
    out.payload = list_tree(&fs, CARD_DIR)?;
    let mut applied = vec![];
    if let Some(bytes) = fs.read(CARD_PATH)? {
        match Card::parse(&String::from_utf8_lossy(&bytes)) {
            Ok(card) => {
                applied = card.overlays.clone();
                out.card = Some(card.redacted().0);
            }
            Err(e) => out.card_error = Some(e.to_string()),
        }
    }
    let mut names = fs.list(&format!("{CARD_DIR}/overlays")).unwrap_or_default();
    names.sort();
    for name in names {
        let manifest = fs.read(&format!("{CARD_DIR}/overlays/{name}/overlay.toml"))?;
        let (manifest, error) =
            match manifest.map(|b| OverlayManifest::parse(&String::from_utf8_lossy(&b))) {
                Some(Ok(m)) => (Some(m), None),
                Some(Err(e)) => (None, Some(e.to_string())),
                None => (None, Some("no overlay.toml".to_string())),
            };
        out.overlays.push(OverlayInfo {
            applied: applied.contains(&name),
            name,
            manifest,
            error,
        });
    }
    Ok(out)
}

fn list_tree<T: std::io::Read + std::io::Write + std::io::Seek>(
    fs: &BootFs<T>,
    dir: &str,
) -> anyhow::Result<Vec<String>> {
    let mut out = vec![];
    let Ok(names) = fs.list(dir) else {
        return Ok(out);
    };
    for n in names {
        let p = format!("{dir}/{n}");
        match fs.list(&p) {
            Ok(_) => out.extend(list_tree(fs, &p)?),
            Err(_) => out.push(p),
        }
    }
    Ok(out)
}

/// Human-readable report.
pub fn render_text(i: &Inspection) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "size        {} bytes\ntable       {}\n",
        i.size, i.table
    ));
    for p in &i.partitions {
        s.push_str(&format!(
            "  p{}  start {:>12}  len {:>12}  type {:<6} {:<7} {:<10} PARTUUID={}\n",
            p.number,
            p.start,
            p.len,
            p.part_type,
            p.fs,
            p.label.as_deref().unwrap_or("-"),
            p.partuuid
        ));
    }
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "unknown".into());
    s.push_str(&format!("os          {}\n", opt(&i.os)));
    s.push_str(&format!("release     {}\n", opt(&i.release)));
    s.push_str(&format!("arch        {}\n", opt(&i.arch)));
    s.push_str(&format!("boot mount  {}\n", opt(&i.boot_mount)));
    s.push_str(&format!("network     {}\n", opt(&i.network)));
    s.push_str(&format!(
        "cloud-init  {}\n",
        i.cloud_init
            .map_or("unknown".into(), |c| if c { "yes" } else { "no" }
                .to_string())
    ));
    s.push_str(&format!("cmdline     {}\n", opt(&i.cmdline)));
    s.push_str(&format!("first boot  {}\n", mechanisms_text(&i.first_boot)));
    if i.payload.is_empty() {
        s.push_str("piforge     not customised (no piforge/ on the boot partition)\n");
    } else {
        s.push_str("piforge     \n");
        for p in &i.payload {
            s.push_str(&format!("  {p}\n"));
        }
    }
    if let Some(c) = &i.card {
        s.push_str("card.toml (secrets redacted)\n");
        let text = toml::to_string(c).unwrap_or_default();
        for l in text.lines() {
            s.push_str(&format!("  {l}\n"));
        }
    }
    if let Some(e) = &i.card_error {
        s.push_str(&format!("card.toml   INVALID: {e}\n"));
    }
    if !i.overlays.is_empty() {
        s.push_str("overlays    (* = applied by the image's card; cards of a batch name theirs)\n");
    }
    for o in &i.overlays {
        let mark = if o.applied { "*" } else { " " };
        let Some(m) = &o.manifest else {
            s.push_str(&format!(
                " {mark}{}  INVALID: {}\n",
                o.name,
                o.error.as_deref().unwrap_or("")
            ));
            continue;
        };
        s.push_str(&format!(" {mark}{}  {}\n", o.name, m.description));
        if !m.packages.is_empty() {
            s.push_str(&format!("    packages   {}\n", m.packages.join(" ")));
        }
        if !m.tags.is_empty() {
            let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("    tags       {}\n", tags.join(" ")));
        }
        if !m.enable.is_empty() {
            s.push_str(&format!("    enable     {}\n", m.enable.join(" ")));
        }
        for t in &m.templates {
            let kind = if t.live { "live" } else { "static" };
            s.push_str(&format!(
                "    template   {} -> {} ({kind})",
                t.source, t.dest
            ));
            if let Some(c) = &t.command {
                s.push_str(&format!(", then `{c}`"));
            }
            s.push('\n');
        }
        for h in &m.handlers {
            let events = if h.events.is_empty() {
                "all events".to_string()
            } else {
                h.events.join(" ")
            };
            let once = if h.scope == piforge_config::node::Scope::Cluster {
                ", once per cluster"
            } else {
                ""
            };
            s.push_str(&format!("    handler    {} on {events}{once}\n", h.command));
        }
        for w in &m.webhooks {
            s.push_str(&format!("    webhook    {}\n", w.url));
        }
        if let Some(q) = &m.mqtt {
            s.push_str(&format!("    mqtt       {}\n", q.broker));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock_cmdline(release: &str) -> String {
        let p = format!(
            "{}/{release}/bootfs/cmdline.txt",
            piforge_test_support::RASPIOS_FIXTURES
        );
        std::fs::read_to_string(&p)
            .unwrap()
            .replace("DISKID", "0a1b2c3d")
    }

    fn cloud_init_installed(release: &str) -> bool {
        let p = format!(
            "{}/{release}/rootfs/etc/cloud/cloud.cfg.d",
            piforge_test_support::RASPIOS_FIXTURES
        );
        Path::new(&p).is_dir()
    }

    #[test]
    fn mechanisms_of_the_three_releases() {
        for (rel, want) in [
            ("bullseye", "init= sys-mods"),
            ("bookworm", "init= sys-mods"),
            ("trixie", "initramfs resize + cloud-init"),
        ] {
            let c = stock_cmdline(rel);
            let m = first_boot_mechanisms(&c, cloud_init_installed(rel));
            assert_eq!(mechanisms_text(&m), want, "{rel}");
            // Our arguments (added by the builder) change nothing.
            let ours = piforge_config::cmdline::add(&c, "/boot/firmware");
            assert_eq!(first_boot_mechanisms(&ours, cloud_init_installed(rel)), m);
        }
        // Trixie 2025-10-01 has cloud-init but no seed: still cloud-init (installed is what counts).
        assert_eq!(
            first_boot_mechanisms("root=PARTUUID=x-02 rootwait", false),
            Vec::<FirstbootGen>::new()
        );
        assert_eq!(mechanisms_text(&[]), "unknown");
        // `resize` is the word Raspberry Pi OS writes, not a part of another.
        assert!(first_boot_mechanisms("a noresize b resize=x", false).is_empty());
    }
}
