//! Block map and bmap tests (issue 3) against real tools: filesystems made by `mkfs.fat` and
//! `mke2fs`, allocation cross-checked with `dumpe2fs`, and the `.bmap` consumed by the real
//! `bmaptool copy` (Debian `bmap-tools`), whose output is then checked with `fsck.fat -n`,
//! `e2fsck -fn`, mtools and `debugfs`.
//!
//! Free space is filled with junk first, so a map that followed "non-zero" instead of the
//! allocation would show up as too large, and one that missed allocated blocks as a broken
//! filesystem in the copy.

mod common;

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::process::Command;

use common::{MiniOpts, Release, extract_range, fill_junk, mini_image, require_tool};
use piforge::image::blockmap::{BlockMap, ByteRange, FsKind, map_image};
use piforge::image::bmap::write_bmap;
use piforge_test_support::run_ok as run;

fn map_file(path: &Path) -> BlockMap {
    let mut f = File::open(path).unwrap();
    let size = f.metadata().unwrap().len();
    map_image(&mut f, size).unwrap()
}

/// What `dumpe2fs` says about an ext2/3/4 filesystem in a file: block size, and for every block
/// whether it is in use (not listed as free by any group).
struct Dumpe2fs {
    block_size: u64,
    used: Vec<bool>,
    text: String,
}

fn dumpe2fs(path: &Path) -> Dumpe2fs {
    let tool = require_tool("dumpe2fs", "e2fsprogs");
    let text = run(Command::new(tool).arg(path));
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("dumpe2fs printed no {name}"))
    };
    let block_size = field("Block size:");
    let count = field("Block count:");
    let mut used = vec![true; count as usize];
    for line in text.lines() {
        let Some(list) = line.trim().strip_prefix("Free blocks: ") else {
            continue;
        };
        for part in list.split(", ").filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            for blk in a.trim().parse::<u64>().unwrap()..=b.trim().parse::<u64>().unwrap() {
                used[blk as usize] = false;
            }
        }
    }
    Dumpe2fs {
        block_size,
        used,
        text,
    }
}

/// The blocks of `[part_start, part_start + blocks * bs)` our map marks, as one bool each.
fn mapped_blocks(map: &BlockMap, part_start: u64, block_size: u64, blocks: usize) -> Vec<bool> {
    let mut v = vec![false; blocks];
    for r in &map.ranges {
        let (s, e) = (
            r.start.max(part_start),
            r.end.min(part_start + blocks as u64 * block_size),
        );
        if s >= e {
            continue;
        }
        assert_eq!(
            (s - part_start) % block_size,
            0,
            "range {r:?} not block-aligned"
        );
        for b in (s - part_start) / block_size..(e - part_start).div_ceil(block_size) {
            v[b as usize] = true;
        }
    }
    v
}

/// Some files for a root filesystem: a few MiB of incompressible bytes and a tree of small ones.
fn root_tree(dir: &Path) {
    fs::create_dir_all(dir.join("usr/lib/piforge")).unwrap();
    let mut x: u32 = 12345;
    let big: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    fs::write(dir.join("usr/lib/piforge/big.bin"), &big).unwrap();
    for i in 0..50 {
        fs::write(
            dir.join(format!("usr/lib/piforge/small-{i}.txt")),
            format!("file {i}\n"),
        )
        .unwrap();
    }
}

fn ext4_case(
    features: &str,
    size: &str,
    block_size: Option<&str>,
) -> (tempfile::TempDir, Dumpe2fs, BlockMap) {
    let mke2fs = require_tool("mke2fs", "e2fsprogs");
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("tree");
    root_tree(&tree);
    let img = tmp.path().join("fs.ext4");
    let mut cmd = Command::new(mke2fs);
    cmd.args(["-q", "-F", "-t", "ext4", "-O", features, "-d"])
        .arg(&tree);
    if let Some(bs) = block_size {
        cmd.args(["-b", bs]);
    }
    run(cmd.arg(&img).arg(size));
    let d = dumpe2fs(&img);
    let map = map_file(&img);
    (tmp, d, map)
}

