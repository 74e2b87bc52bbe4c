//! The image model: what is on a disk image, read from its bytes, never from a mount.
//!
//! - [`read_layout`] / [`layout_from_bytes`]: the partition table (MBR through `mbrman`, GPT
//!   through `gpt`), and for every partition the filesystem its first sectors hold ([`FsKind`],
//!   label). [`Layout::boot`] and [`Layout::root`] pick the FAT boot and ext4 root partitions.
//! - [`fat`]: edit the FAT boot partition through a [`window::PartitionWindow`] of the image file.
//! - [`ext4`]: read-only facts about the ext4 root (release, boot mount, network stack, arch).
//! - [`blockmap`]: the byte ranges that carry data, from the FAT and ext4 allocation; [`bmap`]:
//!   the same as a `bmaptool` file, written and parsed.
//! - [`inspect`]: `piforge inspect`, all of the above as one read-only report.
//!
//! Deliberately not here: MBR *logical* partitions (Raspberry Pi OS images have two primaries;
//! an extended partition is listed with [`FsKind::Unknown`] and its contents are not followed),
//! GPT on 4096-byte sectors, and writing partition tables (the builder keeps the table as it is).

pub mod blockcache;
pub mod blockmap;
pub mod bmap;
pub mod ext4;
pub mod fat;
pub mod inspect;
pub mod window;

use std::fmt;
use std::io::{self, Cursor, Read, Seek, SeekFrom};

use thiserror::Error;

pub use ext4::{RootFacts, root_facts};
pub use fat::BootFs;
pub use piforge_config::rootfs::NetworkStack;
pub use window::PartitionWindow;

/// Sector size of every image we handle.
pub const SECTOR: u64 = 512;

/// How many bytes from the start of an image [`read_layout`] reads to find the partition table:
/// the MBR, or the protective MBR plus the GPT header and a 128-entry table (34 sectors), with
/// room to spare.
pub const HEAD_LEN: u64 = 1 << 20;

/// How many bytes at the start of a partition [`detect_fs`] looks at: the FAT boot sector and the
/// ext4 superblock (bytes 1024..2048).
pub const PROBE_LEN: u64 = 4096;

/// Why an image could not be read or edited. Messages are one line and say what to do.
#[derive(Debug, Error)]
pub enum ImageError {
    /// The file has no MBR boot signature (`55 aa` at byte 510), is shorter than one sector, or
    /// is a bare filesystem without a partition table.
    #[error("not a disk image: {reason}; give a whole-disk image such as a Raspberry Pi OS .img")]
    NotADiskImage {
        /// What was found instead.
        reason: String,
    },
    /// The table is there but inconsistent: a partition past the end of the file (truncated
    /// download), a GPT header whose entries lie outside the first [`HEAD_LEN`] bytes, …
    #[error("bad partition table: {reason}")]
    BadPartitionTable {
        /// What is wrong.
        reason: String,
    },
    /// No partition holds a FAT filesystem ([`Layout::boot`]).
    #[error(
        "no FAT boot partition in the image (partitions: {found}); \
         is this a Raspberry Pi OS image?"
    )]
    NoBootPartition {
        /// A one-line summary of the partitions there are.
        found: String,
    },
    /// No partition holds an ext4 filesystem, or [`ext4::root_facts`] was given one that doesn't.
    #[error("no ext4 root partition in the image (partitions: {found})")]
    NoRootPartition {
        /// A one-line summary of the partitions there are.
        found: String,
    },
    /// [`fat::BootFs::open`] found no FAT filesystem the `fatfs` crate can mount.
    #[error("partition {number} is not a usable FAT filesystem: {reason}")]
    NotFat {
        /// The 1-based partition number.
        number: u32,
        /// What `fatfs` or the boot sector said.
        reason: String,
    },
    /// A write would need more space than the FAT partition has; nothing was written.
    #[error(
        "the boot partition is full: the write needs {needed} bytes but only {free} are free; \
         remove files from the boot partition or write less"
    )]
    FatFull {
        /// Bytes the write needs (file clusters plus directory clusters it may add).
        needed: u64,
        /// Bytes free on the partition (counting the clusters an overwritten file gives back).
        free: u64,
    },
    /// A path given to [`fat::BootFs`] is empty, absolute to somewhere odd, or has `..`.
    #[error("bad path {path:?} on the boot partition: {reason}")]
    BadPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `fatfs` failed while working on a file or directory of the boot partition.
    #[error("{op} {path:?} on the boot partition: {source}")]
    Fat {
        /// What was being done, "verb-ing" form ("writing", "removing", …).
        op: &'static str,
        /// The path on the FAT.
        path: String,
        /// The error from `fatfs` or the image file.
        #[source]
        source: io::Error,
    },
    /// The ext4 root filesystem could not be read (`ext4-view` refused it or hit bad data).
    #[error("reading the ext4 root partition: {reason}")]
    RootFs {
        /// What `ext4-view` said, with the path involved.
        reason: String,
    },
    /// Reading or writing the image file itself failed.
    #[error("{context}: {source}")]
    Io {
        /// "verb-ing object", e.g. "reading the partition table".
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl ImageError {
    /// An [`ImageError::Io`] with its context.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        ImageError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The partition table and its identity (what PARTUUIDs are made of).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableKind {
    /// DOS/MBR table. `disk_signature` is the little-endian u32 at byte 440.
    Mbr {
        /// The disk signature ("disk identifier"), e.g. `0x5e3da1b7`.
        disk_signature: u32,
    },
    /// GUID partition table.
    Gpt {
        /// The disk GUID, lower-case and hyphenated.
        disk_guid: String,
    },
}

/// A partition's type as the table records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartType {
    /// MBR system id, e.g. `0x0c` (FAT32 LBA) or `0x83` (Linux).
    Mbr(u8),
    /// GPT type GUID, upper-case and hyphenated.
    Gpt(String),
}

