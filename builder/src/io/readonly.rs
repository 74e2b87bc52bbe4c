//! `ReadOnly`: a `Read + Write + Seek` adapter whose writes fail.
//!
//! fatfs wants a read-write stream even to read. Reading the cached base image (or an image
//! being inspected) through this adapter makes "never modified" a property of the types, not
//! of care: any write attempt is an error, not a change.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// Wraps a reader; every write returns `PermissionDenied`.
pub struct ReadOnly<R>(pub R);

impl<R: Read> Read for ReadOnly<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Seek> Seek for ReadOnly<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}

impl<R> Write for ReadOnly<R> {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "this image is opened read-only",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pass_writes_fail() {
        let mut r = ReadOnly(io::Cursor::new(vec![1u8, 2, 3]));
        let mut b = [0u8; 2];
        r.seek(SeekFrom::Start(1)).unwrap();
        r.read_exact(&mut b).unwrap();
        assert_eq!(b, [2, 3]);
        assert_eq!(
            r.write(&[9]).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        assert_eq!(r.0.into_inner(), [1, 2, 3]);
    }
}
