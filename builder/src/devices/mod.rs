//! `piforge devices` and the safety rules a flash target must pass before any byte is written.
//!
//! Discovery (Linux: `/sys/block`, `/proc/self/mountinfo`, `/proc/swaps`, `/dev/disk/by-label`;
//! macOS: `diskutil list -plist` / `diskutil info -plist`, see [`diskutil`]; Windows: the
//! physical drives and volumes, see [`windows`]) produces [`Device`]s; one pure function,
//! [`assess`], judges a device against a [`Policy`] and returns the first rule it breaks as a
//! [`SafetyError`]; [`judge`] adds the rules of macOS (internal disks) and Windows (the system
//! drive). Linux reads through an injectable [`SysRoot`], so tests run the real code over a
//! fake sysfs tree; macOS and Windows discovery is parsed from fixtures.
//!
//! The API the flash command uses, in order:
//! 1. [`check_target`]`(path, image_len, &policy)` → a [`Target`] (a device that passed every
//!    rule, or a regular file), or the [`SafetyError`] to print (exit 1, nothing written).
//! 2. [`confirm_text`]`(&target)`: what will be destroyed; [`confirm_stdin`] asks for it unless
//!    `--yes` (refuses when stdin is not a terminal); [`confirm`] is the pure prompt underneath.
//! 3. [`unmount`]`(&target)`: unmounts its partitions (Linux `umount`, macOS
//!    `diskutil unmountDisk`), then on Linux checks that an exclusive open succeeds. Windows
//!    locks and dismounts every volume of the disk when the flash opens it (the locks live as
//!    long as the handles), so there is nothing to do here.
//! 4. Open the device with [`exclusive_flag`] in `custom_flags` so nothing mounts it meanwhile.
//!
//! `piforge flash` itself opens each target once first (`flash::target::open_target`) and uses
//! [`check_opened`] (the same rules on the handle's `fstat`, SECURITY finding 4) instead of
//! step 1, and [`recheck_opened`] on the exclusive handle after step 3.
//!
//! [`list`] and [`cmd_devices`] serve `piforge devices [--json]`.
//!
//! Deliberately not here: opening a device for writing, block maps, progress, eject (the flash
//! module), reading partition tables from the device (labels come from udev's
//! `/dev/disk/by-label`).

pub mod diskutil;
pub use piforge_config::mountinfo;
mod safety;
pub mod sysfs;
#[cfg(windows)]
pub mod winapi;
pub mod windows;

pub use safety::{SafetyError, assess};

use std::fs;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::term::progress::human_bytes;

/// Mount points that make the disk under them the running system's disk: a disk holding any of
/// them is refused even with `--force` (`/boot/efi` and `/efi` too: the machine boots from it).
pub const SYSTEM_MOUNTS: [&str; 8] = [
    "/",
    "/boot",
    "/boot/firmware",
    "/boot/efi",
    "/efi",
    "/home",
    "/usr",
    "/var",
];

/// Largest disk accepted without `--force`: 256 GiB. The biggest common SD cards are 256 GiB;
/// anything bigger is more likely a backup drive than a card for a Pi.
pub const DEFAULT_MAX_SIZE: u64 = 256 << 30;

/// Where the kernel's views of devices live. [`SysRoot::host`] is the running machine; tests
/// point every field into a temp dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysRoot {
    /// sysfs, normally `/sys`.
    pub sys: PathBuf,
    /// The mount table, normally `/proc/self/mountinfo`.
    pub mountinfo: PathBuf,
    /// The active swap areas, normally `/proc/swaps`.
    pub swaps: PathBuf,
    /// Device nodes, normally `/dev` (also holds `disk/by-label`).
    pub dev: PathBuf,
}

impl SysRoot {
    /// The running machine.
    pub fn host() -> SysRoot {
        SysRoot {
            sys: "/sys".into(),
            mountinfo: "/proc/self/mountinfo".into(),
            swaps: "/proc/swaps".into(),
            dev: "/dev".into(),
        }
    }

    /// A fake machine under `root`: `root/sys`, `root/proc/self/mountinfo`, `root/proc/swaps`,
    /// `root/dev`.
    pub fn under(root: &Path) -> SysRoot {
        SysRoot {
            sys: root.join("sys"),
            mountinfo: root.join("proc/self/mountinfo"),
            swaps: root.join("proc/swaps"),
            dev: root.join("dev"),
        }
    }
}

/// The bus a disk hangs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bus {
    /// USB (card readers, sticks, external drives).
    Usb,
    /// MMC/SD host controller (a laptop's or a Pi's SD slot; `emmc` says when it is soldered).
    Mmc,
    /// NVMe.
    Nvme,
    /// SATA/ATA.
    Sata,
    /// Other SCSI (SAS, iSCSI, UAS bridges the path did not reveal).
    Scsi,
    /// virtio (virtual machines).
    Virtio,
    /// A loop device (Linux) or disk image (macOS): a file pretending to be a disk.
    Loop,
    /// Anything else.
    Other,
}

