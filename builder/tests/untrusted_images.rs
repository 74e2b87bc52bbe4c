//! Issue 17, finding 14: the parsers of untrusted images (GPT header and entries, ext4
//! superblock, group descriptors, block bitmaps) must not let the image choose how much memory
//! we allocate, must not overflow, and must not map an ext4 whose journal needs recovery from
//! its (possibly stale) bitmaps.
//!
//! Real images: a GPT disk written with the `gpt` crate and filesystems made by `mke2fs`, then
//! one field made hostile. The whole test process runs under an address-space limit
//! (`prlimit --as`, util-linux), so an allocation sized by a header instead of by the file
//! aborts the test instead of passing quietly on a machine with overcommit.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Once;

use common::require_tool;
use piforge::image::blockmap::{self, ByteRange, FsKind, map_image};

/// Address space this test process may use: far more than the tests need (images of a few
/// MiB), far less than what the hostile headers below once made us allocate.
const ADDRESS_SPACE: u64 = 4 << 30;

fn limit_address_space() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prlimit = require_tool("prlimit", "util-linux");
        let out = Command::new(prlimit)
            .args(["--pid", &std::process::id().to_string()])
            .arg(format!("--as={ADDRESS_SPACE}"))
            .output()
            .expect("running prlimit");
        assert!(
            out.status.success(),
            "prlimit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

fn read(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    common::read_range(path, offset, len as u64)
}

fn map(path: &Path) -> Result<blockmap::BlockMap, blockmap::BlockMapError> {
    let mut f = File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    map_image(&mut f, size)
}

/// An 8 MiB ext4 of 1 KiB blocks made by mke2fs with `features`, as a bare filesystem.
fn ext4(features: &str) -> tempfile::NamedTempFile {
    ext4_of(features, None)
}

/// [`ext4`], holding the files of `tree` when given.
fn ext4_of(features: &str, tree: Option<&Path>) -> tempfile::NamedTempFile {
    let mke2fs = require_tool("mke2fs", "e2fsprogs");
    let img = tempfile::Builder::new().suffix(".ext4").tempfile().unwrap();
    let mut cmd = Command::new(mke2fs);
    cmd.args(["-q", "-F", "-t", "ext4", "-b", "1024", "-O", features]);
    if let Some(t) = tree {
        cmd.arg("-d").arg(t);
    }
    let out = cmd.arg(img.path()).arg("8M").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

/// Byte offset of the superblock fields we patch.
const SB: u64 = 1024;
const S_BLOCKS_COUNT_LO: u64 = SB + 0x4;
const S_BLOCKS_COUNT_HI: u64 = SB + 0x150;

fn blocks_count(path: &Path) -> u64 {
    let lo = read(path, S_BLOCKS_COUNT_LO, 4);
    let hi = read(path, S_BLOCKS_COUNT_HI, 4);
    u64::from(u32::from_le_bytes(lo.try_into().unwrap()))
        | u64::from(u32::from_le_bytes(hi.try_into().unwrap())) << 32
}

fn set_blocks_count(path: &Path, n: u64) {
    patch(path, S_BLOCKS_COUNT_LO, &(n as u32).to_le_bytes());
    patch(path, S_BLOCKS_COUNT_HI, &((n >> 32) as u32).to_le_bytes());
}

#[test]
fn issue17_gpt_entry_size_from_the_header_is_capped() {
    limit_address_space();
    let (img, _) = common::gpt_image();
    let path = img.path();
    // 1024 entries of 1 GiB each: 1 TiB of "entries" in an 81 MiB file.
    patch(path, 512 + 80, &1024u32.to_le_bytes());
    patch(path, 512 + 84, &(1u32 << 30).to_le_bytes());
    let header = read(path, 512, 512);
    assert_eq!(
        blockmap::parse_gpt_header(&header),
        None,
        "a 1 GiB GPT entry size was accepted"
    );
    // 128 << n but above the cap, and not a power of two: refused too.
    for size in [8192u32, 200] {
        let mut h = header.clone();
        h[84..88].copy_from_slice(&size.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        assert_eq!(blockmap::parse_gpt_header(&h), None, "entry size {size}");
    }
    // The image still maps (its protective MBR partition, whole), without the header's say.
    let m = map(path).expect("mapping an image with a hostile GPT header");
    assert_eq!(m.partitions.len(), 1, "{:?}", m.partitions);
    assert_eq!(m.partitions[0].kind, FsKind::Whole);
    // An entries LBA whose byte offset overflows 64 bits is no table either.
    let mut h = header;
    h[80..84].copy_from_slice(&128u32.to_le_bytes());
    h[84..88].copy_from_slice(&128u32.to_le_bytes());
    h[72..80].copy_from_slice(&(u64::MAX / 256).to_le_bytes());
    assert_eq!(blockmap::parse_gpt_header(&h), None);
}

#[test]
fn issue17_ext4_block_count_that_wraps_64_bits_is_refused() {
    limit_address_space();
    let img = ext4("64bit,^has_journal");
    let path = img.path();
    let real = blocks_count(path);
    // real + 2^54 blocks of 1 KiB: the size in bytes wraps to exactly the real size, which
    // passed "not larger than the partition" and then sized the group descriptor read.
    set_blocks_count(path, real + (1 << 54));
    let sb = read(path, SB, 1024);
    let e = blockmap::parse_ext4_superblock(&sb)
        .expect_err("a wrapping s_blocks_count was accepted")
        .to_string();
    assert!(e.contains("overflows 64 bits"), "{e}");
    let m = map(path).expect("mapping");
    assert_eq!(
        m.partitions[0].kind,
        FsKind::Whole,
        "an ext4 with a wrapping size was mapped from its bitmaps"
    );
}

#[test]
fn issue17_ext4_group_descriptors_are_read_only_inside_the_file() {
    limit_address_space();
    let img = ext4("64bit,^has_journal");
    let path = img.path();
    // 2^40 blocks of 1 KiB (1 PiB; no overflow) in an 8 MiB file, inside a partition that
    // claims 4 PiB: the descriptor table would be 2^27 groups * 64 bytes = 8 GiB.
    set_blocks_count(path, 1 << 40);
    let mut f = File::open(path).unwrap();
    let e = blockmap::ext4_ranges(&mut f, ByteRange::at(0, 1 << 52))
        .expect_err("a 1 PiB filesystem in an 8 MiB file was mapped");
    let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(
        chain.contains("ext4 group descriptors") && chain.contains("past the end of the image"),
        "{chain}"
    );
}

#[test]
fn issue17_ext4_with_a_journal_that_needs_recovery_is_not_mapped_from_its_bitmaps() {
    limit_address_space();
    let img = ext4("has_journal");
    let path = img.path();
    let clean = map(path).unwrap();
    assert_eq!(clean.partitions[0].kind, FsKind::Ext4, "the clean one maps");
    // What a card pulled out of a running Pi looks like: the real tool sets the flag (and
    // keeps the superblock checksum right).
    let debugfs = require_tool("debugfs", "e2fsprogs");
    let out = Command::new(debugfs)
        .args(["-w", "-R", "feature needs_recovery"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sb = read(path, SB, 1024);
    let e = blockmap::parse_ext4_superblock(&sb)
        .expect_err("needs_recovery was ignored")
        .to_string();
    assert!(
        e.contains("journal needs recovery") && e.contains("e2fsck"),
        "{e}"
    );
    let dirty = map(path).unwrap();
    assert_eq!(
        dirty.partitions[0].kind,
        FsKind::Whole,
        "a dirty ext4 must be copied whole, not from stale bitmaps"
    );
    assert_eq!(dirty.mapped_bytes(), 8 << 20);
}

/// Found by the `ext4` fuzz target: an inode claiming 4 GiB in a small image. `ext4-view`'s
/// `read` allocates the claimed size before reading; piforge reads the root's small files in
/// chunks and stops at 8 MiB, so `inspect`/`build` refuse the image instead.
#[test]
fn issue17_an_inode_claiming_gigabytes_is_not_allocated() {
    limit_address_space();
    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tree.path().join("etc")).unwrap();
    std::fs::write(tree.path().join("etc/os-release"), "ID=debian\n").unwrap();
    let img = ext4_of("has_journal", Some(tree.path()));
    let debugfs = require_tool("debugfs", "e2fsprogs");
    let out = Command::new(debugfs)
        .args(["-w", "-R", "sif /etc/os-release size 0x17fffffff"])
        .arg(img.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let len = std::fs::metadata(img.path()).unwrap().len();
    let part = piforge::image::Partition {
        number: 2,
        start: 0,
        len,
        part_type: piforge::image::PartType::Mbr(0x83),
        fs: piforge::image::FsKind::Ext4,
        label: None,
        guid: None,
    };
    let e = piforge::image::ext4::root_facts(File::open(img.path()).unwrap(), &part).unwrap_err();
    assert!(
        e.to_string().contains("/etc/os-release: longer than"),
        "{e}"
    );
}
