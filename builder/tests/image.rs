//! The image model on generated Raspberry-Pi-OS-shaped images (see `common/mod.rs`): layouts of
//! all three releases and GPT, bad input, root facts, FAT edits checked by `fsck.fat -n` and by
//! mtools, the partition window's isolation, fatfs 0.3.6's FAT32 root-growth bug, FatFull.

mod common;

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};

use common::{ArchEvidence, MiniOpts, Release, mini_image};
use piforge::arch::Arch;
use piforge::image::fat::FatGeometry;
use piforge::image::{
    BootFs, FsKind, ImageError, NetworkStack, PartType, PartitionWindow, TableKind,
    layout_from_bytes, read_layout, root_facts,
};

fn layout_of(img: &common::MiniImage) -> piforge::image::Layout {
    let mut f = std::fs::File::open(img.path()).unwrap();
    read_layout(&mut f).unwrap()
}

#[test]
fn layout_of_all_three_releases() {
    for r in Release::ALL {
        let fx = r.layout();
        let img = mini_image(r, &MiniOpts::default());
        let l = layout_of(&img);
        assert_eq!(
            l.table,
            TableKind::Mbr {
                disk_signature: common::DISK_SIGNATURE
            },
            "{r:?}"
        );
        assert_eq!(l.disk_size, img.disk_size);
        assert_eq!(l.partitions.len(), 2, "{r:?}");
        let boot = l.boot().unwrap();
        assert_eq!(boot.number, 1);
        assert_eq!(boot.start, fx.boot().start * 512, "{r:?}");
        assert_eq!(boot.len, fx.boot().sectors.unwrap() * 512, "{r:?}");
        assert_eq!(boot.fs, FsKind::Fat32);
        assert_eq!(boot.label.as_deref(), Some("bootfs"));
        assert_eq!(boot.part_type, PartType::Mbr(0x0c));
        let root = l.root().unwrap();
        assert_eq!(root.number, 2);
        assert_eq!(root.start, fx.root().start * 512, "{r:?}");
        assert_eq!(root.fs, FsKind::Ext4);
        assert_eq!(root.label.as_deref(), Some("rootfs"));
        assert_eq!(root.part_type, PartType::Mbr(0x83));
        // PARTUUIDs agree with what the image's cmdline.txt says (DISKID replaced).
        assert_eq!(l.partuuid(2), "5e3da1b7-02");
        let cmdline = String::from_utf8(img.mtype("cmdline.txt").unwrap()).unwrap();
        assert!(
            cmdline.contains(&format!("root=PARTUUID={} ", l.partuuid(2))),
            "{cmdline}"
        );
        // The real cluster size survives (Trixie: 512 bytes).
        let fs = BootFs::open(img.open_rw(), boot).unwrap();
        let want_cluster = fx.boot().sectors_per_cluster.unwrap() * 512;
        assert_eq!(fs.geometry().cluster_size, want_cluster, "{r:?}");
        assert_eq!(fs.label(), "bootfs");
        // The pure core agrees on the table when handed only the head.
        let head = common::read_range(img.path(), 0, 1 << 20);
        let pure = layout_from_bytes(&head, img.disk_size).unwrap();
        assert_eq!(pure.table, l.table);
        assert_eq!(pure.partitions.len(), 2);
        assert_eq!(pure.partitions[1].start, root.start);
    }
}

#[test]
fn partuuid_follows_the_disk_signature() {
    let opts = MiniOpts {
        disk_signature: 0x0000_abcd,
        ..MiniOpts::default()
    };
    let img = mini_image(Release::Bookworm, &opts);
    let l = layout_of(&img);
    assert_eq!(l.partuuid(1), "0000abcd-01");
    assert_eq!(l.partuuid(1), img.partuuid(1));
    let facts = root_facts(std::fs::File::open(img.path()).unwrap(), l.root().unwrap()).unwrap();
    assert_eq!(facts.boot_mount, "/boot/firmware");
}

