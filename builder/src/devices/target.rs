//! A path, or an opened handle, judged as a flash target: a regular file (existing or new), or a
//! whole disk that passes every rule of [`assess`] (Linux: looked up in sysfs under a
//! [`SysRoot`]; macOS and Windows: `diskutil` and `winapi` recognise their disks by name and
//! come back here for files). [`recheck_opened`] checks the disk again after the exclusive
//! open.
//!
//! Deliberately not here: the rules themselves (`safety`), unmounting and the exclusive open
//! (`unmount`), asking the user (`confirm`).

use std::fs;
use std::path::Path;

#[cfg(unix)]
use super::probe_exclusive;
use super::{
    Device, Policy, SafetyError, SysRoot, Target, TargetKind, assess, partition_parent, sysfs,
};
#[cfg(not(target_os = "macos"))]
use crate::term::progress::human_bytes;

/// Checks a flash target on this machine: see [`check_target_in`].
pub fn check_target(path: &Path, image_len: u64, policy: &Policy) -> Result<Target, SafetyError> {
    #[cfg(target_os = "macos")]
    {
        super::diskutil::check_target(path, image_len, policy)
    }
    #[cfg(windows)]
    {
        super::winapi::check_target(path, image_len, policy)
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
    let inspect = inspect_err(path);
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
    let meta = file.metadata().map_err(inspect_err(path))?;
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
    let inspect = inspect_err(path);
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
pub(super) fn is_block_device(ft: &fs::FileType) -> bool {
    use std::os::unix::fs::FileTypeExt;
    ft.is_block_device()
}

#[cfg(not(unix))]
pub(super) fn is_block_device(_: &fs::FileType) -> bool {
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

/// "Cannot inspect `path`": the error for an I/O failure while judging a target.
fn inspect_err(path: &Path) -> impl Fn(std::io::Error) -> SafetyError + '_ {
    move |source| SafetyError::Inspect {
        path: path.to_path_buf(),
        source,
    }
}
