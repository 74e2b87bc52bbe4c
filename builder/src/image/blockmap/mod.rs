//! Block map of a disk image: the byte ranges that carry data, so that flashing and `.bmap`
//! files can skip the rest.
//!
//! Used = the MBR (and GPT) and any non-zero 4 KiB block outside partitions; in a FAT
//! partition, the reserved sectors, the FATs, the FAT12/16 root directory and every allocated
//! cluster (read from the first FAT); in an ext2/3/4 partition, the blocks set in each group's
//! block bitmap, and for groups flagged `BLOCK_UNINIT` only their metadata (superblock/GDT
//! backups, bitmaps, inode tables); in any other partition (or a filesystem with features we
//! don't read: `meta_bg`, `bigalloc`), all of it. The parsers are pure functions over byte
//! slices; [`map_image`] is the thin `Read + Seek` shell around them.
//!
//! It deliberately doesn't look inside files or trust free-space counters, and it never writes.

use std::io::{self, Read, Seek, SeekFrom};

use thiserror::Error;

pub mod ext4;
pub mod fat;

pub use ext4::*;
pub use fat::*;

/// A half-open byte range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl ByteRange {
    /// `[start, start + len)`.
    pub fn at(start: u64, len: u64) -> ByteRange {
        ByteRange {
            start,
            end: start.saturating_add(len),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// Sorts ranges and merges overlapping or touching ones; drops empty ones.
pub fn normalize(mut ranges: Vec<ByteRange>) -> Vec<ByteRange> {
    ranges.retain(|r| !r.is_empty());
    ranges.sort();
    let mut out: Vec<ByteRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Why an image or filesystem could not be mapped.
#[derive(Debug, Error)]
pub enum BlockMapError {
    /// Reading the image failed (or it is shorter than its tables say).
    #[error("reading {what} at byte {offset}")]
    Io {
        /// What was being read.
        what: &'static str,
        /// Where.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A FAT boot sector we can't use.
    #[error("FAT: {0}")]
    Fat(String),
    /// An ext2/3/4 superblock or descriptor we can't use.
    #[error("ext4: {0}")]
    Ext4(String),
}

/// What [`map_image`] found in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// FAT12/16/32, mapped from the FAT.
    Fat,
    /// ext2/3/4, mapped from the block bitmaps.
    Ext4,
    /// Anything else (or unreadable): mapped whole.
    Whole,
}

/// One partition of a [`BlockMap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMap {
    /// Where it is in the image.
    pub range: ByteRange,
    /// How it was mapped.
    pub kind: FsKind,
    /// Bytes mapped inside it.
    pub used: u64,
}

/// The used byte ranges of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMap {
    /// Image size in bytes.
    pub image_size: u64,
    /// Used ranges, sorted and merged, within `[0, image_size)`.
    pub ranges: Vec<ByteRange>,
    /// Per-partition detail, in table order.
    pub partitions: Vec<PartitionMap>,
}

impl BlockMap {
    /// Total used bytes.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges.iter().map(ByteRange::len).sum()
    }
}

fn le16(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

fn le32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from(le32(b, off)) | (u64::from(le32(b, off + 4)) << 32)
}

// ---------------------------------------------------------------------------------------------
// Partition tables

/// A partition table entry, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartEntry {
    /// Byte range in the image.
    pub range: ByteRange,
    /// MBR type byte (0 for GPT entries).
    pub mbr_type: u8,
}

/// MBR partition types that are containers (extended partitions): mapped whole.
const MBR_EXTENDED: [u8; 3] = [0x05, 0x0F, 0x85];
/// MBR type of a GPT protective partition.
const MBR_GPT_PROTECTIVE: u8 = 0xEE;

/// Parses the four primary MBR entries of `sector0`; `None` without the 0x55AA signature.
pub fn parse_mbr(sector0: &[u8]) -> Option<Vec<PartEntry>> {
    if sector0.len() < 512 || sector0[510] != 0x55 || sector0[511] != 0xAA {
        return None;
    }
    let mut out = Vec::new();
    for i in 0..4 {
        let e = &sector0[446 + 16 * i..446 + 16 * (i + 1)];
        let kind = e[4];
        let lba = u64::from(le32(e, 8));
        let sectors = u64::from(le32(e, 12));
        if kind != 0 && sectors != 0 {
            out.push(PartEntry {
                range: ByteRange::at(lba * 512, sectors * 512),
                mbr_type: kind,
            });
        }
    }
    Some(out)
}