/// GPT type of an EFI system partition.
pub const GPT_EFI_SYSTEM: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// GPT type "Microsoft basic data" (FAT partitions that are not an ESP).
pub const GPT_BASIC_DATA: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
/// GPT type "Linux filesystem data".
pub const GPT_LINUX_DATA: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

impl PartType {
    /// True for the types a FAT boot partition carries: MBR FAT16/FAT32 ids, GPT ESP or basic
    /// data.
    pub fn is_fat_type(&self) -> bool {
        match self {
            PartType::Mbr(t) => matches!(t, 0x01 | 0x04 | 0x06 | 0x0b | 0x0c | 0x0e),
            PartType::Gpt(g) => g == GPT_EFI_SYSTEM || g == GPT_BASIC_DATA,
        }
    }
}

impl fmt::Display for PartType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartType::Mbr(t) => write!(f, "0x{t:02x}"),
            PartType::Gpt(g) => f.write_str(g),
        }
    }
}

/// The filesystem found at the start of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// FAT with at least 65525 clusters.
    Fat32,
    /// FAT with 4085..65525 clusters.
    Fat16,
    /// FAT with fewer than 4085 clusters.
    Fat12,
    /// An ext2/3/4 superblock (magic `0xEF53`); `ext4-view` reads all three.
    Ext4,
    /// Anything else, or a partition whose first sectors were not available.
    Unknown,
}

impl FsKind {
    /// True for the three FAT variants.
    pub fn is_fat(self) -> bool {
        matches!(self, FsKind::Fat32 | FsKind::Fat16 | FsKind::Fat12)
    }
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsKind::Fat32 => "fat32",
            FsKind::Fat16 => "fat16",
            FsKind::Fat12 => "fat12",
            FsKind::Ext4 => "ext4",
            FsKind::Unknown => "unknown",
        })
    }
}

/// One partition of the table, with what its first sectors say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based number, as in `/dev/sda1` and PARTUUID suffixes.
    pub number: u32,
    /// Offset of the first byte in the image.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Type recorded in the table.
    pub part_type: PartType,
    /// The filesystem detected from its superblock / boot sector.
    pub fs: FsKind,
    /// The filesystem label (FAT: BPB volume label, ext4: `s_volume_name`), if any.
    pub label: Option<String>,
    /// GPT only: the partition's unique GUID, lower-case.
    pub guid: Option<String>,
}

impl Partition {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }

    fn label_is(&self, names: &[&str]) -> bool {
        self.label
            .as_deref()
            .is_some_and(|l| names.iter().any(|n| l.eq_ignore_ascii_case(n)))
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{} {} type {}", self.number, self.fs, self.part_type)?;
        if let Some(l) = &self.label {
            write!(f, " label {l:?}")?;
        }
        Ok(())
    }
}

/// The partition table of an image and the partitions in it, in table order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Table type and disk identity.
    pub table: TableKind,
    /// Size of the image in bytes.
    pub disk_size: u64,
    /// Used partitions, ordered by number.
    pub partitions: Vec<Partition>,
}

