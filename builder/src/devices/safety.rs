//! The safety rules: [`SafetyError`] (one variant per rule, each message saying what to do) and
//! [`assess`], the pure judgement of a discovered [`Device`] against a [`Policy`].
//!
//! Deliberately no I/O: discovery (sysfs, diskutil) and the exclusive-open probe live in the
//! parent module; this file only decides.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::{Device, Policy, SYSTEM_MOUNTS};
use crate::term::progress::human_bytes;

/// Why a target is refused. Each message says what to do about it. [`SafetyError::code`] is a
/// stable kebab-case name for scripts (`piforge devices --json`).
#[derive(Debug, Error)]
pub enum SafetyError {
    /// A path under `/dev` that does not exist or that the kernel does not know as a disk.
    #[error("no such device {path}: `piforge devices` lists the disks of this machine")]
    NoSuchDevice {
        /// The path given.
        path: PathBuf,
    },
    /// A new image file was asked for in a directory that does not exist.
    #[error("cannot create {path}: directory {parent} does not exist")]
    NoParent {
        /// The path given.
        path: PathBuf,
        /// Its missing parent.
        parent: PathBuf,
    },
    /// A directory, character device (other than macOS raw disks), FIFO or socket.
    #[error("{path} is a {what}, not a disk or an image file")]
    NotATarget {
        /// The path given.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// A partition was given instead of its disk.
    #[error("{path} is a partition: give the whole disk {disk}")]
    Partition {
        /// The path given.
        path: PathBuf,
        /// The whole disk to give instead.
        disk: PathBuf,
    },
    /// A RAM disk, dm/md device, optical drive or similar.
    #[error("{path} is a {what}, not a card")]
    Virtual {
        /// The path given.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// The disk holds a mounted system filesystem. Refused even with `--force`.
    #[error(
        "refusing {path}: it holds {mount_point} (mounted from {device}), this machine runs \
         from it; --force does not change that"
    )]
    SystemDisk {
        /// The disk.
        path: PathBuf,
        /// The system mount point found on it.
        mount_point: PathBuf,
        /// The device it is mounted from.
        device: PathBuf,
    },
    /// Swap is active on the disk. Refused even with `--force`.
    #[error("refusing {path}: swap {swap} is in use on it; run `swapoff {swap}` first")]
    SwapInUse {
        /// The disk.
        path: PathBuf,
        /// The swap device or file.
        swap: PathBuf,
    },
    /// Write-protected.
    #[error("{path} is read-only: check the lock switch on the card or its adapter")]
    ReadOnly {
        /// The disk.
        path: PathBuf,
    },
    /// dm/md/LVM/APFS sit on the disk.
    #[error(
        "{path} is busy: {holders} use it (device-mapper, LVM, RAID or APFS); deactivate them \
         first (e.g. `vgchange -an`, `cryptsetup close`, `mdadm --stop`, `diskutil eject`)"
    )]
    Busy {
        /// The disk.
        path: PathBuf,
        /// Comma-separated holder names.
        holders: String,
    },
    /// An exclusive open failed with EBUSY: something else has the disk open or mounted.
    #[error("{path} is in use by another program (exclusive open: device busy); close it first")]
    InUse {
        /// The disk.
        path: PathBuf,
    },
    /// Size 0: a card reader without a card, or a loop device without a file.
    #[error("{path} has no medium (size 0): is the card inserted?")]
    NoMedium {
        /// The disk.
        path: PathBuf,
    },
    /// The image does not fit. Refused even with `--force`.
    #[error("{path} is too small: {size} < the image's {need}")]
    TooSmall {
        /// The disk.
        path: PathBuf,
        /// Its size, human.
        size: String,
        /// The image's size, human.
        need: String,
    },
    /// Not removable and not an SD slot or USB reader.
    #[error(
        "refusing {path}: a fixed {bus} disk ({model}), not a removable card; pass --force if you \
         really mean it"
    )]
    NotRemovable {
        /// The disk.
        path: PathBuf,
        /// Its bus.
        bus: &'static str,
        /// Its model.
        model: String,
    },
    /// Larger than [`Policy::max_size`].
    #[error(
        "refusing {path}: {size} is larger than {max}, unusual for an SD card; pass --force if \
         you really mean it"
    )]
    TooLarge {
        /// The disk.
        path: PathBuf,
        /// Its size, human.
        size: String,
        /// The limit, human.
        max: String,
    },
    /// macOS: an internal, non-removable disk (not the built-in SD slot). Refused even with
    /// `--force`: on a Mac an internal disk is never a card.
    #[error(
        "refusing {path}: an internal disk ({model}); piforge writes only external, removable \
         or SD-reader media, and --force does not change that"
    )]
    Internal {
        /// The disk.
        path: PathBuf,
        /// Its model.
        model: String,
    },
    /// The raw device cannot be opened for writing by this user (EACCES/EPERM, Windows
    /// access denied). Nothing was written.
    #[error("cannot open {path} for writing: permission denied; {how} (nothing was written)")]
    NoAccess {
        /// The device node.
        path: PathBuf,
        /// What to do: run with sudo, or from an Administrator terminal.
        how: &'static str,
    },
    /// Confirmation needed but stdin is not a terminal.
    #[error("standard input is not a terminal, cannot ask for confirmation: use --yes in scripts")]
    NotInteractive,
    /// The user did not confirm.
    #[error("not confirmed: nothing was written")]
    Declined,
    /// Reading what the path is failed.
    #[error("inspecting {path}")]
    Inspect {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Discovery failed (sysfs, the mount table, diskutil).
    #[error("discovering devices: {0}")]
    Discovery(String),
}