impl Bus {
    /// Lowercase name for tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Bus::Usb => "usb",
            Bus::Mmc => "mmc",
            Bus::Nvme => "nvme",
            Bus::Sata => "sata",
            Bus::Scsi => "scsi",
            Bus::Virtio => "virtio",
            Bus::Loop => "loop",
            Bus::Other => "other",
        }
    }
}

/// A partition of a [`Device`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Partition {
    /// Partition number (1 for `sdb1`).
    pub number: u32,
    /// Kernel name (`sdb1`, `mmcblk0p1`, `disk4s1`).
    pub name: String,
    /// Device node.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Filesystem label when known.
    pub label: Option<String>,
    /// Where it is mounted (empty when not).
    pub mount_points: Vec<PathBuf>,
}

/// A filesystem mounted from a disk, one of its partitions, or a holder stacked on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MountUse {
    /// The device node mounted (`/dev/sdb1`, `/dev/dm-0`).
    pub device: PathBuf,
    /// Where.
    pub mount_point: PathBuf,
    /// Mounted through a dm/md/APFS holder rather than from the disk or a partition.
    pub via_holder: bool,
}

/// A whole disk as discovery sees it. No judgement here: see [`assess`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Device {
    /// Kernel name (`sdb`, `mmcblk0`, `disk4`).
    pub name: String,
    /// Device node (`/dev/sdb`, `/dev/disk4`).
    pub path: PathBuf,
    /// Size in bytes (0: no medium in the reader).
    pub size: u64,
    /// Model, trimmed (may be empty).
    pub model: String,
    /// Vendor, trimmed (may be empty).
    pub vendor: String,
    /// Bus.
    pub bus: Bus,
    /// The kernel (or macOS) calls the medium removable.
    pub removable: bool,
    /// Write-protected (an SD card's lock switch, a read-only loop device).
    pub read_only: bool,
    /// An MMC device that is soldered eMMC, not an SD card.
    pub emmc: bool,
    /// macOS: the disk is internal (`None` on Linux).
    pub internal: Option<bool>,
    /// dm/md/LVM (Linux) or APFS containers (macOS) stacked on the disk or its partitions.
    pub holders: Vec<String>,
    /// Everything mounted from it, directly or through holders.
    pub mounts: Vec<MountUse>,
    /// Active swap areas on it (partitions, or swap files on its filesystems).
    pub swaps: Vec<PathBuf>,
    /// Partitions, by number.
    pub partitions: Vec<Partition>,
    /// Loop devices: the file behind it.
    pub backing_file: Option<PathBuf>,
}

impl Device {
    /// Mount points to unmount before writing (direct mounts only; mounts through holders make
    /// the disk busy instead), deepest first so nested mounts go before their parents.
    pub fn mount_points_to_unmount(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self
            .mounts
            .iter()
            .filter(|m| !m.via_holder)
            .map(|m| m.mount_point.clone())
            .collect();
        v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        v.dedup();
        v
    }

    /// "Vendor Model", or "(unknown model)".
    pub fn description(&self) -> String {
        let d = format!("{} {}", self.vendor, self.model).trim().to_string();
        if d.is_empty() {
            "(unknown model)".into()
        } else {
            d
        }
    }

    /// May this kind of disk be a card without `--force`: removable media, an SD slot or USB
    /// reader, a loop device or disk image? Soldered eMMC and internal macOS disks are not.
    pub fn card_like(&self) -> bool {
        if self.emmc || self.internal == Some(true) && !self.removable {
            return false;
        }
        self.removable || matches!(self.bus, Bus::Usb | Bus::Mmc | Bus::Loop)
    }
}

/// What `--force` and friends allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// `--force`: accept non-removable and oversized disks (never system disks, swap, busy or
    /// read-only ones, nor too-small ones).
    pub force: bool,
    /// Largest disk accepted without `--force`, bytes.
    pub max_size: u64,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            force: false,
            max_size: DEFAULT_MAX_SIZE,
        }
    }
}

/// What a checked target is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// A regular file: an image file is (over)written; no device rules apply and its size is not
    /// checked (it grows).
    File {
        /// Its current length, `None` when it will be created.
        existing_len: Option<u64>,
    },
    /// A disk that passed every rule.
    Device(Box<Device>),
}

/// A flash target that passed [`check_target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The path to open (as given; symlinks are fine).
    pub path: PathBuf,
    /// File or device.
    pub kind: TargetKind,
    /// Advice that does not stop the flash (e.g. "use /dev/rdisk4, it is faster").
    pub notes: Vec<String>,
}

impl Target {
    /// The disk, when the target is one.
    pub fn device(&self) -> Option<&Device> {
        match &self.kind {
            TargetKind::Device(d) => Some(d),
            TargetKind::File { .. } => None,
        }
    }

