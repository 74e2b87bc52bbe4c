//! macOS devices: `diskutil list -plist`, `diskutil info -plist DISK` and
//! `diskutil info -plist /` turned into [`MacDisk`]s, the macOS path rules (`/dev/diskN` is
//! written through `/dev/rdiskN`, `diskNsM` is refused), and the macOS verdict ([`judge`]).
//!
//! Parsing and judging are pure (bytes in, values out, via the `plist` crate and serde) and
//! compiled on every OS, so Linux tests feed them the fixtures in
//! `builder/tests/fixtures/diskutil`. Only the functions that run `diskutil` or open devices
//! are `cfg(target_os = "macos")`. An APFS container is a synthesized disk: it is refused by
//! name, and its mounted volumes count against the physical disk that stores it, so the
//! internal disk holding `/` (through `disk3s3s1` on `disk0s2`) is the system disk, also when
//! `diskutil info /` names it directly.
//! Deliberately not handled: CoreStorage, RAID sets, and disks that appear between the
//! diskutil calls (they show up on the next run).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Bus, Device, MountUse, Partition, Policy, SafetyError};

/// `diskutil list -plist`: the keys piforge reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DiskList {
    all_disks_and_partitions: Vec<ListDisk>,
    whole_disks: Vec<String>,
}

/// One whole disk (or APFS container) of `AllDisksAndPartitions`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ListDisk {
    device_identifier: String,
    mount_point: Option<String>,
    size: Option<u64>,
    partitions: Vec<ListPartition>,
    #[serde(rename = "APFSPhysicalStores")]
    apfs_physical_stores: Option<Vec<ListStore>>,
    #[serde(rename = "APFSVolumes")]
    apfs_volumes: Vec<ListVolume>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ListPartition {
    device_identifier: String,
    mount_point: Option<String>,
    size: Option<u64>,
    volume_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ListStore {
    device_identifier: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ListVolume {
    device_identifier: String,
    mount_point: Option<String>,
    mounted_snapshots: Vec<Snapshot>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Snapshot {
    #[serde(rename = "SnapshotBSD")]
    snapshot_bsd: Option<String>,
    snapshot_mount_point: Option<String>,
}

/// `diskutil info -plist DISK`: the keys piforge reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DiskInfo {
    device_identifier: String,
    bus_protocol: Option<String>,
    internal: Option<bool>,
    removable: Option<bool>,
    removable_media: Option<bool>,
    removable_media_or_external_device: Option<bool>,
    virtual_or_physical: Option<String>,
    writable_media: Option<bool>,
    total_size: Option<u64>,
    size: Option<u64>,
    media_name: Option<String>,
    #[serde(rename = "IORegistryEntryName")]
    io_registry_entry_name: Option<String>,
    parent_whole_disk: Option<String>,
    mount_point: Option<String>,
    #[serde(rename = "APFSPhysicalStores")]
    apfs_physical_stores: Vec<InfoStore>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct InfoStore {
    #[serde(rename = "APFSPhysicalStore")]
    apfs_physical_store: String,
}

/// What kind of whole disk diskutil lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacKind {
    /// A physical disk (internal SSD, SD slot, USB reader or drive).
    Physical,
    /// An attached disk image (`hdiutil attach`): a file pretending to be a disk, accepted
    /// like a Linux loop device.
    DiskImage,
    /// A synthesized APFS container (`diskutil apfs list`): never a target.
    ApfsContainer,
    /// Any other synthesized (virtual) disk: never a target.
    Synthesized,
}

/// A whole disk as diskutil describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacDisk {
    /// The disk, in the portable shape the rules judge.
    pub device: Device,
    /// Physical, disk image or synthesized.
    pub kind: MacKind,
}

/// Why a plist could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the plist of {what}: {source}")]
pub struct PlistError {
    /// Which diskutil output.
    pub what: String,
    /// The parser's error.
    #[source]
    pub source: plist::Error,
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, PlistError> {
    plist::from_bytes(bytes).map_err(|source| PlistError {
        what: what.to_string(),
        source,
    })
}

/// Maps diskutil's `BusProtocol` to a [`Bus`].
pub fn bus_of(protocol: &str) -> Bus {
    match protocol {
        "USB" => Bus::Usb,
        "Secure Digital" | "SD" => Bus::Mmc,
        "PCI-Express" | "PCI" | "Apple Fabric" | "NVMe" => Bus::Nvme,
        "SATA" | "ATA" => Bus::Sata,
        "SAS" | "SCSI" | "Fibre Channel Interface" => Bus::Scsi,
        "Disk Image" | "Virtual Interface" => Bus::Loop,
        _ => Bus::Other,
    }
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// What a path under `/dev` names on macOS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MacPath {
    /// `/dev/diskN` or `/dev/rdiskN`: the whole disk `diskN`, written through `raw`.
    Whole {
        /// The disk identifier, `diskN`.
        disk: String,
        /// `/dev/rdiskN`, the node piforge opens.
        raw: PathBuf,
    },
    /// `/dev/diskNsM` (or `sMsK`, `rdiskNsM`): a partition or volume of `disk`.
    Partition {
        /// The whole disk to give instead, `/dev/diskN`.
        disk: PathBuf,
    },
    /// Anything else (a file, or a name that is not a disk).
    Other,
}

/// Classifies `path` by the macOS naming rules: `[/dev/]r?diskN` is a whole disk,
/// `[/dev/]r?diskN(sM)+` a slice. Paths outside `/dev` are [`MacPath::Other`].
pub fn mac_path(path: &Path) -> MacPath {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return MacPath::Other;
    };
    if path.parent() != Some(Path::new("/dev")) {
        return MacPath::Other;
    }
    let bare = name.strip_prefix('r').unwrap_or(name);
    let Some(rest) = bare.strip_prefix("disk") else {
        return MacPath::Other;
    };
    let mut parts = rest.split('s');
    let number = parts.next().unwrap_or("");
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(number) {
        return MacPath::Other;
    }
    let slices: Vec<&str> = parts.collect();
    if slices.is_empty() {
        return MacPath::Whole {
            disk: format!("disk{number}"),
            raw: PathBuf::from(format!("/dev/rdisk{number}")),
        };
    }
    if slices.iter().all(|s| digits(s)) {
        return MacPath::Partition {
            disk: PathBuf::from(format!("/dev/disk{number}")),
        };
    }
    MacPath::Other
}

/// The whole disk a partition identifier belongs to (`disk4s1` → `disk4`, `disk3s3s1` →
/// `disk3`); `None` for a whole disk.
fn whole_of(id: &str) -> Option<String> {
    match mac_path(&Path::new("/dev").join(id)) {
        MacPath::Partition { disk } => Some(disk.file_name()?.to_str()?.to_string()),
        _ => None,
    }
}

/// The physical whole disks under the volume `diskutil info -plist /` describes: the stores
/// of its APFS container, or its own whole disk (HFS+).
fn boot_disks(root: &DiskInfo) -> Vec<String> {
    let mut v: Vec<String> = root
        .apfs_physical_stores
        .iter()
        .filter_map(|s| whole_of(&s.apfs_physical_store))
        .collect();
    if v.is_empty()
        && let Some(p) = nonempty(&root.parent_whole_disk)
    {
        v.push(p.to_string());
    }
    v
}

/// Builds the disks from `diskutil list -plist` (`list`), per whole disk its
/// `diskutil info -plist DISK` (`infos`, keyed by identifier; a disk without an entry gets
/// conservative defaults: internal, not removable), and `diskutil info -plist /` (`root`,
/// which names the boot disk even when no mount reveals it). APFS containers are listed with
/// [`MacKind::ApfsContainer`]; their mounted volumes count against their physical stores.
pub fn disks_from_plists(
    list: &[u8],
    infos: &BTreeMap<String, Vec<u8>>,
    root: Option<&[u8]>,
) -> Result<Vec<MacDisk>, PlistError> {
    let list: DiskList = parse(list, "diskutil list")?;
    let root: Option<DiskInfo> = root.map(|r| parse(r, "diskutil info /")).transpose()?;
    let dev = Path::new("/dev");

    // Mounts of APFS containers, by the physical store partition they live on.
    let mut container_mounts: BTreeMap<&str, (&str, Vec<MountUse>)> = BTreeMap::new();
    for e in &list.all_disks_and_partitions {
        let Some(stores) = &e.apfs_physical_stores else {
            continue;
        };
        let mut mounts = Vec::new();
        for vol in &e.apfs_volumes {
            if let Some(mp) = nonempty(&vol.mount_point) {
                mounts.push(MountUse {
                    device: dev.join(&vol.device_identifier),
                    mount_point: mp.into(),
                    via_holder: true,
                });
            }
            // A sealed system volume's snapshot (`disk3s3s1`) is where `/` really is.
            for snap in &vol.mounted_snapshots {
                if let Some(mp) = nonempty(&snap.snapshot_mount_point) {
                    let bsd = nonempty(&snap.snapshot_bsd).unwrap_or(&vol.device_identifier);
                    mounts.push(MountUse {
                        device: dev.join(bsd),
                        mount_point: mp.into(),
                        via_holder: true,
                    });
                }
            }
        }
        for s in stores {
            container_mounts.insert(
                s.device_identifier.as_str(),
                (e.device_identifier.as_str(), mounts.clone()),
            );
        }
    }
    let boot = root.as_ref().map(boot_disks).unwrap_or_default();

    let mut out = Vec::new();
    for e in &list.all_disks_and_partitions {
        let id = e.device_identifier.as_str();
        if id.is_empty() || whole_of(id).is_some() {
            continue;
        }
        let info: Option<DiskInfo> = infos
            .get(id)
            .map(|b| parse(b, &format!("diskutil info {id}")))
            .transpose()?;
        let info = info.unwrap_or_default();
        let protocol = info.bus_protocol.as_deref().unwrap_or("");
        let kind = if e.apfs_physical_stores.is_some() {
            MacKind::ApfsContainer
        } else if protocol == "Disk Image" {
            MacKind::DiskImage
        } else if info.virtual_or_physical.as_deref() == Some("Virtual") {
            MacKind::Synthesized
        } else {
            MacKind::Physical
        };
        let mut mounts = Vec::new();
        let mut holders = Vec::new();
        for mp in [nonempty(&e.mount_point), nonempty(&info.mount_point)]
            .into_iter()
            .flatten()
        {
            mounts.push(MountUse {
                device: dev.join(id),
                mount_point: mp.into(),
                via_holder: false,
            });
        }
        let mut partitions = Vec::new();
        for (i, p) in e.partitions.iter().enumerate() {
            let pid = p.device_identifier.as_str();
            if pid.is_empty() {
                continue;
            }
            let mp = nonempty(&p.mount_point).map(PathBuf::from);
            if let Some(m) = &mp {
                mounts.push(MountUse {
                    device: dev.join(pid),
                    mount_point: m.clone(),
                    via_holder: false,
                });
            }
            if let Some((container, cm)) = container_mounts.get(pid) {
                holders.push(container.to_string());
                mounts.extend(cm.iter().cloned());
            }
            let number = pid
                .rsplit_once('s')
                .and_then(|(_, n)| n.parse().ok())
                .unwrap_or(u32::try_from(i + 1).unwrap_or(u32::MAX));
            partitions.push(Partition {
                number,
                name: pid.to_string(),
                path: dev.join(pid),
                size: p.size.unwrap_or(0),
                label: nonempty(&p.volume_name).map(str::to_string),
                mount_points: mp.into_iter().collect(),
            });
        }
        if boot.iter().any(|b| b == id) && !mounts.iter().any(|m| m.mount_point == Path::new("/")) {
            let from = root
                .as_ref()
                .map(|r| r.device_identifier.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or(id);
            mounts.push(MountUse {
                device: dev.join(from),
                mount_point: "/".into(),
                via_holder: true,
            });
        }
        let internal = info.internal.unwrap_or(true);
        let removable = info.removable.unwrap_or(false)
            || info.removable_media.unwrap_or(false)
            || (!internal && info.removable_media_or_external_device.unwrap_or(false));
        let model = nonempty(&info.media_name)
            .or(nonempty(&info.io_registry_entry_name))
            .unwrap_or("")
            .trim()
            .to_string();
        holders.sort();
        holders.dedup();
        out.push(MacDisk {
            kind,
            device: Device {
                name: id.to_string(),
                path: dev.join(id),
                size: info.total_size.or(info.size).or(e.size).unwrap_or(0),
                model,
                vendor: String::new(),
                bus: bus_of(protocol),
                removable,
                read_only: !info.writable_media.unwrap_or(true),
                emmc: false,
                internal: Some(internal),
                holders,
                mounts,
                swaps: Vec::new(),
                partitions,
                backing_file: None,
            },
        });
    }
    // Whole disks diskutil names but does not detail (no partition map) are still disks.
    for id in &list.whole_disks {
        if !out.iter().any(|d| &d.device.name == id) {
            tracing::debug!(disk = %id, "listed without details");
        }
    }
    out.sort_by(|a, b| {
        disk_number(&a.device.name)
            .cmp(&disk_number(&b.device.name))
            .then(a.device.name.cmp(&b.device.name))
    });
    Ok(out)
}

fn disk_number(id: &str) -> u64 {
    id.trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(u64::MAX)
}

/// The macOS verdict on a disk: synthesized disks and APFS containers are never targets;
/// then the portable rules ([`super::judge_portable`]: the system disk first, internal
/// disks, then [`super::assess`]).
pub fn judge(d: &MacDisk, image_len: Option<u64>, policy: &Policy) -> Result<(), SafetyError> {
    let what = match d.kind {
        MacKind::ApfsContainer => {
            "synthesized APFS container (flash the physical disk that stores it, if ever)"
        }
        MacKind::Synthesized => "synthesized disk, not a physical one",
        MacKind::Physical | MacKind::DiskImage => {
            return super::judge_portable(&d.device, image_len, policy);
        }
    };
    Err(SafetyError::Virtual {
        path: d.device.path.clone(),
        what,
    })
}

/// The error for a raw device this user may not open (EACCES/EPERM): run it with sudo.
pub fn access_error(path: &Path, e: &std::io::Error) -> Option<SafetyError> {
    let denied = e.kind() == std::io::ErrorKind::PermissionDenied
        || matches!(e.raw_os_error(), Some(1) | Some(13));
    denied.then(|| SafetyError::NoAccess {
        path: path.to_path_buf(),
        how: "writing a raw disk needs root: run it again with sudo (`sudo piforge flash ...`)",
    })
}

/// The disk identifier `diskutil` takes for a device path (`/dev/rdisk4` → `disk4`).
pub fn disk_id(path: &Path) -> String {
    match mac_path(path) {
        MacPath::Whole { disk, .. } => disk,
        _ => path.to_string_lossy().into_owned(),
    }
}

/// Checks a flash target given on macOS, with the disks of this machine (`disks`, lazily:
/// only asked for when the path names a disk): files as on Linux; `/dev/diskN` and
/// `/dev/rdiskN` judged with [`judge`] and written through `/dev/rdiskN` (a note says so);
/// slices refused with the whole disk to give instead.
pub fn check_disk_path(
    path: &Path,
    image_len: u64,
    policy: &Policy,
    disks: impl FnOnce() -> Result<Vec<MacDisk>, SafetyError>,
) -> Result<Option<super::Target>, SafetyError> {
    let (disk, raw) = match mac_path(path) {
        MacPath::Other => return Ok(None),
        MacPath::Partition { disk } => {
            return Err(SafetyError::Partition {
                path: path.into(),
                disk,
            });
        }
        MacPath::Whole { disk, raw } => (disk, raw),
    };
    let found = disks()?
        .into_iter()
        .find(|d| d.device.name == disk)
        .ok_or_else(|| SafetyError::NoSuchDevice { path: path.into() })?;
    let mut found = found;
    found.device.path = path.to_path_buf();
    judge(&found, Some(image_len), policy)?;
    let mut notes = Vec::new();
    if raw != path {
        notes.push(format!(
            "writing {} through {}, the raw node (uncached, several times faster)",
            path.display(),
            raw.display()
        ));
    }
    found.device.path = raw.clone();
    Ok(Some(super::Target {
        path: raw,
        kind: super::TargetKind::Device(Box::new(found.device)),
        notes,
    }))
}

#[cfg(target_os = "macos")]
fn run_diskutil(args: &[&str]) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    let out = std::process::Command::new("diskutil")
        .args(args)
        .output()
        .with_context(|| format!("running diskutil {}", args.join(" ")))?;
    anyhow::ensure!(
        out.status.success(),
        "running diskutil {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out.stdout)
}

/// Runs `diskutil list -plist`, `diskutil info -plist` for each whole disk and for `/`.
#[cfg(target_os = "macos")]
pub fn disks() -> anyhow::Result<Vec<MacDisk>> {
    let list = run_diskutil(&["list", "-plist"])?;
    let parsed: DiskList = parse(&list, "diskutil list")?;
    let mut infos = BTreeMap::new();
    for id in &parsed.whole_disks {
        infos.insert(id.clone(), run_diskutil(&["info", "-plist", id])?);
    }
    let root = run_diskutil(&["info", "-plist", "/"]).ok();
    Ok(disks_from_plists(&list, &infos, root.as_deref())?)
}

/// The disks `piforge devices` shows: physical disks and disk images (synthesized ones are
/// never targets and only clutter the table).
#[cfg(target_os = "macos")]
pub fn list() -> anyhow::Result<Vec<Device>> {
    Ok(disks()?
        .into_iter()
        .filter(|d| matches!(d.kind, MacKind::Physical | MacKind::DiskImage))
        .map(|d| d.device)
        .collect())
}

/// `diskutil unmountDisk diskN` (the whole disk: every volume of it).
#[cfg(target_os = "macos")]
pub fn unmount_disk(path: &Path) -> anyhow::Result<()> {
    let disk = disk_id(path);
    tracing::info!(disk = %disk, "diskutil unmountDisk");
    run_diskutil(&["unmountDisk", &disk]).map(|_| ())
}

/// macOS [`super::check_target`]: see [`check_disk_path`]; then the raw node must open for
/// writing (EACCES/EPERM: [`SafetyError::NoAccess`], nothing written).
#[cfg(target_os = "macos")]
pub fn check_target(
    path: &Path,
    image_len: u64,
    policy: &Policy,
) -> Result<super::Target, SafetyError> {
    let found = check_disk_path(path, image_len, policy, || {
        disks().map_err(|e| SafetyError::Discovery(format!("{e:#}")))
    })?;
    let Some(t) = found else {
        return super::check_file_path(path);
    };
    for n in &t.notes {
        tracing::info!("{n}");
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&t.path)
    {
        return Err(access_error(&t.path, &e).unwrap_or(SafetyError::Inspect {
            path: t.path.clone(),
            source: e,
        }));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/diskutil")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    }

    fn infos() -> BTreeMap<String, Vec<u8>> {
        ["disk0", "disk3", "disk4", "disk5", "disk6", "disk7"]
            .into_iter()
            .map(|d| (d.to_string(), fixture(&format!("info-{d}.plist"))))
            .collect()
    }

    fn macbook() -> Vec<MacDisk> {
        disks_from_plists(
            &fixture("list.plist"),
            &infos(),
            Some(&fixture("info-root.plist")),
        )
        .expect("the fixtures parse")
    }

    fn disk<'a>(all: &'a [MacDisk], id: &str) -> &'a MacDisk {
        all.iter().find(|d| d.device.name == id).expect(id)
    }

    fn verdict(d: &MacDisk, force: bool) -> Option<&'static str> {
        let p = Policy {
            force,
            ..Policy::default()
        };
        // A 100 MiB image: small enough for every disk of the fixture, the .dmg included.
        judge(d, Some(100 << 20), &p).err().map(|e| e.code())
    }

    #[test]
    fn the_fixture_macbook_is_parsed_with_the_plist_crate() {
        let all = macbook();
        let names: Vec<_> = all.iter().map(|d| d.device.name.as_str()).collect();
        assert_eq!(
            names,
            ["disk0", "disk3", "disk4", "disk5", "disk6", "disk7"]
        );
        let d0 = &disk(&all, "disk0").device;
        assert_eq!(
            (d0.bus, d0.internal, d0.removable),
            (Bus::Nvme, Some(true), false)
        );
        assert_eq!(d0.holders, ["disk3"]);
        assert_eq!(d0.model, "APPLE SSD AP0512Z");
        let d4 = &disk(&all, "disk4").device;
        assert_eq!(
            (d4.bus, d4.removable, d4.size),
            (Bus::Mmc, true, 31_914_983_424)
        );
        assert_eq!(d4.partitions[0].label.as_deref(), Some("bootfs"));
        assert_eq!(d4.partitions[1].number, 2);
        assert_eq!(
            d4.mount_points_to_unmount(),
            vec![PathBuf::from("/Volumes/bootfs")]
        );
        assert_eq!(disk(&all, "disk3").kind, MacKind::ApfsContainer);
        assert_eq!(disk(&all, "disk5").kind, MacKind::DiskImage);
        assert_eq!(disk(&all, "disk5").device.bus, Bus::Loop);
        let d6 = &disk(&all, "disk6").device;
        assert_eq!(
            (d6.bus, d6.internal, d6.removable),
            (Bus::Usb, Some(false), true)
        );
    }

    #[test]
    fn only_external_removable_sd_reader_and_image_disks_pass() {
        let all = macbook();
        let got: Vec<(&str, Option<&str>)> = all
            .iter()
            .map(|d| (d.device.name.as_str(), verdict(d, false)))
            .collect();
        assert_eq!(
            got,
            [
                ("disk0", Some("system-disk")),
                ("disk3", Some("virtual")),
                ("disk4", None),
                ("disk5", None),
                ("disk6", None),
                ("disk7", Some("too-large")),
            ]
        );
        // --force lifts the size rule only: never the boot disk or a synthesized one.
        let forced: Vec<_> = all.iter().map(|d| verdict(d, true)).collect();
        assert_eq!(
            forced,
            [Some("system-disk"), Some("virtual"), None, None, None, None]
        );
        let e = judge(disk(&all, "disk0"), None, &Policy::default()).unwrap_err();
        assert!(e.to_string().contains("holds / "), "{e}");
        let e = judge(disk(&all, "disk3"), None, &Policy::default()).unwrap_err();
        assert!(e.to_string().contains("synthesized APFS container"), "{e}");
    }

    #[test]
    fn the_boot_disk_is_refused_even_when_no_mount_reveals_it() {
        // Without the APFS volumes in the list, only `diskutil info /` names disk0.
        let list = String::from_utf8(fixture("list.plist")).unwrap();
        let stripped = list.replace("<string>/</string>", "<string></string>");
        let all = disks_from_plists(
            stripped.as_bytes(),
            &infos(),
            Some(&fixture("info-root.plist")),
        )
        .unwrap();
        let d0 = disk(&all, "disk0");
        assert_eq!(verdict(d0, true), Some("system-disk"));
        // The boot disk accepted would be the worst bug: without `info /` and without the
        // `/` mount the internal rule still refuses it.
        let all = disks_from_plists(stripped.as_bytes(), &infos(), None).unwrap();
        assert_eq!(verdict(disk(&all, "disk0"), true), Some("internal"));
    }

    #[test]
    fn internal_disks_are_refused_even_with_force_but_the_sd_slot_is_not() {
        let mut all = macbook();
        let d0 = all.iter_mut().find(|d| d.device.name == "disk0").unwrap();
        d0.device.mounts.clear();
        d0.device.holders.clear();
        assert_eq!(verdict(d0, true), Some("internal"));
        let e = judge(d0, None, &Policy::default()).unwrap_err();
        assert!(e.to_string().contains("internal disk"), "{e}");
        // The built-in SD slot is internal too, but its medium is removable.
        let d4 = disk(&all, "disk4");
        assert_eq!(d4.device.internal, Some(true));
        assert_eq!(verdict(d4, false), None);
    }

    #[test]
    fn synthesized_disks_are_refused() {
        let mut all = macbook();
        let d5 = all.iter_mut().find(|d| d.device.name == "disk5").unwrap();
        d5.kind = MacKind::Synthesized;
        assert_eq!(verdict(d5, true), Some("virtual"));
    }

    #[test]
    fn a_locked_card_is_read_only_and_missing_info_is_conservative() {
        let mut infos = infos();
        let locked = String::from_utf8(infos["disk4"].clone()).unwrap().replace(
            "<key>WritableMedia</key>\n\t<true/>",
            "<key>WritableMedia</key>\n\t<false/>",
        );
        infos.insert("disk4".into(), locked.into_bytes());
        let all = disks_from_plists(&fixture("list.plist"), &infos, None).unwrap();
        assert!(disk(&all, "disk4").device.read_only);
        assert_eq!(verdict(disk(&all, "disk4"), true), Some("read-only"));
        infos.remove("disk6");
        let all = disks_from_plists(&fixture("list.plist"), &infos, None).unwrap();
        let d6 = &disk(&all, "disk6").device;
        assert_eq!((d6.internal, d6.removable), (Some(true), false));
        assert_eq!(d6.size, 63_864_569_856, "size falls back to the list");
        assert_eq!(verdict(disk(&all, "disk6"), true), Some("internal"));
    }

    #[test]
    fn broken_plists_are_errors_and_empty_ones_are_empty() {
        assert!(disks_from_plists(b"<plist><dict>", &infos(), None).is_err());
        let mut bad = infos();
        bad.insert("disk4".into(), b"not xml".to_vec());
        let e = disks_from_plists(&fixture("list.plist"), &bad, None).unwrap_err();
        assert!(e.to_string().contains("diskutil info disk4"), "{e}");
        let empty = b"<?xml version=\"1.0\"?><plist version=\"1.0\"><dict/></plist>";
        assert!(
            disks_from_plists(empty, &BTreeMap::new(), None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn disk_paths_map_to_the_raw_node_and_slices_are_refused() {
        for (given, disk) in [("/dev/disk2", "disk2"), ("/dev/rdisk2", "disk2")] {
            assert_eq!(
                mac_path(Path::new(given)),
                MacPath::Whole {
                    disk: disk.into(),
                    raw: "/dev/rdisk2".into()
                },
                "{given}"
            );
        }
        for slice in ["/dev/disk2s1", "/dev/rdisk2s1", "/dev/disk2s1s1"] {
            assert_eq!(
                mac_path(Path::new(slice)),
                MacPath::Partition {
                    disk: "/dev/disk2".into()
                },
                "{slice}"
            );
        }
        for other in [
            "disk2",
            "/tmp/disk2",
            "/dev/diskette",
            "/dev/disk",
            "/dev/disk2s",
            "/dev/sdb",
        ] {
            assert_eq!(mac_path(Path::new(other)), MacPath::Other, "{other}");
        }
        assert_eq!(disk_id(Path::new("/dev/rdisk12")), "disk12");
    }

    #[test]
    fn flashing_disk4_writes_rdisk4_and_says_so() {
        let t = check_disk_path(Path::new("/dev/disk4"), 4 << 30, &Policy::default(), || {
            Ok(macbook())
        })
        .unwrap()
        .expect("a disk");
        assert_eq!(t.path, Path::new("/dev/rdisk4"));
        assert!(t.notes[0].contains("through /dev/rdisk4"), "{:?}", t.notes);
        let raw = check_disk_path(Path::new("/dev/rdisk4"), 1, &Policy::default(), || {
            Ok(macbook())
        })
        .unwrap()
        .unwrap();
        assert!(raw.notes.is_empty());

        let e = check_disk_path(Path::new("/dev/disk4s1"), 1, &Policy::default(), || {
            panic!("a slice is refused before any diskutil call")
        })
        .unwrap_err();
        assert_eq!(e.code(), "partition");
        assert!(
            e.to_string().contains("give the whole disk /dev/disk4"),
            "{e}"
        );
        for (p, code) in [
            ("/dev/disk0", "system-disk"),
            ("/dev/rdisk3", "virtual"),
            ("/dev/disk9", "no-such-device"),
        ] {
            let e =
                check_disk_path(Path::new(p), 1, &Policy::default(), || Ok(macbook())).unwrap_err();
            assert_eq!(e.code(), code, "{p}");
        }
        assert!(
            check_disk_path(Path::new("/tmp/x.img"), 1, &Policy::default(), || {
                panic!("files need no diskutil")
            })
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn permission_denied_says_sudo() {
        for errno in [1, 13] {
            let e = access_error(
                Path::new("/dev/rdisk4"),
                &std::io::Error::from_raw_os_error(errno),
            )
            .expect("denied");
            assert_eq!(e.code(), "no-access");
            let msg = e.to_string();
            assert!(
                msg.contains("sudo") && msg.contains("nothing was written"),
                "{msg}"
            );
        }
        assert!(
            access_error(
                Path::new("/dev/rdisk4"),
                &std::io::Error::from_raw_os_error(16)
            )
            .is_none()
        );
    }
}
