//! Read-only facts about the ext4 root filesystem of an image, read with `ext4-view` through a
//! partition window: release, boot mount point, network stack, cloud-init, architecture. They
//! decide what the card and `cmdline.txt` look like.
//!
//! How each fact is decided: release, boot mount, network stack and cloud-init by the rules
//! of [`piforge_config::rootfs`], which firstboot applies on the Pi too (this module gives them
//! a [`RootView`] of the image; paths follow symlinks inside it, so merged-/usr images work).
//! os-release is `/etc/os-release`, else `/usr/lib/os-release`; without a FAT line in
//! `/etc/fstab` the boot mount is the release's default. The rest is the builder's own:
//! - passwd: `/etc/passwd` as text, if any (the card's user is checked against it).
//! - arch: the ELF header of `/usr/bin/dpkg`, else of `/bin/sh` (the native architecture; arm64
//!   Raspberry Pi OS also carries armhf libraries), else which dynamic loader exists
//!   (`ld-linux-aarch64.so.1` / `ld-linux-armhf.so.3` in `/lib`, `/usr/lib` or the multiarch dir).
//!
//! Deliberately not here: writing ext4 (there is no mature Rust writer; the builder never changes
//! the root partition).

use std::io::{Read, Seek, SeekFrom};

use ext4_view::{Ext4, Ext4Error, Ext4Read};
use piforge_config::rootfs::{self, RootView, boot_mount_from_fstab, parse_os_release};
use tracing::{debug, warn};

use super::window::PartitionWindow;
use super::{FsKind, ImageError, Partition};
use crate::arch::Arch;

/// What the root filesystem says about the image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RootFacts {
    /// `ID` of os-release, e.g. `debian` or `raspbian`.
    pub os_id: String,
    /// `VERSION_CODENAME`, e.g. `bookworm`.
    pub version_codename: String,
    /// `PRETTY_NAME`, e.g. `Debian GNU/Linux 12 (bookworm)`.
    pub pretty_name: String,
    /// Where the FAT boot partition is mounted: `/boot/firmware` or `/boot`.
    pub boot_mount: String,
    /// The network stack in charge.
    pub network: rootfs::NetworkStack,
    /// True if cloud-init is installed.
    pub cloud_init: bool,
    /// The userland architecture, if any evidence was found.
    pub arch: Option<Arch>,
    /// `/etc/passwd`, to check the card's user at build time (not shown by `inspect`).
    #[serde(skip)]
    pub passwd: Option<String>,
}

/// The architecture an ELF header (the first 20 bytes of a binary) is for, if it is one of ours.
/// Pure; never panics.
pub fn arch_from_elf(head: &[u8]) -> Option<Arch> {
    if head.get(..4)? != b"\x7fELF" || *head.get(5)? != 1 {
        return None; // not ELF, or big-endian
    }
    let class = *head.get(4)?;
    let machine = u16::from_le_bytes([*head.get(18)?, *head.get(19)?]);
    Arch::ALL
        .into_iter()
        .find(|a| a.elf_machine() == machine && a.elf_class() == class)
}

/// `ext4-view` reads through this; a partition window over the image.
struct WindowRead<R>(PartitionWindow<R>);

impl<R: Read + Seek> Ext4Read for WindowRead<R> {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0.seek(SeekFrom::Start(start_byte))?;
        self.0.read_exact(dst)?;
        Ok(())
    }
}

/// Longest file [`Root::read`] reads (dpkg, the largest, is about 300 KiB).
const MAX_ROOT_FILE: usize = 8 << 20;

/// The read-only root filesystem.
struct Root(Ext4);

impl Root {
    fn err(path: &str, e: Ext4Error) -> ImageError {
        ImageError::RootFs {
            reason: format!("{path}: {e}"),
        }
    }

    /// The file's bytes, or `None` if it does not exist (or is a directory / special file).
    /// At most [`MAX_ROOT_FILE`] bytes: the files piforge reads from a root (os-release, fstab,
    /// passwd, an ELF head) are small, and an inode of a hostile image may claim any size
    /// (`ext4-view`'s own `read` allocates that size up front; found by the `ext4` fuzz target).
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, ImageError> {
        let mut f = match self.0.open(path) {
            Ok(f) => f,
            Err(
                Ext4Error::NotFound
                | Ext4Error::IsADirectory
                | Ext4Error::IsASpecialFile
                | Ext4Error::NotADirectory,
            ) => return Ok(None),
            Err(e) => return Err(Self::err(path, e)),
        };
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read_bytes(&mut buf).map_err(|e| Self::err(path, e))?;
            if n == 0 {
                return Ok(Some(out));
            }
            if out.len() + n > MAX_ROOT_FILE {
                return Err(ImageError::RootFs {
                    reason: format!(
                        "{path}: longer than the {MAX_ROOT_FILE} bytes piforge reads from a root"
                    ),
                });
            }
            out.extend_from_slice(&buf[..n]);
        }
    }
}

