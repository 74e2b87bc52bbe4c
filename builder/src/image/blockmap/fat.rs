//! FAT12/16/32 allocation for the block map: the boot sector's geometry and the clusters the
//! first FAT marks as allocated. Pure functions over byte slices; it deliberately doesn't
//! follow directory trees or look at the second FAT.

use super::{BlockMapError, ByteRange, le16, le32, normalize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