impl Layout {
    /// The FAT boot partition: among the partitions holding a FAT filesystem, the one labelled
    /// `bootfs`/`boot`, then one with a FAT partition type (MBR 0x0b/0x0c/0x0e…, GPT ESP or
    /// basic data), then the lowest-numbered.
    pub fn boot(&self) -> Result<&Partition, ImageError> {
        self.partitions
            .iter()
            .filter(|p| p.fs.is_fat())
            .max_by_key(|p| {
                let score = 4 * u32::from(p.label_is(&["bootfs", "boot"]))
                    + 2 * u32::from(p.part_type.is_fat_type());
                (score, std::cmp::Reverse(p.number))
            })
            .ok_or_else(|| ImageError::NoBootPartition {
                found: self.summary(),
            })
    }

    /// The ext4 root partition: among the ext4 partitions, the one labelled `rootfs`, then the
    /// largest.
    pub fn root(&self) -> Option<&Partition> {
        self.partitions
            .iter()
            .filter(|p| p.fs == FsKind::Ext4)
            .max_by_key(|p| (p.label_is(&["rootfs"]), p.len, std::cmp::Reverse(p.number)))
    }

    /// The partition with this 1-based number.
    pub fn partition(&self, number: u32) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.number == number)
    }

    /// The PARTUUID Linux gives partition `number`: for MBR `"{signature:08x}-{number:02x}"`
    /// (e.g. `5e3da1b7-02`), for GPT the partition's GUID in lower case (empty if there is no
    /// such partition).
    pub fn partuuid(&self, number: u32) -> String {
        match &self.table {
            TableKind::Mbr { disk_signature } => format!("{disk_signature:08x}-{number:02x}"),
            TableKind::Gpt { .. } => self
                .partition(number)
                .and_then(|p| p.guid.clone())
                .unwrap_or_default(),
        }
    }

    /// "p1 fat32 type 0x0c label \"bootfs\", p2 …", or "none".
    pub fn summary(&self) -> String {
        if self.partitions.is_empty() {
            return "none".to_owned();
        }
        self.partitions
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Reads the partition table of an image and probes each partition's first [`PROBE_LEN`] bytes.
/// The stream is left at an unspecified position.
pub fn read_layout<R: Read + Seek>(r: &mut R) -> Result<Layout, ImageError> {
    let disk_size = r
        .seek(SeekFrom::End(0))
        .map_err(|e| ImageError::io("finding the image size", e))?;
    let head = read_at(r, 0, HEAD_LEN.min(disk_size))
        .map_err(|e| ImageError::io("reading the partition table", e))?;
    let (table, raw) = parse_table(&head, disk_size)?;
    let mut partitions = Vec::with_capacity(raw.len());
    for p in raw {
        let probe = read_at(r, p.start, PROBE_LEN.min(p.len)).map_err(|e| {
            ImageError::io(format!("reading the start of partition {}", p.number), e)
        })?;
        partitions.push(p.into_partition(&probe));
    }
    Ok(Layout {
        table,
        disk_size,
        partitions,
    })
}

/// The pure core of [`read_layout`]: `head` is the first bytes of an image (at least the table:
/// 512 bytes for MBR, 34 sectors for GPT; [`HEAD_LEN`] is plenty), `disk_size` the image size.
/// Partitions whose first [`PROBE_LEN`] bytes are not inside `head` get [`FsKind::Unknown`].
/// Never panics, whatever the bytes (fuzz target).
pub fn layout_from_bytes(head: &[u8], disk_size: u64) -> Result<Layout, ImageError> {
    let (table, raw) = parse_table(head, disk_size)?;
    let partitions = raw
        .into_iter()
        .map(|p| {
            let probe = usize::try_from(p.start).ok().and_then(|s| {
                head.get(s..)?
                    .get(..usize::try_from(PROBE_LEN.min(p.len)).ok()?)
            });
            p.into_partition(probe.unwrap_or(&[]))
        })
        .collect();
    Ok(Layout {
        table,
        disk_size,
        partitions,
    })
}

/// What a partition table says about one partition, before probing it.
struct RawPart {
    number: u32,
    start: u64,
    len: u64,
    part_type: PartType,
    guid: Option<String>,
}

impl RawPart {
    fn into_partition(self, probe: &[u8]) -> Partition {
        let (fs, label) = detect_fs(probe);
        Partition {
            number: self.number,
            start: self.start,
            len: self.len,
            part_type: self.part_type,
            fs,
            label,
            guid: self.guid,
        }
    }
}

fn not_a_disk(reason: impl Into<String>) -> ImageError {
    ImageError::NotADiskImage {
        reason: reason.into(),
    }
}

fn bad_table(reason: impl Into<String>) -> ImageError {
    ImageError::BadPartitionTable {
        reason: reason.into(),
    }
}

/// Parses the MBR, and the GPT behind a protective MBR.
fn parse_table(head: &[u8], disk_size: u64) -> Result<(TableKind, Vec<RawPart>), ImageError> {
    let Some(mbr_bytes) = head.get(..512) else {
        return Err(not_a_disk(format!(
            "only {} bytes, less than one 512-byte sector",
            head.len()
                .min(usize::try_from(disk_size).unwrap_or(usize::MAX))
        )));
    };
    if mbr_bytes[510..512] != [0x55, 0xAA] {
        return Err(not_a_disk(format!(
            "no MBR or GPT signature at byte 510 (found {:02x} {:02x}, want 55 aa)",
            mbr_bytes[510], mbr_bytes[511]
        )));
    }
    if detect_fs(head).0 != FsKind::Unknown {
        return Err(not_a_disk(format!(
            "sector 0 is the boot sector of a bare {} filesystem, not a partition table",
            detect_fs(head).0
        )));
    }
    let mbr = mbrman::MBRHeader::read_from(&mut Cursor::new(mbr_bytes))
        .map_err(|e| bad_table(format!("reading the MBR: {e}")))?;
    if mbr.iter().any(|(_, p)| p.sys == 0xEE) {
        return parse_gpt(head, disk_size);
    }
    let disk_signature = u32::from_le_bytes(mbr.disk_signature);
    let mut parts = Vec::new();
    for (i, p) in mbr.iter() {
        if p.is_unused() {
            continue;
        }
        let number = u32::try_from(i).unwrap_or(u32::MAX);
        let start = u64::from(p.starting_lba) * SECTOR;
        let len = u64::from(p.sectors) * SECTOR;
        check_bounds(number, start, len, disk_size)?;
        parts.push(RawPart {
            number,
            start,
            len,
            part_type: PartType::Mbr(p.sys),
            guid: None,
        });
    }
    Ok((TableKind::Mbr { disk_signature }, parts))
}

/// Parses the primary GPT (header at LBA 1) with the `gpt` crate. The backup header is not
/// needed and not read.
fn parse_gpt(head: &[u8], disk_size: u64) -> Result<(TableKind, Vec<RawPart>), ImageError> {
    let lb = gpt::disk::LogicalBlockSize::Lb512;
    let mut cur = Cursor::new(head);
    let header = gpt::header::read_header_from_arbitrary_device(&mut cur, lb).map_err(|e| {
        bad_table(format!(
            "protective MBR but no valid GPT header at byte 512: {e}"
        ))
    })?;
    // The gpt crate asserts these; check first so bad input is an error, not a panic.
    if header.part_size != 128 {
        return Err(bad_table(format!(
            "GPT entry size {} (want 128)",
            header.part_size
        )));
    }
    if header.num_parts > 4096 {
        return Err(bad_table(format!(
            "GPT claims {} partition entries",
            header.num_parts
        )));
    }
    let table_end = header
        .part_start
        .checked_mul(SECTOR)
        .and_then(|s| s.checked_add(u64::from(header.num_parts) * 128));
    if table_end.is_none_or(|e| e > head.len() as u64) {
        return Err(bad_table(format!(
            "GPT entries at LBA {} lie outside the first {} bytes read",
            header.part_start,
            head.len()
        )));
    }
    let entries = gpt::partition::file_read_partitions(&mut cur, &header, lb)
        .map_err(|e| bad_table(format!("reading GPT entries: {e}")))?;
    let mut parts = Vec::new();
    for (number, p) in entries {
        if !p.is_used() {
            continue;
        }
        let start = p.first_lba.checked_mul(SECTOR);
        let len = p
            .last_lba
            .checked_sub(p.first_lba)
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(SECTOR));
        let (Some(start), Some(len)) = (start, len) else {
            return Err(bad_table(format!(
                "GPT partition {number} has LBAs {}..={}",
                p.first_lba, p.last_lba
            )));
        };
        check_bounds(number, start, len, disk_size)?;
        parts.push(RawPart {
            number,
            start,
            len,
            part_type: PartType::Gpt(p.part_type_guid.guid.to_string().to_uppercase()),
            guid: Some(p.part_guid.to_string().to_lowercase()),
        });
    }
    let disk_guid = header.disk_guid.to_string().to_lowercase();
    Ok((TableKind::Gpt { disk_guid }, parts))
}

