//! Windows only: the thin calls behind `devices::windows` and the Windows flash target —
//! physical drives (`IOCTL_STORAGE_QUERY_PROPERTY`, `IOCTL_DISK_GET_LENGTH_INFO`,
//! `IOCTL_DISK_IS_WRITABLE`), volumes (`FindFirstVolumeW`, `GetVolumePathNamesForVolumeNameW`,
//! `IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS`), the system volume, locking and dismounting a
//! volume (`FSCTL_LOCK_VOLUME`, `FSCTL_DISMOUNT_VOLUME`), sector size, partition-table refresh
//! (`IOCTL_DISK_UPDATE_PROPERTIES`) and free space, all through `windows-sys`.
//!
//! Like `flash::blockdev` on Linux, this is a block-device ioctl module and so allowed
//! `unsafe`: every block says why it holds. Files are opened with std (`OpenOptionsExt`), so
//! handles are owned and closed by `File`. Deliberately no decisions here: the parsing and the
//! rules are in `devices::windows`, compiled and tested everywhere. This module was type-checked
//! and linted for `x86_64-pc-windows-gnu` only, never run on Windows (see the README).
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::ffi::{OsStrExt, OsStringExt};
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::AsRawHandle;
use std::path::Path;

use windows_sys::Win32::Foundation::{ERROR_NO_MORE_FILES, INVALID_HANDLE_VALUE};
use windows_sys::Win32::Storage::FileSystem::{
    FILE_SHARE_READ, FILE_SHARE_WRITE, FindFirstVolumeW, FindNextVolumeW, FindVolumeClose,
    GetDiskFreeSpaceExW, GetVolumePathNameW, GetVolumePathNamesForVolumeNameW,
    IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS,
};
use windows_sys::Win32::System::IO::DeviceIoControl;
use windows_sys::Win32::System::Ioctl::{
    DISK_GEOMETRY_EX, FSCTL_DISMOUNT_VOLUME, FSCTL_LOCK_VOLUME, GET_LENGTH_INFORMATION,
    IOCTL_DISK_GET_DRIVE_GEOMETRY_EX, IOCTL_DISK_GET_LENGTH_INFO, IOCTL_DISK_IS_WRITABLE,
    IOCTL_DISK_UPDATE_PROPERTIES, IOCTL_STORAGE_QUERY_PROPERTY, PropertyStandardQuery,
    STORAGE_PROPERTY_QUERY, StorageDeviceProperty,
};
use windows_sys::Win32::System::SystemInformation::GetSystemWindowsDirectoryW;

use super::windows::{self, DriveInfo, VolumeInfo};
use super::{Device, Policy, SafetyError, Target};

/// Drive numbers probed by [`list`] (Windows numbers drives densely from 0; gaps are skipped).
const MAX_DRIVES: u32 = 64;

fn wide(s: &std::ffi::OsStr) -> Vec<u16> {
    s.encode_wide().chain(std::iter::once(0)).collect()
}

fn from_wide(buf: &[u16]) -> String {
    let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    OsString::from_wide(&buf[..end])
        .to_string_lossy()
        .into_owned()
}

/// `DeviceIoControl` on `f` with `input`, into `output`; the number of bytes returned.
fn ioctl(f: &File, code: u32, input: &[u8], output: &mut [u8]) -> io::Result<usize> {
    let mut returned = 0u32;
    let len = |b: usize| u32::try_from(b).map_err(|_| io::Error::other("ioctl buffer too big"));
    // SAFETY: the handle is open for as long as `f` lives; the input and output pointers and
    // lengths come from live slices (null with length 0 when empty, which DeviceIoControl
    // accepts); `returned` outlives the synchronous call (no OVERLAPPED: the handle was not
    // opened for overlapped I/O).
    let ok = unsafe {
        DeviceIoControl(
            f.as_raw_handle(),
            code,
            if input.is_empty() {
                std::ptr::null()
            } else {
                input.as_ptr().cast()
            },
            len(input.len())?,
            if output.is_empty() {
                std::ptr::null_mut()
            } else {
                output.as_mut_ptr().cast()
            },
            len(output.len())?,
            &mut returned,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(returned as usize)
}

/// The bytes of a plain-old-data Windows struct, for ioctl input.
fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
    let mut out = vec![0u8; size_of::<T>()];
    // SAFETY: `v` is a valid `T` of `size_of::<T>()` bytes, `out` has that many, and the two
    // do not overlap; the windows-sys structs copied here are plain C data without padding
    // reads mattering to the callee (it reads the declared fields).
    unsafe {
        std::ptr::copy_nonoverlapping((v as *const T).cast::<u8>(), out.as_mut_ptr(), out.len())
    };
    out
}

/// Reads a plain-old-data Windows struct from the front of `b`.
fn read_struct<T: Copy>(b: &[u8]) -> Option<T> {
    if b.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: `b` holds at least `size_of::<T>()` bytes; `read_unaligned` copes with any
    // alignment; `T` is a windows-sys C struct of integers, valid for every bit pattern.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
}

/// Opens a device for queries only (no read/write access: no Administrator needed).
fn open_query(path: &str) -> io::Result<File> {
    OpenOptions::new()
        .access_mode(0)
        .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE)
        .open(path)
}

