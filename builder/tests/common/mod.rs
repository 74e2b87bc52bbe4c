//! Miniature Raspberry-Pi-OS-shaped disk images for integration tests, built from
//! `tests/fixtures/raspios/<release>/` with the real tools (no mocks):
//!
//! - MBR written with `mbrman`: a fixed disk signature ([`DISK_SIGNATURE`] unless
//!   [`MiniOpts::disk_signature`] says otherwise), p1 type 0x0C bootable, p2 type 0x83, at the
//!   release's real start sectors (`layout.toml`).
//! - p1: FAT32 made by `mkfs.fat -F 32 -s <real sectors-per-cluster> -n bootfs` at its real size
//!   (the image file is sparse, so 512 MiB costs a few MiB of disk), filled with the fixture's
//!   `bootfs/` files by `mcopy` (mtools), `DISKID` in `cmdline.txt` replaced by the signature.
//! - p2: ext4 made by `mke2fs -t ext4 -O ^64bit,^huge_file -L rootfs -d <dir>` from the
//!   fixture's `rootfs/` (`DISKID` in `fstab` replaced) plus what makes the facts detectable:
//!   the dynamic loader or an ELF `/usr/bin/dpkg` of [`MiniOpts::arch`], the network stack's
//!   program, config and enabled unit, merged-/usr on bookworm and trixie, and
//!   [`MiniOpts::extra_root`].
//!
//! Also: a GPT variant ([`gpt_image`]), byte-range helpers to prove "these bytes did not change"
//! ([`read_range`], [`sha256_range`]), and `fsck.fat -n` on a partition ([`fsck_fat`]).
//!
//! Needs `mkfs.fat`/`fsck.fat` (dosfstools), `mke2fs` (e2fsprogs) and `mcopy` (mtools); a missing
//! tool panics with the package to install. Each test binary uses a subset of this module, hence
//! the `dead_code` allowance.
#![allow(dead_code)]

pub mod payload;
pub mod render;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use piforge::arch::Arch;
use piforge::image::NetworkStack;
use sha2::{Digest, Sha256};
use tempfile::{NamedTempFile, TempDir};

/// The fixtures directory (`tests/fixtures/raspios`).
pub const FIXTURES: &str = piforge_test_support::RASPIOS_FIXTURES;

/// The disk signature miniature images get by default (PARTUUIDs `5e3da1b7-01`, `-02`).
pub const DISK_SIGNATURE: u32 = 0x5e3d_a1b7;

/// Bytes in a sector.
pub const SECTOR: u64 = 512;

/// A Raspberry Pi OS release with a fixture folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Debian 11, boot at `/boot`, dhcpcd, p1 at sector 8192, 256 MiB.
    Bullseye,
    /// Debian 12, boot at `/boot/firmware`, NetworkManager.
    Bookworm,
    /// Debian 13, 512-byte FAT clusters, cloud-init.
    Trixie,
}

impl Release {
    /// All three, oldest first.
    pub const ALL: [Release; 3] = [Release::Bullseye, Release::Bookworm, Release::Trixie];

    /// The codename (= fixture folder name).
    pub fn name(self) -> &'static str {
        match self {
            Release::Bullseye => "bullseye",
            Release::Bookworm => "bookworm",
            Release::Trixie => "trixie",
        }
    }

    /// The fixture folder.
    pub fn dir(self) -> PathBuf {
        Path::new(FIXTURES).join(self.name())
    }

    /// The network stack the real image uses.
    pub fn network(self) -> NetworkStack {
        match self {
            Release::Bullseye => NetworkStack::Dhcpcd,
            _ => NetworkStack::NetworkManager,
        }
    }

    /// True if the real image has merged /usr (`/lib -> usr/lib`).
    pub fn merged_usr(self) -> bool {
        self != Release::Bullseye
    }

    /// The parsed `layout.toml`.
    pub fn layout(self) -> FixtureLayout {
        let text = fs::read_to_string(self.dir().join("layout.toml")).expect("reading layout.toml");
        toml::from_str(&text).expect("parsing layout.toml")
    }
}

/// `layout.toml` of a fixture.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct FixtureLayout {
    /// "mbr".
    pub table: String,
    /// The partitions, in order.
    pub partition: Vec<FixturePart>,
}