fn check_bounds(number: u32, start: u64, len: u64, disk_size: u64) -> Result<(), ImageError> {
    if start == 0 {
        return Err(bad_table(format!(
            "partition {number} starts at sector 0, over the table"
        )));
    }
    match start.checked_add(len) {
        Some(end) if end <= disk_size => Ok(()),
        _ => Err(bad_table(format!(
            "partition {number} (bytes {start}+{len}) ends past the end of the {disk_size}-byte \
             image; is the image truncated?"
        ))),
    }
}

/// Detects the filesystem from the first bytes of a partition (at least 2048 for ext4, 512 for
/// FAT; [`PROBE_LEN`] is plenty) and reads its label. Pure; never panics.
pub fn detect_fs(probe: &[u8]) -> (FsKind, Option<String>) {
    if let Some(sb) = probe.get(1024..1024 + 136)
        && sb[0x38..0x3A] == [0x53, 0xEF]
    {
        return (FsKind::Ext4, clean_label(&sb[0x78..0x88]));
    }
    if let Some(g) = fat::FatGeometry::parse(probe) {
        return (g.kind, g.label);
    }
    (FsKind::Unknown, None)
}

/// A label from fixed-width bytes: NULs and spaces trimmed, `None` if empty or "NO NAME".
fn clean_label(raw: &[u8]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let s = String::from_utf8_lossy(&raw[..end]).trim().to_owned();
    (!s.is_empty() && s != "NO NAME").then_some(s)
}