    /// Size of the disk in bytes (`None` for a file).
    pub fn size(&self) -> Option<u64> {
        self.device().map(|d| d.size)
    }

    /// Mount points [`unmount`] will unmount.
    pub fn mount_points_to_unmount(&self) -> Vec<PathBuf> {
        self.device()
            .map(Device::mount_points_to_unmount)
            .unwrap_or_default()
    }
}

/// The name of a partition's whole disk from the name alone (`sdb1`→`sdb`,
/// `mmcblk0p1`→`mmcblk0`, `nvme0n1p2`→`nvme0n1`, `disk4s1`→`disk4`, `rdisk4s1`→`rdisk4`);
/// `None` when the name is not a partition's.
pub fn partition_parent(name: &str) -> Option<String> {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    let stem = &name[..name.len() - digits];
    let ends_digit = |s: &str| s.chars().last().is_some_and(|c| c.is_ascii_digit());
    if let Some(disk) = stem.strip_suffix('s')
        && (disk.starts_with("disk") || disk.starts_with("rdisk"))
        && ends_digit(disk)
    {
        return Some(disk.to_string());
    }
    if let Some(disk) = stem.strip_suffix('p')
        && ends_digit(disk)
        && ["mmcblk", "nvme", "loop", "nbd"]
            .iter()
            .any(|p| disk.starts_with(p))
    {
        return Some(disk.to_string());
    }
    let letters = |s: &str, p: &str| {
        s.strip_prefix(p)
            .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_lowercase()))
    };
    if ["sd", "vd", "hd", "xvd"].iter().any(|p| letters(stem, p)) {
        return Some(stem.to_string());
    }
    None
}

/// macOS: the advice for a buffered `/dev/diskN` (the raw `/dev/rdiskN` skips the buffer cache
/// and is several times faster). `None` for any other path.
pub fn raw_disk_hint(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let n = name.strip_prefix("disk")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let raw = path.with_file_name(format!("r{name}"));
    Some(format!(
        "{} is the buffered node; {} is much faster",
        path.display(),
        raw.display()
    ))
}

/// Checks a flash target on this machine: see [`check_target_in`].
pub fn check_target(path: &Path, image_len: u64, policy: &Policy) -> Result<Target, SafetyError> {
    #[cfg(target_os = "macos")]
    {
        diskutil::check_target(path, image_len, policy)
    }
    #[cfg(windows)]
    {
        winapi::check_target(path, image_len, policy)
    }
    #[cfg(not(any(target_os = "macos", windows)))]
    {
        check_target_in(&SysRoot::host(), path, image_len, policy)
    }
}

/// A target that is not a disk (macOS and Windows, where disks are recognised by their names):
/// an existing regular file, or a new one in an existing directory.
pub fn check_file_path(path: &Path) -> Result<Target, SafetyError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return new_file_target(path, path.starts_with("/dev"));
        }
        Err(e) => {
            return Err(SafetyError::Inspect {
                path: path.into(),
                source: e,
            });
        }
    };
    if meta.is_file() {
        return Ok(Target {
            path: path.into(),
            kind: TargetKind::File {
                existing_len: Some(meta.len()),
            },
            notes: Vec::new(),
        });
    }
    Err(SafetyError::NotATarget {
        path: path.into(),
        what: if meta.is_dir() {
            "directory"
        } else {
            other_kind(&meta.file_type())
        },
    })
}

/// Every rule for a discovered disk on this OS: on Windows the system drive's disk first
/// ([`windows::system_rule`]), then [`judge_portable`].
pub fn judge(d: &Device, image_len: Option<u64>, policy: &Policy) -> Result<(), SafetyError> {
    #[cfg(windows)]
    windows::system_rule(d, &winapi::system_root())?;
    judge_portable(d, image_len, policy)
}

/// The rules every OS shares, in order: the system disk (never, whatever `--force` says),
/// then an internal non-removable macOS disk (never: on a Mac it is never a card; the
/// built-in SD slot is internal but removable), then [`assess`].
pub fn judge_portable(
    d: &Device,
    image_len: Option<u64>,
    policy: &Policy,
) -> Result<(), SafetyError> {
    if let Err(e @ SafetyError::SystemDisk { .. }) = assess(d, image_len, policy) {
        return Err(e);
    }
    if d.internal == Some(true) && !d.removable {
        return Err(SafetyError::Internal {
            path: d.path.clone(),
            model: d.description(),
        });
    }
    assess(d, image_len, policy)
}

