//! Flash targets: a regular file (how tests and image builds use flash) or a whole-disk block
//! device, behind [`TargetIo`] so the engine can be driven by a test's own implementation.
//!
//! Block devices are opened `O_EXCL` (Linux refuses it while a partition is mounted or held)
//! and, where the device accepts it, a second time with `O_DIRECT` for large aligned writes and
//! uncached read-back; unaligned pieces and devices without `O_DIRECT` use the buffered fd.
//! macOS uses `/dev/rdiskN` (raw, uncached by design) plus `F_NOCACHE` where rustix offers it,
//! in sector-aligned transfers only ([`super::sector`]: the raw node refuses anything else).
//! Windows has its own device target (`windows_target`, same API).
//! Files are written in place (created if missing, truncated to the image's length: their
//! holes read back as zeros, so unmapped blocks need no writing). Read-back of a file goes
//! through the page cache after the final `fsync`: it checks that every byte is where the
//! image puts it, as any reader of the file will see it; the host's own disk is its file
//! system's business, as for every other file piforge writes. Cards are what verification reads
//! back uncached, since that is where counterfeit and failing media lie.
//!
//! A target is opened once ([`open_target`], SECURITY finding 4): the checks (`devices`, the
//! source guard) look at that handle's `fstat`, and the writes go through it; a device is
//! re-opened exclusively through the handle itself (`/proc/self/fd/N`, never the path again)
//! once it is unmounted, and that exclusive handle must be the same device ([`Identity`]).
//! File targets are created and narrowed to 0600 (they hold the card's secrets).
//! It deliberately doesn't decide whether a device is safe to write: `devices` does.

use std::fs::{File, OpenOptions};
use std::io;
#[cfg(unix)]
use std::io::{Seek, SeekFrom};
#[cfg(unix)]
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
#[cfg(unix)]
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

#[cfg(unix)]
use super::blockdev;
#[cfg(windows)]
pub use super::windows_target::DeviceTarget;

/// Alignment of `O_DIRECT` buffers, offsets and lengths (covers 512 and 4096-byte sectors).
pub const ALIGN: usize = 4096;

/// Positional I/O on a flash target. `&self` methods, so one target can be shared with a
/// watchdog thread.
pub trait TargetIo: Send + Sync {
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Reads exactly `buf.len()` bytes at `offset`, bypassing the page cache where possible.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Makes the writes durable.
    fn sync(&self) -> io::Result<()>;
    /// Drops cached pages so the next reads come from the medium.
    fn drop_cache(&self) -> io::Result<()>;
    /// Capacity in bytes (a file: the image length it was sized to).
    fn capacity(&self) -> u64;
    /// A block device (old data may sit in blocks the image does not map).
    fn is_device(&self) -> bool;
    /// Gives a file target its final length (the image's); devices keep theirs.
    fn set_len(&self, len: u64) -> io::Result<()> {
        let _ = len;
        Ok(())
    }
}

/// What a target path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A regular file (or a path that does not exist yet).
    File,
    /// A block (or, on macOS, raw character) disk device.
    Device,
}