#[test]
fn ext4_64bit_1k_blocks_map_equals_dumpe2fs_allocation() {
    let (_tmp, d, map) = ext4_case("64bit,metadata_csum", "300M", None);
    assert_eq!(d.block_size, 1024);
    assert!(
        d.text.contains("Group descriptor size:    64"),
        "not 64-byte descriptors"
    );
    assert!(
        d.text.contains("BLOCK_UNINIT"),
        "no BLOCK_UNINIT group to test"
    );
    assert_eq!(map.partitions.len(), 1);
    assert_eq!(map.partitions[0].kind, FsKind::Ext4);
    let ours = mapped_blocks(&map, 0, d.block_size, d.used.len());
    let diff: Vec<usize> = (0..ours.len()).filter(|&i| ours[i] != d.used[i]).collect();
    assert!(
        diff.is_empty(),
        "{} blocks differ from dumpe2fs, first {:?}",
        diff.len(),
        &diff[..diff.len().min(10)]
    );
    // And the map is far smaller than the filesystem.
    assert!(
        map.mapped_bytes() < 300 << 20 >> 2,
        "mapped {}",
        map.mapped_bytes()
    );
}

#[test]
fn ext4_32bit_4k_blocks_map_equals_dumpe2fs_allocation() {
    let (_tmp, d, map) = ext4_case("^64bit,^huge_file", "600M", Some("4096"));
    assert_eq!(d.block_size, 4096);
    assert!(!d.text.contains("Group descriptor size:    64"));
    assert_eq!(map.partitions[0].kind, FsKind::Ext4);
    let ours = mapped_blocks(&map, 0, d.block_size, d.used.len());
    let diff: Vec<usize> = (0..ours.len()).filter(|&i| ours[i] != d.used[i]).collect();
    assert!(
        diff.is_empty(),
        "{} blocks differ from dumpe2fs, first {:?}",
        diff.len(),
        &diff[..diff.len().min(10)]
    );
}

/// Fills every block `dumpe2fs` lists as free with junk, at `offset` in `image`.
fn junk_ext4_free_space(image: &Path, offset: u64, d: &Dumpe2fs) {
    let mut b = 0;
    while b < d.used.len() {
        if d.used[b] {
            b += 1;
            continue;
        }
        let start = b;
        while b < d.used.len() && !d.used[b] {
            b += 1;
        }
        fill_junk(
            image,
            offset + start as u64 * d.block_size,
            (b - start) as u64 * d.block_size,
        );
    }
}

/// Every mapped range of `target` equals the image.
fn assert_mapped_ranges_equal(image: &Path, target: &Path, map: &BlockMap) {
    for r in &map.ranges {
        assert_eq!(
            common::sha256_range(image, r.start, r.len()),
            common::sha256_range(target, r.start, r.len()),
            "range {r:?} differs after bmaptool copy"
        );
    }
}