/// Checks a flash target against the rules (Linux discovery under `root`):
/// - a regular file (outside the dev dir) is accepted as it is; a path that does not exist
///   becomes a new file when its parent exists and it is not under the dev dir;
/// - a block device (or, in a fake tree, any file directly in `root.dev`) is looked up in
///   sysfs: partitions are refused with the whole disk to give instead, virtual devices
///   refused, then [`assess`]; when nothing is mounted from a real block device, an
///   exclusive open must succeed (EBUSY: [`SafetyError::InUse`]).
pub fn check_target_in(
    root: &SysRoot,
    path: &Path,
    image_len: u64,
    policy: &Policy,
) -> Result<Target, SafetyError> {
    let inspect = |source| SafetyError::Inspect {
        path: path.to_path_buf(),
        source,
    };
    let under_dev = |p: &Path| p.starts_with(&root.dev) || p.starts_with("/dev");
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return new_file_target(path, under_dev(path));
        }
        Err(e) => return Err(inspect(e)),
    };
    check_meta_in(root, path, &meta, image_len, policy)
}

/// Checks an opened flash target (SECURITY finding 4): the rules of [`check_target_in`]
/// applied to what the handle's `fstat` says (the device it stands for, its type), not to
/// whatever the path points to by now. A file the open just created is a new file target.
pub fn check_opened(
    path: &Path,
    file: &fs::File,
    created: bool,
    image_len: u64,
    policy: &Policy,
) -> Result<Target, SafetyError> {
    check_opened_in(&SysRoot::host(), path, file, created, image_len, policy)
}

/// [`check_opened`] over a given root (tests).
pub fn check_opened_in(
    root: &SysRoot,
    path: &Path,
    file: &fs::File,
    created: bool,
    image_len: u64,
    policy: &Policy,
) -> Result<Target, SafetyError> {
    let meta = file.metadata().map_err(|source| SafetyError::Inspect {
        path: path.to_path_buf(),
        source,
    })?;
    if created && meta.is_file() {
        return Ok(Target {
            path: path.into(),
            kind: TargetKind::File { existing_len: None },
            notes: Vec::new(),
        });
    }
    check_meta_in(root, path, &meta, image_len, policy)
}

fn check_meta_in(
    root: &SysRoot,
    path: &Path,
    meta: &fs::Metadata,
    image_len: u64,
    policy: &Policy,
) -> Result<Target, SafetyError> {
    let inspect = |source| SafetyError::Inspect {
        path: path.to_path_buf(),
        source,
    };
    let canonical = fs::canonicalize(path).map_err(inspect)?;
    let dev_dir = fs::canonicalize(&root.dev).unwrap_or_else(|_| root.dev.clone());
    let in_dev_dir = canonical.parent() == Some(dev_dir.as_path());
    let ft = meta.file_type();
    let block = is_block_device(&ft);
    if ft.is_dir() {
        return Err(SafetyError::NotATarget {
            path: path.into(),
            what: "directory",
        });
    }
    if ft.is_file() && !in_dev_dir {
        return Ok(Target {
            path: path.into(),
            kind: TargetKind::File {
                existing_len: Some(meta.len()),
            },
            notes: Vec::new(),
        });
    }
    if !block && !ft.is_file() {
        return Err(SafetyError::NotATarget {
            path: path.into(),
            what: other_kind(&ft),
        });
    }
    let file_name = canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let name = devnum_of(meta)
        .and_then(|(ma, mi)| sysfs::name_from_devnum(root, ma, mi))
        .or(file_name)
        .ok_or_else(|| SafetyError::NoSuchDevice { path: path.into() })?;
    let name = match sysfs::lookup(root, &name) {
        sysfs::Lookup::Disk(n) => n,
        sysfs::Lookup::Partition { disk } => {
            return Err(SafetyError::Partition {
                path: path.into(),
                disk: dev_dir.join(disk),
            });
        }
        sysfs::Lookup::Unknown => {
            return Err(match partition_parent(&name) {
                Some(disk) => SafetyError::Partition {
                    path: path.into(),
                    disk: dev_dir.join(disk),
                },
                None => SafetyError::NoSuchDevice { path: path.into() },
            });
        }
    };
    if sysfs::is_virtual_name(&name) {
        return Err(SafetyError::Virtual {
            path: path.into(),
            what: virtual_what(&name),
        });
    }
    let tables = sysfs::Tables::read(root).map_err(|e| SafetyError::Discovery(format!("{e:#}")))?;
    let mut dev = sysfs::probe(root, &tables, &name)
        .map_err(|e| SafetyError::Discovery(format!("{e:#}")))?
        .ok_or_else(|| SafetyError::NoSuchDevice { path: path.into() })?;
    // Report the rules against the path the user gave.
    dev.path = path.to_path_buf();
    assess(&dev, Some(image_len), policy)?;
    #[cfg(unix)]
    if block && dev.mounts.is_empty() {
        probe_exclusive(path)?;
    }
    Ok(Target {
        path: path.into(),
        kind: TargetKind::Device(Box::new(dev)),
        notes: Vec::new(),
    })
}