/// One `[[partition]]` of `layout.toml` (sizes in 512-byte sectors).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FixturePart {
    /// Filesystem label.
    pub label: String,
    /// "vfat-fat32" or "ext4".
    pub fs: String,
    /// MBR type id.
    #[serde(rename = "type")]
    pub type_id: u8,
    /// Bootable flag.
    #[serde(default)]
    pub bootable: bool,
    /// First sector.
    pub start: u64,
    /// Length in sectors (absent for the root, which real images size to their content).
    pub sectors: Option<u64>,
    /// FAT cluster size in sectors.
    pub sectors_per_cluster: Option<u64>,
    /// Where the system mounts it.
    pub mount: Option<String>,
}

impl FixtureLayout {
    /// The FAT boot partition entry.
    pub fn boot(&self) -> &FixturePart {
        &self.partition[0]
    }
    /// The ext4 root partition entry.
    pub fn root(&self) -> &FixturePart {
        &self.partition[1]
    }
}

/// What evidence of the architecture the root filesystem carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchEvidence {
    /// The dynamic loader (`ld-linux-aarch64.so.1` / `ld-linux-armhf.so.3`), as on real images.
    Loader,
    /// Only an ELF header at `/usr/bin/dpkg`.
    Elf,
}

/// Options of [`mini_image`]. `MiniOpts::default()` is the real image's shape.
#[derive(Debug, Clone)]
pub struct MiniOpts {
    /// Userland architecture; `None` leaves no evidence at all.
    pub arch: Option<Arch>,
    /// How the architecture shows.
    pub arch_evidence: ArchEvidence,
    /// Network stack to install; `None` means the release's own ([`Release::network`]).
    pub network: Option<NetworkStack>,
    /// Extra rootfs files: (path relative to `/`, contents).
    pub extra_root: Vec<(String, Vec<u8>)>,
    /// Extra boot-partition files: (path relative to the FAT root, contents).
    pub extra_boot: Vec<(String, Vec<u8>)>,
    /// MBR disk signature; `DISKID` in cmdline.txt and fstab becomes its `{:08x}`.
    pub disk_signature: u32,
    /// Shrink the FAT to this many sectors (keeps the release's cluster size; must stay FAT32:
    /// at least 65525 clusters). `None`: the real size.
    pub boot_sectors: Option<u64>,
    /// Size of the ext4 root in bytes.
    pub root_size: u64,
    /// Fill the FAT partition with non-zero junk before `mkfs.fat`, so its free clusters hold
    /// old bytes (as on a card that has been used), not zeros.
    pub junk_free_space: bool,
}

impl Default for MiniOpts {
    fn default() -> Self {
        Self {
            arch: Some(Arch::Arm64),
            arch_evidence: ArchEvidence::Loader,
            network: None,
            extra_root: Vec::new(),
            extra_boot: Vec::new(),
            disk_signature: DISK_SIGNATURE,
            boot_sectors: None,
            root_size: 16 << 20,
            junk_free_space: false,
        }
    }
}

/// A generated image. The file is deleted when this is dropped.
#[derive(Debug)]
pub struct MiniImage {
    /// The sparse image file.
    pub file: NamedTempFile,
    /// The release it is shaped like.
    pub release: Release,
    /// Its MBR disk signature.
    pub disk_signature: u32,
    /// p1 (FAT32) byte range: (start, len).
    pub boot: (u64, u64),
    /// p2 (ext4) byte range: (start, len).
    pub root: (u64, u64),
    /// Image size in bytes.
    pub disk_size: u64,
    /// The FAT's cluster size in bytes.
    pub cluster_size: u64,
}

impl MiniImage {
    /// The image path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// PARTUUID of partition `n`, e.g. `5e3da1b7-02`.
    pub fn partuuid(&self, n: u32) -> String {
        format!("{:08x}-{n:02}", self.disk_signature)
    }

