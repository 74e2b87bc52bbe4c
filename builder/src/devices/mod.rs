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
//! The files: this one holds the model (what a [`Device`] and a [`Target`] are), discovery
//! ([`list`]) and the per-OS rule order ([`judge`]); `safety` the rules; `target` judging a
//! path or an opened handle as a target; `confirm` the prompt; `unmount` unmounting and the
//! exclusive open; `report` the `piforge devices` output; `sysfs`, `diskutil`, `windows` and
//! `winapi` each OS's discovery.
//!
//! Deliberately not here: opening a device for writing, block maps, progress, eject (the flash
//! module), reading partition tables from the device (labels come from udev's
//! `/dev/disk/by-label`).

mod confirm;
pub mod diskutil;
pub use piforge_config::mountinfo;
mod report;
mod safety;
pub mod sysfs;
mod target;
mod unmount;
#[cfg(windows)]
pub mod winapi;
pub mod windows;

pub use confirm::{confirm, confirm_stdin, confirm_target, confirm_text, confirm_with};
pub use report::{DeviceReport, cmd_devices, cmd_devices_in, reports, table};
pub use safety::{SafetyError, assess};
pub use target::{
    check_file_path, check_opened, check_opened_in, check_target, check_target_in, recheck_opened,
};
#[cfg(unix)]
pub use unmount::probe_exclusive;
pub use unmount::{exclusive_flag, unmount};

use std::path::{Path, PathBuf};

use serde::Serialize;

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
}
