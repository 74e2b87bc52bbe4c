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

/// Parses a GPT header (LBA 1) and returns `(entries LBA, entry count, entry size)`.
pub fn parse_gpt_header(header: &[u8]) -> Option<(u64, u32, u32)> {
    if header.get(0..8) != Some(b"EFI PART".as_slice()) {
        return None;
    }
    let (lba, count, size) = (le64(header, 72), le32(header, 80), le32(header, 84));
    (size >= 128 && count <= 1024).then_some((lba, count, size))
}

/// Parses GPT partition entries (512-byte sectors).
pub fn parse_gpt_entries(entries: &[u8], entry_size: u32) -> Vec<PartEntry> {
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
// FAT

/// The layout of a FAT filesystem, from its boot sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FatGeometry {
    /// Bytes per sector.
    pub sector: u64,
    /// Sectors per cluster.
    pub sectors_per_cluster: u64,
    /// Reserved sectors (boot sector, FSInfo, backup boot sector).
    pub reserved: u64,
    /// Number of FATs.
    pub fats: u64,
    /// Sectors per FAT.
    pub fat_sectors: u64,
    /// First sector of the data area (after the FAT12/16 root directory).
    pub data_start: u64,
    /// Number of data clusters.
    pub clusters: u64,
    /// 12, 16 or 32.
    pub bits: u8,
}

/// Reads the BPB of a FAT boot sector (pure). FAT type follows the cluster count, as the
/// specification says, not the label.
pub fn parse_fat_boot_sector(bs: &[u8]) -> Result<FatGeometry, BlockMapError> {
    let bad = |m: &str| BlockMapError::Fat(m.to_string());
    if bs.len() < 512 || bs[510] != 0x55 || bs[511] != 0xAA {
        return Err(bad("no boot sector signature"));
    }
    let sector = u64::from(le16(bs, 11));
    let spc = u64::from(bs[13]);
    let reserved = u64::from(le16(bs, 14));
    let fats = u64::from(bs[16]);
    let root_entries = u64::from(le16(bs, 17));
    let total = match le16(bs, 19) {
        0 => u64::from(le32(bs, 32)),
        n => u64::from(n),
    };
    let fat_sectors = match le16(bs, 22) {
        0 => u64::from(le32(bs, 36)),
        n => u64::from(n),
    };
    if ![512, 1024, 2048, 4096].contains(&sector) {
        return Err(bad("bytes per sector is not 512..4096"));
    }
    if spc == 0 || !spc.is_power_of_two() || reserved == 0 || fats == 0 || fat_sectors == 0 {
        return Err(bad("implausible BPB"));
    }
    let root_sectors = (root_entries * 32).div_ceil(sector);
    let data_start = reserved + fats * fat_sectors + root_sectors;
    if total <= data_start {
        return Err(bad("no data area"));
    }
    let clusters = (total - data_start) / spc;
    let bits = match clusters {
        0..4085 => 12,
        4085..65525 => 16,
        _ => 32,
    };
    Ok(FatGeometry {
        sector,
        sectors_per_cluster: spc,
        reserved,
        fats,
        fat_sectors,
        data_start,
        clusters,
        bits,
    })
}

impl FatGeometry {
    /// Bytes of one FAT.
    pub fn fat_bytes(&self) -> u64 {
        self.fat_sectors * self.sector
    }

    /// Byte offset of the first FAT in the partition.
    pub fn fat_offset(&self) -> u64 {
        self.reserved * self.sector
    }
}

/// FAT entry `n`, or `None` past the end of `fat`.
fn fat_entry(fat: &[u8], bits: u8, n: u64) -> Option<u32> {
    let n = usize::try_from(n).ok()?;
    match bits {
        32 => fat
            .get(4 * n..4 * n + 4)
            .map(|_| le32(fat, 4 * n) & 0x0FFF_FFFF),
        16 => fat
            .get(2 * n..2 * n + 2)
            .map(|_| u32::from(le16(fat, 2 * n))),
        _ => {
            let o = n + n / 2;
            let v = u32::from(*fat.get(o)?) | (u32::from(*fat.get(o + 1)?) << 8);
            Some(if n % 2 == 0 { v & 0xFFF } else { v >> 4 })
        }
    }
}

