//! Editing the FAT boot partition of an image file, through a [`PartitionWindow`], never a mount.
//!
//! [`BootFs`] wraps `fatfs::FileSystem` and gives the builder what it needs: read, write
//! (`mkdir -p`, truncate, write), remove (files and trees), list, free space, label, and a clean
//! unmount that hands the image file back.
//!
//! Three things `fatfs` 0.3.6 does not do for us, handled here:
//!
//! - **Unzeroed FAT32 root-directory clusters.** When a directory needs one more cluster, `fatfs`
//!   asks its allocator to zero it only if the directory has a directory entry of its own
//!   (`File::write` → `alloc_cluster(.., self.is_dir())`). The FAT32 root directory has none, so a
//!   growing root receives a cluster with whatever bytes were there before, and those bytes read
//!   back as garbage directory entries (`fsck.fat` then reports bad names, bad clusters, cross
//!   links). We fix it below `fatfs`, in [`ZeroOnAllocWriter`]: every write to the first FAT that
//!   turns an entry from free (0) into used zeroes that cluster's data first (if it is not zero
//!   already, so sparse images stay sparse). This covers the root, subdirectories and anything a
//!   later `fatfs` path might allocate, without relying on `fatfs` internals such as its
//!   allocation hint. Cost: one read of each newly allocated cluster, and a write of zeros where
//!   the free space held old data. Test: `tests/image.rs` `fatfs_root_growth_*`.
//! - **Misplaced `.`/`..` in new directories.** `fatfs` 0.3.6 `create_dir` writes a long-name
//!   entry in front of `.` and of `..` (so slots 0 and 1 are not `.` and `..`, which `fsck.fat`
//!   rejects) and gives a top-level directory a `..` pointing at the root cluster instead of 0.
//!   [`BootFs::write`] rewrites the new directory's first cluster right after creating it (it
//!   learns the cluster from the allocation log of [`ZeroOnAllocWriter`]), and only if it looks
//!   exactly like that. Test: `tests/image.rs` `fatfs_create_dir_*`.
//! - **Reproducible timestamps.** Every entry created or modified gets [`FAT_TIMESTAMP`]
//!   (1980-01-01 00:00:00, the FAT epoch, as reproducible zip tools use), and access dates are
//!   not updated.
//! - **Full partitions.** A write first checks that the partition has room (data clusters, new
//!   directories, one more cluster for the parent directory) and fails with
//!   [`ImageError::FatFull`] before touching anything. Should `fatfs` still run out of space
//!   (a wrong FSInfo free count), the partial file and the directories this write created are
//!   removed.
//!
//! Deliberately not here: long-name short-name aliases beyond what `fatfs` generates, file
//! attributes, FAT12/16 root-directory limits beyond what `fatfs` reports.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::rc::Rc;

use fatfs::{Date, DateTime, FileSystem, FsOptions, Time, TimeProvider};
use tracing::{debug, warn};

use super::blockcache::BlockCache;
use super::window::PartitionWindow;
use super::{FsKind, ImageError, Partition};

/// The timestamp of every entry [`BootFs`] creates or modifies: 1980-01-01 00:00:00.
pub const FAT_TIMESTAMP: DateTime = DateTime {
    date: Date {
        year: 1980,
        month: 1,
        day: 1,
    },
    time: Time {
        hour: 0,
        min: 0,
        sec: 0,
        millis: 0,
    },
};

#[derive(Debug)]
struct FixedTime;

impl TimeProvider for FixedTime {
    fn get_current_date(&self) -> Date {
        FAT_TIMESTAMP.date
    }
    fn get_current_date_time(&self) -> DateTime {
        FAT_TIMESTAMP
    }
}

static FIXED_TIME: FixedTime = FixedTime;

