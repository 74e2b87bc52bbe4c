//! The only code of the crate that talks to Unix block devices through ioctls, and so allowed
//! `unsafe` (with `devices::winapi`, its Windows counterpart): re-reading a partition table
//! (`BLKRRPART`) and asking a device its size (`BLKGETSIZE64`) on Linux; on macOS a disk's
//! block size and count (`DKIOCGETBLOCKSIZE`, `DKIOCGETBLOCKCOUNT`: seeking to the end of a
//! raw `/dev/rdiskN` does not give its size). All through `rustix::ioctl`; each `unsafe` block
//! says why it holds. Other systems get an `Unsupported` error or a seek.
//!
//! It deliberately doesn't open, write or check devices: `flash::target` does.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;

#[cfg(target_os = "linux")]
mod linux {
    use rustix::ioctl::{Getter, NoArg, Opcode, ioctl, opcode};

    /// `BLKRRPART` = `_IO(0x12, 95)` in `<linux/fs.h>`.
    pub const BLKRRPART: Opcode = opcode::none(0x12, 95);
    /// `BLKGETSIZE64` = `_IOR(0x12, 114, size_t)` in `<linux/fs.h>`.
    pub const BLKGETSIZE64: Opcode = opcode::read::<usize>(0x12, 114);

    pub fn reread(fd: &std::fs::File) -> std::io::Result<()> {
        // SAFETY: BLKRRPART takes no argument, and NoArg passes none; the fd is open.
        unsafe { ioctl(fd, NoArg::<BLKRRPART>::new()) }.map_err(std::io::Error::from)
    }

    pub fn size(fd: &std::fs::File) -> std::io::Result<u64> {
        // SAFETY: BLKGETSIZE64 writes one u64 (size_t on 64-bit Linux; the kernel's handler
        // writes a u64 on every arch) through the pointer Getter provides to its own u64.
        let n: u64 = unsafe { ioctl(fd, Getter::<BLKGETSIZE64, u64>::new()) }
            .map_err(std::io::Error::from)?;
        Ok(n)
    }
}

#[cfg(target_os = "macos")]
mod macos {
    use rustix::ioctl::{Getter, Opcode, ioctl, opcode};

    /// `DKIOCGETBLOCKSIZE` = `_IOR('d', 24, uint32_t)` in `<sys/disk.h>`.
    pub const DKIOCGETBLOCKSIZE: Opcode = opcode::read::<u32>(b'd', 24);
    /// `DKIOCGETBLOCKCOUNT` = `_IOR('d', 25, uint64_t)` in `<sys/disk.h>`.
    pub const DKIOCGETBLOCKCOUNT: Opcode = opcode::read::<u64>(b'd', 25);

    pub fn block_size(fd: &std::fs::File) -> std::io::Result<u32> {
        // SAFETY: DKIOCGETBLOCKSIZE writes one u32 through the pointer Getter provides to its
        // own u32; the fd is open.
        unsafe { ioctl(fd, Getter::<DKIOCGETBLOCKSIZE, u32>::new()) }.map_err(std::io::Error::from)
    }

    pub fn block_count(fd: &std::fs::File) -> std::io::Result<u64> {
        // SAFETY: DKIOCGETBLOCKCOUNT writes one u64 through the pointer Getter provides to
        // its own u64; the fd is open.
        unsafe { ioctl(fd, Getter::<DKIOCGETBLOCKCOUNT, u64>::new()) }.map_err(std::io::Error::from)
    }
}

/// macOS: the block size every transfer on the disk `f` must be a multiple of (raw
/// `/dev/rdiskN` refuses anything else); `None` where the OS aligns for us (Linux block
/// devices, regular files).
pub fn raw_sector_size(f: &File) -> io::Result<Option<usize>> {
    #[cfg(target_os = "macos")]
    {
        use std::os::unix::fs::FileTypeExt;
        if !f.metadata()?.file_type().is_char_device() {
            return Ok(None);
        }
        Ok(Some(macos::block_size(f)? as usize))
    }
    #[cfg(not(target_os = "macos"))]
    {
        let _ = f;
        Ok(None)
    }
}

/// Asks the kernel to re-read the partition table of the whole-disk device `f`.
pub fn reread_partitions(f: &File) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        linux::reread(f)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = f;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "BLKRRPART is Linux-only",
        ))
    }
}

/// Size in bytes of the block device `f`.
pub fn device_size(f: &File) -> io::Result<u64> {
    #[cfg(target_os = "linux")]
    {
        linux::size(f)
    }
    #[cfg(target_os = "macos")]
    {
        let (size, count) = (macos::block_size(f)?, macos::block_count(f)?);
        count
            .checked_mul(u64::from(size))
            .ok_or_else(|| io::Error::other("disk size overflows"))
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        use std::io::{Seek, SeekFrom};
        let mut f = f;
        f.seek(SeekFrom::End(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctls_on_a_regular_file_fail_cleanly() {
        let f = tempfile::tempfile().unwrap();
        assert!(reread_partitions(&f).is_err());
        assert!(device_size(&f).is_err() || cfg!(not(target_os = "linux")));
    }
}