#[test]
fn gpt_image_layout() {
    let (img, guids) = common::gpt_image();
    let l = layout_of(&img);
    let TableKind::Gpt { disk_guid } = &l.table else {
        panic!("not GPT: {:?}", l.table)
    };
    assert_eq!(disk_guid.len(), 36);
    assert_eq!(disk_guid, &disk_guid.to_lowercase());
    let boot = l.boot().unwrap();
    assert_eq!(
        (boot.number, boot.start, boot.len),
        (1, img.boot.0, img.boot.1)
    );
    assert_eq!(boot.fs, FsKind::Fat32);
    assert_eq!(
        boot.part_type,
        PartType::Gpt(piforge::image::GPT_EFI_SYSTEM.to_owned())
    );
    let root = l.root().unwrap();
    assert_eq!((root.number, root.start), (2, img.root.0));
    assert_eq!(
        root.part_type,
        PartType::Gpt(piforge::image::GPT_LINUX_DATA.to_owned())
    );
    assert_eq!(l.partuuid(1), guids[0]);
    assert_eq!(l.partuuid(2), guids[1]);
    assert_eq!(l.partuuid(9), "");
    // FAT editing works the same on GPT.
    let fs = BootFs::open(img.open_rw(), boot).unwrap();
    fs.write("piforge/card.toml", b"x = 1\n").unwrap();
    fs.flush().unwrap();
    img.fsck_boot().unwrap();
    assert_eq!(img.mtype("piforge/card.toml").unwrap(), b"x = 1\n");
}

#[test]
fn not_a_disk_image() {
    let mut text = std::io::Cursor::new(b"this is a text file, not an image\n".repeat(40));
    let e = read_layout(&mut text).unwrap_err();
    assert!(matches!(e, ImageError::NotADiskImage { .. }));
    assert!(
        e.to_string()
            .contains("no MBR or GPT signature at byte 510"),
        "{e}"
    );
    let e = read_layout(&mut std::io::Cursor::new(vec![0u8; 100])).unwrap_err();
    assert!(
        e.to_string().contains("less than one 512-byte sector"),
        "{e}"
    );
    // A bare FAT filesystem has 55 aa at 510 but no partition table.
    let img = mini_image(Release::Bookworm, &MiniOpts::default());
    let part = common::extract_range(img.path(), img.boot.0, img.boot.1);
    let e = read_layout(&mut std::fs::File::open(part.path()).unwrap()).unwrap_err();
    assert!(e.to_string().contains("bare fat32 filesystem"), "{e}");
}

