//! The few file operations whose std API differs between Unix (Linux, macOS) and Windows:
//! positional reads and writes, owner-only permissions, advisory lock files, free space.
//!
//! Unix keeps what the code always did (`pread`/`pwrite`, modes, `flock`, `statvfs`). Windows:
//! positional I/O through `seek_read`/`seek_write` (which move the handle's file pointer, so a
//! [`File`] must not be shared between threads that also use `Read`/`Write` on it); modes are
//! ignored because a user's profile and config directories are already private by their ACL;
//! a lock is an open with no sharing (`share_mode(0)`), released when the handle closes, just
//! as a `flock` is released when its file closes or the process dies.
//! Deliberately not here: anything about disks (`devices`, `flash::target`).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Reads exactly `buf.len()` bytes at `offset`.
pub fn read_exact_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(f, buf, offset)
    }
    #[cfg(windows)]
    {
        let (mut done, mut buf) = (0u64, buf);
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_read(f, buf, offset + done) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "failed to fill whole buffer",
                    ));
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    done += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Writes all of `buf` at `offset`.
pub fn write_all_at(f: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(f, buf, offset)
    }
    #[cfg(windows)]
    {
        let (mut done, mut buf) = (0u64, buf);
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_write(f, buf, offset + done) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    done += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Sets the Unix `mode` new files get (Windows: nothing, see the module doc).
pub fn with_mode(opts: &mut OpenOptions, mode: u32) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        std::os::unix::fs::OpenOptionsExt::mode(opts, mode)
    }
    #[cfg(windows)]
    {
        let _ = mode;
        opts
    }
}

/// Narrows an open file to its owner (Unix mode 0600, whatever the umask and its mode before).
/// Windows: files made by the user are already theirs (the profile's default ACL): a no-op.
pub fn owner_only(f: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
    }
    #[cfg(windows)]
    {
        let _ = f;
        Ok(())
    }
}

/// Creates `dir` and its parents, the last one with Unix `mode` (Windows: default ACL).
pub fn create_dir_with_mode(dir: &Path, mode: u32) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, mode);
    #[cfg(windows)]
    let _ = mode;
    b.create(dir)
}

/// The permission bits of a file that others may use (`mode & 0o077`); always 0 on Windows,
/// where the ACL of the user's directories decides.
pub fn group_other_bits(meta: &std::fs::Metadata) -> u32 {
    #[cfg(unix)]
    {
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077
    }
    #[cfg(windows)]
    {
        let _ = meta;
        0
    }
}

/// Makes `path` executable by everyone (Unix mode 0755; Windows decides by extension).
pub fn make_executable(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
    }
    #[cfg(windows)]
    {
        let _ = path;
        Ok(())
    }
}

/// An exclusive advisory lock on a lock file, held until dropped (or the process dies).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

/// Takes the lock on `path` (created, 0600, if missing). `wait`: block until it is free;
/// otherwise `Ok(None)` when another process holds it.
pub fn lock(path: &Path, wait: bool) -> io::Result<Option<FileLock>> {
    #[cfg(unix)]
    {
        use rustix::fs::{FlockOperation, flock};
        let file = with_mode(
            OpenOptions::new().create(true).truncate(false).write(true),
            0o600,
        )
        .open(path)?;
        let op = if wait {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::NonBlockingLockExclusive
        };
        match flock(&file, op) {
            Ok(()) => Ok(Some(FileLock { _file: file })),
            Err(rustix::io::Errno::WOULDBLOCK) if !wait => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::OpenOptionsExt;
        /// `ERROR_SHARING_VIOLATION`: another handle has the file open without sharing.
        const SHARING_VIOLATION: i32 = 32;
        loop {
            match OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .share_mode(0)
                .open(path)
            {
                Ok(file) => return Ok(Some(FileLock { _file: file })),
                Err(e) if e.raw_os_error() == Some(SHARING_VIOLATION) => {
                    if !wait {
                        return Ok(None);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Bytes available to this user on the filesystem holding `dir`.
pub fn free_space(dir: &Path) -> io::Result<u64> {
    #[cfg(unix)]
    {
        let st = rustix::fs::statvfs(dir)?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }
    #[cfg(windows)]
    {
        crate::devices::winapi::free_space(dir)
    }
}

/// Bytes a file really occupies (its allocated blocks; Windows: 0, so the caller's free-space
/// check stays conservative for sparse files).
pub fn allocated(meta: &std::fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        std::os::unix::fs::MetadataExt::blocks(meta) * 512
    }
    #[cfg(windows)]
    {
        let _ = meta;
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_io_round_trips_past_the_end() {
        let f = tempfile::tempfile().unwrap();
        write_all_at(&f, b"hello", 10_000).unwrap();
        let mut b = [0u8; 5];
        read_exact_at(&f, &mut b, 10_000).unwrap();
        assert_eq!(&b, b"hello");
        let mut hole = [1u8; 4];
        read_exact_at(&f, &mut hole, 100).unwrap();
        assert_eq!(hole, [0; 4]);
        assert_eq!(
            read_exact_at(&f, &mut b, 10_003).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn a_held_lock_is_not_taken_twice() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.lock");
        let first = lock(&p, false).unwrap().expect("free");
        assert!(lock(&p, false).unwrap().is_none(), "held by `first`");
        drop(first);
        assert!(lock(&p, true).unwrap().is_some(), "released on drop");
    }
}
