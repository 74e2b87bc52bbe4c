//! What to write: image bytes as [`ChunkSource`]s for the engine.
//!
//! - [`MappedSource`]: a raw image file read at the offsets of a plan (the block map of its
//!   partition table and filesystems, or a `.bmap`), optionally with a *patch* file laid over
//!   one byte range. A batch card is flashed that way: its boot partition's mapped bytes are
//!   copied into a sparse temp file the size of the image, personalised there (card.toml,
//!   cloud-init meta-data) and re-mapped; the target then gets the patch's bytes for the boot
//!   partition and the shared image's for the rest. The batch image is never modified, a FAT
//!   that has no room fails before a byte reaches the card, and no copy of the whole image is
//!   made (the patch costs the FAT's used bytes of disk).
//! - [`StreamSource`]: a compressed image decoded on the fly; it writes the `.bmap`'s ranges
//!   when there is one, else everything (a device may hold old data, so without a map every
//!   byte, zeros too, has to go; file targets skip zero chunks).
//!
//! With a bmap, every range is checked against its sha256 as it passes (a mismatch stops the
//! flash before the partition table is written). Deliberately not here: the write order and
//! the target (`engine`, `target`).

use crate::io::hostfs::read_exact_at;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};

use super::engine::{CHUNK, ChunkSource};
use crate::image::blockmap::{self, BlockMap, ByteRange};
use crate::image::bmap::Bmap;
use crate::io::sparse::read_full;

/// A range to write, with the sha256 its bytes must have when a bmap says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRange {
    /// The bytes.
    pub range: ByteRange,
    /// Expected lowercase hex sha256 (bmap ranges).
    pub sha256: Option<String>,
}

/// The plan of a block map: its ranges rounded out to 4 KiB (aligned writes) and merged.
pub fn plan_from_map(map: &BlockMap) -> Vec<PlanRange> {
    let rounded = map
        .ranges
        .iter()
        .map(|r| ByteRange {
            start: r.start / 4096 * 4096,
            end: r
                .end
                .div_ceil(4096)
                .saturating_mul(4096)
                .min(map.image_size),
        })
        .collect();
    blockmap::normalize(rounded)
        .into_iter()
        .map(|range| PlanRange {
            range,
            sha256: None,
        })
        .collect()
}

/// The plan of a bmap: its ranges as they are, each with its checksum.
pub fn plan_from_bmap(b: &Bmap) -> Vec<PlanRange> {
    b.ranges
        .iter()
        .map(|r| {
            let (start, end) = b.byte_range(r);
            PlanRange {
                range: ByteRange { start, end },
                sha256: Some(r.sha256.clone()),
            }
        })
        .collect()
}

/// Bytes a plan covers.
pub fn plan_bytes(plan: &[PlanRange]) -> u64 {
    plan.iter().map(|p| p.range.len()).sum()
}

/// Checks the running sha256 of a bmap range.
#[derive(Default)]
struct RangeCheck {
    hash: Option<Sha256>,
}