fn storage_descriptor(f: &File) -> io::Result<windows::Descriptor> {
    let query = STORAGE_PROPERTY_QUERY {
        PropertyId: StorageDeviceProperty,
        QueryType: PropertyStandardQuery,
        AdditionalParameters: [0],
    };
    let mut out = vec![0u8; 4096];
    let n = ioctl(f, IOCTL_STORAGE_QUERY_PROPERTY, &bytes_of(&query), &mut out)?;
    windows::parse_device_descriptor(&out[..n])
        .ok_or_else(|| io::Error::other("short STORAGE_DEVICE_DESCRIPTOR"))
}

/// The length of a disk in bytes.
pub fn disk_length(f: &File) -> io::Result<u64> {
    let mut out = [0u8; size_of::<GET_LENGTH_INFORMATION>()];
    ioctl(f, IOCTL_DISK_GET_LENGTH_INFO, &[], &mut out)?;
    let info: GET_LENGTH_INFORMATION =
        read_struct(&out).ok_or_else(|| io::Error::other("short GET_LENGTH_INFORMATION"))?;
    u64::try_from(info.Length).map_err(|_| io::Error::other("negative disk length"))
}

/// The logical sector size of a disk (the unit of every raw read and write).
pub fn sector_size(f: &File) -> io::Result<usize> {
    let mut out = vec![0u8; 256];
    let n = ioctl(f, IOCTL_DISK_GET_DRIVE_GEOMETRY_EX, &[], &mut out)?;
    let g: DISK_GEOMETRY_EX =
        read_struct(&out[..n]).ok_or_else(|| io::Error::other("short DISK_GEOMETRY_EX"))?;
    match g.Geometry.BytesPerSector {
        0 => Ok(512),
        b => Ok(b as usize),
    }
}

/// Asks Windows to re-read the partition table after a flash.
pub fn update_properties(f: &File) -> io::Result<()> {
    ioctl(f, IOCTL_DISK_UPDATE_PROPERTIES, &[], &mut []).map(|_| ())
}

fn drive(number: u32) -> io::Result<DriveInfo> {
    let f = open_query(&windows::drive_path(number).to_string_lossy())?;
    let descriptor = storage_descriptor(&f)?;
    // No medium (an empty card reader) fails the length query: size 0, "no medium".
    let size = disk_length(&f).unwrap_or(0);
    let writable = ioctl(&f, IOCTL_DISK_IS_WRITABLE, &[], &mut []).is_ok();
    Ok(DriveInfo {
        number,
        size,
        descriptor,
        writable,
    })
}

fn drives() -> Vec<DriveInfo> {
    (0..MAX_DRIVES)
        .filter_map(|n| match drive(n) {
            Ok(d) => Some(d),
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::debug!(drive = n, error = %e, "skipping drive");
                }
                None
            }
        })
        .collect()
}

/// `\\?\Volume{GUID}\` → `\\.\Volume{GUID}` (the volume device itself, not its root dir).
fn volume_device(name: &str) -> String {
    let trimmed = name.trim_end_matches('\\');
    match trimmed.strip_prefix(r"\\?\") {
        Some(rest) => format!(r"\\.\{rest}"),
        None => trimmed.to_string(),
    }
}

fn mount_points(name: &str) -> Vec<String> {
    let w = wide(name.as_ref());
    let mut buf = vec![0u16; 1024];
    let mut needed = 0u32;
    // SAFETY: `w` is NUL-terminated; `buf` has the length passed; `needed` is a live u32.
    let ok = unsafe {
        GetVolumePathNamesForVolumeNameW(
            w.as_ptr(),
            buf.as_mut_ptr(),
            buf.len() as u32,
            &mut needed,
        )
    };
    if ok == 0 {
        return Vec::new();
    }
    // A list of NUL-terminated strings, ended by an empty one.
    buf.split(|&c| c == 0)
        .take_while(|s| !s.is_empty())
        .map(String::from_utf16_lossy)
        .collect()
}

