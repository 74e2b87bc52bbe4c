//! A partition window: `Read + Write + Seek` over the byte range `start..start + len` of an inner
//! stream (an image file), so that a filesystem library sees a partition as a whole device.
//!
//! Position 0 of the window is byte `start` of the inner stream. Reads stop at the end of the
//! window (EOF); writes are cut at the end of the window and a write that starts at or past the
//! end fails, so **no byte outside the range is ever written**. Every operation seeks the inner
//! stream first, so the inner stream's own position does not matter and may be shared.
//!
//! Deliberately not here: buffering (callers may wrap the window) and any knowledge of what the
//! bytes mean.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// `Read + Write + Seek` over `start..start + len` of `inner`; see the module docs.
#[derive(Debug)]
pub struct PartitionWindow<T> {
    inner: T,
    start: u64,
    len: u64,
    pos: u64,
}

impl<T: Seek> PartitionWindow<T> {
    /// A window over `start..start + len` of `inner`, positioned at 0. Fails if the range
    /// overflows `u64`. The inner stream may be shorter than the range (a sparse file that is
    /// still growing); reads past its end return EOF like any file.
    pub fn new(inner: T, start: u64, len: u64) -> io::Result<Self> {
        if start.checked_add(len).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("partition window {start}+{len} overflows"),
            ));
        }
        Ok(Self {
            inner,
            start,
            len,
            pos: 0,
        })
    }

    /// Where the window starts in the inner stream, in bytes.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The window's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Gives the inner stream back.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// Bytes from the current position to the end of the window.
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn seek_inner(&mut self) -> io::Result<()> {
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        Ok(())
    }
}

impl<T: Read + Seek> Read for PartitionWindow<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = clamp(buf.len(), self.remaining());
        if n == 0 {
            return Ok(0);
        }
        self.seek_inner()?;
        let got = self.inner.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<T: Write + Seek> Write for PartitionWindow<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = clamp(buf.len(), self.remaining());
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "write at byte {} is past the end of the {}-byte partition window",
                    self.pos, self.len
                ),
            ));
        }
        self.seek_inner()?;
        let put = self.inner.write(&buf[..n])?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Seek> Seek for PartitionWindow<T> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
        };
        match target {
            Some(n) if self.start.checked_add(n).is_some() => {
                self.pos = n;
                Ok(n)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "seek to {to:?} from {} leaves the partition window",
                    self.pos
                ),
            )),
        }
    }
}

/// `want` limited to `left`, as a `usize`.
fn clamp(want: usize, left: u64) -> usize {
    usize::try_from(left).map_or(want, |left| want.min(left))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn window() -> PartitionWindow<Cursor<Vec<u8>>> {
        PartitionWindow::new(Cursor::new(vec![0xAAu8; 100]), 10, 20).unwrap()
    }

    #[test]
    fn reads_stop_at_the_end() {
        let mut w = window();
        w.get_mut_inner().get_mut()[10..30].copy_from_slice(&[7u8; 20]);
        let mut all = Vec::new();
        w.read_to_end(&mut all).unwrap();
        assert_eq!(all, vec![7u8; 20]);
        assert_eq!(w.read(&mut [0u8; 4]).unwrap(), 0);
    }

    #[test]
    fn writes_never_leave_the_window() {
        let mut w = window();
        w.seek(SeekFrom::Start(15)).unwrap();
        // 10 bytes asked, 5 fit.
        assert_eq!(w.write(&[1u8; 10]).unwrap(), 5);
        assert!(w.write(&[1u8; 1]).is_err());
        assert!(w.write_all(&[1u8; 1]).is_err());
        w.seek(SeekFrom::Start(0)).unwrap();
        assert!(w.write_all(&[2u8; 21]).is_err());
        let inner = w.into_inner().into_inner();
        assert!(inner[..10].iter().all(|&b| b == 0xAA));
        assert!(inner[30..].iter().all(|&b| b == 0xAA));
        assert_eq!(&inner[10..30], &[2u8; 20]);
    }

    #[test]
    fn seeks_are_relative_to_the_window() {
        let mut w = window();
        assert_eq!(w.seek(SeekFrom::End(-4)).unwrap(), 16);
        assert_eq!(w.seek(SeekFrom::Current(2)).unwrap(), 18);
        assert!(w.seek(SeekFrom::Current(-19)).is_err());
        assert_eq!(w.seek(SeekFrom::Start(40)).unwrap(), 40);
        assert_eq!(w.read(&mut [0u8; 4]).unwrap(), 0);
        assert!(PartitionWindow::new(Cursor::new(Vec::new()), u64::MAX, 2).is_err());
    }

    impl<T> PartitionWindow<T> {
        fn get_mut_inner(&mut self) -> &mut T {
            &mut self.inner
        }
    }

    #[test]
    fn ignores_the_inner_position() {
        let mut w = window();
        w.get_mut_inner().get_mut()[12] = 9;
        w.get_mut_inner().seek(SeekFrom::Start(77)).unwrap();
        w.seek(SeekFrom::Start(2)).unwrap();
        let mut b = [0u8; 1];
        w.read_exact(&mut b).unwrap();
        assert_eq!(b[0], 9);
    }
}