impl RangeCheck {
    fn feed(&mut self, p: &PlanRange, data: &[u8], ends_range: bool) -> io::Result<()> {
        let Some(want) = &p.sha256 else {
            return Ok(());
        };
        let h = self.hash.get_or_insert_with(Sha256::new);
        h.update(data);
        if ends_range {
            let got = hex::encode(self.hash.take().expect("set above").finalize());
            if &got != want {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "image bytes {}..{} do not match the bmap's checksum (wrong or corrupt \
                         image for this bmap)",
                        p.range.start, p.range.end
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A raw image file read along a plan, with an optional patch file over one range.
pub struct MappedSource {
    base: File,
    patch: Option<(File, ByteRange)>,
    len: u64,
    plan: Vec<PlanRange>,
    i: usize,
    pos: u64,
    check: RangeCheck,
}

impl MappedSource {
    /// Reads `image` (of `len` bytes) along `plan`.
    pub fn new(image: &Path, len: u64, plan: Vec<PlanRange>) -> anyhow::Result<MappedSource> {
        let base = File::open(image).with_context(|| format!("opening {}", image.display()))?;
        Ok(MappedSource {
            base,
            patch: None,
            len,
            plan,
            i: 0,
            pos: 0,
            check: RangeCheck::default(),
        })
    }

    /// Bytes in `over` come from `patch` (same offsets) instead of the image.
    pub fn with_patch(mut self, patch: &Path, over: ByteRange) -> anyhow::Result<MappedSource> {
        let f = File::open(patch).with_context(|| format!("opening {}", patch.display()))?;
        self.patch = Some((f, over));
        Ok(self)
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let end = off + buf.len() as u64;
        let Some((pf, over)) = &self.patch else {
            return read_exact_at(&self.base, buf, off);
        };
        // Split at the patch's edges.
        let mut pos = off;
        while pos < end {
            let (file, stop) = if pos >= over.start && pos < over.end {
                (pf, over.end.min(end))
            } else if pos < over.start {
                (&self.base, over.start.min(end))
            } else {
                (&self.base, end)
            };
            let a = (pos - off) as usize;
            let b = (stop - off) as usize;
            read_exact_at(file, &mut buf[a..b], pos)?;
            pos = stop;
        }
        Ok(())
    }
}

impl MappedSource {
    /// Asks the kernel to start reading the next two chunks of the plan now, so the disk
    /// works while this chunk is hashed and written (the image is read at its plan's offsets,
    /// which the kernel's own sequential read-ahead does not follow across gaps).
    fn read_ahead(&self) {
        let mut want = 2 * CHUNK as u64;
        let mut pos = self.pos;
        for p in &self.plan[self.i..] {
            if want == 0 {
                break;
            }
            let a = pos.max(p.range.start);
            if a >= p.range.end {
                continue;
            }
            let n = (p.range.end - a).min(want);
            #[cfg(any(target_os = "linux", target_os = "android"))]
            let _ = rustix::fs::fadvise(
                &self.base,
                a,
                std::num::NonZeroU64::new(n),
                rustix::fs::Advice::WillNeed,
            );
            want -= n;
            pos = a + n;
        }
    }
}

impl ChunkSource for MappedSource {
    fn next_chunk(&mut self, buf: &mut [u8]) -> io::Result<Option<(u64, usize)>> {
        while let Some(p) = self.plan.get(self.i) {
            let pos = self.pos.max(p.range.start);
            if pos >= p.range.end {
                self.i += 1;
                continue;
            }
            let n = ((p.range.end - pos) as usize).min(buf.len());
            self.read_at(&mut buf[..n], pos).map_err(|e| {
                io::Error::new(e.kind(), format!("reading the image at byte {pos}: {e}"))
            })?;
            self.pos = pos + n as u64;
            let p = p.clone();
            self.check.feed(&p, &buf[..n], self.pos >= p.range.end)?;
            self.read_ahead();
            return Ok(Some((pos, n)));
        }
        Ok(None)
    }
    fn image_len(&self) -> Option<u64> {
        Some(self.len)
    }
    fn total(&self) -> Option<u64> {
        Some(plan_bytes(&self.plan))
    }
}

/// A decoded stream, written along a bmap's plan or whole.
pub struct StreamSource<'a> {
    input: &'a mut dyn Read,
    plan: Option<Vec<PlanRange>>,
    len: Option<u64>,
    i: usize,
    pos: u64,
    done: bool,
    check: RangeCheck,
    skip: Vec<u8>,
}

impl<'a> StreamSource<'a> {
    /// `input` decoded; `plan` from a bmap (else every byte); `len` if known beforehand.
    pub fn new(input: &'a mut dyn Read, plan: Option<Vec<PlanRange>>, len: Option<u64>) -> Self {
        StreamSource {
            input,
            plan,
            len,
            i: 0,
            pos: 0,
            done: false,
            check: RangeCheck::default(),
            skip: Vec::new(),
        }
    }

    fn skip_to(&mut self, to: u64) -> io::Result<()> {
        if self.skip.is_empty() {
            self.skip = vec![0u8; CHUNK];
        }
        while self.pos < to {
            let n = ((to - self.pos) as usize).min(self.skip.len());
            self.input.read_exact(&mut self.skip[..n])?;
            self.pos += n as u64;
        }
        Ok(())
    }
}

impl ChunkSource for StreamSource<'_> {
    fn next_chunk(&mut self, buf: &mut [u8]) -> io::Result<Option<(u64, usize)>> {
        if self.done {
            return Ok(None);
        }
        let Some(plan) = &self.plan else {
            let n = read_full(self.input, buf)?;
            if n == 0 {
                self.done = true;
                self.len = Some(self.pos);
                return Ok(None);
            }
            let at = self.pos;
            self.pos += n as u64;
            return Ok(Some((at, n)));
        };
        let Some(p) = plan.get(self.i).cloned() else {
            self.done = true;
            return Ok(None);
        };
        self.skip_to(p.range.start)?;
        let n = ((p.range.end - self.pos) as usize).min(buf.len());
        self.input.read_exact(&mut buf[..n])?;
        let at = self.pos;
        self.pos += n as u64;
        let ends = self.pos >= p.range.end;
        self.check.feed(&p, &buf[..n], ends)?;
        if ends {
            self.i += 1;
        }
        Ok(Some((at, n)))
    }
    fn image_len(&self) -> Option<u64> {
        self.len
    }
    fn total(&self) -> Option<u64> {
        match &self.plan {
            Some(p) => Some(plan_bytes(p)),
            None => self.len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::bmap::{BmapRange, parse, render};

    #[test]
    fn map_plans_are_aligned_and_merged() {
        let map = BlockMap {
            image_size: 20_000,
            ranges: vec![ByteRange::at(0, 512), ByteRange::at(5000, 100)],
            partitions: vec![],
        };
        let p = plan_from_map(&map);
        // [0, 512) and [5000, 5100) round out to [0, 4096) and [4096, 8192), which touch.
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].range, ByteRange::at(0, 8192));
    }

    #[test]
    fn stream_follows_a_bmap_and_checks_it() {
        let img: Vec<u8> = (0..5 * 4096u32).map(|i| (i % 251) as u8).collect();
        let sha = |a: usize, b: usize| hex::encode(Sha256::digest(&img[a..b]));
        let ranges = vec![
            BmapRange {
                first: 1,
                last: 1,
                sha256: sha(4096, 8192),
            },
            BmapRange {
                first: 3,
                last: 4,
                sha256: sha(3 * 4096, 5 * 4096),
            },
        ];
        let b = parse(&render(img.len() as u64, 4096, &ranges)).unwrap();
        let mut input: &[u8] = &img;
        let mut s = StreamSource::new(&mut input, Some(plan_from_bmap(&b)), Some(b.image_size));
        let mut buf = vec![0u8; 4096];
        let mut got = vec![];
        while let Some((off, n)) = s.next_chunk(&mut buf).unwrap() {
            assert_eq!(&buf[..n], &img[off as usize..off as usize + n]);
            got.push(off);
        }
        assert_eq!(got, vec![4096, 3 * 4096, 4 * 4096]);

        let mut bad = img.clone();
        bad[4 * 4096 + 7] ^= 1;
        let mut input: &[u8] = &bad;
        let mut s = StreamSource::new(&mut input, Some(plan_from_bmap(&b)), None);
        let e = std::iter::from_fn(|| s.next_chunk(&mut buf).transpose())
            .find_map(Result::err)
            .unwrap();
        assert!(e.to_string().contains("bmap's checksum"), "{e}");
    }

    #[test]
    fn a_patch_replaces_its_range() {
        let d = tempfile::tempdir().unwrap();
        let (base, patch) = (d.path().join("b"), d.path().join("p"));
        std::fs::write(&base, vec![1u8; 3 * 4096]).unwrap();
        std::fs::write(&patch, vec![2u8; 3 * 4096]).unwrap();
        let plan = vec![PlanRange {
            range: ByteRange::at(0, 3 * 4096),
            sha256: None,
        }];
        let mut s = MappedSource::new(&base, 3 * 4096, plan)
            .unwrap()
            .with_patch(&patch, ByteRange::at(4096, 100))
            .unwrap();
        let mut buf = vec![0u8; 3 * 4096];
        let (off, n) = s.next_chunk(&mut buf).unwrap().unwrap();
        assert_eq!((off, n), (0, 3 * 4096));
        assert_eq!(buf[4095], 1);
        assert_eq!(buf[4096..4196], [2u8; 100]);
        assert_eq!(buf[4196], 1);
        assert!(s.next_chunk(&mut buf).unwrap().is_none());
    }
}