/// Largest GPT entry we accept. UEFI allows `128 << n`; every real table uses 128, and a
/// header from an untrusted image must not make us read (and allocate) gigabytes of entries.
pub const GPT_MAX_ENTRY_SIZE: u32 = 4096;
/// Most GPT entries we accept (the usual table has 128).
pub const GPT_MAX_ENTRIES: u32 = 1024;

/// Parses a GPT header (LBA 1) and returns `(entries LBA, entry count, entry size)`. `None`
/// for anything that is not a sane table: entry size not `128 << n` or above
/// [`GPT_MAX_ENTRY_SIZE`], more than [`GPT_MAX_ENTRIES`] entries, or an entries LBA whose byte
/// offset does not fit in 64 bits. The caller still checks the table lies inside the image.
pub fn parse_gpt_header(header: &[u8]) -> Option<(u64, u32, u32)> {
    if header.get(0..8) != Some(b"EFI PART".as_slice()) {
        return None;
    }
    let (lba, count, size) = (le64(header, 72), le32(header, 80), le32(header, 84));
    let sane_size = (128..=GPT_MAX_ENTRY_SIZE).contains(&size) && size.is_power_of_two();
    (sane_size && count <= GPT_MAX_ENTRIES && lba.checked_mul(512).is_some())
        .then_some((lba, count, size))
}