/// Whether `path` names a device or a file target.
pub fn kind_of(path: &Path) -> anyhow::Result<TargetKind> {
    if crate::devices::windows::drive_number(path).is_some() && cfg!(windows) {
        return Ok(TargetKind::Device);
    }
    match std::fs::metadata(path) {
        Ok(m) if is_device(&m.file_type()) => Ok(TargetKind::Device),
        Ok(m) if m.is_file() => Ok(TargetKind::File),
        Ok(_) => anyhow::bail!(
            "{} is neither a disk device nor a regular file",
            path.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(TargetKind::File),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// What `fstat` says an opened target is: its inode (`dev`, `ino`) and, for a device node,
/// the device it stands for (`rdev`, 0 otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Device of the filesystem holding the inode.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// The device a device node stands for (0 for regular files).
    pub rdev: u64,
}

#[cfg(unix)]
impl Identity {
    /// `fstat` of an open handle.
    pub fn of(f: &File) -> io::Result<Identity> {
        use std::os::unix::fs::MetadataExt;
        let m = f.metadata()?;
        Ok(Identity {
            dev: m.dev(),
            ino: m.ino(),
            rdev: if m.file_type().is_block_device() || m.file_type().is_char_device() {
                m.rdev()
            } else {
                0
            },
        })
    }
}

/// A target opened once: the handle the checks look at and the writes go through.
#[derive(Debug)]
pub struct Opened {
    /// The path as given (for messages only: it is never opened again).
    pub path: PathBuf,
    /// File or device, from the handle's `fstat`.
    pub kind: TargetKind,
    /// The handle: read-write for a file target that will be written, read-only for a device
    /// (until [`Opened::reopen_exclusive`]) and for `--verify-only`.
    pub file: File,
    /// Its identity.
    pub id: Identity,
    /// Whether this open created the file (it is removed again if the target is refused).
    pub created: bool,
}

#[cfg(unix)]
/// Opens a flash target once. A missing path becomes a new file (mode 0600) when `write`;
/// an existing one is opened without following a swap later: devices read-only (the write
/// handle comes from [`Opened::reopen_exclusive`]), files read-write when `write`.
/// `O_NONBLOCK` keeps a FIFO given by mistake from hanging the open (the checks refuse it).
pub fn open_target(path: &Path, write: bool) -> anyhow::Result<Opened> {
    let nonblock = rustix::fs::OFlags::NONBLOCK.bits() as i32;
    let (file, created) = match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound && write => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            (f, true)
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        Ok(m) => {
            let rw = write && m.is_file();
            let f = OpenOptions::new()
                .read(true)
                .write(rw)
                .custom_flags(nonblock)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            (f, false)
        }
    };
    // Regular files ignore O_NONBLOCK, but drop it anyway: the handle is written through.
    let flags = rustix::fs::fcntl_getfl(&file).map_err(io::Error::from)?;
    rustix::fs::fcntl_setfl(&file, flags - rustix::fs::OFlags::NONBLOCK)
        .map_err(io::Error::from)?;
    let id = Identity::of(&file).with_context(|| format!("reading {}", path.display()))?;
    let meta = file.metadata()?;
    let kind = if id.rdev != 0 {
        TargetKind::Device
    } else if meta.is_file() {
        TargetKind::File
    } else {
        // Judged (and refused) by the checks, which name what it is.
        TargetKind::File
    };
    Ok(Opened {
        path: path.to_owned(),
        kind,
        file,
        id,
        created,
    })
}

#[cfg(unix)]
impl Opened {
    /// A path that reaches this very handle (Linux: `/proc/self/fd/N`, which re-opens the
    /// same inode whatever the original path points to now); elsewhere the path itself, and
    /// the caller compares identities.
    fn self_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        let p = PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()));
        if cfg!(target_os = "linux") && p.exists() {
            p
        } else {
            self.path.clone()
        }
    }

    /// The path of the opened inode as the kernel knows it (`/proc/self/fd/N` resolved), or
    /// the path as given canonicalized where there is no /proc.
    pub fn real_path(&self) -> io::Result<PathBuf> {
        std::fs::canonicalize(self.self_path())
    }

    /// Opens the same device again, read-write and (Linux) exclusively (`O_EXCL`: fails with
    /// EBUSY while anything holds it, and keeps it from being mounted while held). The new
    /// handle must be the same device as the checked one.
    pub fn reopen_exclusive(&self) -> anyhow::Result<File> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if cfg!(target_os = "linux") {
            opts.custom_flags(rustix::fs::OFlags::EXCL.bits() as i32);
        }
        let f = opts.open(self.self_path()).with_context(|| {
            format!(
                "opening {} exclusively (is a partition of it mounted or in use?)",
                self.path.display()
            )
        })?;
        let id = Identity::of(&f)?;
        anyhow::ensure!(
            id.rdev == self.id.rdev,
            "{} is no longer the device that was checked: nothing was written",
            self.path.display()
        );
        Ok(f)
    }

    /// Removes the file this open created (the target was refused).
    pub fn discard(self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Windows: opens a flash target once (see the Unix [`open_target`] for the contract).
#[cfg(windows)]
pub fn open_target(path: &Path, write: bool) -> anyhow::Result<Opened> {
    use std::os::windows::fs::OpenOptionsExt;
    use windows_sys::Win32::Storage::FileSystem::{FILE_SHARE_READ, FILE_SHARE_WRITE};
    if let Some(n) = crate::devices::windows::drive_number(path) {
        let file = OpenOptions::new()
            .read(true)
            .share_mode(FILE_SHARE_READ | FILE_SHARE_WRITE)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        return Ok(Opened {
            path: path.to_owned(),
            kind: TargetKind::Device,
            file,
            id: Identity {
                dev: 0,
                ino: 0,
                rdev: u64::from(n) + 1,
            },
            created: false,
        });
    }
    let created = write && !path.exists();
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .create(created)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(Opened {
        path: path.to_owned(),
        kind: TargetKind::File,
        file,
        id: Identity {
            dev: 0,
            ino: 0,
            rdev: 0,
        },
        created,
    })
}

#[cfg(windows)]
impl Opened {
    /// The path as given, canonicalized.
    pub fn real_path(&self) -> io::Result<PathBuf> {
        std::fs::canonicalize(&self.path)
    }

    /// Removes the file this open created (the target was refused).
    pub fn discard(self) {
        if self.created {
            drop(self.file);
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(unix)]
fn is_device(ft: &std::fs::FileType) -> bool {
    ft.is_block_device() || ft.is_char_device()
}

#[cfg(not(unix))]
fn is_device(_: &std::fs::FileType) -> bool {
    false
}

/// A regular file target.
#[derive(Debug)]
pub struct FileTarget {
    file: File,
    len: u64,
}

impl FileTarget {
    /// Creates or opens `path` and sizes it to `len` bytes of zeros (old contents dropped).
    /// `len` = `None`: the length is unknown yet (a stream); the engine sets it at the end.
    pub fn create(path: &Path, len: Option<u64>) -> anyhow::Result<FileTarget> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.set_len(0)
            .and_then(|()| file.set_len(len.unwrap_or(0)))
            .with_context(|| format!("sizing {}", path.display()))?;
        Ok(FileTarget {
            file,
            len: len.unwrap_or(u64::MAX),
        })
    }

    /// The target from the handle of [`open_target`]: narrowed to 0600 (it will hold the
    /// card's secrets; whatever the umask or its mode before) and sized to `len` bytes of
    /// zeros, old contents dropped (`None`: unknown yet, a stream; the engine sets it).
    pub fn from_handle(file: File, len: Option<u64>) -> io::Result<FileTarget> {
        crate::io::hostfs::owner_only(&file)?;
        file.set_len(0)?;
        file.set_len(len.unwrap_or(0))?;
        Ok(FileTarget {
            file,
            len: len.unwrap_or(u64::MAX),
        })
    }

    /// A read-only target for `--verify-only` from the handle of [`open_target`].
    pub fn reading(file: File) -> io::Result<FileTarget> {
        let len = file.metadata()?.len();
        Ok(FileTarget { file, len })
    }

    /// Opens an existing file for `--verify-only` (never written).
    pub fn open_existing(path: &Path) -> anyhow::Result<FileTarget> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        Ok(FileTarget { file, len })
    }
}

impl TargetIo for FileTarget {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        crate::io::hostfs::write_all_at(&self.file, buf, offset)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        crate::io::hostfs::read_exact_at(&self.file, buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
    /// Keeps the cache: a file is verified as its readers see it (module docs).
    fn drop_cache(&self) -> io::Result<()> {
        Ok(())
    }
    fn capacity(&self) -> u64 {
        self.len
    }
    fn is_device(&self) -> bool {
        false
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

/// A whole-disk device target.
#[cfg(unix)]
#[derive(Debug)]
pub struct DeviceTarget {
    buffered: File,
    direct: Option<File>,
    direct_ok: AtomicBool,
    size: u64,
    path: PathBuf,
    /// macOS raw nodes: every transfer must be whole sectors of this size.
    sector: Option<usize>,
}

#[cfg(unix)]
impl DeviceTarget {
    /// The target from an opened handle (the exclusive one for writing): the `O_DIRECT` twin
    /// is opened through the handle itself (`/proc/self/fd/N`), never through `path`.
    pub fn from_handle(buffered: File, path: &Path, write: bool) -> anyhow::Result<DeviceTarget> {
        use std::os::fd::AsRawFd;
        let sector = blockdev::raw_sector_size(&buffered)
            .with_context(|| format!("reading the block size of {}", path.display()))?;
        let size = blockdev::device_size(&buffered)
            .or_else(|_| (&buffered).seek(SeekFrom::End(0)))
            .with_context(|| format!("reading the size of {}", path.display()))?;
        let me = PathBuf::from(format!("/proc/self/fd/{}", buffered.as_raw_fd()));
        let direct = if me.exists() {
            open_direct(&me, write)
        } else {
            None
        };
        if direct.is_none() {
            tracing::debug!(device = %path.display(), "no O_DIRECT: buffered writes, fsync");
        }
        set_nocache(&buffered);
        Ok(DeviceTarget {
            buffered,
            direct_ok: AtomicBool::new(direct.is_some()),
            direct,
            size,
            path: path.to_owned(),
            sector,
        })
    }

    /// Opens `path` for writing (exclusively on Linux) or, with `write = false`, for reading;
    /// the rest as [`DeviceTarget::from_handle`].
    pub fn open(path: &Path, write: bool) -> anyhow::Result<DeviceTarget> {
        let mut opts = OpenOptions::new();
        opts.read(true).write(write);
        if write && cfg!(target_os = "linux") {
            // O_EXCL on a block device: fails with EBUSY while anything (a mount, md, LVM)
            // holds it.
            opts.custom_flags(rustix::fs::OFlags::EXCL.bits() as i32);
        }
        let buffered = opts
            .open(path)
            .map_err(|e| no_access(path, e))
            .with_context(|| {
                format!(
                    "opening {} exclusively (is a partition of it mounted or in use?)",
                    path.display()
                )
            })?;
        DeviceTarget::from_handle(buffered, path, write)
    }

    /// Re-reads the partition table (BLKRRPART), retrying while the kernel says busy.
    pub fn reread_partitions(&self) -> anyhow::Result<()> {
        let mut last = None;
        for attempt in 0..10 {
            match blockdev::reread_partitions(&self.buffered) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(16) => {
                    // EBUSY: udev is still probing the new table; wait and retry.
                    tracing::debug!(attempt, "partition table busy, retrying");
                    last = Some(e);
                    std::thread::sleep(std::time::Duration::from_millis(200 << attempt.min(3)));
                }
                Err(e) => {
                    last = Some(e);
                    break;
                }
            }
        }
        Err(last.expect("the loop ran at least once"))
            .with_context(|| format!("re-reading the partition table of {}", self.path.display()))
    }

    fn direct_fd(&self, ptr: *const u8, len: usize, offset: u64) -> Option<&File> {
        let aligned = (ptr as usize).is_multiple_of(ALIGN)
            && len.is_multiple_of(ALIGN)
            && offset.is_multiple_of(ALIGN as u64);
        (aligned && self.direct_ok.load(Ordering::Relaxed))
            .then_some(self.direct.as_ref())
            .flatten()
    }

    fn direct_failed(&self, e: &io::Error) -> bool {
        if e.raw_os_error() == Some(22) {
            // EINVAL: the device (or its driver) refuses O_DIRECT after all; fall back.
            tracing::debug!(device = %self.path.display(), "O_DIRECT refused, using buffered I/O");
            self.direct_ok.store(false, Ordering::Relaxed);
            return true;
        }
        false
    }
}

#[cfg(unix)]
impl TargetIo for DeviceTarget {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if let Some(sector) = self.sector {
            return super::sector::write_at(&self.buffered, sector, buf, offset);
        }
        if let Some(f) = self.direct_fd(buf.as_ptr(), buf.len(), offset) {
            match f.write_all_at(buf, offset) {
                Err(e) if self.direct_failed(&e) => {}
                r => return r,
            }
        }
        self.buffered.write_all_at(buf, offset)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if let Some(sector) = self.sector {
            return super::sector::read_at(&self.buffered, sector, buf, offset);
        }
        if let Some(f) = self.direct_fd(buf.as_ptr(), buf.len(), offset) {
            match f.read_exact_at(buf, offset) {
                Err(e) if self.direct_failed(&e) => {}
                r => return r,
            }
        }
        self.buffered.read_exact_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.buffered.sync_all()?;
        if let Some(d) = &self.direct {
            d.sync_all()?;
        }
        Ok(())
    }
    fn drop_cache(&self) -> io::Result<()> {
        drop_cache(&self.buffered)
    }
    fn capacity(&self) -> u64 {
        self.size
    }
    fn is_device(&self) -> bool {
        true
    }
}

/// macOS: opening a raw disk without the rights says to use sudo (nothing was written).
#[cfg(unix)]
fn no_access(path: &Path, e: io::Error) -> anyhow::Error {
    match crate::devices::diskutil::access_error(path, &e) {
        Some(s) if cfg!(target_os = "macos") => s.into(),
        _ => e.into(),
    }
}

#[cfg(unix)]
fn open_direct(path: &Path, write: bool) -> Option<File> {
    #[cfg(target_os = "linux")]
    {
        OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(path)
            .ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (path, write);
        None
    }
}

/// macOS: `F_NOCACHE` on the fd (with `/dev/rdiskN` the I/O is raw already).
#[cfg(unix)]
fn set_nocache(f: &File) {
    #[cfg(target_os = "macos")]
    {
        if let Err(e) = rustix::fs::fcntl_nocache(f, true) {
            tracing::debug!(error = %e, "F_NOCACHE refused");
        }
    }
    #[cfg(not(target_os = "macos"))]
    let _ = f;
}

/// Drops the cached pages of a device node (file targets keep theirs: module docs).
#[cfg(unix)]
fn drop_cache(f: &File) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::DontNeed).map_err(io::Error::from)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = f;
        Ok(())
    }
}