/// Reads `len` bytes at `offset`, fewer if the stream ends first.
fn read_at<R: Read + Seek>(r: &mut R, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    r.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    r.take(len).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2-partition MBR like Raspberry Pi OS's, as bytes.
    fn mbr(sig: u32, parts: &[(u8, u32, u32)]) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[440..444].copy_from_slice(&sig.to_le_bytes());
        for (i, &(ty, start, sectors)) in parts.iter().enumerate() {
            let e = 446 + 16 * i;
            b[e + 4] = ty;
            b[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
            b[e + 12..e + 16].copy_from_slice(&sectors.to_le_bytes());
        }
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn mbr_partitions_and_partuuids() {
        let head = mbr(
            0x5e3d_a1b7,
            &[(0x0c, 16384, 1048576), (0x83, 1064960, 4096)],
        );
        let l = layout_from_bytes(&head, (1064960 + 4096) * 512).unwrap();
        assert_eq!(
            l.table,
            TableKind::Mbr {
                disk_signature: 0x5e3d_a1b7
            }
        );
        assert_eq!(l.partitions.len(), 2);
        assert_eq!(l.partitions[0].start, 16384 * 512);
        assert_eq!(l.partitions[1].len, 4096 * 512);
        assert_eq!(l.partitions[1].part_type, PartType::Mbr(0x83));
        assert_eq!(l.partuuid(2), "5e3da1b7-02");
        // Nothing probed: the partitions lie beyond the head.
        assert!(l.partitions.iter().all(|p| p.fs == FsKind::Unknown));
        let e = l.boot().unwrap_err().to_string();
        assert!(
            e.contains("no FAT boot partition") && e.contains("p2 unknown type 0x83"),
            "{e}"
        );
        assert!(l.root().is_none());
    }

    #[test]
    fn rejects_what_is_not_a_disk() {
        let e = layout_from_bytes(&[0u8; 1024], 1024)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no MBR or GPT signature at byte 510"), "{e}");
        let e = layout_from_bytes(b"hello", 5).unwrap_err().to_string();
        assert!(e.contains("only 5 bytes"), "{e}");
    }

    #[test]
    fn truncated_image_is_named() {
        let head = mbr(1, &[(0x0c, 2048, 100)]);
        let e = layout_from_bytes(&head, 2048 * 512)
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn ext4_label_from_superblock() {
        let mut p = vec![0u8; 2048];
        p[1024 + 0x38] = 0x53;
        p[1024 + 0x39] = 0xEF;
        p[1024 + 0x78..1024 + 0x7E].copy_from_slice(b"rootfs");
        assert_eq!(detect_fs(&p), (FsKind::Ext4, Some("rootfs".to_owned())));
        assert_eq!(detect_fs(&p[..1100]), (FsKind::Unknown, None));
    }

    proptest::proptest! {
        #[test]
        fn layout_from_bytes_never_panics(bytes in proptest::collection::vec(0u8..=255, 0..2048),
                                          size in 0u64..1 << 40) {
            let _ = layout_from_bytes(&bytes, size);
        }

        #[test]
        fn layout_from_mbr_like_bytes_never_panics(
            entries in proptest::collection::vec((0u8..=255, 0u32..=u32::MAX, 0u32..=u32::MAX), 0..4),
            sig in 0u32..=u32::MAX, size in 0u64..1 << 42) {
            let head = mbr(sig, &entries);
            if let Ok(l) = layout_from_bytes(&head, size) {
                for p in &l.partitions {
                    proptest::prop_assert!(p.end() <= size);
                }
                let _ = l.boot();
                let _ = l.root();
            }
        }
    }
}