/// Re-checks a device after its exclusive open (SECURITY finding 4), against the facts it was
/// checked and confirmed with: the handle's device must still be a disk of the same size,
/// removability, model and write protection (a card swapped in the same reader between the
/// prompt and the write has the same device number but not the same facts). The exclusive
/// open itself proves nothing is mounted from it any more.
pub fn recheck_opened(path: &Path, file: &fs::File, checked: &Device) -> anyhow::Result<()> {
    #[cfg(target_os = "macos")]
    {
        // macOS judges disks by name through diskutil (no device numbers to look up again):
        // the exclusive open compared the raw node's rdev with the checked handle's, and
        // `diskutil unmountDisk` just succeeded on that very disk.
        let _ = (path, file, checked);
        Ok(())
    }
    #[cfg(not(target_os = "macos"))]
    {
        let meta = file.metadata()?;
        let root = SysRoot::host();
        let tables = sysfs::Tables::read(&root)?;
        let now = devnum_of(&meta)
            .and_then(|(ma, mi)| sysfs::name_from_devnum(&root, ma, mi))
            .map(|n| sysfs::probe(&root, &tables, &n))
            .transpose()?
            .flatten();
        let Some(now) = now else {
            anyhow::bail!(
                "{} is no longer the disk that was checked: nothing was written",
                path.display()
            );
        };
        let facts = |d: &Device| (d.size, d.removable, d.read_only, d.model.clone(), d.bus);
        anyhow::ensure!(
            facts(&now) == facts(checked),
            "{} changed since it was checked and confirmed (now {}, {}; was {}, {}): nothing \
             was written, run the flash again",
            path.display(),
            now.description(),
            human_bytes(now.size),
            checked.description(),
            human_bytes(checked.size)
        );
        Ok(())
    }
}

fn new_file_target(path: &Path, under_dev: bool) -> Result<Target, SafetyError> {
    if under_dev {
        return Err(SafetyError::NoSuchDevice { path: path.into() });
    }
    let parent = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => {
            return Err(SafetyError::NotATarget {
                path: path.into(),
                what: "root directory",
            });
        }
    };
    if !parent.is_dir() {
        return Err(SafetyError::NoParent {
            path: path.into(),
            parent: parent.into(),
        });
    }
    Ok(Target {
        path: path.into(),
        kind: TargetKind::File { existing_len: None },
        notes: Vec::new(),
    })
}

fn virtual_what(name: &str) -> &'static str {
    match name {
        n if n.starts_with("dm-") => "device-mapper volume",
        n if n.starts_with("md") => "RAID array",
        n if n.starts_with("sr") => "optical drive",
        n if n.starts_with("zram") || n.starts_with("ram") => "RAM disk",
        n if n.starts_with("nbd") => "network block device",
        _ => "virtual block device",
    }
}

#[cfg(unix)]
fn is_block_device(ft: &fs::FileType) -> bool {
    use std::os::unix::fs::FileTypeExt;
    ft.is_block_device()
}

#[cfg(not(unix))]
fn is_block_device(_: &fs::FileType) -> bool {
    false
}