    /// The image opened read-write.
    pub fn open_rw(&self) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.path())
            .expect("opening image")
    }

    /// The first sector (the MBR).
    pub fn mbr(&self) -> Vec<u8> {
        read_range(self.path(), 0, SECTOR)
    }

    /// sha256 of the ext4 root partition bytes.
    pub fn root_sha256(&self) -> String {
        sha256_range(self.path(), self.root.0, self.root.1)
    }

    /// Every byte outside the boot partition (MBR, gap, root partition), to compare before and
    /// after an edit of the FAT.
    pub fn outside_boot(&self) -> Vec<u8> {
        let mut v = read_range(self.path(), 0, self.boot.0);
        let gap = self.boot.0 + self.boot.1;
        v.extend(read_range(self.path(), gap, self.disk_size - gap));
        v
    }

    /// `fsck.fat -n` on the boot partition.
    pub fn fsck_boot(&self) -> Result<String, String> {
        fsck_fat(self.path(), self.boot.0, self.boot.1)
    }

    /// Reads a file of the boot partition with mtools (an implementation independent of ours).
    pub fn mtype(&self, path: &str) -> Option<Vec<u8>> {
        mtools_read(self.path(), self.boot.0, path)
    }
}

pub use piforge_test_support::require_tool;
use piforge_test_support::run_ok as run;

/// Builds a miniature image of `release`; see the module docs.
pub fn mini_image(release: Release, opts: &MiniOpts) -> MiniImage {
    let mkfs_fat = require_tool("mkfs.fat", "dosfstools");
    let mke2fs = require_tool("mke2fs", "e2fsprogs");
    require_tool("mcopy", "mtools");
    let layout = release.layout();
    assert_eq!(layout.table, "mbr");
    let (bp, rp) = (layout.boot(), layout.root());
    let boot_sectors = opts
        .boot_sectors
        .unwrap_or(bp.sectors.expect("boot partition has a size"));
    let spc = bp
        .sectors_per_cluster
        .expect("boot partition has a cluster size");
    let boot = (bp.start * SECTOR, boot_sectors * SECTOR);
    let root_sectors = opts.root_size.div_ceil(SECTOR);
    let root = (rp.start * SECTOR, root_sectors * SECTOR);
    assert!(
        boot.0 + boot.1 <= root.0,
        "the boot partition must end before the root"
    );
    let disk_size = root.0 + root.1;
    let diskid = format!("{:08x}", opts.disk_signature);

    let file = tempfile::Builder::new()
        .prefix(&format!("mini-{}-", release.name()))
        .suffix(".img")
        .tempfile()
        .expect("creating image file");
    file.as_file()
        .set_len(disk_size)
        .expect("sizing image file");
    if opts.junk_free_space {
        fill_junk(file.path(), boot.0, boot.1);
    }

    // p1: FAT32 at its real place, with the real cluster size.
    run(Command::new(&mkfs_fat)
        .args([
            "-F",
            "32",
            "-s",
            &spc.to_string(),
            "-n",
            "bootfs",
            "-i",
            &diskid,
        ])
        .args([
            "--offset",
            &bp.start.to_string(),
            "-h",
            &bp.start.to_string(),
        ])
        .arg(file.path())
        .arg((boot.1 / 1024).to_string()));
    let bootdir = TempDir::new().expect("creating temp dir");
    copy_tree(&release.dir().join("bootfs"), bootdir.path(), &diskid);
    for (p, bytes) in &opts.extra_boot {
        put(bootdir.path(), p, bytes);
    }
    mtools_copy_in(file.path(), boot.0, bootdir.path());

    // p2: ext4 from a directory.
    let rootdir = TempDir::new().expect("creating temp dir");
    build_rootfs(release, opts, rootdir.path(), &diskid);
    let uuid = "6b2ac5f1-7b5e-4f57-bb1e-3fca2d2b1d8a";
    run(Command::new(&mke2fs)
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-O",
            "^64bit,^huge_file",
            "-L",
            "rootfs",
            "-U",
            uuid,
        ])
        .arg("-E")
        .arg(format!("offset={},hash_seed={uuid}", root.0))
        .arg("-d")
        .arg(rootdir.path())
        .arg(file.path())
        .arg(format!("{}k", root.1 / 1024)));

    // The MBR last, as a real tool would.
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(file.path())
        .expect("opening image");
    let mut mbr = mbrman::MBR::new_from(&mut f, SECTOR as u32, opts.disk_signature.to_le_bytes())
        .expect("making MBR");
    for (i, (p, (start, len))) in [(bp, boot), (rp, root)].into_iter().enumerate() {
        mbr[i + 1] = mbrman::MBRPartitionEntry {
            boot: if p.bootable {
                mbrman::BOOT_ACTIVE
            } else {
                mbrman::BOOT_INACTIVE
            },
            first_chs: mbrman::CHS::empty(),
            sys: p.type_id,
            last_chs: mbrman::CHS::empty(),
            starting_lba: u32::try_from(start / SECTOR).expect("start fits"),
            sectors: u32::try_from(len / SECTOR).expect("size fits"),
        };
    }
    mbr.write_into(&mut f).expect("writing MBR");
    f.sync_all().expect("syncing image");

    MiniImage {
        file,
        release,
        disk_signature: opts.disk_signature,
        boot,
        root,
        disk_size,
        cluster_size: spc * SECTOR,
    }
}