/// Parses GPT partition entries (512-byte sectors). Entries shorter than 128 bytes (a size
/// no header from [`parse_gpt_header`] has) give nothing.
pub fn parse_gpt_entries(entries: &[u8], entry_size: u32) -> Vec<PartEntry> {
    if entry_size < 128 {
        return Vec::new();
    }
    entries
        .chunks_exact(entry_size as usize)
        .filter(|e| e[..16].iter().any(|&b| b != 0))
        .filter_map(|e| {
            let (first, last) = (le64(e, 32), le64(e, 40));
            (last >= first).then(|| PartEntry {
                range: ByteRange {
                    start: first.saturating_mul(512),
                    end: last.saturating_add(1).saturating_mul(512),
                },
                mbr_type: 0,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The I/O shell

fn read_at<R: Read + Seek>(
    r: &mut R,
    offset: u64,
    len: u64,
    what: &'static str,
) -> Result<Vec<u8>, BlockMapError> {
    let io = |source| BlockMapError::Io {
        what,
        offset,
        source,
    };
    // Tables in the image say how much to read: never allocate more than the image holds.
    let size = r.seek(SeekFrom::End(0)).map_err(io)?;
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{len} bytes from there run past the end of the image ({size} bytes)"),
        )));
    }
    let len = usize::try_from(len)
        .map_err(|_| io(io::Error::new(io::ErrorKind::InvalidInput, "too large")))?;
    r.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}

/// Used ranges of the FAT filesystem in `part` (absolute byte offsets).
pub fn fat_ranges<R: Read + Seek>(
    r: &mut R,
    part: ByteRange,
) -> Result<Vec<ByteRange>, BlockMapError> {
    let bs = read_at(r, part.start, 512, "FAT boot sector")?;
    let g = parse_fat_boot_sector(&bs)?;
    let fat = read_at(r, part.start + g.fat_offset(), g.fat_bytes(), "FAT")?;
    Ok(shift(fat_used_ranges(&g, &fat), part))
}

/// Used ranges of the ext2/3/4 filesystem in `part` (absolute byte offsets).
pub fn ext4_ranges<R: Read + Seek>(
    r: &mut R,
    part: ByteRange,
) -> Result<Vec<ByteRange>, BlockMapError> {
    let sb = read_at(r, part.start + 1024, 1024, "ext4 superblock")?;
    let sup = parse_ext4_superblock(&sb)?;
    // parse_ext4_superblock checked that the size fits in 64 bits.
    if sup.blocks_count * sup.block_size > part.len() {
        return Err(BlockMapError::Ext4(
            "filesystem is larger than its partition".into(),
        ));
    }
    // With the size inside the partition, the table is too (groups <= blocks, desc <= block).
    let gdt = read_at(
        r,
        part.start + sup.gdt_offset(),
        sup.gdt_blocks().saturating_mul(sup.block_size),
        "ext4 group descriptors",
    )?;
    let groups = parse_group_descriptors(&sup, &gdt)?;
    let mut blocks = ext4_metadata_blocks(&sup, &groups);
    for (g, d) in (0u64..).zip(&groups) {
        if d.flags & BG_BLOCK_UNINIT != 0 {
            continue; // nothing allocated but the metadata above
        }
        if d.block_bitmap >= sup.blocks_count {
            return Err(BlockMapError::Ext4(format!(
                "group {g}: block bitmap out of range"
            )));
        }
        let bitmap = read_at(
            r,
            part.start + d.block_bitmap * sup.block_size,
            sup.block_size,
            "ext4 block bitmap",
        )?;
        blocks.extend(ext4_bitmap_blocks(&sup, g, &bitmap));
    }
    // Bytes 0..2048 hold the boot block and the superblock whatever the block size.
    let mut out = vec![ByteRange::at(0, 2048)];
    out.extend(blocks.into_iter().map(|(a, b)| ByteRange {
        start: a.min(sup.blocks_count) * sup.block_size,
        end: b.min(sup.blocks_count) * sup.block_size,
    }));
    Ok(shift(normalize(out), part))
}

fn shift(ranges: Vec<ByteRange>, part: ByteRange) -> Vec<ByteRange> {
    ranges
        .into_iter()
        .map(|r| ByteRange {
            start: part.start + r.start,
            end: (part.start + r.end).min(part.end),
        })
        .filter(|r| !r.is_empty())
        .collect()
}

/// The non-zero 4 KiB blocks of `range` (clipped to it).
fn nonzero_ranges<R: Read + Seek>(
    r: &mut R,
    range: ByteRange,
) -> Result<Vec<ByteRange>, BlockMapError> {
    const CHUNK: u64 = 1 << 20;
    const BLOCK: u64 = 4096;
    let mut out = Vec::new();
    let mut pos = range.start;
    while pos < range.end {
        let len = CHUNK.min(range.end - pos);
        let buf = read_at(r, pos, len, "unpartitioned space")?;
        for (i, block) in buf.chunks(BLOCK as usize).enumerate() {
            if block.iter().any(|&b| b != 0) {
                out.push(ByteRange::at(pos + i as u64 * BLOCK, block.len() as u64));
            }
        }
        pos += len;
    }
    Ok(out)
}

/// Maps one partition by what is in it: FAT, ext2/3/4, else all of it.
fn map_partition<R: Read + Seek>(
    r: &mut R,
    part: ByteRange,
    mbr_type: u8,
) -> Result<(FsKind, Vec<ByteRange>), BlockMapError> {
    if MBR_EXTENDED.contains(&mbr_type) || part.len() < 4096 {
        return Ok((FsKind::Whole, vec![part]));
    }
    let head = read_at(r, part.start, 2048, "partition start")?;
    let attempt = if le16(&head, 1024 + 0x38) == EXT4_MAGIC {
        Some((FsKind::Ext4, ext4_ranges(r, part)))
    } else if parse_fat_boot_sector(&head[..512]).is_ok() {
        Some((FsKind::Fat, fat_ranges(r, part)))
    } else {
        None
    };
    match attempt {
        Some((kind, Ok(ranges))) => Ok((kind, ranges)),
        Some((kind, Err(e))) => {
            tracing::warn!(
                start = part.start, ?kind, error = %e,
                "cannot read the filesystem's allocation; mapping the whole partition"
            );
            Ok((FsKind::Whole, vec![part]))
        }
        None => Ok((FsKind::Whole, vec![part])),
    }
}

/// Maps an image of `image_size` bytes: partition table, partitions by filesystem, and the
/// non-zero blocks outside partitions. An image without a partition table is treated as one
/// partition (a bare filesystem).
pub fn map_image<R: Read + Seek>(r: &mut R, image_size: u64) -> Result<BlockMap, BlockMapError> {
    let sector0 = if image_size >= 512 {
        read_at(r, 0, 512, "MBR")?
    } else {
        Vec::new()
    };
    let mut parts = parse_mbr(&sector0).unwrap_or_default();
    if parts.iter().any(|p| p.mbr_type == MBR_GPT_PROTECTIVE) && image_size >= 1024 {
        let header = read_at(r, 512, 512, "GPT header")?;
        if let Some((lba, count, size)) = parse_gpt_header(&header) {
            let entries = read_at(
                r,
                lba * 512,
                u64::from(count) * u64::from(size),
                "GPT entries",
            )?;
            parts = parse_gpt_entries(&entries, size);
        }
    }
    // A bare FAT volume also ends its first sector with 0x55AA: that is no partition table.
    let is_table = parse_mbr(&sector0).is_some() && parse_fat_boot_sector(&sector0).is_err();
    if !is_table {
        parts.clear();
    }
    let mut parts: Vec<PartEntry> = parts
        .into_iter()
        .map(|p| PartEntry {
            range: ByteRange {
                start: p.range.start,
                end: p.range.end.min(image_size),
            },
            ..p
        })
        .filter(|p| !p.range.is_empty())
        .collect();
    if !is_table && parts.is_empty() && image_size > 0 {
        parts.push(PartEntry {
            range: ByteRange::at(0, image_size),
            mbr_type: 0,
        });
    }
    let mut ranges = Vec::new();
    if is_table {
        ranges.push(ByteRange::at(0, 512));
    }
    let mut partitions = Vec::new();
    for p in &parts {
        let (kind, used) = map_partition(r, p.range, p.mbr_type)?;
        let used = normalize(used);
        partitions.push(PartitionMap {
            range: p.range,
            kind,
            used: used.iter().map(ByteRange::len).sum(),
        });
        ranges.extend(used);
    }
    // Gaps between partitions: bootloaders, GPT copies, stray data.
    let covered = normalize(parts.iter().map(|p| p.range).collect());
    let mut pos = 0;
    for c in covered
        .iter()
        .chain(std::iter::once(&ByteRange::at(image_size, 0)))
    {
        if c.start > pos {
            ranges.extend(nonzero_ranges(
                r,
                ByteRange {
                    start: pos,
                    end: c.start,
                },
            )?);
        }
        pos = pos.max(c.end);
    }
    Ok(BlockMap {
        image_size,
        ranges: normalize(ranges),
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalize_merges_touching_and_overlapping() {
        let r = |a, b| ByteRange { start: a, end: b };
        assert_eq!(
            normalize(vec![r(10, 20), r(0, 5), r(5, 8), r(15, 30), r(40, 40)]),
            vec![r(0, 8), r(10, 30)]
        );
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_mbr(&bytes);
            let _ = parse_gpt_header(&bytes);
            let _ = parse_gpt_entries(&bytes, 128);
            if let Ok(g) = parse_fat_boot_sector(&bytes) {
                let _ = fat_used_ranges(&g, &bytes);
            }
            if let Ok(s) = parse_ext4_superblock(&bytes) {
                if let Ok(groups) = parse_group_descriptors(&s, &bytes) {
                    let _ = ext4_metadata_blocks(&s, &groups);
                }
                let _ = ext4_bitmap_blocks(&s, 0, &bytes);
            }
        }

        #[test]
        fn normalized_ranges_are_sorted_disjoint_and_cover_the_input(
            v in proptest::collection::vec((0u64..1000, 0u64..50), 0..40)
        ) {
            let input: Vec<ByteRange> = v.iter().map(|&(s, l)| ByteRange::at(s, l)).collect();
            let out = normalize(input.clone());
            for w in out.windows(2) {
                prop_assert!(w[0].end < w[1].start);
            }
            for r in input.iter().filter(|r| !r.is_empty()) {
                prop_assert!(out.iter().any(|o| o.start <= r.start && r.end <= o.end));
            }
        }
    }
}
