//! ext2/3/4 allocation for the block map: superblock, group descriptors (32-byte without
//! `64bit`, `s_desc_size` with it), per-group block bitmaps, and for `BLOCK_UNINIT` groups only
//! their metadata. Pure functions over byte slices; it deliberately doesn't read inodes,
//! extents or the journal, and refuses `meta_bg` and `bigalloc` (the caller then maps the
//! whole partition).

use super::{BlockMapError, le16, le32};

/// `s_magic` of ext2/3/4.
pub const EXT4_MAGIC: u16 = 0xEF53;
const COMPAT_RESIZE_INODE: u32 = 0x10;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const INCOMPAT_RECOVER: u32 = 0x4;
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
/// `meta_bg` and `bigalloc`, whose layouts this map does not read; a filesystem whose size in
/// bytes does not fit in 64 bits; and one whose journal needs recovery (`needs_recovery`: it
/// was not cleanly unmounted), because its block bitmaps may not yet show blocks that only
/// the journal knows are in use.
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
    if incompat & INCOMPAT_RECOVER != 0 {
        return Err(bad(
            "the journal needs recovery (the file system was not cleanly unmounted), so its \
             block bitmaps may be stale; run `e2fsck -fy` on it or use a clean image"
                .into(),
        ));
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
    if blocks_count.checked_mul(block_size).is_none() {
        return Err(bad(format!(
            "s_blocks_count {blocks_count} of {block_size} bytes overflows 64 bits"
        )));
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
        (self.groups.saturating_mul(self.desc_size as u64)).div_ceil(self.block_size)
    }

    /// Byte offset of the group descriptor table in the partition.
    pub fn gdt_offset(&self) -> u64 {
        (self.first_data_block + 1) * self.block_size
    }

    /// First block of group `g`.
    pub fn group_start(&self, g: u64) -> u64 {
        self.first_data_block
            .saturating_add(g.saturating_mul(self.blocks_per_group))
    }

    /// Blocks in group `g` (the last one may be short).
    pub fn group_len(&self, g: u64) -> u64 {
        self.blocks_per_group
            .min(self.blocks_count.saturating_sub(self.group_start(g)))
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
    if n.checked_mul(sup.desc_size)
        .is_none_or(|need| gdt.len() < need)
    {
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
            let end = sup
                .group_start(g)
                .saturating_add(1 + sup.gdt_blocks())
                .saturating_add(sup.reserved_gdt_blocks);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