/// The same shape as [`mini_image`] (bookworm geometry, shrunk FAT) but with a GPT: p1 EFI
/// system partition (FAT32, label `bootfs`), p2 Linux filesystem (ext4, label `rootfs`).
/// Returns the image and the partition GUIDs (lower-case) as the `gpt` crate wrote them.
pub fn gpt_image() -> (MiniImage, [String; 2]) {
    let mkfs_fat = require_tool("mkfs.fat", "dosfstools");
    let mke2fs = require_tool("mke2fs", "e2fsprogs");
    let boot = (2048 * SECTOR, 131072 * SECTOR); // 64 MiB, 512-byte clusters: FAT32
    let root = (boot.0 + boot.1, 16 << 20);
    let disk_size = root.0 + root.1 + (1 << 20); // room for the backup GPT
    let file = tempfile::Builder::new()
        .prefix("mini-gpt-")
        .suffix(".img")
        .tempfile()
        .unwrap();
    file.as_file().set_len(disk_size).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(file.path())
        .unwrap();
    let lb = gpt::disk::LogicalBlockSize::Lb512;
    let mut f = f;
    gpt::mbr::ProtectiveMBR::with_lb_size(
        u32::try_from(disk_size / SECTOR - 1).unwrap_or(u32::MAX),
    )
    .overwrite_lba0(&mut f)
    .expect("writing protective MBR");
    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(lb)
        .create_from_device(f, None)
        .expect("creating GPT");
    disk.add_partition_at(
        "boot",
        1,
        boot.0 / SECTOR,
        boot.1 / SECTOR,
        gpt::partition_types::EFI,
        0,
    )
    .expect("adding p1");
    disk.add_partition_at(
        "root",
        2,
        root.0 / SECTOR,
        root.1 / SECTOR,
        gpt::partition_types::LINUX_FS,
        0,
    )
    .expect("adding p2");
    let guids = [1, 2].map(|n| disk.partitions()[&n].part_guid.to_string().to_lowercase());
    disk.write().expect("writing GPT");
    run(Command::new(&mkfs_fat)
        .args(["-F", "32", "-s", "1", "-n", "bootfs"])
        .args(["--offset", &(boot.0 / SECTOR).to_string()])
        .arg(file.path())
        .arg((boot.1 / 1024).to_string()));
    let rootdir = TempDir::new().unwrap();
    build_rootfs(
        Release::Bookworm,
        &MiniOpts::default(),
        rootdir.path(),
        "00000000",
    );
    run(Command::new(&mke2fs)
        .args(["-q", "-F", "-t", "ext4", "-L", "rootfs"])
        .arg("-E")
        .arg(format!("offset={}", root.0))
        .arg("-d")
        .arg(rootdir.path())
        .arg(file.path())
        .arg(format!("{}k", root.1 / 1024)));
    let img = MiniImage {
        file,
        release: Release::Bookworm,
        disk_signature: 0,
        boot,
        root,
        disk_size,
        cluster_size: 512,
    };
    (img, guids)
}

