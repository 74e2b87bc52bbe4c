//! Sector-aligned I/O for raw disks that refuse anything else: macOS `/dev/rdiskN` (EINVAL on
//! an offset or length that is not a multiple of the block size) and Windows
//! `\\.\PhysicalDriveN` (invalid parameter; with `FILE_FLAG_NO_BUFFERING` the buffer address
//! must be aligned too).
//!
//! [`plan`] is pure: it splits any `(offset, len)` into whole-sector transfers and
//! read-modify-write merges of the partial sectors at either end, so no device I/O it plans
//! is ever unaligned. [`write_at`] and [`read_at`] run a plan over a [`RawIo`], passing the
//! caller's buffer straight through when it is memory-aligned and bouncing through an
//! [`AlignedBuf`] when it is not. A merge reads and rewrites a whole sector, so two writers
//! must not share one target concurrently (the flash engine writes each target from one
//! thread). Deliberately no knowledge of which OS needs it: the targets decide.

use std::io;
use std::ops::Range;

use super::target::{ALIGN, AlignedBuf};

/// Positional I/O on a raw device, each call already aligned by the caller.
pub trait RawIo {
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn raw_read(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn raw_write(&self, buf: &[u8], offset: u64) -> io::Result<()>;
}

impl RawIo for std::fs::File {
    fn raw_read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        crate::io::hostfs::read_exact_at(self, buf, offset)
    }
    fn raw_write(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        crate::io::hostfs::write_all_at(self, buf, offset)
    }
}

/// One device transfer of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Whole sectors: bytes `src` of the caller's buffer are the device's bytes at `at`.
    Whole {
        /// Device offset, a multiple of the sector size.
        at: u64,
        /// Range of the caller's buffer, a multiple of the sector size long.
        src: Range<usize>,
    },
    /// Part of the sector at `at`: its bytes `within` are the caller's bytes `src`.
    Merge {
        /// Device offset of the sector, a multiple of the sector size.
        at: u64,
        /// Range inside the sector.
        within: Range<usize>,
        /// Range of the caller's buffer.
        src: Range<usize>,
    },
}

/// Largest whole-sector transfer of a plan (and of a bounce buffer).
pub const MAX_TRANSFER: usize = 4 << 20;

/// Splits the transfer of `len` bytes at `offset` into sector-aligned device I/O, in order:
/// a merge for a partial first sector, whole sectors (at most [`MAX_TRANSFER`] each), a merge
/// for a partial last sector. `sector` must be a power of two.
pub fn plan(offset: u64, len: usize, sector: usize) -> Vec<Step> {
    assert!(sector.is_power_of_two(), "sector size {sector}");
    let s = sector as u64;
    let end = offset + len as u64;
    let mut steps = Vec::new();
    let mut pos = offset;
    while pos < end {
        let base = pos - pos % s;
        let src_start = (pos - offset) as usize;
        if pos != base || end - base < s {
            let stop = end.min(base + s);
            steps.push(Step::Merge {
                at: base,
                within: (pos - base) as usize..(stop - base) as usize,
                src: src_start..(stop - offset) as usize,
            });
            pos = stop;
        } else {
            let whole = ((end - pos) / s * s).min(MAX_TRANSFER as u64);
            steps.push(Step::Whole {
                at: pos,
                src: src_start..src_start + whole as usize,
            });
            pos += whole;
        }
    }
    steps
}

fn check_sector(sector: usize) -> io::Result<()> {
    if sector.is_power_of_two() && sector <= ALIGN {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("sector size {sector} (piforge handles powers of two up to {ALIGN})"),
        ))
    }
}

fn bounce_for(len: usize, sector: usize) -> AlignedBuf {
    AlignedBuf::new(MAX_TRANSFER.min(len.next_multiple_of(sector)))
}

fn aligned(b: &[u8]) -> bool {
    (b.as_ptr() as usize).is_multiple_of(ALIGN)
}

/// Writes `buf` at `offset` through `io` in sector-aligned transfers only.
pub fn write_at(io: &impl RawIo, sector: usize, buf: &[u8], offset: u64) -> io::Result<()> {
    check_sector(sector)?;
    let mut bounce: Option<AlignedBuf> = None;
    for step in plan(offset, buf.len(), sector) {
        match step {
            Step::Whole { at, src } => {
                let part = &buf[src];
                if aligned(part) {
                    io.raw_write(part, at)?;
                } else {
                    let b = bounce.get_or_insert_with(|| bounce_for(buf.len(), sector));
                    let b = &mut b.as_mut_slice()[..part.len()];
                    b.copy_from_slice(part);
                    io.raw_write(b, at)?;
                }
            }
            Step::Merge { at, within, src } => {
                let mut s = AlignedBuf::new(sector);
                io.raw_read(s.as_mut_slice(), at)?;
                s.as_mut_slice()[within].copy_from_slice(&buf[src]);
                io.raw_write(s.as_slice(), at)?;
            }
        }
    }
    Ok(())
}