/// The geometry of a FAT volume, from its boot sector (BPB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatGeometry {
    /// FAT12, FAT16 or FAT32, by cluster count (Microsoft's rule, as `fatfs` and Linux use).
    pub kind: FsKind,
    /// Bytes per sector.
    pub bytes_per_sector: u64,
    /// Bytes per cluster.
    pub cluster_size: u64,
    /// Number of data clusters (valid cluster numbers are `2..clusters + 2`).
    pub clusters: u64,
    /// Byte offset of the first FAT.
    pub fat_start: u64,
    /// Bytes of one FAT.
    pub fat_len: u64,
    /// Number of FATs.
    pub fats: u64,
    /// Byte offset of cluster 2.
    pub data_start: u64,
    /// The BPB volume label, trimmed; `None` for "NO NAME" or none.
    pub label: Option<String>,
}

impl FatGeometry {
    /// Parses a FAT boot sector (the first 512 bytes of the partition). `None` if it is not one.
    /// Pure; never panics.
    pub fn parse(boot: &[u8]) -> Option<Self> {
        let b = boot.get(..512)?;
        let u16_at = |o: usize| u64::from(u16::from_le_bytes([b[o], b[o + 1]]));
        let u32_at = |o: usize| u64::from(u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]));
        if b[510..512] != [0x55, 0xAA] || !matches!(b[0], 0xEB | 0xE9) {
            return None;
        }
        let bps = u16_at(11);
        let spc = u64::from(b[13]);
        let reserved = u16_at(14);
        let fats = u64::from(b[16]);
        let root_entries = u16_at(17);
        if !matches!(bps, 512 | 1024 | 2048 | 4096)
            || !spc.is_power_of_two()
            || reserved == 0
            || !(1..=4).contains(&fats)
        {
            return None;
        }
        let total = if u16_at(19) != 0 {
            u16_at(19)
        } else {
            u32_at(32)
        };
        let fat_sectors = if u16_at(22) != 0 {
            u16_at(22)
        } else {
            u32_at(36)
        };
        let root_sectors = (root_entries * 32).div_ceil(bps);
        let meta = reserved + fats * fat_sectors + root_sectors;
        if fat_sectors == 0 || total <= meta {
            return None;
        }
        let clusters = (total - meta) / spc;
        let kind = match clusters {
            0..4085 => FsKind::Fat12,
            4085..65525 => FsKind::Fat16,
            _ => FsKind::Fat32,
        };
        let label_at = if kind == FsKind::Fat32 { 0x47 } else { 0x2B };
        let sig_at = if kind == FsKind::Fat32 { 0x42 } else { 0x26 };
        let label = if b[sig_at] == 0x29 {
            super::clean_label(&b[label_at..label_at + 11])
        } else {
            None
        };
        Some(FatGeometry {
            kind,
            bytes_per_sector: bps,
            cluster_size: spc * bps,
            clusters,
            fat_start: reserved * bps,
            fat_len: fat_sectors * bps,
            fats,
            data_start: meta * bps,
            label,
        })
    }

    /// Byte offset of a data cluster (numbered from 2).
    pub fn cluster_offset(&self, cluster: u64) -> u64 {
        self.data_start + (cluster - 2) * self.cluster_size
    }
}

/// `Read + Write + Seek` adapter under `fatfs` that zeroes a FAT32 cluster when its entry in a
/// FAT goes from free to used; see the module docs for why. On FAT12/16 it passes through.
#[derive(Debug)]
pub struct ZeroOnAllocWriter<W> {
    inner: W,
    geo: FatGeometry,
    pos: u64,
    /// Clusters zeroed since they were last seen free (so FAT mirrors don't zero twice).
    zeroed: HashSet<u32>,
    /// Every cluster allocated, in order, for whoever holds a clone ([`Self::alloc_log`]).
    log: AllocLog,
}

/// The clusters a [`ZeroOnAllocWriter`] saw allocated, oldest first; shared with its owner.
pub type AllocLog = Rc<RefCell<Vec<u32>>>;

/// FAT32 entries use the low 28 bits.
const FAT32_MASK: u32 = 0x0FFF_FFFF;

impl<W: Read + Write + Seek> ZeroOnAllocWriter<W> {
    /// Wraps `inner`, a whole FAT volume positioned anywhere, with the volume's geometry.
    pub fn new(mut inner: W, geo: FatGeometry) -> io::Result<Self> {
        let pos = inner.stream_position()?;
        Ok(Self {
            inner,
            geo,
            pos,
            zeroed: HashSet::new(),
            log: AllocLog::default(),
        })
    }