/// Fills the rootfs directory of a mini image: fixture files (DISKID replaced), merged /usr,
/// arch evidence, network stack, extras.
fn build_rootfs(release: Release, opts: &MiniOpts, dir: &Path, diskid: &str) {
    copy_tree(&release.dir().join("rootfs"), dir, diskid);
    let lib = if release.merged_usr() {
        fs::create_dir_all(dir.join("usr/lib")).unwrap();
        for d in ["lib", "bin", "sbin"] {
            fs::create_dir_all(dir.join("usr").join(d)).unwrap();
            std::os::unix::fs::symlink(format!("usr/{d}"), dir.join(d)).unwrap();
        }
        // os-release is a symlink into /usr/lib on real images.
        let os = dir.join("etc/os-release");
        fs::rename(&os, dir.join("usr/lib/os-release")).unwrap();
        std::os::unix::fs::symlink("../usr/lib/os-release", &os).unwrap();
        "usr/lib"
    } else {
        "lib"
    };
    let sbin = if release.merged_usr() {
        "usr/sbin"
    } else {
        "sbin"
    };
    match (opts.arch, opts.arch_evidence) {
        (None, _) => {}
        (Some(a), ArchEvidence::Loader) => {
            let (ld, triple) = (a.dynamic_loader(), a.multiarch());
            put(dir, &format!("{lib}/{triple}/{ld}"), &elf_header(a));
            std::os::unix::fs::symlink(format!("{triple}/{ld}"), dir.join(lib).join(ld)).unwrap();
        }
        (Some(a), ArchEvidence::Elf) => put(dir, "usr/bin/dpkg", &elf_header(a)),
    }
    let net = opts.network.unwrap_or(release.network());
    let unit = |name: &str| {
        put(
            dir,
            &format!("usr/lib/systemd/system/{name}"),
            b"[Service]\n",
        );
        let wants = dir.join("etc/systemd/system/multi-user.target.wants");
        fs::create_dir_all(&wants).unwrap();
        std::os::unix::fs::symlink(format!("/usr/lib/systemd/system/{name}"), wants.join(name))
            .unwrap();
    };
    match net {
        NetworkStack::NetworkManager => {
            put(dir, &format!("{sbin}/NetworkManager"), b"\x7fELF");
            put(
                dir,
                "etc/NetworkManager/NetworkManager.conf",
                b"[main]\nplugins=ifupdown,keyfile\n",
            );
            unit("NetworkManager.service");
        }
        NetworkStack::Dhcpcd => {
            put(dir, &format!("{sbin}/dhcpcd"), b"\x7fELF");
            put(dir, "etc/dhcpcd.conf", b"hostname\nclientid\n");
            unit("dhcpcd.service");
        }
        NetworkStack::Networkd => {
            put(
                dir,
                "etc/systemd/network/10-eth0.network",
                b"[Match]\nName=eth0\n[Network]\nDHCP=yes\n",
            );
            unit("systemd-networkd.service");
        }
        NetworkStack::Unknown => {}
    }
    for (p, bytes) in &opts.extra_root {
        put(dir, p, bytes);
    }
}

/// A 64-byte ELF header of a little-endian executable for `arch`.
pub fn elf_header(arch: Arch) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = arch.elf_class();
    h[5] = 1; // little-endian
    h[6] = 1; // version
    h[16] = 3; // ET_DYN
    h[18..20].copy_from_slice(&arch.elf_machine().to_le_bytes());
    h
}

/// Writes `bytes` at `root/rel`, creating parents.
pub fn put(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel.trim_start_matches('/'));
    fs::create_dir_all(p.parent().expect("path has a parent")).expect("creating dirs");
    fs::write(&p, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
}

/// Copies a fixture tree, replacing `DISKID` in text files with `diskid`.
fn copy_tree(from: &Path, to: &Path, diskid: &str) {
    for e in fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display())) {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            fs::create_dir_all(&dst).unwrap();
            copy_tree(&e.path(), &dst, diskid);
        } else {
            let bytes = fs::read(e.path()).unwrap();
            let bytes = match String::from_utf8(bytes) {
                Ok(s) => s.replace("DISKID", diskid).into_bytes(),
                Err(e) => e.into_bytes(),
            };
            fs::write(&dst, bytes).unwrap();
        }
    }
}

/// Copies the contents of `dir` into the root of the FAT at byte `offset` of `image` (mtools).
fn mtools_copy_in(image: &Path, offset: u64, dir: &Path) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    if entries.is_empty() {
        return;
    }
    entries.sort();
    run(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{offset}", image.display()))
        .args(["-s", "-D", "o"])
        .args(&entries)
        .arg("::/"));
}

