//! A small write-through read cache over an image file, so that `fatfs`'s many tiny reads
//! (4-byte FAT entries, 32-byte directory entries) and seeks do not each become system calls.
//!
//! It keeps [`BLOCKS`] aligned blocks of [`BLOCK`] bytes, replaced oldest first. Writes go to
//! the inner stream at once and update any cached copy, so the cache never holds bytes the file
//! does not: everyone who reads and writes through the same `BlockCache` sees one coherent file.
//! Seeks only move a logical position; the inner stream is sought lazily.
//!
//! Deliberately not here: write-back (a crash never loses acknowledged writes), or coherence with
//! other handles on the same file that bypass the cache.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// Bytes per cached block.
pub const BLOCK: usize = 16 * 1024;
/// Number of cached blocks.
pub const BLOCKS: usize = 16;

/// Write-through block cache over `T`; see the module docs.
#[derive(Debug)]
pub struct BlockCache<T> {
    inner: T,
    /// Logical position.
    pos: u64,
    /// Where the inner stream is, if known.
    inner_pos: Option<u64>,
    /// Cached blocks: (aligned start, bytes — shorter than BLOCK at end of file).
    blocks: Vec<(u64, Vec<u8>)>,
    /// Next slot to replace once full.
    next: usize,
}

impl<T: Read + Write + Seek> BlockCache<T> {
    /// Wraps `inner`; the logical position starts at 0.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            pos: 0,
            inner_pos: None,
            blocks: Vec::new(),
            next: 0,
        }
    }

    /// Gives the inner stream back.
    pub fn into_inner(self) -> T {
        self.inner
    }

    fn seek_inner(&mut self, to: u64) -> io::Result<()> {
        if self.inner_pos != Some(to) {
            self.inner_pos = None;
            self.inner.seek(SeekFrom::Start(to))?;
            self.inner_pos = Some(to);
        }
        Ok(())
    }

    /// The cached block holding `start`, loading it if needed.
    fn block(&mut self, start: u64) -> io::Result<&[u8]> {
        if let Some(i) = self.blocks.iter().position(|(s, _)| *s == start) {
            return Ok(&self.blocks[i].1);
        }
        self.seek_inner(start)?;
        let mut buf = Vec::with_capacity(BLOCK);
        let got = (&mut self.inner).take(BLOCK as u64).read_to_end(&mut buf);
        self.inner_pos = None;
        got?;
        let slot = if self.blocks.len() < BLOCKS {
            self.blocks.push((start, buf));
            self.blocks.len() - 1
        } else {
            let s = self.next;
            self.blocks[s] = (start, buf);
            self.next = (s + 1) % BLOCKS;
            s
        };
        Ok(&self.blocks[slot].1)
    }
}

impl<T: Read + Write + Seek> Read for BlockCache<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if buf.len() >= BLOCK {
            // Large reads bypass the cache; writes keep the cache coherent, so this is safe.
            self.seek_inner(self.pos)?;
            let n = self.inner.read(buf);
            self.inner_pos = None;
            let n = n?;
            self.pos += n as u64;
            self.inner_pos = Some(self.pos);
            return Ok(n);
        }
        let start = self.pos - self.pos % BLOCK as u64;
        let off = usize::try_from(self.pos - start).expect("offset within a block fits usize");
        let pos = self.pos;
        let block = self.block(start)?;
        let n = block.len().saturating_sub(off).min(buf.len());
        buf[..n].copy_from_slice(&block[off..off + n]);
        self.pos = pos + n as u64;
        Ok(n)
    }
}

impl<T: Read + Write + Seek> Write for BlockCache<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.seek_inner(self.pos)?;
        let n = self.inner.write(buf);
        self.inner_pos = None;
        let n = n?;
        let (lo, hi) = (self.pos, self.pos + n as u64);
        for (start, bytes) in &mut self.blocks {
            let (s, e) = (*start, *start + BLOCK as u64);
            if hi <= s || lo >= e {
                continue;
            }
            let from = lo.max(s);
            let to = hi.min(e);
            let dst = usize::try_from(from - s).expect("fits");
            let src = usize::try_from(from - lo).expect("fits");
            let len = usize::try_from(to - from).expect("fits");
            if bytes.len() < dst + len {
                bytes.resize(dst + len, 0); // the write extended the file
            }
            bytes[dst..dst + len].copy_from_slice(&buf[src..src + len]);
        }
        // A short (end-of-file) block no longer knows the file's end if the write went past it.
        self.blocks
            .retain(|(s, b)| b.len() == BLOCK || hi <= s + b.len() as u64);
        if self.next >= self.blocks.len() {
            self.next = 0;
        }
        self.pos = hi;
        self.inner_pos = Some(hi);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Read + Write + Seek> Seek for BlockCache<T> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(_) => {
                self.inner_pos = None;
                let n = self.inner.seek(to)?;
                self.inner_pos = Some(n);
                Some(n)
            }
        };
        let n = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("seek to {to:?} is out of range"),
            )
        })?;
        self.pos = n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// The cache behaves exactly like the file it wraps, for any mix of operations.
    #[test]
    fn matches_the_uncached_file() {
        proptest::proptest!(|(ops in proptest::collection::vec(
            (0u8..4, 0u64..200_000, 1usize..40_000, 0u8..=255), 1..60))| {
            let init: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
            let mut plain = Cursor::new(init.clone());
            let mut cached = BlockCache::new(Cursor::new(init));
            for (op, at, len, byte) in ops {
                match op {
                    0 | 1 => {
                        let (mut a, mut b) = (vec![0u8; len], vec![0u8; len]);
                        plain.seek(SeekFrom::Start(at)).unwrap();
                        cached.seek(SeekFrom::Start(at)).unwrap();
                        let na = plain.read(&mut a).unwrap();
                        // A cached read may return fewer bytes (block end); read up to na.
                        let mut nb = 0;
                        while nb < na {
                            match cached.read(&mut b[nb..na]).unwrap() { 0 => break, k => nb += k }
                        }
                        proptest::prop_assert_eq!(na, nb);
                        proptest::prop_assert_eq!(&a[..na], &b[..nb]);
                    }
                    2 => {
                        let data = vec![byte; len];
                        plain.seek(SeekFrom::Start(at)).unwrap();
                        cached.seek(SeekFrom::Start(at)).unwrap();
                        plain.write_all(&data).unwrap();
                        cached.write_all(&data).unwrap();
                    }
                    _ => {
                        let e = -(i64::try_from(at % 1000).unwrap());
                        proptest::prop_assert_eq!(
                            plain.seek(SeekFrom::End(e)).unwrap(),
                            cached.seek(SeekFrom::End(e)).unwrap()
                        );
                    }
                }
            }
            proptest::prop_assert_eq!(plain.into_inner(), cached.into_inner().into_inner());
        });
    }
}