#[test]
fn truncated_image_is_a_bad_table() {
    let img = mini_image(Release::Bullseye, &MiniOpts::default());
    img.file.as_file().set_len(img.root.0 + 4096).unwrap();
    let e = read_layout(&mut std::fs::File::open(img.path()).unwrap()).unwrap_err();
    assert!(matches!(e, ImageError::BadPartitionTable { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn no_fat_partition() {
    let img = mini_image(Release::Bookworm, &MiniOpts::default());
    // Wipe p1's boot sector and its backup: the partition no longer holds a FAT.
    let mut f = img.open_rw();
    for sector in [0u64, 6] {
        f.seek(SeekFrom::Start(img.boot.0 + sector * 512)).unwrap();
        f.write_all(&[0u8; 512]).unwrap();
    }
    let l = layout_of(&img);
    assert_eq!(l.partitions[0].fs, FsKind::Unknown);
    let e = l.boot().unwrap_err();
    assert!(matches!(e, ImageError::NoBootPartition { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("no FAT boot partition") && msg.contains("p2 ext4"),
        "{msg}"
    );
    let e = BootFs::open(img.open_rw(), &l.partitions[0]).unwrap_err();
    assert!(matches!(e, ImageError::NotFat { number: 1, .. }), "{e}");
}

#[test]
fn root_facts_of_all_three_releases() {
    let cases = [
        (
            Release::Bullseye,
            "raspbian",
            "/boot",
            NetworkStack::Dhcpcd,
            false,
        ),
        (
            Release::Bookworm,
            "debian",
            "/boot/firmware",
            NetworkStack::NetworkManager,
            false,
        ),
        (
            Release::Trixie,
            "debian",
            "/boot/firmware",
            NetworkStack::NetworkManager,
            true,
        ),
    ];
    for (r, id, mount, net, cloud) in cases {
        let img = mini_image(r, &MiniOpts::default());
        let l = layout_of(&img);
        let f = root_facts(std::fs::File::open(img.path()).unwrap(), l.root().unwrap()).unwrap();
        assert_eq!(f.os_id, id, "{r:?}");
        assert_eq!(f.version_codename, r.name());
        assert!(f.pretty_name.contains(r.name()), "{f:?}");
        assert_eq!(f.boot_mount, mount, "{r:?}");
        assert_eq!(f.network, net, "{r:?}");
        assert_eq!(f.cloud_init, cloud, "{r:?}");
        assert_eq!(f.arch, Some(Arch::Arm64), "{r:?}");
    }
}

#[test]
fn root_facts_follow_what_the_image_has() {
    let facts = |r: Release, opts: MiniOpts| {
        let img = mini_image(r, &opts);
        let l = layout_of(&img);
        root_facts(std::fs::File::open(img.path()).unwrap(), l.root().unwrap()).unwrap()
    };
    // armhf by loader (bullseye: not merged-/usr), armhf by ELF header only, no evidence.
    let o = MiniOpts {
        arch: Some(Arch::Armhf),
        ..MiniOpts::default()
    };
    assert_eq!(facts(Release::Bullseye, o).arch, Some(Arch::Armhf));
    let o = MiniOpts {
        arch: Some(Arch::Armhf),
        arch_evidence: ArchEvidence::Elf,
        ..MiniOpts::default()
    };
    assert_eq!(facts(Release::Trixie, o).arch, Some(Arch::Armhf));
    let o = MiniOpts {
        arch: Some(Arch::Arm64),
        arch_evidence: ArchEvidence::Elf,
        ..MiniOpts::default()
    };
    assert_eq!(facts(Release::Bookworm, o).arch, Some(Arch::Arm64));
    let o = MiniOpts {
        arch: None,
        ..MiniOpts::default()
    };
    assert_eq!(facts(Release::Bookworm, o).arch, None);
    // Network: networkd, nothing, NetworkManager enabled despite a leftover dhcpcd.conf.
    let o = MiniOpts {
        network: Some(NetworkStack::Networkd),
        ..MiniOpts::default()
    };
    assert_eq!(facts(Release::Bookworm, o).network, NetworkStack::Networkd);
    let o = MiniOpts {
        network: Some(NetworkStack::Unknown),
        ..MiniOpts::default()
    };
    assert_eq!(facts(Release::Bookworm, o).network, NetworkStack::Unknown);
    let o = MiniOpts {
        extra_root: vec![("etc/dhcpcd.conf".into(), b"hostname\n".to_vec())],
        ..MiniOpts::default()
    };
    assert_eq!(
        facts(Release::Bookworm, o).network,
        NetworkStack::NetworkManager
    );
    // cloud-init by its program alone.
    let o = MiniOpts {
        extra_root: vec![(
            "usr/bin/cloud-init".into(),
            b"#!/usr/bin/python3\n".to_vec(),
        )],
        ..MiniOpts::default()
    };
    assert!(facts(Release::Bookworm, o).cloud_init);
}

#[test]
fn root_facts_refuse_a_fat_partition() {
    let img = mini_image(Release::Bookworm, &MiniOpts::default());
    let l = layout_of(&img);
    let e = root_facts(std::fs::File::open(img.path()).unwrap(), l.boot().unwrap()).unwrap_err();
    assert!(matches!(e, ImageError::NoRootPartition { .. }), "{e}");
}

#[test]
fn fat_round_trip_is_fsck_clean_and_touches_nothing_else() {
    for r in Release::ALL {
        let img = mini_image(r, &MiniOpts::default());
        let before = img.outside_boot();
        let cmdline = img.mtype("cmdline.txt").unwrap();
        let l = layout_of(&img);
        let fs = BootFs::open(img.open_rw(), l.boot().unwrap()).unwrap();
        let free0 = fs.free_bytes().unwrap();
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        fs.write("piforge/card.toml", b"schema-version = 1\n")
            .unwrap();
        fs.write("piforge/node", &big).unwrap();
        fs.write("piforge/overlays/web/etc/haproxy/haproxy.cfg", b"global\n")
            .unwrap();
        let mut new_cmdline = cmdline.clone();
        new_cmdline.splice(
            new_cmdline.len() - 1..,
            b" systemd.run=/x\n".iter().copied(),
        );
        fs.write("cmdline.txt", &new_cmdline).unwrap();
        fs.write("meta-data", b"instance-id: a\n").unwrap();
        fs.remove("meta-data").unwrap();
        fs.remove("piforge/overlays").unwrap();
        fs.remove("does/not/exist").unwrap();
        assert_eq!(fs.read("piforge/node").unwrap().unwrap(), big);
        assert_eq!(fs.list("piforge").unwrap(), ["card.toml", "node"]);
        assert!(fs.free_bytes().unwrap() < free0 - 1_000_000);
        assert!(!fs.list("/").unwrap().contains(&"meta-data".to_owned()));
        fs.flush().unwrap();

        img.fsck_boot()
            .unwrap_or_else(|e| panic!("{r:?}: fsck.fat: {e}"));
        assert!(
            img.outside_boot() == before,
            "{r:?}: bytes outside the boot partition changed"
        );
        // An independent reader (mtools) sees the same files.
        assert_eq!(img.mtype("piforge/node").unwrap(), big);
        assert_eq!(img.mtype("cmdline.txt").unwrap(), new_cmdline);
        assert_eq!(
            img.mtype("piforge/overlays/web/etc/haproxy/haproxy.cfg"),
            None
        );
        assert!(
            common::mtools_list(img.path(), img.boot.0, "piforge").contains(&"card.toml".into())
        );
        // The volume is not left dirty: fatfs clears the flag on unmount (byte 0x41 on FAT32).
        let bpb = common::read_range(img.path(), img.boot.0, 512);
        assert_eq!(bpb[0x41] & 1, 0, "{r:?}: dirty flag left set");
    }
}

#[test]
fn fat_writes_are_reproducible_with_fixed_timestamps() {
    // One base image (mkfs.fat and mcopy stamp the current time), two copies, the same edits.
    let base = mini_image(Release::Trixie, &MiniOpts::default());
    let copies: Vec<tempfile::NamedTempFile> = (0..2)
        .map(|_| {
            let copy = tempfile::NamedTempFile::new().unwrap();
            std::fs::copy(base.path(), copy.path()).unwrap();
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(copy.path())
                .unwrap();
            let l = read_layout(&mut f).unwrap();
            let fs = BootFs::open(f, l.boot().unwrap()).unwrap();
            fs.write("piforge/card.toml", b"a = 1\n").unwrap();
            fs.write("cmdline.txt", b"console=tty1 root=PARTUUID=5e3da1b7-02\n")
                .unwrap();
            fs.flush().unwrap();
            let listing = std::process::Command::new("mdir")
                .env("MTOOLS_SKIP_CHECK", "1")
                .arg("-i")
                .arg(format!("{}@@{}", copy.path().display(), base.boot.0))
                .arg("::/piforge")
                .output()
                .unwrap();
            let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
            assert!(listing.contains("1980-01-01"), "{listing}");
            copy
        })
        .collect();
    assert!(
        common::same_bytes(copies[0].path(), copies[1].path()),
        "the two edits differ"
    );
    assert!(
        !common::same_bytes(copies[0].path(), base.path()),
        "the edit changed nothing"
    );
}

#[test]
fn window_never_writes_outside_its_range() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let pattern: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(file.path(), &pattern).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(file.path())
        .unwrap();
    let (start, len) = (300_001u64, 400_003u64);
    let mut w = PartitionWindow::new(f, start, len).unwrap();
    w.write_all(&vec![0xEE; len as usize]).unwrap();
    assert!(w.write_all(&[1]).is_err(), "a write past the end must fail");
    w.seek(SeekFrom::Start(len - 2)).unwrap();
    assert_eq!(
        w.write(&[2, 2, 2, 2]).unwrap(),
        2,
        "a write across the end is cut"
    );
    w.seek(SeekFrom::End(-10)).unwrap();
    let mut tail = Vec::new();
    w.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, [0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 2, 2]);
    drop(w);
    let after = std::fs::read(file.path()).unwrap();
    assert_eq!(after.len(), pattern.len());
    assert_eq!(
        after[..start as usize],
        pattern[..start as usize],
        "bytes before changed"
    );
    let end = (start + len) as usize;
    assert_eq!(after[end..], pattern[end..], "bytes after changed");
}

/// Trixie's FAT geometry (512-byte clusters) shrunk to 64 MiB, free space full of junk.
fn junk_trixie() -> common::MiniImage {
    let opts = MiniOpts {
        boot_sectors: Some(131072),
        junk_free_space: true,
        ..MiniOpts::default()
    };
    let img = mini_image(Release::Trixie, &opts);
    assert_eq!(img.cluster_size, 512);
    img.fsck_boot().expect("the fresh volume is clean");
    img
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}.txt")).collect()
}

/// fatfs 0.3.6 does not zero a cluster it adds to the FAT32 root directory; our
/// `ZeroOnAllocWriter` does. 200 new root entries (long names: ~3 slots each, 16 slots per
/// 512-byte cluster) make the root grow by ~40 clusters.
#[test]
fn fatfs_root_growth_on_junk_free_space_stays_clean() {
    let img = junk_trixie();
    let l = layout_of(&img);
    let fs = BootFs::open(img.open_rw(), l.boot().unwrap()).unwrap();
    let before: Vec<String> = fs.list("/").unwrap();
    let root_names = names("root-entry", 200);
    let sub_names = names("sub-entry", 100);
    for n in &root_names {
        fs.write(n, n.as_bytes()).unwrap();
    }
    for n in &sub_names {
        fs.write(&format!("many/{n}"), n.as_bytes()).unwrap();
    }
    let mut want: Vec<String> = before.iter().cloned().chain(root_names.clone()).collect();
    want.push("many".into());
    want.sort();
    assert_eq!(fs.list("/").unwrap(), want);
    assert_eq!(fs.list("many").unwrap(), sub_names);
    fs.flush().unwrap();
    img.fsck_boot().unwrap_or_else(|e| panic!("fsck.fat: {e}"));
    assert_eq!(common::mtools_list(img.path(), img.boot.0, "/"), want);
    assert_eq!(
        common::mtools_list(img.path(), img.boot.0, "many"),
        sub_names
    );
    assert_eq!(
        img.mtype("root-entry-199.txt").unwrap(),
        b"root-entry-199.txt"
    );
}

/// Root writes through plain fatfs over the same window, without our zeroing layer (20 are
/// enough: the root grows by a few clusters; 200 take half a minute unoptimised): the
/// volume is corrupt. This proves the bug exists in the fatfs we ship and that the test above
/// can fail (it fails the same way if `ZeroOnAllocWriter::write` stops zeroing).
#[test]
fn fatfs_root_growth_bug_reproduces_without_the_workaround() {
    let img = junk_trixie();
    let window = PartitionWindow::new(img.open_rw(), img.boot.0, img.boot.1).unwrap();
    {
        let fs = fatfs::FileSystem::new(window, fatfs::FsOptions::new()).unwrap();
        for n in names("root-entry", 20) {
            fs.root_dir()
                .create_file(&n)
                .unwrap()
                .write_all(n.as_bytes())
                .unwrap();
        }
        fs.unmount().unwrap();
    }
    let out = img
        .fsck_boot()
        .expect_err("plain fatfs 0.3.6 should have corrupted the root");
    assert!(!out.is_empty());
}

/// fatfs 0.3.6's `create_dir` puts long-name entries in front of `.` and `..`; `fsck.fat`
/// rejects that. Plain fatfs on a clean, zeroed volume shows it; `BootFs` repairs it.
#[test]
fn fatfs_create_dir_bug_reproduces_without_the_workaround() {
    let opts = MiniOpts {
        boot_sectors: Some(70000),
        ..MiniOpts::default()
    };
    let img = mini_image(Release::Trixie, &opts);
    let window = PartitionWindow::new(img.open_rw(), img.boot.0, img.boot.1).unwrap();
    {
        let fs = fatfs::FileSystem::new(window, fatfs::FsOptions::new()).unwrap();
        fs.root_dir().create_dir("piforge").unwrap();
        fs.unmount().unwrap();
    }
    let out = img
        .fsck_boot()
        .expect_err("plain fatfs 0.3.6 should have misplaced . and ..");
    assert!(out.contains("Expected a valid '.' entry"), "{out}");
}

#[test]
fn fatfs_create_dir_is_repaired() {
    let opts = MiniOpts {
        boot_sectors: Some(70000),
        ..MiniOpts::default()
    };
    let img = mini_image(Release::Trixie, &opts);
    let l = layout_of(&img);
    let fs = BootFs::open(img.open_rw(), l.boot().unwrap()).unwrap();
    fs.write("piforge/a/b/c/card.toml", b"x").unwrap();
    fs.write("piforge/a/other", b"y").unwrap();
    fs.write("top", b"z").unwrap();
    assert_eq!(fs.list("piforge/a").unwrap(), ["b", "other"]);
    fs.flush().unwrap();
    img.fsck_boot().unwrap_or_else(|e| panic!("fsck.fat: {e}"));
    assert_eq!(img.mtype("piforge/a/b/c/card.toml").unwrap(), b"x");
}

#[test]
fn fat_full_is_refused_before_writing() {
    // ~34 MiB at 512-byte clusters: still FAT32 (>= 65525 clusters); mtools fills most of it.
    let opts = nearly_full();
    let img = mini_image(Release::Trixie, &opts);
    let l = layout_of(&img);
    let fs = BootFs::open(img.open_rw(), l.boot().unwrap()).unwrap();
    let g: &FatGeometry = fs.geometry();
    assert_eq!(g.kind, FsKind::Fat32);
    let free = fs.free_bytes().unwrap();
    let listing = fs.list("/").unwrap();
    let e = fs
        .write("piforge/node", &vec![7u8; free as usize + 1])
        .unwrap_err();
    match e {
        ImageError::FatFull { needed, free: f } => {
            assert_eq!(f, free);
            assert!(needed > free, "needed {needed} free {free}");
        }
        other => panic!("want FatFull, got {other}"),
    }
    assert!(e_msg_names_sizes(free));
    assert_eq!(fs.list("/").unwrap(), listing, "nothing may be left behind");
    assert_eq!(fs.free_bytes().unwrap(), free);
    // What fits, fits: leave room for the new directory and entry clusters.
    fs.write("piforge/node", &vec![7u8; free as usize - 4 * 512])
        .unwrap();
    // Overwriting a file may reuse its own clusters.
    fs.write("piforge/node", &vec![8u8; free as usize - 4 * 512])
        .unwrap();
    fs.flush().unwrap();
    img.fsck_boot().unwrap_or_else(|e| panic!("fsck.fat: {e}"));
}

/// Trixie geometry shrunk to ~34 MiB with a 33 MB file put there by mtools: about 1.5 MB free.
fn nearly_full() -> MiniOpts {
    MiniOpts {
        boot_sectors: Some(70000),
        extra_boot: vec![("filler.bin".into(), vec![0x5a; 33_000_000])],
        ..MiniOpts::default()
    }
}

fn e_msg_names_sizes(free: u64) -> bool {
    let msg = ImageError::FatFull {
        needed: free + 512,
        free,
    }
    .to_string();
    msg.contains(&format!("needs {} bytes", free + 512)) && msg.contains(&format!("only {free}"))
}

/// If FSInfo lies about the free space, fatfs runs out mid-write: the partial file and the
/// directory the write created are removed and the error is still FatFull.
#[test]
fn fat_full_mid_write_leaves_no_partial_file() {
    let img = mini_image(Release::Trixie, &nearly_full());
    let free_clusters = {
        let l = layout_of(&img);
        let fs = BootFs::open(img.open_rw(), l.boot().unwrap()).unwrap();
        let c = fs.free_bytes().unwrap() / 512;
        fs.flush().unwrap();
        c
    };
    // FSInfo (sector 1) free count at byte 488: claim 100 more clusters than there are.
    let mut f = img.open_rw();
    f.seek(SeekFrom::Start(img.boot.0 + 512 + 488)).unwrap();
    f.write_all(&(free_clusters as u32 + 100).to_le_bytes())
        .unwrap();
    drop(f);
    let l = layout_of(&img);
    let fs = BootFs::open(img.open_rw(), l.boot().unwrap()).unwrap();
    let listing = fs.list("/").unwrap();
    let e = fs
        .write(
            "piforge/deep/node",
            // Passes the check against the claimed free count, exceeds the real one.
            &vec![9u8; (free_clusters as usize + 50) * 512],
        )
        .unwrap_err();
    assert!(matches!(e, ImageError::FatFull { .. }), "{e}");
    assert_eq!(
        fs.list("/").unwrap(),
        listing,
        "the partial write must be gone"
    );
    fs.flush().unwrap();
    // The FSInfo count was wrong before we started; fsck may say so, but nothing else.
    if let Err(out) = img.fsck_boot() {
        let unexpected: Vec<&str> = out
            .lines()
            .skip(1)
            .filter(|l| !l.contains("Free cluster summary") && !l.contains(" clusters"))
            .filter(|l| !l.trim().is_empty() && !l.contains("Auto-correcting"))
            .filter(|l| !l.contains("Leaving filesystem unchanged"))
            .collect();
        assert!(unexpected.is_empty(), "fsck.fat: {out}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Real MBR and GPT heads with a few bytes changed never make layout_from_bytes panic.
    #[test]
    fn mutated_real_heads_never_panic(
        flips in proptest::collection::vec((0usize..17408, 0u8..=255), 1..8),
        gpt in proptest::bool::ANY,
    ) {
        static HEADS: std::sync::OnceLock<(Vec<u8>, u64, Vec<u8>, u64)> =
            std::sync::OnceLock::new();
        let heads = HEADS.get_or_init(|| {
            let m = mini_image(Release::Bullseye, &MiniOpts::default());
            let (g, _) = common::gpt_image();
            (common::read_range(m.path(), 0, 17408), m.disk_size,
             common::read_range(g.path(), 0, 17408), g.disk_size)
        });
        let (mut head, size) = if gpt { (heads.2.clone(), heads.3) } else { (heads.0.clone(), heads.1) };
        for (at, b) in flips {
            head[at] = b;
        }
        let _ = layout_from_bytes(&head, size);
    }
}

#[test]
fn boot_fs_reads_files_written_by_mtools() {
    let img = mini_image(Release::Trixie, &MiniOpts::default());
    let l = layout_of(&img);
    let fs = BootFs::open(img.open_rw(), l.boot().unwrap()).unwrap();
    let mut want = std::fs::read(Release::Trixie.dir().join("bootfs/user-data")).unwrap();
    assert_eq!(fs.read("user-data").unwrap().unwrap(), want);
    want =
        String::from_utf8(std::fs::read(Release::Trixie.dir().join("bootfs/cmdline.txt")).unwrap())
            .unwrap()
            .replace("DISKID", "5e3da1b7")
            .into_bytes();
    assert_eq!(fs.read("cmdline.txt").unwrap().unwrap(), want);
    let mut listing = fs.list("").unwrap();
    listing.sort();
    assert_eq!(
        listing,
        [
            "cmdline.txt",
            "config.txt",
            "meta-data",
            "network-config",
            "user-data"
        ]
    );
    drop(fs);
    let mut f = std::fs::File::open(img.path()).unwrap();
    let mut b = [0u8; 2];
    f.seek(SeekFrom::Start(510)).unwrap();
    f.read_exact(&mut b).unwrap();
    assert_eq!(b, [0x55, 0xAA]);
}