/// The rules of [`piforge_config::rootfs`] read the image through this.
impl RootView for Root {
    type Error = ImageError;

    fn exists(&self, path: &str) -> Result<bool, ImageError> {
        match self.0.exists(path) {
            Ok(b) => Ok(b),
            Err(Ext4Error::NotADirectory) => Ok(false),
            Err(e) => Err(Self::err(path, e)),
        }
    }

    fn is_dir(&self, path: &str) -> Result<bool, ImageError> {
        match self.0.metadata(path) {
            Ok(m) => Ok(m.is_dir()),
            Err(Ext4Error::NotFound | Ext4Error::NotADirectory) => Ok(false),
            Err(e) => Err(Self::err(path, e)),
        }
    }

    fn list(&self, path: &str) -> Result<Vec<String>, ImageError> {
        let entries = match self.0.read_dir(path) {
            Ok(d) => d,
            Err(Ext4Error::NotFound | Ext4Error::NotADirectory) => return Ok(Vec::new()),
            Err(e) => return Err(Self::err(path, e)),
        };
        let mut names = Vec::new();
        for e in entries {
            let e = e.map_err(|e| Self::err(path, e))?;
            names.push(String::from_utf8_lossy(e.file_name().as_ref()).into_owned());
        }
        Ok(names)
    }
}

/// Reads the facts of the ext4 root filesystem in `part` of the image `r` (read-only).
/// `R` is owned (`ext4-view` keeps the reader); pass a `File` or `file.try_clone()?`.
pub fn root_facts<R: Read + Seek + 'static>(
    r: R,
    part: &Partition,
) -> Result<RootFacts, ImageError> {
    if part.fs != FsKind::Ext4 {
        return Err(ImageError::NoRootPartition {
            found: part.to_string(),
        });
    }
    let mut r = r;
    let file_len = r
        .seek(SeekFrom::End(0))
        .map_err(|e| ImageError::io("reading the image size", e))?;
    let avail = file_len.saturating_sub(part.start).min(part.len);
    let mut window = PartitionWindow::new(r, part.start, part.len)
        .map_err(|e| ImageError::io("opening the root partition", e))?;
    let mut sb = vec![0u8; 1024];
    window
        .seek(SeekFrom::Start(1024))
        .and_then(|_| window.read_exact(&mut sb))
        .map_err(|e| ImageError::RootFs {
            reason: format!("reading the superblock: {e}"),
        })?;
    descriptors_fit(&sb, avail).map_err(|reason| ImageError::RootFs { reason })?;
    let fs = Ext4::load(Box::new(WindowRead(window))).map_err(|e| ImageError::RootFs {
        reason: format!("loading the filesystem: {e}"),
    })?;
    let root = Root(fs);

    let os = match root.read("/etc/os-release")? {
        Some(b) => Some(b),
        None => root.read("/usr/lib/os-release")?,
    };
    let os = parse_os_release(&String::from_utf8_lossy(&os.unwrap_or_default()));
    if os.id.is_empty() {
        warn!("no os-release in the root filesystem");
    }

    let boot_mount = match root.read("/etc/fstab")? {
        Some(b) => boot_mount_from_fstab(&String::from_utf8_lossy(&b)),
        None => None,
    };
    let boot_mount = boot_mount.unwrap_or_else(|| {
        let guess = os.default_boot_mount();
        warn!(
            guess,
            "no vfat line in /etc/fstab; guessing the boot mount from the release"
        );
        guess.to_owned()
    });

    let facts = RootFacts {
        passwd: root
            .read("/etc/passwd")?
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
        network: rootfs::network_stack(&root)?,
        cloud_init: rootfs::cloud_init(&root)?,
        arch: arch(&root)?,
        os_id: os.id,
        version_codename: os.version_codename,
        pretty_name: os.pretty_name,
        boot_mount,
    };
    debug!(?facts, "root facts");
    Ok(facts)
}

fn arch(root: &Root) -> Result<Option<Arch>, ImageError> {
    for bin in ["/usr/bin/dpkg", "/bin/sh"] {
        if let Some(bytes) = root.read(bin)?
            && let Some(a) = arch_from_elf(&bytes)
        {
            return Ok(Some(a));
        }
    }
    for arch in Arch::ALL {
        let (ld, triple) = (arch.dynamic_loader(), arch.multiarch());
        let paths = [
            format!("/lib/{ld}"),
            format!("/usr/lib/{ld}"),
            format!("/lib/{triple}/{ld}"),
            format!("/usr/lib/{triple}/{ld}"),
        ];
        for p in &paths {
            if root.exists(p)? {
                return Ok(Some(arch));
            }
        }
    }
    Ok(None)
}