    /// A handle on the log of allocated clusters (FAT32 only); clear it before an operation and
    /// read it after to learn which clusters the operation allocated.
    pub fn alloc_log(&self) -> AllocLog {
        Rc::clone(&self.log)
    }

    /// Gives the inner stream back.
    pub fn into_inner(self) -> W {
        self.inner
    }

    /// The FAT entries (index of the FAT copy's byte offset, first entry, entry count) the byte
    /// range `pos..pos + len` touches.
    fn touched_entries(&self, pos: u64, len: u64) -> Vec<(u64, u64, u64)> {
        if self.geo.kind != FsKind::Fat32 || len == 0 {
            return Vec::new();
        }
        let end = pos + len;
        let entries_in_fat = (self.geo.clusters + 2).min(self.geo.fat_len / 4);
        (0..self.geo.fats)
            .filter_map(|i| {
                let fat = self.geo.fat_start + i * self.geo.fat_len;
                let lo = pos.max(fat);
                let hi = end.min(fat + entries_in_fat * 4);
                (lo < hi).then(|| {
                    let first = (lo - fat) / 4;
                    let last = (hi - 1 - fat) / 4;
                    (fat, first, last - first + 1)
                })
            })
            .collect()
    }

    fn read_entries(&mut self, fat: u64, first: u64, count: u64) -> io::Result<Vec<u32>> {
        let mut buf = vec![0u8; usize::try_from(count * 4).map_err(io::Error::other)?];
        self.inner.seek(SeekFrom::Start(fat + first * 4))?;
        self.inner.read_exact(&mut buf)?;
        Ok(buf
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Makes a freshly allocated cluster read as zeros (writes only if it does not already).
    fn zero_cluster(&mut self, cluster: u32) -> io::Result<()> {
        let off = self.geo.cluster_offset(u64::from(cluster));
        let size = usize::try_from(self.geo.cluster_size).map_err(io::Error::other)?;
        let mut buf = vec![0u8; size];
        self.inner.seek(SeekFrom::Start(off))?;
        let mut got = 0;
        while got < size {
            match self.inner.read(&mut buf[got..])? {
                0 => break,
                n => got += n,
            }
        }
        if buf.iter().any(|&b| b != 0) {
            debug!(cluster, "zeroing a newly allocated cluster");
            buf.fill(0);
            self.inner.seek(SeekFrom::Start(off))?;
            self.inner.write_all(&buf)?;
        }
        Ok(())
    }
}

impl<W: Read + Write + Seek> Read for ZeroOnAllocWriter<W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.seek(SeekFrom::Start(self.pos))?;
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<W: Read + Write + Seek> Write for ZeroOnAllocWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let pos = self.pos;
        let touched = self.touched_entries(pos, buf.len() as u64);
        let mut before = Vec::with_capacity(touched.len());
        for &(fat, first, count) in &touched {
            before.push(self.read_entries(fat, first, count)?);
        }
        self.inner.seek(SeekFrom::Start(pos))?;
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        for (&(fat, first, count), old) in touched.iter().zip(before) {
            let new = self.read_entries(fat, first, count)?;
            for (i, (o, v)) in old.into_iter().zip(new).enumerate() {
                let cluster = u32::try_from(first + i as u64).map_err(io::Error::other)?;
                let valid = (2..self.geo.clusters + 2).contains(&u64::from(cluster));
                if v & FAT32_MASK == 0 {
                    self.zeroed.remove(&cluster);
                } else if o & FAT32_MASK == 0 && valid && self.zeroed.insert(cluster) {
                    self.log.borrow_mut().push(cluster);
                    self.zero_cluster(cluster)?;
                }
            }
        }
        if !touched.is_empty() {
            self.inner.seek(SeekFrom::Start(self.pos))?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Read + Write + Seek> Seek for ZeroOnAllocWriter<W> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = self.inner.seek(to)?;
        Ok(self.pos)
    }
}

/// A handle on the image file that [`BootFs`] can hand to `fatfs` and still take back after
/// unmounting (`fatfs` 0.3.6 has no `into_inner`).
#[derive(Debug)]
struct Shared<T>(Rc<RefCell<BlockCache<T>>>);

impl<T: Read + Write + Seek> Read for Shared<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

impl<T: Read + Write + Seek> Write for Shared<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

impl<T: Read + Write + Seek> Seek for Shared<T> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.0.borrow_mut().seek(to)
    }
}

