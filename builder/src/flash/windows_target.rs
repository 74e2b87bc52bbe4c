//! Windows: a physical drive (`\\.\PhysicalDriveN`) as a flash target, with the same API as
//! the Unix `DeviceTarget` (`open`, `reread_partitions`, [`TargetIo`]).
//!
//! Opening for writing first locks and dismounts every volume of the disk
//! (`FSCTL_LOCK_VOLUME`, `FSCTL_DISMOUNT_VOLUME`) and keeps those handles, so Windows can
//! neither write to a volume nor remount it while the card is written; then opens the drive
//! with `FILE_FLAG_NO_BUFFERING | FILE_FLAG_WRITE_THROUGH`, which needs sector-aligned offsets,
//! lengths and buffers: every transfer goes through [`super::sector`]. Type-checked for
//! `x86_64-pc-windows-gnu` here, never run on Windows (see the README).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use windows_sys::Win32::Storage::FileSystem::{
    FILE_FLAG_NO_BUFFERING, FILE_FLAG_WRITE_THROUGH, FILE_SHARE_READ, FILE_SHARE_WRITE,
};

use super::sector;
use super::target::TargetIo;
use crate::devices::{winapi, windows};

/// A physical drive opened for flashing (or, with `write = false`, for reading back).
#[derive(Debug)]
pub struct DeviceTarget {
    disk: File,
    /// Volume handles holding their locks until the target is dropped.
    _locks: Vec<File>,
    sector: usize,
    size: u64,
    path: PathBuf,
}

impl DeviceTarget {
    /// Opens `\\.\PhysicalDriveN`; for writing, its volumes are locked and dismounted first.
    pub fn open(path: &Path, write: bool) -> anyhow::Result<DeviceTarget> {
        let n = windows::drive_number(path)
            .with_context(|| format!("{} is not a \\\\.\\PhysicalDriveN path", path.display()))?;
        let locks = if write {
            winapi::lock_volumes(n).with_context(|| {
                format!("locking and dismounting the volumes of {}", path.display())
            })?
        } else {
            Vec::new()
        };
        let disk = OpenOptions::new()
            .read(true)
            .write(write)
            .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE)
            .custom_flags(FILE_FLAG_NO_BUFFERING | FILE_FLAG_WRITE_THROUGH)
            .open(path)
            .map_err(|e| match windows::access_error(path, &e) {
                Some(s) => anyhow::Error::from(s),
                None => anyhow::Error::from(e),
            })
            .with_context(|| format!("opening {}", path.display()))?;
        let sector = winapi::sector_size(&disk)
            .with_context(|| format!("reading the sector size of {}", path.display()))?;
        let size = winapi::disk_length(&disk)
            .with_context(|| format!("reading the size of {}", path.display()))?;
        Ok(DeviceTarget {
            disk,
            _locks: locks,
            sector,
            size,
            path: path.to_owned(),
        })
    }

    /// Makes Windows re-read the partition table (`IOCTL_DISK_UPDATE_PROPERTIES`).
    pub fn reread_partitions(&self) -> anyhow::Result<()> {
        winapi::update_properties(&self.disk)
            .with_context(|| format!("re-reading the partition table of {}", self.path.display()))
    }
}

impl TargetIo for DeviceTarget {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        sector::write_at(&self.disk, self.sector, buf, offset)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        sector::read_at(&self.disk, self.sector, buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.disk.sync_all()
    }
    fn drop_cache(&self) -> io::Result<()> {
        // FILE_FLAG_NO_BUFFERING: nothing is cached.
        Ok(())
    }
    fn capacity(&self) -> u64 {
        self.size
    }
    fn is_device(&self) -> bool {
        true
    }
}