fn bmaptool_copy(bmap: &Path, image: &Path, target: &Path) -> Result<String, String> {
    let tool = require_tool("bmaptool", "bmap-tools");
    let out = Command::new(tool)
        .arg("copy")
        .arg("--bmap")
        .arg(bmap)
        .arg(image)
        .arg(target)
        .output()
        .expect("running bmaptool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

fn write_bmap_file(image: &Path, map: &BlockMap, bmap: &Path) -> piforge::image::bmap::BmapSummary {
    let mut f = File::open(image).unwrap();
    write_bmap(&mut f, map, File::create(bmap).unwrap()).unwrap()
}

#[test]
fn bmaptool_copies_a_pi_shaped_image_with_junk_in_free_space() {
    let tree = tempfile::tempdir().unwrap();
    root_tree(tree.path());
    let mut extra_root = Vec::new();
    for entry in fs::read_dir(tree.path().join("usr/lib/piforge")).unwrap() {
        let e = entry.unwrap();
        let rel = format!("usr/lib/piforge/{}", e.file_name().to_string_lossy());
        extra_root.push((rel, fs::read(e.path()).unwrap()));
    }
    let img = mini_image(
        Release::Trixie,
        &MiniOpts {
            boot_sectors: Some(140_000),
            root_size: 64 << 20,
            junk_free_space: true,
            extra_root,
            ..MiniOpts::default()
        },
    );
    let path = img.path().to_path_buf();
    // Junk in the ext4 free blocks too, and a "bootloader" blob between MBR and p1.
    let root_part = extract_range(&path, img.root.0, img.root.1);
    let d = dumpe2fs(root_part.path());
    junk_ext4_free_space(&path, img.root.0, &d);
    {
        let mut f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(b"a bootloader blob outside any partition")
            .unwrap();
    }

    let map = map_file(&path);
    let kinds: Vec<FsKind> = map.partitions.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, vec![FsKind::Fat, FsKind::Ext4]);
    assert!(
        map.ranges
            .iter()
            .any(|r| r.start <= 1 << 20 && r.end > 1 << 20),
        "blob not mapped"
    );
    // The junk-filled FAT is mostly free: the map must not follow the junk.
    assert!(
        map.partitions[0].used < img.boot.1 / 4,
        "FAT mapped {} of {}",
        map.partitions[0].used,
        img.boot.1
    );
    // The ext4 part is exactly the allocation.
    let ours = mapped_blocks(&map, img.root.0, d.block_size, d.used.len());
    assert!(ours == d.used, "ext4 map differs from dumpe2fs");

    let tmp = tempfile::tempdir().unwrap();
    let bmap = tmp.path().join("pi.bmap");
    let summary = write_bmap_file(&path, &map, &bmap);
    assert!(summary.mapped_blocks * 4096 < img.disk_size / 4);
    let target = tmp.path().join("target.img");
    bmaptool_copy(&bmap, &path, &target).unwrap();
    assert_eq!(fs::metadata(&target).unwrap().len(), img.disk_size);
    assert_mapped_ranges_equal(&path, &target, &map);

    // The copy is a working disk: FAT clean with its files, ext4 clean with its files.
    common::fsck_fat(&target, img.boot.0, img.boot.1).unwrap();
    assert!(
        common::mtools_list(&target, img.boot.0, "/")
            .iter()
            .any(|n| n == "cmdline.txt")
    );
    assert_eq!(
        common::mtools_read(&target, img.boot.0, "/cmdline.txt"),
        common::mtools_read(&path, img.boot.0, "/cmdline.txt")
    );
    let root_copy = extract_range(&target, img.root.0, img.root.1);
    run(Command::new(require_tool("e2fsck", "e2fsprogs"))
        .arg("-fn")
        .arg(root_copy.path()));
    let dumped = tmp.path().join("big.bin");
    run(Command::new(require_tool("debugfs", "e2fsprogs"))
        .arg("-R")
        .arg(format!(
            "dump /usr/lib/piforge/big.bin {}",
            dumped.display()
        ))
        .arg(root_copy.path()));
    assert_eq!(
        fs::read(&dumped).unwrap(),
        fs::read(tree.path().join("usr/lib/piforge/big.bin")).unwrap()
    );
}

#[test]
fn bmaptool_copies_an_xz_gpt_image_and_refuses_a_corrupted_one() {
    let (img, _guids) = common::gpt_image();
    let path = img.path().to_path_buf();
    let map = map_file(&path);
    let kinds: Vec<FsKind> = map.partitions.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, vec![FsKind::Fat, FsKind::Ext4]);
    // The backup GPT at the end of the disk is outside partitions and must be mapped.
    let end = img.disk_size;
    assert!(
        map.ranges.iter().any(|r| r.end == end),
        "backup GPT not mapped"
    );

    let tmp = tempfile::tempdir().unwrap();
    let bmap = tmp.path().join("gpt.bmap");
    write_bmap_file(&path, &map, &bmap);
    let xz = tmp.path().join("gpt.img.xz");
    let out = Command::new("xz")
        .args(["-T0", "-c", "-1"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    fs::write(&xz, out.stdout).unwrap();
    let target = tmp.path().join("target.img");
    bmaptool_copy(&bmap, &xz, &target).unwrap();
    assert_mapped_ranges_equal(&path, &target, &map);
    common::fsck_fat(&target, img.boot.0, img.boot.1).unwrap();

    // One flipped byte inside a mapped range: bmaptool's per-range sha256 must catch it.
    let victim = map
        .ranges
        .iter()
        .find(|r| r.start >= img.root.0)
        .copied()
        .unwrap_or(ByteRange::at(0, 1));
    let mut bytes = common::read_range(&path, victim.start, 1);
    bytes[0] ^= 0xFF;
    {
        let mut f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(victim.start)).unwrap();
        f.write_all(&bytes).unwrap();
    }
    let err = bmaptool_copy(&bmap, &path, &tmp.path().join("bad.img")).unwrap_err();
    assert!(err.to_lowercase().contains("checksum"), "{err}");
}