#[cfg(unix)]
fn other_kind(ft: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_char_device() {
        "character device"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

#[cfg(not(unix))]
fn other_kind(_: &fs::FileType) -> &'static str {
    "special file"
}

#[cfg(target_os = "linux")]
fn devnum_of(meta: &fs::Metadata) -> Option<(u32, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !meta.file_type().is_block_device() {
        return None;
    }
    let rdev = meta.rdev();
    Some((rustix::fs::major(rdev), rustix::fs::minor(rdev)))
}

#[cfg(not(target_os = "linux"))]
fn devnum_of(_: &fs::Metadata) -> Option<(u32, u32)> {
    None
}

/// The `custom_flags` bit that makes an open of a block device exclusive: on Linux `O_EXCL`
/// (fails with EBUSY while anything has the disk mounted or exclusively open, and keeps the
/// kernel from mounting it while we hold it); 0 elsewhere.
pub fn exclusive_flag() -> i32 {
    #[cfg(target_os = "linux")]
    {
        rustix::fs::OFlags::EXCL.bits() as i32
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Opens `path` read-only and exclusively, then closes it: [`SafetyError::InUse`] on EBUSY.
/// (Unix only: Windows locks the volumes when it opens the disk.)
#[cfg(unix)]
pub fn probe_exclusive(path: &Path) -> Result<(), SafetyError> {
    use std::os::unix::fs::OpenOptionsExt;
    match fs::OpenOptions::new()
        .read(true)
        .custom_flags(exclusive_flag())
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy => {
            Err(SafetyError::InUse { path: path.into() })
        }
        Err(e) => Err(SafetyError::Inspect {
            path: path.into(),
            source: e,
        }),
    }
}

/// What will be destroyed, for the confirmation prompt: the disk (model, size, bus) and every
/// partition with its size, label and mount points; or the file to overwrite or create.
pub fn confirm_text(t: &Target) -> String {
    let d = match &t.kind {
        TargetKind::File {
            existing_len: Some(n),
        } => {
            return format!(
                "{} will be overwritten (a regular file, now {}).\n",
                t.path.display(),
                human_bytes(*n)
            );
        }
        TargetKind::File { existing_len: None } => {
            return format!("{} will be created (a regular file).\n", t.path.display());
        }
        TargetKind::Device(d) => d,
    };
    let mut s = format!(
        "{}: {}, {}, {}{}\n",
        t.path.display(),
        d.description(),
        human_bytes(d.size),
        d.bus.as_str(),
        if d.removable { ", removable" } else { "" }
    );
    if let Some(b) = &d.backing_file {
        s.push_str(&format!("  loop device backed by {}\n", b.display()));
    }
    s.push_str("EVERYTHING on it will be destroyed:\n");
    if d.partitions.is_empty() {
        s.push_str("  (no partitions)\n");
    }
    for p in &d.partitions {
        s.push_str(&format!(
            "  {:<12} {:>10}  {}",
            p.name,
            human_bytes(p.size),
            p.label.as_deref().unwrap_or("(no label)")
        ));
        for m in &p.mount_points {
            s.push_str(&format!("  mounted at {} (will be unmounted)", m.display()));
        }
        s.push('\n');
    }
    for m in d
        .mounts
        .iter()
        .filter(|m| !d.partitions.iter().any(|p| p.path == m.device))
    {
        s.push_str(&format!(
            "  whole disk mounted at {} (will be unmounted)\n",
            m.mount_point.display()
        ));
    }
    for n in &t.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    s
}

/// Prints `prompt`, reads one line, and returns whether it is `yes` or one of `also` (e.g. the
/// device name). End of input or a read error is a no.
pub fn confirm_with(
    prompt: &str,
    also: &[&str],
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> bool {
    if write!(out, "{prompt}").and_then(|()| out.flush()).is_err() {
        return false;
    }
    let mut line = String::new();
    match input.read_line(&mut line) {
        Ok(0) | Err(_) => false,
        Ok(_) => {
            let a = line.trim();
            a == "yes" || also.iter().any(|x| !x.is_empty() && a == *x)
        }
    }
}

/// [`confirm_with`] accepting only `yes`.
pub fn confirm(prompt: &str, input: &mut impl BufRead, out: &mut impl Write) -> bool {
    confirm_with(prompt, &[], input, out)
}

/// Asks for confirmation on `input`/`out` unless `yes`: prints [`confirm_text`], then wants
/// `yes` or the device's name (`sdb` or `/dev/sdb`). `interactive` is whether stdin is a
/// terminal; without one and without `yes` it refuses ([`SafetyError::NotInteractive`]).
pub fn confirm_target(
    t: &Target,
    yes: bool,
    interactive: bool,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> Result<(), SafetyError> {
    if yes {
        return Ok(());
    }
    if !interactive {
        return Err(SafetyError::NotInteractive);
    }
    let _ = write!(out, "{}", confirm_text(t));
    let full = t.path.to_string_lossy().into_owned();
    let short = t
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prompt = format!("Type yes (or {short}) to write {full}: ");
    if confirm_with(&prompt, &[&full, &short], input, out) {
        Ok(())
    } else {
        Err(SafetyError::Declined)
    }
}

/// [`confirm_target`] on the real stdin and stderr.
pub fn confirm_stdin(t: &Target, yes: bool) -> Result<(), SafetyError> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    confirm_target(
        t,
        yes,
        interactive,
        &mut stdin.lock(),
        &mut std::io::stderr(),
    )
}

/// Unmounts everything mounted from the target's disk (nothing for a file). Linux: `umount`
/// each mount point, deepest first, then an exclusive open must succeed (an
/// [`SafetyError::InUse`] inside the error otherwise). macOS: `diskutil unmountDisk`.
pub fn unmount(t: &Target) -> anyhow::Result<()> {
    let Some(d) = t.device() else {
        return Ok(());
    };
    #[cfg(target_os = "macos")]
    {
        let _ = d;
        diskutil::unmount_disk(&t.path)
    }
    #[cfg(windows)]
    {
        let _ = d;
        Ok(())
    }
    #[cfg(not(any(target_os = "macos", windows)))]
    {
        use anyhow::Context;
        for mp in d.mount_points_to_unmount() {
            tracing::info!(mount_point = %mp.display(), "unmounting");
            let out = std::process::Command::new("umount")
                .arg(&mp)
                .output()
                .with_context(|| format!("running umount {}", mp.display()))?;
            anyhow::ensure!(
                out.status.success(),
                "unmounting {}: umount: {}",
                mp.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        if is_block_device(&fs::metadata(&t.path)?.file_type()) {
            probe_exclusive(&t.path)?;
        }
        Ok(())
    }
}

/// The candidate disks of this machine (see [`sysfs::list`], `diskutil::list`,
/// `winapi::list`).
pub fn list(root: &SysRoot) -> anyhow::Result<Vec<Device>> {
    #[cfg(target_os = "macos")]
    {
        let _ = root;
        diskutil::list()
    }
    #[cfg(windows)]
    {
        let _ = root;
        winapi::list()
    }
    #[cfg(not(any(target_os = "macos", windows)))]
    {
        sysfs::list(root)
    }
}

/// A device with its verdict under the default policy, as `piforge devices --json` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeviceReport<'a> {
    /// The device.
    #[serde(flatten)]
    pub device: &'a Device,
    /// Passes every rule without `--force` (image size not considered).
    pub flashable: bool,
    /// The rule it breaks ([`SafetyError::code`]), when not flashable.
    pub refusal: Option<&'static str>,
    /// The message, when not flashable.
    pub reason: Option<String>,
}

/// Judges each device under the default policy.
pub fn reports(devices: &[Device]) -> Vec<DeviceReport<'_>> {
    devices
        .iter()
        .map(|d| {
            let v = judge(d, None, &Policy::default()).err();
            DeviceReport {
                device: d,
                flashable: v.is_none(),
                refusal: v.as_ref().map(SafetyError::code),
                reason: v.map(|e| e.to_string()),
            }
        })
        .collect()
}

/// Renders the `piforge devices` table.
pub fn table(reports: &[DeviceReport<'_>]) -> String {
    let mut rows = vec![[
        "PATH".to_string(),
        "SIZE".into(),
        "MODEL".into(),
        "BUS".into(),
        "RM".into(),
        "MOUNTED".into(),
        "FLASHABLE".into(),
    ]];
    for r in reports {
        let d = r.device;
        let mut mounted: Vec<String> = d
            .mounts
            .iter()
            .map(|m| m.mount_point.display().to_string())
            .collect();
        mounted.dedup();
        let mut model = d.description();
        if let Some(b) = &d.backing_file {
            model = format!("loop: {}", b.display());
        }
        rows.push([
            d.path.display().to_string(),
            human_bytes(d.size),
            model,
            if d.emmc {
                "emmc".into()
            } else {
                d.bus.as_str().into()
            },
            if d.removable {
                "yes".into()
            } else {
                "no".into()
            },
            if mounted.is_empty() {
                "-".into()
            } else {
                mounted.join(",")
            },
            match (&r.refusal, &r.reason) {
                (Some(code), _) => format!("no: {code}"),
                _ => "yes".into(),
            },
        ]);
    }
    let mut s = crate::term::table::aligned(&rows);
    if reports.is_empty() {
        s.push_str("(no candidate disks found)\n");
    }
    for r in reports {
        if let Some(reason) = &r.reason {
            s.push_str(&format!("{}: {reason}\n", r.device.name));
        }
    }
    s
}

/// `piforge devices [--json]`: the candidate disks, with whether each may be flashed and why
/// not. JSON is an array of [`DeviceReport`].
pub fn cmd_devices(json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    cmd_devices_in(&SysRoot::host(), json, out)
}

/// [`cmd_devices`] over a given root (tests).
pub fn cmd_devices_in(root: &SysRoot, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let devices = list(root)?;
    let reports = reports(&devices);
    if json {
        serde_json::to_writer_pretty(&mut *out, &reports)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", table(&reports))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> Device {
        Device {
            name: "sdb".into(),
            path: "/dev/sdb".into(),
            size: 32 << 30,
            model: "STORAGE DEVICE".into(),
            vendor: "Generic".into(),
            bus: Bus::Usb,
            removable: true,
            read_only: false,
            emmc: false,
            internal: None,
            holders: vec![],
            mounts: vec![],
            swaps: vec![],
            partitions: vec![],
            backing_file: None,
        }
    }

    fn refusal(d: &Device, image: Option<u64>, force: bool) -> Option<&'static str> {
        assess(
            d,
            image,
            &Policy {
                force,
                ..Policy::default()
            },
        )
        .err()
        .map(|e| e.code())
    }

    #[test]
    fn partition_names_map_to_their_disk() {
        for (part, disk) in [
            ("sdb1", "sdb"),
            ("sdaa12", "sdaa"),
            ("vda3", "vda"),
            ("mmcblk0p1", "mmcblk0"),
            ("nvme0n1p2", "nvme0n1"),
            ("loop0p1", "loop0"),
            ("disk4s1", "disk4"),
            ("rdisk4s2", "rdisk4"),
        ] {
            assert_eq!(partition_parent(part).as_deref(), Some(disk), "{part}");
        }
        for whole in [
            "sdb", "mmcblk0", "nvme0n1", "disk4", "rdisk12", "loop0", "vda", "sd1",
        ] {
            assert_eq!(partition_parent(whole), None, "{whole}");
        }
    }

    #[test]
    fn raw_disk_hint_only_for_buffered_whole_disks() {
        let h = raw_disk_hint(Path::new("/dev/disk4")).expect("hint");
        assert!(h.contains("/dev/rdisk4"), "{h}");
        assert_eq!(raw_disk_hint(Path::new("/dev/rdisk4")), None);
        assert_eq!(raw_disk_hint(Path::new("/dev/disk4s1")), None);
        assert_eq!(raw_disk_hint(Path::new("/dev/sdb")), None);
    }

    #[test]
    fn rules_apply_in_order_and_force_lifts_only_two() {
        let ok = card();
        assert_eq!(refusal(&ok, Some(1 << 30), false), None);

        let mut sys = card();
        sys.mounts.push(MountUse {
            device: "/dev/sdb2".into(),
            mount_point: "/".into(),
            via_holder: false,
        });
        sys.read_only = true;
        sys.size = 1 << 40;
        assert_eq!(
            refusal(&sys, Some(1 << 50), true),
            Some("system-disk"),
            "first rule wins"
        );

        let mut other_mount = card();
        other_mount.mounts.push(MountUse {
            device: "/dev/sdb1".into(),
            mount_point: "/media/x/bootfs".into(),
            via_holder: false,
        });
        assert_eq!(
            refusal(&other_mount, None, false),
            None,
            "unmounted later, not refused"
        );
        // `/boot/firmware2` or `/var/lib` are not system mount points.
        other_mount.mounts[0].mount_point = "/var/lib".into();
        assert_eq!(refusal(&other_mount, None, false), None);

        let mut ro = card();
        ro.read_only = true;
        assert_eq!(refusal(&ro, None, true), Some("read-only"));
        let mut fixed = card();
        fixed.removable = false;
        fixed.bus = Bus::Sata;
        assert_eq!(refusal(&fixed, None, false), Some("not-removable"));
        assert_eq!(refusal(&fixed, None, true), None);
        // A USB disk the kernel does not call removable is still a reader.
        fixed.bus = Bus::Usb;
        assert_eq!(refusal(&fixed, None, false), None);
        let mut mac_internal = card();
        mac_internal.internal = Some(true);
        mac_internal.removable = false;
        mac_internal.bus = Bus::Mmc;
        assert_eq!(refusal(&mac_internal, None, false), Some("not-removable"));
        mac_internal.removable = true;
        assert_eq!(
            refusal(&mac_internal, None, false),
            None,
            "built-in SD slot with a card"
        );
    }

    #[test]
    fn every_refusal_has_a_distinct_code() {
        let p = PathBuf::from("/dev/x");
        let all = [
            SafetyError::NoSuchDevice { path: p.clone() },
            SafetyError::NoParent {
                path: p.clone(),
                parent: p.clone(),
            },
            SafetyError::NotATarget {
                path: p.clone(),
                what: "FIFO",
            },
            SafetyError::Partition {
                path: p.clone(),
                disk: p.clone(),
            },
            SafetyError::Virtual {
                path: p.clone(),
                what: "RAM disk",
            },
            SafetyError::SystemDisk {
                path: p.clone(),
                mount_point: p.clone(),
                device: p.clone(),
            },
            SafetyError::SwapInUse {
                path: p.clone(),
                swap: p.clone(),
            },
            SafetyError::ReadOnly { path: p.clone() },
            SafetyError::Busy {
                path: p.clone(),
                holders: "dm-0".into(),
            },
            SafetyError::InUse { path: p.clone() },
            SafetyError::NoMedium { path: p.clone() },
            SafetyError::TooSmall {
                path: p.clone(),
                size: "1".into(),
                need: "2".into(),
            },
            SafetyError::NotRemovable {
                path: p.clone(),
                bus: "sata",
                model: "m".into(),
            },
            SafetyError::TooLarge {
                path: p.clone(),
                size: "1".into(),
                max: "2".into(),
            },
            SafetyError::Internal {
                path: p.clone(),
                model: "m".into(),
            },
            SafetyError::NoAccess {
                path: p.clone(),
                how: "h",
            },
            SafetyError::NotInteractive,
            SafetyError::Declined,
            SafetyError::Discovery("x".into()),
        ];
        let mut codes: Vec<_> = all.iter().map(SafetyError::code).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }

    #[test]
    fn confirm_accepts_only_yes() {
        let mut out = Vec::new();
        assert!(confirm("go? ", &mut "yes\n".as_bytes(), &mut out));
        assert!(confirm("go? ", &mut "  yes  \r\n".as_bytes(), &mut out));
        assert!(!confirm("go? ", &mut "YES please\n".as_bytes(), &mut out));
        assert!(!confirm("go? ", &mut "".as_bytes(), &mut out));
        assert!(String::from_utf8_lossy(&out).starts_with("go? "));
    }
}