type Volume<T> = ZeroOnAllocWriter<PartitionWindow<Shared<T>>>;

/// The FAT boot partition of an image, open read-write through a partition window.
pub struct BootFs<T: Read + Write + Seek> {
    fs: FileSystem<Volume<T>>,
    file: Rc<RefCell<BlockCache<T>>>,
    geo: FatGeometry,
    number: u32,
    /// Partition byte range, for the raw directory fix-ups.
    range: (u64, u64),
    log: AllocLog,
}

impl<T: Read + Write + Seek> std::fmt::Debug for BootFs<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootFs")
            .field("partition", &self.number)
            .field("geo", &self.geo)
            .finish()
    }
}

impl<T: Read + Write + Seek> BootFs<T> {
    /// Mounts the FAT filesystem of `part` inside the image `inner` (read-write).
    pub fn open(inner: T, part: &Partition) -> Result<Self, ImageError> {
        let not_fat = |reason: String| ImageError::NotFat {
            number: part.number,
            reason,
        };
        let file = Rc::new(RefCell::new(BlockCache::new(inner)));
        let mut window = PartitionWindow::new(Shared(Rc::clone(&file)), part.start, part.len)
            .map_err(|e| not_fat(e.to_string()))?;
        let mut boot = vec![0u8; 512];
        window.read_exact(&mut boot).map_err(|e| {
            ImageError::io(
                format!("reading the boot sector of partition {}", part.number),
                e,
            )
        })?;
        let geo = FatGeometry::parse(&boot)
            .ok_or_else(|| not_fat("its first sector is not a FAT boot sector".to_owned()))?;
        window
            .seek(SeekFrom::Start(0))
            .map_err(|e| not_fat(e.to_string()))?;
        let volume =
            ZeroOnAllocWriter::new(window, geo.clone()).map_err(|e| not_fat(e.to_string()))?;
        let log = volume.alloc_log();
        let options = FsOptions::new()
            .time_provider(&FIXED_TIME)
            .update_accessed_date(false);
        let fs = FileSystem::new(volume, options).map_err(|e| not_fat(e.to_string()))?;
        debug!(partition = part.number, kind = %geo.kind, cluster_size = geo.cluster_size, "opened FAT");
        Ok(Self {
            fs,
            file,
            geo,
            number: part.number,
            range: (part.start, part.len),
            log,
        })
    }

    /// The geometry read from the boot sector.
    pub fn geometry(&self) -> &FatGeometry {
        &self.geo
    }

