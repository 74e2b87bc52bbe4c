//! The only code of the crate that talks to block devices through ioctls, and so the only
//! module allowed `unsafe`: re-reading a partition table (`BLKRRPART`) and asking a device its
//! size (`BLKGETSIZE64`), on Linux, through `rustix::ioctl`. Each `unsafe` block says why it
//! holds. macOS needs no ioctl here (`diskutil` does the work), so these are Linux-only and
//! other systems get an `Unsupported` error.
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
    #[cfg(not(target_os = "linux"))]
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