/// Reads `buf.len()` bytes at `offset` through `io` in sector-aligned transfers only.
pub fn read_at(io: &impl RawIo, sector: usize, buf: &mut [u8], offset: u64) -> io::Result<()> {
    check_sector(sector)?;
    let mut bounce: Option<AlignedBuf> = None;
    let len = buf.len();
    for step in plan(offset, len, sector) {
        match step {
            Step::Whole { at, src } => {
                let part = &mut buf[src];
                if aligned(part) {
                    io.raw_read(part, at)?;
                } else {
                    let b = bounce.get_or_insert_with(|| bounce_for(len, sector));
                    let b = &mut b.as_mut_slice()[..part.len()];
                    io.raw_read(b, at)?;
                    part.copy_from_slice(b);
                }
            }
            Step::Merge { at, within, src } => {
                let mut s = AlignedBuf::new(sector);
                io.raw_read(s.as_mut_slice(), at)?;
                buf[src].copy_from_slice(&s.as_slice()[within]);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Mutex;

    /// A raw disk as strict as `/dev/rdiskN` with `NO_BUFFERING` on top: any offset, length
    /// or buffer address that is not sector-aligned fails with EINVAL, like the real ones.
    struct StrictDisk {
        sector: usize,
        bytes: Mutex<Vec<u8>>,
        ios: Mutex<usize>,
    }

    impl StrictDisk {
        fn new(len: usize, sector: usize) -> StrictDisk {
            StrictDisk {
                sector,
                bytes: Mutex::new((0..len).map(|i| (i * 7 % 251) as u8).collect()),
                ios: Mutex::new(0),
            }
        }
        fn check(&self, ptr: *const u8, len: usize, offset: u64) -> io::Result<()> {
            *self.ios.lock().unwrap() += 1;
            let s = self.sector;
            if !offset.is_multiple_of(s as u64)
                || !len.is_multiple_of(s)
                || !(ptr as usize).is_multiple_of(s)
            {
                return Err(io::Error::from_raw_os_error(22));
            }
            Ok(())
        }
    }

    impl RawIo for StrictDisk {
        fn raw_read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.check(buf.as_ptr(), buf.len(), offset)?;
            let b = self.bytes.lock().unwrap();
            let o = offset as usize;
            buf.copy_from_slice(&b[o..o + buf.len()]);
            Ok(())
        }
        fn raw_write(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            self.check(buf.as_ptr(), buf.len(), offset)?;
            let mut b = self.bytes.lock().unwrap();
            let o = offset as usize;
            b[o..o + buf.len()].copy_from_slice(buf);
            Ok(())
        }
    }

    fn assert_aligned(steps: &[Step], offset: u64, len: usize, sector: usize) {
        let s = sector as u64;
        let mut next_src = 0;
        for st in steps {
            match st {
                Step::Whole { at, src } => {
                    assert!(at % s == 0 && src.len() % sector == 0 && !src.is_empty());
                    assert!(src.len() <= MAX_TRANSFER);
                    assert_eq!(*at, offset + src.start as u64);
                    assert_eq!(src.start, next_src);
                    next_src = src.end;
                }
                Step::Merge { at, within, src } => {
                    assert!(at % s == 0 && within.end <= sector && !within.is_empty());
                    assert_eq!(within.len(), src.len());
                    assert_eq!(*at + within.start as u64, offset + src.start as u64);
                    assert_eq!(src.start, next_src);
                    next_src = src.end;
                }
            }
        }
        assert_eq!(next_src, len, "the plan covers the whole transfer");
    }

    #[test]
    fn an_unaligned_write_is_planned_as_merges_around_whole_sectors() {
        assert_eq!(
            plan(100, 2000, 512),
            vec![
                Step::Merge {
                    at: 0,
                    within: 100..512,
                    src: 0..412
                },
                Step::Whole {
                    at: 512,
                    src: 412..1948
                },
                Step::Merge {
                    at: 2048,
                    within: 0..52,
                    src: 1948..2000
                },
            ]
        );
        assert_eq!(
            plan(4096, 8192, 512),
            vec![Step::Whole {
                at: 4096,
                src: 0..8192
            }]
        );
        assert_eq!(
            plan(10, 5, 512),
            vec![Step::Merge {
                at: 0,
                within: 10..15,
                src: 0..5
            }]
        );
        assert!(plan(7, 0, 512).is_empty());
    }

    #[test]
    fn the_strict_disk_refuses_what_a_raw_disk_refuses() {
        let d = StrictDisk::new(8192, 512);
        let b = AlignedBuf::new(512);
        assert!(d.raw_write(&b.as_slice()[..100], 0).is_err());
        assert!(d.raw_write(b.as_slice(), 100).is_err());
        assert!(d.raw_write(b.as_slice(), 512).is_ok());
    }

    #[test]
    fn a_bad_sector_size_is_an_error_not_a_panic() {
        let d = StrictDisk::new(8192, 512);
        assert!(write_at(&d, 3000, &[1], 0).is_err());
        assert!(read_at(&d, 8192, &mut [0], 0).is_err());
    }

    proptest! {
        #[test]
        fn planned_io_is_always_aligned(
            offset in 0u64..(64 << 20),
            len in 0usize..(9 << 20),
            shift in 9u32..13,
        ) {
            let sector = 1usize << shift;
            assert_aligned(&plan(offset, len, sector), offset, len, sector);
        }

        #[test]
        fn unaligned_writes_and_reads_land_exactly(
            offset in 0usize..6000,
            len in 0usize..9000,
            skew in 0usize..8,
            sector in prop::sample::select(vec![512usize, 4096]),
        ) {
            let d = StrictDisk::new(20_000, sector);
            let mut model = d.bytes.lock().unwrap().clone();
            // An unaligned source buffer: `skew` bytes into an aligned one.
            let mut src = AlignedBuf::new(len + 8);
            let data: Vec<u8> = (0..len).map(|i| (i * 31 + 5) as u8).collect();
            src.as_mut_slice()[skew..skew + len].copy_from_slice(&data);
            write_at(&d, sector, &src.as_slice()[skew..skew + len], offset as u64).unwrap();
            model[offset..offset + len].copy_from_slice(&data);
            prop_assert_eq!(&*d.bytes.lock().unwrap(), &model);
            let mut back = vec![0u8; len + 1];
            read_at(&d, sector, &mut back[1..], offset as u64).unwrap();
            prop_assert_eq!(&back[1..], &data[..]);
        }
    }
}