    /// The contents of the file at `path` (e.g. `"cmdline.txt"`, `"piforge/card.toml"`), or
    /// `None` if there is no such file.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, ImageError> {
        let p = fat_path(path)?;
        let mut f = match self.fs.root_dir().open_file(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fat_err("opening", &p, e)),
        };
        let mut out = Vec::new();
        f.read_to_end(&mut out)
            .map_err(|e| fat_err("reading", &p, e))?;
        Ok(Some(out))
    }

    /// Writes `bytes` to `path`, creating parent directories and replacing any existing file.
    /// Fails with [`ImageError::FatFull`] before writing anything if the partition lacks room.
    pub fn write(&self, path: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let p = fat_path(path)?;
        let parts: Vec<&str> = p.split('/').collect();
        let (name, dirs) = parts
            .split_last()
            .expect("fat_path never returns an empty path");
        let _ = name;
        // Plan: which directories exist, and what is there now.
        let root = self.fs.root_dir();
        let mut existing_dirs = 0;
        let mut dir = root.clone();
        for d in dirs {
            match dir.open_dir(d) {
                Ok(next) => {
                    dir = next;
                    existing_dirs += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(fat_err("opening directory", d, e)),
            }
        }
        let missing_dirs = (dirs.len() - existing_dirs) as u64;
        let old_len = if missing_dirs == 0 {
            self.file_len(&dir, name, &p)?
        } else {
            None
        };
        let cs = self.geo.cluster_size;
        let needed_clusters =
            (bytes.len() as u64).div_ceil(cs) + missing_dirs + u64::from(old_len.is_none()); // a new entry may grow its parent directory
        let free = self.free_bytes()? + old_len.unwrap_or(0).div_ceil(cs) * cs;
        let needed = needed_clusters * cs;
        if needed > free {
            return Err(ImageError::FatFull { needed, free });
        }
        // Do.
        let first_new_dir = (missing_dirs > 0).then(|| dirs[..=existing_dirs].join("/"));
        let result = self.write_unchecked(&p, dirs, bytes);
        if let Err(e) = result {
            warn!(path = %p, error = %e, "write failed; removing what it created");
            let undo = match &first_new_dir {
                Some(d) => self.remove(d),
                None => self.remove(&p),
            };
            if let Err(u) = undo {
                warn!(path = %p, error = %u, "could not remove the partial write");
            }
            let out_of_space = matches!(&e, ImageError::Fat { source, .. }
                if source.to_string().contains("No space left"));
            if out_of_space {
                return Err(ImageError::FatFull {
                    needed,
                    free: self.free_bytes()?,
                });
            }
            return Err(e);
        }
        Ok(())
    }

    fn file_len(
        &self,
        dir: &fatfs::Dir<'_, Volume<T>>,
        name: &str,
        p: &str,
    ) -> Result<Option<u64>, ImageError> {
        for e in dir.iter() {
            let e = e.map_err(|e| fat_err("listing the directory of", p, e))?;
            if e.file_name().eq_ignore_ascii_case(name) {
                if e.is_dir() {
                    return Err(ImageError::BadPath {
                        path: p.to_owned(),
                        reason: "is a directory",
                    });
                }
                return Ok(Some(e.len()));
            }
        }
        Ok(None)
    }

    fn write_unchecked(&self, p: &str, dirs: &[&str], bytes: &[u8]) -> Result<(), ImageError> {
        let mut dir = self.fs.root_dir();
        for (i, d) in dirs.iter().enumerate() {
            let existed = dir.open_dir(d).is_ok();
            self.log.borrow_mut().clear();
            dir = dir
                .create_dir(d)
                .map_err(|e| fat_err("creating directory", d, e))?;
            let first = self.log.borrow().first().copied();
            if let (false, Some(cluster)) = (existed, first) {
                self.fix_dot_entries(cluster, i == 0)
                    .map_err(|e| fat_err("fixing the . and .. entries of", d, e))?;
            }
        }
        let name = p.rsplit('/').next().unwrap_or(p);
        let mut f = dir
            .create_file(name)
            .map_err(|e| fat_err("creating", p, e))?;
        f.truncate().map_err(|e| fat_err("truncating", p, e))?;
        f.write_all(bytes).map_err(|e| fat_err("writing", p, e))?;
        f.flush().map_err(|e| fat_err("writing", p, e))?;
        Ok(())
    }

    /// Repairs a directory `fatfs` 0.3.6 just created in `cluster`: it writes a long-name entry
    /// before `.` and before `..`, so `.`/`..` are not in slots 0/1 where FAT requires them, and
    /// it points `..` of a top-level directory at the FAT32 root cluster instead of 0. The new
    /// cluster is rewritten as `.`, `..`, end of directory. Anything else is left alone.
    fn fix_dot_entries(&self, cluster: u32, parent_is_root: bool) -> io::Result<()> {
        const LFN: u8 = 0x0F;
        let mut w =
            PartitionWindow::new(Shared(Rc::clone(&self.file)), self.range.0, self.range.1)?;
        let off = self.geo.cluster_offset(u64::from(cluster));
        let mut slots = [0u8; 128];
        w.seek(SeekFrom::Start(off))?;
        w.read_exact(&mut slots)?;
        let (dot, dotdot) = if slots[11] == LFN
            && slots[32..43] == *b".          "
            && slots[64 + 11] == LFN
            && slots[96..107] == *b"..         "
        {
            (&slots[32..64], &slots[96..128])
        } else if slots[..11] == *b".          " && slots[32..43] == *b"..         " {
            (&slots[..32], &slots[32..64])
        } else {
            warn!(
                cluster,
                "new directory does not look as expected; leaving it alone"
            );
            return Ok(());
        };
        let mut fixed = [0u8; 128];
        fixed[..32].copy_from_slice(dot);
        fixed[32..64].copy_from_slice(dotdot);
        if parent_is_root {
            fixed[32 + 20..32 + 22].fill(0);
            fixed[32 + 26..32 + 28].fill(0);
        }
        if fixed != slots {
            debug!(cluster, "rewriting . and .. of a new directory");
            w.seek(SeekFrom::Start(off))?;
            w.write_all(&fixed)?;
        }
        Ok(())
    }

    /// Removes the file or directory tree at `path`; a missing path is not an error.
    pub fn remove(&self, path: &str) -> Result<(), ImageError> {
        let p = fat_path(path)?;
        let (parent, name) = match p.rsplit_once('/') {
            Some((d, n)) => (Some(d), n),
            None => (None, p.as_str()),
        };
        let root = self.fs.root_dir();
        let dir = match parent {
            None => root,
            Some(d) => match root.open_dir(d) {
                Ok(dir) => dir,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(fat_err("opening directory", d, e)),
            },
        };
        remove_tree(&dir, name, &p)
    }

    /// The names in directory `dir` (`""` or `"/"` for the root), sorted, without `.`/`..`.
    pub fn list(&self, dir: &str) -> Result<Vec<String>, ImageError> {
        let p = fat_dir_path(dir)?;
        let root = self.fs.root_dir();
        let d = if p.is_empty() {
            root
        } else {
            root.open_dir(&p)
                .map_err(|e| fat_err("opening directory", &p, e))?
        };
        let mut names = Vec::new();
        for e in d.iter() {
            let e = e.map_err(|e| fat_err("listing", &p, e))?;
            let n = e.file_name();
            if n != "." && n != ".." {
                names.push(n);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Free bytes on the partition (free clusters × cluster size).
    pub fn free_bytes(&self) -> Result<u64, ImageError> {
        let s = self
            .fs
            .stats()
            .map_err(|e| fat_err("counting free clusters of", "/", e))?;
        Ok(u64::from(s.free_clusters()) * u64::from(s.cluster_size()))
    }

    /// The volume label from the boot sector, trimmed (e.g. `"bootfs"`).
    pub fn label(&self) -> String {
        self.fs.volume_label().trim().to_owned()
    }

    /// Unmounts cleanly (FSInfo written, dirty flag cleared) and returns the image file.
    pub fn flush(self) -> Result<T, ImageError> {
        let BootFs {
            fs, file, number, ..
        } = self;
        fs.unmount()
            .map_err(|e| ImageError::io(format!("unmounting FAT partition {number}"), e))?;
        let cell = Rc::try_unwrap(file).map_err(|_| {
            ImageError::io(
                "unmounting the FAT",
                io::Error::other("the image file is still shared"),
            )
        })?;
        let mut inner = cell.into_inner().into_inner();
        inner
            .flush()
            .map_err(|e| ImageError::io("flushing the image file", e))?;
        Ok(inner)
    }
}

fn remove_tree<T: Read + Write + Seek>(
    dir: &fatfs::Dir<'_, T>,
    name: &str,
    p: &str,
) -> Result<(), ImageError> {
    let mut found = None;
    for e in dir.iter() {
        let e = e.map_err(|e| fat_err("listing the directory of", p, e))?;
        if e.file_name().eq_ignore_ascii_case(name) {
            found = Some(e.is_dir());
            break;
        }
    }
    match found {
        None => return Ok(()),
        Some(true) => {
            let sub = dir
                .open_dir(name)
                .map_err(|e| fat_err("opening directory", p, e))?;
            let mut children = Vec::new();
            for e in sub.iter() {
                let e = e.map_err(|e| fat_err("listing", p, e))?;
                let n = e.file_name();
                if n != "." && n != ".." {
                    children.push(n);
                }
            }
            for c in children {
                remove_tree(&sub, &c, &format!("{p}/{c}"))?;
            }
        }
        Some(false) => {}
    }
    dir.remove(name).map_err(|e| fat_err("removing", p, e))
}

fn fat_err(op: &'static str, path: &str, source: io::Error) -> ImageError {
    ImageError::Fat {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Normalises a path on the FAT: `/`-separated, leading `/` and `.` components dropped; `..`,
/// backslashes and empty paths are refused. Pure.
pub fn fat_path(path: &str) -> Result<String, ImageError> {
    let p = fat_dir_path(path)?;
    if p.is_empty() {
        return Err(ImageError::BadPath {
            path: path.to_owned(),
            reason: "names no file",
        });
    }
    Ok(p)
}

fn fat_dir_path(path: &str) -> Result<String, ImageError> {
    let bad = |reason| {
        Err(ImageError::BadPath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.contains('\\') || path.contains('\0') {
        return bad("has a backslash or NUL");
    }
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return bad("has a `..` component"),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A FAT32 volume formatted by `fatfs` in memory, wrapped in a partition at byte 1 MiB.
    fn image(total: u64, cluster: u32) -> (Cursor<Vec<u8>>, Partition) {
        let start = 1 << 20;
        let mut img = Cursor::new(vec![0u8; (start + total) as usize]);
        {
            let w = PartitionWindow::new(&mut img, start, total).unwrap();
            fatfs::format_volume(
                w,
                fatfs::FormatVolumeOptions::new()
                    .fat_type(fatfs::FatType::Fat32)
                    .bytes_per_cluster(cluster)
                    .volume_label(*b"bootfs     "),
            )
            .unwrap();
        }
        let part = Partition {
            number: 1,
            start,
            len: total,
            part_type: super::super::PartType::Mbr(0x0c),
            fs: FsKind::Fat32,
            label: None,
            guid: None,
        };
        (img, part)
    }

    #[test]
    fn geometry_of_a_fatfs_volume() {
        let (img, part) = image(40 << 20, 512);
        let g = FatGeometry::parse(&img.get_ref()[part.start as usize..]).unwrap();
        assert_eq!(g.kind, FsKind::Fat32);
        assert_eq!(g.cluster_size, 512);
        assert_eq!(g.label.as_deref(), Some("bootfs"));
        assert!(g.clusters > 65525);
        assert!(FatGeometry::parse(&[0u8; 512]).is_none());
    }

    #[test]
    fn round_trip_in_memory() {
        let (img, part) = image(40 << 20, 512);
        let fs = BootFs::open(img, &part).unwrap();
        assert_eq!(fs.label(), "bootfs");
        fs.write("/piforge/overlays/a.toml", b"a = 1\n").unwrap();
        fs.write("cmdline.txt", b"console=tty1\n").unwrap();
        fs.write("cmdline.txt", b"x\n").unwrap();
        assert_eq!(
            fs.read("piforge/overlays/a.toml").unwrap().unwrap(),
            b"a = 1\n"
        );
        assert_eq!(fs.read("CMDLINE.TXT").unwrap().unwrap(), b"x\n");
        assert_eq!(fs.read("nope").unwrap(), None);
        assert_eq!(fs.list("/").unwrap(), ["cmdline.txt", "piforge"]);
        fs.remove("piforge").unwrap();
        fs.remove("piforge").unwrap();
        assert_eq!(fs.list("").unwrap(), ["cmdline.txt"]);
        let img = fs.flush().unwrap();
        let fs = BootFs::open(img, &part).unwrap();
        assert_eq!(fs.read("cmdline.txt").unwrap().unwrap(), b"x\n");
    }

    #[test]
    fn paths_are_checked() {
        assert_eq!(fat_path("/a//b/./c").unwrap(), "a/b/c");
        assert!(fat_path("a/../b").is_err());
        assert!(fat_path("/").is_err());
        assert!(fat_path("a\\b").is_err());
    }

    proptest::proptest! {
        #[test]
        fn geometry_parse_never_panics(bytes in proptest::collection::vec(0u8..=255, 0..600)) {
            let _ = FatGeometry::parse(&bytes);
        }
    }
}