/// Used byte ranges of a FAT filesystem, relative to its first byte (pure): reserved
/// sectors, FATs and root directory, plus allocated clusters (neither free nor bad) of `fat`,
/// the bytes of the first FAT.
pub fn fat_used_ranges(g: &FatGeometry, fat: &[u8]) -> Vec<ByteRange> {
    let bad = match g.bits {
        32 => 0x0FFF_FFF7,
        16 => 0xFFF7,
        _ => 0xFF7,
    };
    let cluster_bytes = g.sectors_per_cluster * g.sector;
    let data = g.data_start * g.sector;
    let mut out = vec![ByteRange::at(0, data)];
    let mut run: Option<(u64, u64)> = None; // first cluster, one past last
    for n in 2..g.clusters + 2 {
        let Some(v) = fat_entry(fat, g.bits, n) else {
            break;
        };
        let used = v != 0 && v != bad;
        run = match (run, used) {
            (Some((a, b)), true) if b == n => Some((a, n + 1)),
            (Some((a, b)), true) => {
                out.push(ByteRange {
                    start: data + (a - 2) * cluster_bytes,
                    end: data + (b - 2) * cluster_bytes,
                });
                Some((n, n + 1))
            }
            (None, true) => Some((n, n + 1)),
            (r, false) => {
                if let Some((a, b)) = r {
                    out.push(ByteRange {
                        start: data + (a - 2) * cluster_bytes,
                        end: data + (b - 2) * cluster_bytes,
                    });
                }
                None
            }
        };
    }
    if let Some((a, b)) = run {
        out.push(ByteRange {
            start: data + (a - 2) * cluster_bytes,
            end: data + (b - 2) * cluster_bytes,
        });
    }
    normalize(out)
}

// ---------------------------------------------------------------------------------------------
// ext2/3/4

const EXT4_MAGIC: u16 = 0xEF53;
const COMPAT_RESIZE_INODE: u32 = 0x10;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_BIGALLOC: u32 = 0x200;
/// `bg_flags`: the group's block bitmap is not initialised (EXT4_BG_BLOCK_UNINIT).
pub const BG_BLOCK_UNINIT: u16 = 0x2;

/// What we need from an ext2/3/4 superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Super {
    /// Block size in bytes.
    pub block_size: u64,
    /// Blocks in the filesystem.
    pub blocks_count: u64,
    /// 1 for 1 KiB blocks, else 0.
    pub first_data_block: u64,
    /// Blocks per group.
    pub blocks_per_group: u64,
    /// Inodes per group.
    pub inodes_per_group: u64,
    /// Inode size in bytes.
    pub inode_size: u64,
    /// Group descriptor size: 32 without `64bit`, `s_desc_size` (≥ 64) with it.
    pub desc_size: usize,
    /// Number of block groups.
    pub groups: u64,
    /// Blocks reserved for GDT growth after each superblock copy.
    pub reserved_gdt_blocks: u64,
    /// `sparse_super`: backups only in groups 0, 1 and powers of 3, 5, 7.
    pub sparse_super: bool,
    /// `sparse_super2`: backups only in these two groups (0 = none).
    pub backup_bgs: Option<[u64; 2]>,
}

/// Parses the 1024-byte superblock found at byte 1024 of the partition (pure). Refuses
/// `meta_bg` and `bigalloc`, whose layouts this map does not read.
pub fn parse_ext4_superblock(sb: &[u8]) -> Result<Ext4Super, BlockMapError> {
    let bad = |m: String| BlockMapError::Ext4(m);
    if sb.len() < 1024 || le16(sb, 0x38) != EXT4_MAGIC {
        return Err(bad("no ext2/3/4 superblock magic".into()));
    }
    let log = le32(sb, 0x18);
    if log > 6 {
        return Err(bad(format!("s_log_block_size {log}")));
    }
    let block_size = 1024u64 << log;
    let compat = le32(sb, 0x5C);
    let incompat = le32(sb, 0x60);
    let ro_compat = le32(sb, 0x64);
    if incompat & INCOMPAT_META_BG != 0 {
        return Err(bad("meta_bg is not supported".into()));
    }
    if ro_compat & RO_COMPAT_BIGALLOC != 0 {
        return Err(bad("bigalloc is not supported".into()));
    }
    let is64 = incompat & INCOMPAT_64BIT != 0;
    let blocks_count = u64::from(le32(sb, 4))
        | if is64 {
            u64::from(le32(sb, 0x150)) << 32
        } else {
            0
        };
    let first_data_block = u64::from(le32(sb, 0x14));
    let blocks_per_group = u64::from(le32(sb, 0x20));
    let inodes_per_group = u64::from(le32(sb, 0x28));
    let inode_size = if le32(sb, 0x4C) == 0 {
        128
    } else {
        u64::from(le16(sb, 0x58))
    };
    let desc_size = if is64 {
        usize::from(le16(sb, 0xFE))
    } else {
        32
    };
    if blocks_per_group == 0 || blocks_per_group > block_size * 8 {
        return Err(bad(format!("s_blocks_per_group {blocks_per_group}")));
    }
    if is64 && !(64..=1024).contains(&desc_size) || !desc_size.is_power_of_two() {
        return Err(bad(format!("s_desc_size {desc_size}")));
    }
    if blocks_count <= first_data_block || inode_size == 0 {
        return Err(bad("empty filesystem".into()));
    }
    let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group);
    let reserved_gdt_blocks = if compat & COMPAT_RESIZE_INODE != 0 {
        u64::from(le16(sb, 0xCE))
    } else {
        0
    };
    Ok(Ext4Super {
        block_size,
        blocks_count,
        first_data_block,
        blocks_per_group,
        inodes_per_group,
        inode_size,
        desc_size,
        groups,
        reserved_gdt_blocks,
        sparse_super: ro_compat & RO_COMPAT_SPARSE_SUPER != 0,
        backup_bgs: (compat & COMPAT_SPARSE_SUPER2 != 0)
            .then(|| [u64::from(le32(sb, 0x24C)), u64::from(le32(sb, 0x250))]),
    })
}