fn volume_extents(name: &str) -> Vec<(u32, u64, u64)> {
    let Ok(f) = open_query(&volume_device(name)) else {
        return Vec::new();
    };
    let mut out = vec![0u8; 8 + 24 * 32];
    match ioctl(&f, IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS, &[], &mut out) {
        Ok(n) => windows::parse_disk_extents(&out[..n]).unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

fn volumes() -> io::Result<Vec<VolumeInfo>> {
    let mut buf = vec![0u16; 64];
    // SAFETY: `buf` is writable for the length passed.
    let find = unsafe { FindFirstVolumeW(buf.as_mut_ptr(), buf.len() as u32) };
    if find == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    loop {
        let name = from_wide(&buf);
        out.push(VolumeInfo {
            mount_points: mount_points(&name),
            extents: volume_extents(&name),
            name,
        });
        // SAFETY: `find` is the live search handle from FindFirstVolumeW; `buf` as above.
        if unsafe { FindNextVolumeW(find, buf.as_mut_ptr(), buf.len() as u32) } == 0 {
            let e = io::Error::last_os_error();
            // SAFETY: `find` is live and closed exactly once, here.
            unsafe { FindVolumeClose(find) };
            if e.raw_os_error() == Some(ERROR_NO_MORE_FILES as i32) {
                return Ok(out);
            }
            return Err(e);
        }
    }
}

/// The root of the volume Windows runs from (`C:\`).
pub fn system_root() -> String {
    let mut dir = vec![0u16; 512];
    // SAFETY: `dir` is writable for the length passed.
    let n = unsafe { GetSystemWindowsDirectoryW(dir.as_mut_ptr(), dir.len() as u32) } as usize;
    if n == 0 || n >= dir.len() {
        // Unknown: fall back to the conventional system drive, so C: stays protected.
        return "C:\\".into();
    }
    let windir = wide(std::ffi::OsStr::new(&from_wide(&dir)));
    let mut root = vec![0u16; 512];
    // SAFETY: `windir` is NUL-terminated; `root` is writable for the length passed.
    if unsafe { GetVolumePathNameW(windir.as_ptr(), root.as_mut_ptr(), root.len() as u32) } == 0 {
        return from_wide(&dir).chars().take(3).collect();
    }
    from_wide(&root)
}

/// The candidate disks of this machine: every physical drive with its volumes.
pub fn list() -> anyhow::Result<Vec<Device>> {
    use anyhow::Context;
    let vols = volumes().context("listing the volumes")?;
    Ok(windows::devices_from(&drives(), &vols))
}

/// Windows [`super::check_target`]: physical drives judged by
/// [`windows::check_disk_path`], then opened for writing once (access denied:
/// [`SafetyError::NoAccess`]); anything else is a file.
pub fn check_target(path: &Path, image_len: u64, policy: &Policy) -> Result<Target, SafetyError> {
    let machine = || {
        let vols =
            volumes().map_err(|e| SafetyError::Discovery(format!("listing volumes: {e}")))?;
        Ok((drives(), vols))
    };
    let Some(t) = windows::check_disk_path(path, image_len, policy, &system_root(), machine)?
    else {
        return super::check_file_path(path);
    };
    if let Err(e) = OpenOptions::new()
        .read(true)
        .write(true)
        .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE)
        .open(&t.path)
    {
        return Err(
            windows::access_error(&t.path, &e).unwrap_or(SafetyError::Inspect {
                path: t.path.clone(),
                source: e,
            }),
        );
    }
    Ok(t)
}

/// Locks and dismounts every volume with an extent on disk `number`; the returned handles
/// hold the locks until dropped (so nothing remounts a volume while the disk is written).
pub fn lock_volumes(number: u32) -> io::Result<Vec<File>> {
    let mut held = Vec::new();
    for v in volumes()? {
        if !v.extents.iter().any(|e| e.0 == number) {
            continue;
        }
        let dev = volume_device(&v.name);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE)
            .open(&dev)?;
        ioctl(&f, FSCTL_LOCK_VOLUME, &[], &mut [])
            .map_err(|e| io::Error::new(e.kind(), format!("locking {dev} (in use?): {e}")))?;
        ioctl(&f, FSCTL_DISMOUNT_VOLUME, &[], &mut [])
            .map_err(|e| io::Error::new(e.kind(), format!("dismounting {dev}: {e}")))?;
        tracing::info!(volume = %dev, mounts = ?v.mount_points, "locked and dismounted");
        held.push(f);
    }
    Ok(held)
}

/// Bytes available to this user on the volume holding `dir`.
pub fn free_space(dir: &Path) -> io::Result<u64> {
    let w = wide(dir.as_os_str());
    let mut free = 0u64;
    // SAFETY: `w` is NUL-terminated; `free` is a live u64; the other two outputs may be null.
    let ok = unsafe {
        GetDiskFreeSpaceExW(
            w.as_ptr(),
            &mut free,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(free)
}