/// What `diskutil eject` takes for a device path (`/dev/rdisk4` → `disk4`).
fn eject_name(path: &Path) -> std::ffi::OsString {
    if cfg!(target_os = "macos") {
        crate::devices::diskutil::disk_id(path).into()
    } else {
        path.as_os_str().to_owned()
    }
}

/// A heap buffer whose usable part starts at an [`ALIGN`]-byte boundary (for `O_DIRECT`).
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// `len` zero bytes, aligned.
    pub fn new(len: usize) -> AlignedBuf {
        let raw = vec![0u8; len + ALIGN];
        let start = raw.as_ptr().align_offset(ALIGN);
        AlignedBuf { raw, start, len }
    }
    /// The aligned bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
    /// The aligned bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// Ejects a device after flashing where the OS has a way: macOS `diskutil eject`; Linux
/// `eject` if installed. Returns what happened, for the log.
pub fn eject(path: &Path) -> String {
    if cfg!(windows) {
        return "not ejected on Windows: use \"Safely Remove Hardware\" before pulling the card"
            .into();
    }
    let tool = if cfg!(target_os = "macos") {
        ("diskutil", vec!["eject"])
    } else {
        ("eject", vec![])
    };
    match std::process::Command::new(tool.0)
        .args(&tool.1)
        .arg(eject_name(path))
        .output()
    {
        Ok(o) if o.status.success() => format!("ejected {}", path.display()),
        Ok(o) => format!(
            "`{} {}` failed: {}",
            tool.0,
            path.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(_) => format!("not ejected: no `{}` here", tool.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_are_aligned() {
        for len in [4096, 1 << 20, 4 << 20] {
            let mut b = AlignedBuf::new(len);
            assert_eq!(b.as_slice().len(), len);
            assert!((b.as_mut_slice().as_ptr() as usize).is_multiple_of(ALIGN));
        }
    }

    #[test]
    fn a_file_target_is_sized_and_zeroed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.img");
        std::fs::write(&p, [7u8; 9000]).unwrap();
        assert_eq!(kind_of(&p).unwrap(), TargetKind::File);
        let t = FileTarget::create(&p, Some(8192)).unwrap();
        let mut buf = [1u8; 8192];
        t.read_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        assert_eq!(t.capacity(), 8192);
        #[cfg(unix)]
        assert_eq!(kind_of(Path::new("/dev/null")).unwrap(), TargetKind::Device);
        assert!(kind_of(d.path()).is_err());
    }
}