impl SafetyError {
    /// A stable kebab-case name of the rule, for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            SafetyError::NoSuchDevice { .. } => "no-such-device",
            SafetyError::NoParent { .. } => "no-parent",
            SafetyError::NotATarget { .. } => "not-a-target",
            SafetyError::Partition { .. } => "partition",
            SafetyError::Virtual { .. } => "virtual",
            SafetyError::SystemDisk { .. } => "system-disk",
            SafetyError::SwapInUse { .. } => "swap-in-use",
            SafetyError::ReadOnly { .. } => "read-only",
            SafetyError::Busy { .. } => "busy",
            SafetyError::InUse { .. } => "in-use",
            SafetyError::NoMedium { .. } => "no-medium",
            SafetyError::TooSmall { .. } => "too-small",
            SafetyError::NotRemovable { .. } => "not-removable",
            SafetyError::TooLarge { .. } => "too-large",
            SafetyError::Internal { .. } => "internal",
            SafetyError::NoAccess { .. } => "no-access",
            SafetyError::NotInteractive => "not-interactive",
            SafetyError::Declined => "declined",
            SafetyError::Inspect { .. } => "inspect",
            SafetyError::Discovery(_) => "discovery",
        }
    }
}

/// Judges a disk: the first rule it breaks, in this order: system disk, swap (both refused even
/// with `--force`), read-only, busy (holders), no medium, too small for `image_len` (when
/// given), not removable, too large (these two only without `--force`).
pub fn assess(d: &Device, image_len: Option<u64>, policy: &Policy) -> Result<(), SafetyError> {
    let path = || d.path.clone();
    if let Some(m) = d
        .mounts
        .iter()
        .find(|m| SYSTEM_MOUNTS.iter().any(|s| m.mount_point == Path::new(s)))
    {
        return Err(SafetyError::SystemDisk {
            path: path(),
            mount_point: m.mount_point.clone(),
            device: m.device.clone(),
        });
    }
    if let Some(s) = d.swaps.first() {
        return Err(SafetyError::SwapInUse {
            path: path(),
            swap: s.clone(),
        });
    }
    if d.read_only {
        return Err(SafetyError::ReadOnly { path: path() });
    }
    if !d.holders.is_empty() {
        return Err(SafetyError::Busy {
            path: path(),
            holders: d.holders.join(", "),
        });
    }
    if d.size == 0 {
        return Err(SafetyError::NoMedium { path: path() });
    }
    if let Some(need) = image_len
        && need > d.size
    {
        return Err(SafetyError::TooSmall {
            path: path(),
            size: human_bytes(d.size),
            need: human_bytes(need),
        });
    }
    if !policy.force && !d.card_like() {
        return Err(SafetyError::NotRemovable {
            path: path(),
            bus: if d.emmc { "eMMC" } else { d.bus.as_str() },
            model: d.description(),
        });
    }
    if !policy.force && d.size > policy.max_size {
        return Err(SafetyError::TooLarge {
            path: path(),
            size: human_bytes(d.size),
            max: human_bytes(policy.max_size),
        });
    }
    Ok(())
}