/// Reads a file from the FAT at byte `offset` of `image` with `mtype`; `None` if it is missing.
pub fn mtools_read(image: &Path, offset: u64, path: &str) -> Option<Vec<u8>> {
    let out = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{offset}", image.display()))
        .arg(format!("::/{}", path.trim_start_matches('/')))
        .arg("-")
        .output()
        .expect("running mcopy");
    out.status.success().then_some(out.stdout)
}

/// Lists a directory of the FAT at byte `offset` of `image` with `mdir -b` (names only).
pub fn mtools_list(image: &Path, offset: u64, dir: &str) -> Vec<String> {
    let out = run(Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{offset}", image.display()))
        .arg("-b")
        .arg(format!("::/{}", dir.trim_start_matches('/'))));
    let mut names: Vec<String> = out
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or(l)
                .to_owned()
        })
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    names
}

/// Overwrites `start..start + len` of `path` with pseudo-random bytes, none of them zero.
pub fn fill_junk(path: &Path, start: u64, len: u64) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(start)).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x as u8) | 1;
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

/// Bytes `start..start + len` of the file at `path`.
pub fn read_range(path: &Path, start: u64, len: u64) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    f.seek(SeekFrom::Start(start)).unwrap();
    let mut buf = Vec::new();
    f.take(len).read_to_end(&mut buf).unwrap();
    assert_eq!(
        buf.len() as u64,
        len,
        "range {start}+{len} is past the end of {}",
        path.display()
    );
    buf
}

/// True if the two files hold the same bytes (compared a MiB at a time; fast even unoptimised,
/// unlike hashing).
pub fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

/// sha256 (hex) of bytes `start..start + len` of the file at `path`. Slow in unoptimised test
/// builds (~10 MB/s): prefer [`read_range`] and `==` for big ranges.
pub fn sha256_range(path: &Path, start: u64, len: u64) -> String {
    let mut f = File::open(path).unwrap();
    f.seek(SeekFrom::Start(start)).unwrap();
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f.take(len), &mut h).unwrap();
    assert_eq!(
        n,
        len,
        "range {start}+{len} is past the end of {}",
        path.display()
    );
    hex::encode(h.finalize())
}

/// Copies `start..start + len` of `path` into a sparse temp file (all-zero MiBs skipped).
pub fn extract_range(path: &Path, start: u64, len: u64) -> NamedTempFile {
    let mut src = File::open(path).unwrap();
    src.seek(SeekFrom::Start(start)).unwrap();
    let out = NamedTempFile::new().unwrap();
    let mut dst = out.as_file();
    let mut buf = vec![0u8; 1 << 20];
    let zeros = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        src.read_exact(&mut buf[..n]).unwrap();
        if buf[..n] == zeros[..n] {
            dst.seek(SeekFrom::Current(n as i64)).unwrap();
        } else {
            dst.write_all(&buf[..n]).unwrap();
        }
        left -= n as u64;
    }
    dst.set_len(len).unwrap();
    out
}

/// Runs `fsck.fat -n` on the FAT at `start..start + len` of `path` (copied out first):
/// `Ok(output)` if it exits 0 and reports nothing to fix, `Err(output)` otherwise.
pub fn fsck_fat(path: &Path, start: u64, len: u64) -> Result<String, String> {
    let part = extract_range(path, start, len);
    fsck_fat_file(part.path())
}

/// Runs `fsck.fat -n` on a file holding a bare FAT filesystem; see [`fsck_fat`].
pub fn fsck_fat_file(path: &Path) -> Result<String, String> {
    let fsck = require_tool("fsck.fat", "dosfstools");
    let out = Command::new(fsck)
        .arg("-n")
        .arg(path)
        .output()
        .expect("running fsck.fat");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // fsck.fat -n exits 0 also after some repairs it would only offer; a clean run prints just
    // the version line and the summary line ("img: N files, M/T clusters").
    let noisy = text.lines().filter(|l| !l.is_empty()).count() > 2;
    if out.status.success() && !noisy {
        Ok(text)
    } else {
        Err(text)
    }
}