/// A block group descriptor, the fields the map needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupDesc {
    /// Block of the block bitmap.
    pub block_bitmap: u64,
    /// Block of the inode bitmap.
    pub inode_bitmap: u64,
    /// First block of the inode table.
    pub inode_table: u64,
    /// `bg_flags`.
    pub flags: u16,
}

impl Ext4Super {
    /// Blocks taken by the group descriptor table.
    pub fn gdt_blocks(&self) -> u64 {
        (self.groups * self.desc_size as u64).div_ceil(self.block_size)
    }

    /// Byte offset of the group descriptor table in the partition.
    pub fn gdt_offset(&self) -> u64 {
        (self.first_data_block + 1) * self.block_size
    }

    /// First block of group `g`.
    pub fn group_start(&self, g: u64) -> u64 {
        self.first_data_block + g * self.blocks_per_group
    }

    /// Blocks in group `g` (the last one may be short).
    pub fn group_len(&self, g: u64) -> u64 {
        self.blocks_per_group
            .min(self.blocks_count - self.group_start(g))
    }

    /// Whether group `g` holds a superblock and GDT copy.
    pub fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if let Some([a, b]) = self.backup_bgs {
            return g == a || g == b;
        }
        if !self.sparse_super || g == 1 {
            return true;
        }
        [3u64, 5, 7].iter().any(|&base| {
            let mut p = base;
            while p < g {
                match p.checked_mul(base) {
                    Some(next) => p = next,
                    None => return false,
                }
            }
            p == g
        })
    }

    /// Blocks of one inode table.
    pub fn inode_table_blocks(&self) -> u64 {
        (self.inodes_per_group * self.inode_size).div_ceil(self.block_size)
    }
}

/// Parses `groups` descriptors from the group descriptor table bytes (pure).
pub fn parse_group_descriptors(
    sup: &Ext4Super,
    gdt: &[u8],
) -> Result<Vec<GroupDesc>, BlockMapError> {
    let n =
        usize::try_from(sup.groups).map_err(|_| BlockMapError::Ext4("too many groups".into()))?;
    if gdt.len() < n * sup.desc_size {
        return Err(BlockMapError::Ext4(
            "group descriptor table is truncated".into(),
        ));
    }
    let wide = sup.desc_size >= 64;
    Ok(gdt
        .chunks_exact(sup.desc_size)
        .take(n)
        .map(|d| {
            let hi = |off: usize| {
                if wide {
                    u64::from(le32(d, off)) << 32
                } else {
                    0
                }
            };
            GroupDesc {
                block_bitmap: u64::from(le32(d, 0)) | hi(0x20),
                inode_bitmap: u64::from(le32(d, 4)) | hi(0x24),
                inode_table: u64::from(le32(d, 8)) | hi(0x28),
                flags: le16(d, 0x12),
            }
        })
        .collect())
}