/// Refuses a superblock whose block group descriptors cannot all be in the `avail` bytes the
/// partition really has in the file: `ext4-view` allocates room for one descriptor per group
/// before it reads any, so a hostile `s_blocks_count` would make it allocate gigabytes (found
/// by the `ext4` fuzz target). Every group needs its descriptor somewhere in the file system,
/// so a real one always passes.
fn descriptors_fit(sb: &[u8], avail: u64) -> Result<(), String> {
    let le32 = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    let le16 = |at: usize| u16::from_le_bytes([sb[at], sb[at + 1]]);
    if sb.len() < 1024 || le16(0x38) != 0xEF53 {
        return Err("no ext2/3/4 superblock magic".into());
    }
    // ext4-view sizes its block cache by the block size (up to 256 MiB for 64 KiB blocks);
    // Raspberry Pi OS, like every ext4 made for a 4 KiB-page machine, has 4 KiB blocks.
    let log = le32(0x18);
    if log > 2 {
        return Err(format!(
            "blocks of {} KiB: piforge reads root file systems with blocks of 1 to 4 KiB, as \
             Raspberry Pi OS makes them",
            1u64 << log.min(40)
        ));
    }
    let is64 = le32(0x60) & 0x80 != 0;
    // As ext4-view counts them: the high half is read whatever the 64bit feature says.
    let blocks = u64::from(le32(4)) | u64::from(le32(0x150)) << 32;
    let first = u64::from(le32(0x14));
    let per_group = u64::from(le32(0x20));
    if per_group == 0 {
        return Err("s_blocks_per_group is 0".into());
    }
    let desc = if is64 {
        u64::from(le16(0xFE)).max(64)
    } else {
        32
    };
    let groups = blocks.saturating_sub(first).div_ceil(per_group);
    match groups.checked_mul(desc) {
        Some(bytes) if bytes <= avail => Ok(()),
        _ => Err(format!(
            "the superblock claims {blocks} blocks in {groups} groups, whose descriptors alone \
             would not fit in the {avail} bytes the partition has: a damaged or hostile image"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `ext4` fuzz target (issue 17, finding 14): a superblock whose block count
    /// needs more group descriptors than the file could hold is refused before `ext4-view`
    /// sizes an allocation by it (it aborted allocating 3 GiB).
    #[test]
    fn issue17_a_block_count_beyond_the_file_is_refused_before_loading() {
        let mut img = vec![0u8; 64 * 1024];
        let sb = &mut img[1024..2048];
        sb[0x38..0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        sb[0x18..0x1C].copy_from_slice(&2u32.to_le_bytes()); // 4 KiB blocks
        sb[0x20..0x24].copy_from_slice(&32768u32.to_le_bytes());
        // No 64bit feature and a small low half, yet a high half of the block count (the
        // second fuzz finding: ext4-view reads it anyway).
        sb[4..8].copy_from_slice(&8u32.to_le_bytes());
        sb[0x150..0x154].copy_from_slice(&0xFFFFu32.to_le_bytes());
        let part = Partition {
            number: 2,
            start: 0,
            len: img.len() as u64,
            part_type: crate::image::PartType::Mbr(0x83),
            fs: FsKind::Ext4,
            label: None,
            guid: None,
        };
        let e = root_facts(std::io::Cursor::new(img), &part).unwrap_err();
        assert!(e.to_string().contains("would not fit"), "{e}");
        // A real (small) file system passes the check.
        let mut ok = [0u8; 1024];
        ok[0x38..0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
        ok[4..8].copy_from_slice(&8192u32.to_le_bytes());
        ok[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
        ok[0x20..0x24].copy_from_slice(&8192u32.to_le_bytes());
        assert!(descriptors_fit(&ok, 8 << 20).is_ok());
        // Blocks larger than 4 KiB would size ext4-view's cache at up to 256 MiB (found by
        // the ext4 fuzz target's memory limit).
        ok[0x18..0x1C].copy_from_slice(&6u32.to_le_bytes());
        assert!(
            descriptors_fit(&ok, 8 << 20)
                .unwrap_err()
                .contains("64 KiB")
        );
    }

    #[test]
    fn elf_headers() {
        let mut h = [0u8; 20];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert_eq!(arch_from_elf(&h), Some(Arch::Arm64));
        h[4] = 1;
        h[18..20].copy_from_slice(&40u16.to_le_bytes());
        assert_eq!(arch_from_elf(&h), Some(Arch::Armhf));
        h[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
        assert_eq!(arch_from_elf(&h), None);
        assert_eq!(arch_from_elf(&h[..10]), None);
    }

    proptest::proptest! {
        #[test]
        fn text_parsers_never_panic(s in "\\PC*") {
            let _ = parse_os_release(&s);
            let _ = boot_mount_from_fstab(&s);
            let _ = arch_from_elf(s.as_bytes());
        }
    }
}