/// Metadata blocks every group owns wherever they sit (with `flex_bg`, in another group):
/// superblock + GDT (+ reserved GDT) copies, bitmaps, inode tables. As block ranges (pure).
pub fn ext4_metadata_blocks(sup: &Ext4Super, groups: &[GroupDesc]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for (g, d) in (0u64..).zip(groups) {
        if sup.has_super(g) {
            let start = if g == 0 { 0 } else { sup.group_start(g) };
            let end = sup.group_start(g) + 1 + sup.gdt_blocks() + sup.reserved_gdt_blocks;
            out.push((start, end));
        }
        out.push((d.block_bitmap, d.block_bitmap.saturating_add(1)));
        out.push((d.inode_bitmap, d.inode_bitmap.saturating_add(1)));
        out.push((
            d.inode_table,
            d.inode_table.saturating_add(sup.inode_table_blocks()),
        ));
    }
    out
}

/// Blocks set in group `g`'s block bitmap, as `[start, end)` block ranges (pure).
pub fn ext4_bitmap_blocks(sup: &Ext4Super, g: u64, bitmap: &[u8]) -> Vec<(u64, u64)> {
    let base = sup.group_start(g);
    let len = sup.group_len(g).min(bitmap.len() as u64 * 8);
    let mut out = Vec::new();
    let mut run: Option<u64> = None;
    for j in 0..len {
        let set = bitmap[(j / 8) as usize] & (1 << (j % 8)) != 0;
        match (set, run) {
            (true, None) => run = Some(j),
            (false, Some(a)) => {
                out.push((base + a, base + j));
                run = None;
            }
            _ => {}
        }
    }
    if let Some(a) = run {
        out.push((base + a, base + len));
    }
    out
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
    if sup.blocks_count * sup.block_size > part.len() {
        return Err(BlockMapError::Ext4(
            "filesystem is larger than its partition".into(),
        ));
    }
    let gdt = read_at(
        r,
        part.start + sup.gdt_offset(),
        sup.gdt_blocks() * sup.block_size,
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

    fn fat32_boot(total: u32, fat_sectors: u32, spc: u8) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[11..13].copy_from_slice(&512u16.to_le_bytes());
        b[13] = spc;
        b[14..16].copy_from_slice(&32u16.to_le_bytes());
        b[16] = 2;
        b[32..36].copy_from_slice(&total.to_le_bytes());
        b[36..40].copy_from_slice(&fat_sectors.to_le_bytes());
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn fat32_allocated_clusters_become_ranges() {
        // 70000 clusters of 1 sector: FAT32.
        let g = parse_fat_boot_sector(&fat32_boot(32 + 2 * 600 + 70000, 600, 1)).unwrap();
        assert_eq!(g.bits, 32);
        assert_eq!(g.data_start, 32 + 1200);
        let mut fat = vec![0u8; 600 * 512];
        for n in [2u32, 3, 4, 10, 69999] {
            let v: u32 = if n == 10 { 0x0FFF_FFF7 } else { 0x0FFF_FFFF }; // 10 is bad
            fat[4 * n as usize..4 * n as usize + 4].copy_from_slice(&v.to_le_bytes());
        }
        let data = (32 + 1200) * 512;
        let got = fat_used_ranges(&g, &fat);
        assert_eq!(
            got,
            vec![
                ByteRange::at(0, data + 3 * 512),
                ByteRange::at(data + 69997 * 512, 512)
            ]
        );
    }

    #[test]
    fn fat12_entries_unpack() {
        // entries 2 = 0x123, 3 = 0x456 packed as 23 61 45
        let fat = [0xF8, 0xFF, 0xFF, 0x23, 0x61, 0x45];
        assert_eq!(fat_entry(&fat, 12, 2), Some(0x123));
        assert_eq!(fat_entry(&fat, 12, 3), Some(0x456));
        assert_eq!(fat_entry(&fat, 12, 4), None);
    }

    #[test]
    fn sparse_super_groups() {
        let sup = Ext4Super {
            block_size: 4096,
            blocks_count: 1 << 20,
            first_data_block: 0,
            blocks_per_group: 32768,
            inodes_per_group: 8192,
            inode_size: 256,
            desc_size: 32,
            groups: 32,
            reserved_gdt_blocks: 0,
            sparse_super: true,
            backup_bgs: None,
        };
        let with: Vec<u64> = (0..32).filter(|&g| sup.has_super(g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27]);
        let bitmap = [0b0000_0111u8, 0, 0x80];
        assert_eq!(
            ext4_bitmap_blocks(&sup, 1, &bitmap),
            vec![(32768, 32771), (32791, 32792)]
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
