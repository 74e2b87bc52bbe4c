//! Linux device discovery over an injectable root ([`SysRoot`]): `/sys/block`, the mount table,
//! the swap table and `/dev/disk/by-label`.
//!
//! Reads files and resolves symlinks under the given root, so tests build a fake sysfs tree in a
//! temp dir. It describes every disk (size, model, bus, partitions, labels, what is mounted from
//! it directly or through dm/md holders, active swap) and leaves every judgement to
//! [`super::assess`]. Deliberately never opens a device node and never reads a partition table:
//! discovery must work unprivileged and must not wake sleeping disks.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::mountinfo::{self, Mount};
use super::{Bus, Device, MountUse, Partition, SysRoot};

/// Kernel names of block devices that are never flash targets and are left out of listings:
/// RAM disks, compressed swap, device-mapper and md arrays (they sit *on* disks), optical drives,
/// floppies, network block devices, MTD and bcache/zoned virtual devices.
pub fn is_virtual_name(name: &str) -> bool {
    const PREFIXES: [&str; 9] = [
        "ram", "zram", "dm-", "md", "sr", "fd", "nbd", "mtdblock", "bcache",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The mount and swap tables, and the map from `major:minor` to kernel name, read once.
#[derive(Debug, Default)]
pub struct Tables {
    mounts: Vec<Mount>,
    /// (kernel name of the swap device or of the device holding the swap file, swap path).
    swaps: Vec<(String, PathBuf)>,
    by_devnum: BTreeMap<(u32, u32), String>,
    labels: BTreeMap<String, String>,
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

fn read_flag(p: &Path) -> bool {
    read_trim(p).as_deref() == Some("1")
}

fn parse_devnum(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Subdirectories of `dir` that are partitions (they have a `partition` file), sorted by number.
fn partition_dirs(dir: &Path) -> Vec<(u32, String)> {
    let mut v: Vec<(u32, String)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = read_trim(&e.path().join("partition"))?.parse().ok()?;
            Some((n, name))
        })
        .collect();
    v.sort();
    v
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Undoes udev's `\xHH` escaping of `/dev/disk/by-label` names.
fn unescape_udev(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && b.get(i + 1) == Some(&b'x')
            && i + 3 < b.len()
            && b[i + 2].is_ascii_hexdigit()
            && b[i + 3].is_ascii_hexdigit()
        {
            let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
            out.push(hex(b[i + 2]) * 16 + hex(b[i + 3]));
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Tables {
    /// Reads the tables under `root`. A missing mount table is an error (without it no rule
    /// about mounted system disks could hold); a missing swap table or `by-label` dir is not.
    pub fn read(root: &SysRoot) -> anyhow::Result<Tables> {
        let text = fs::read_to_string(&root.mountinfo)
            .with_context(|| format!("reading {}", root.mountinfo.display()))?;
        let mounts = mountinfo::parse_mountinfo(&text);
        let mut t = Tables {
            mounts,
            ..Tables::default()
        };
        let block = root.sys.join("block");
        for name in dir_names(&block) {
            let dir = block.join(&name);
            if let Some(n) = read_trim(&dir.join("dev"))
                .as_deref()
                .and_then(parse_devnum)
            {
                t.by_devnum.insert(n, name.clone());
            }
            for (_, part) in partition_dirs(&dir) {
                let pd = dir.join(&part);
                if let Some(n) = read_trim(&pd.join("dev")).as_deref().and_then(parse_devnum) {
                    t.by_devnum.insert(n, part);
                }
            }
        }
        let by_label = root.dev.join("disk").join("by-label");
        for label in dir_names(&by_label) {
            if let Ok(target) = fs::read_link(by_label.join(&label))
                && let Some(n) = target.file_name()
            {
                t.labels
                    .insert(n.to_string_lossy().into_owned(), unescape_udev(&label));
            }
        }
        if let Ok(text) = fs::read_to_string(&root.swaps) {
            for s in mountinfo::parse_swaps(&text) {
                let owner = if s.partition {
                    Some(t.source_name(root, &s.path.to_string_lossy()))
                } else {
                    // A swap file: the device of the mount that contains it.
                    t.mounts
                        .iter()
                        .filter(|m| s.path.starts_with(&m.mount_point))
                        .max_by_key(|m| m.mount_point.as_os_str().len())
                        .map(|m| t.mount_device(root, m))
                };
                if let Some(o) = owner {
                    t.swaps.push((o, s.path));
                }
            }
        }
        Ok(t)
    }

    /// The kernel name behind a `/dev/...` source: resolves symlinks (`/dev/mapper/x` →
    /// `dm-0`, `/dev/disk/by-uuid/...`) under the dev root when they exist.
    fn source_name(&self, root: &SysRoot, source: &str) -> String {
        let rest = source.strip_prefix("/dev/").unwrap_or(source);
        let node = root.dev.join(rest);
        let resolved = fs::canonicalize(&node).unwrap_or(node);
        resolved
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| rest.to_string())
    }

    /// The kernel name of the device a mount comes from: by `major:minor` when it is a block
    /// device we know, else by its source (btrfs reports anonymous device numbers).
    fn mount_device(&self, root: &SysRoot, m: &Mount) -> String {
        match self.by_devnum.get(&m.dev) {
            Some(n) => n.clone(),
            None => self.source_name(root, &m.source),
        }
    }
}

/// The bus a disk hangs on, from the canonical sysfs path of the disk (`.../usb2/...`,
/// `.../mmc_host/...`, `.../nvme/...`, `.../virtio1/...`, `.../ata3/...`) and its name.
pub fn bus_of(name: &str, canonical: &Path) -> Bus {
    let comps: Vec<String> = canonical
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let has = |pred: &dyn Fn(&str) -> bool| comps.iter().any(|c| pred(c));
    let numbered = |c: &str, p: &str| {
        c.strip_prefix(p)
            .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
    };
    if name.starts_with("loop") {
        Bus::Loop
    } else if has(&|c| numbered(c, "usb")) {
        Bus::Usb
    } else if name.starts_with("mmcblk") || has(&|c| c == "mmc_host") {
        Bus::Mmc
    } else if name.starts_with("nvme") || has(&|c| c == "nvme") {
        Bus::Nvme
    } else if has(&|c| numbered(c, "virtio")) {
        Bus::Virtio
    } else if has(&|c| numbered(c, "ata")) {
        Bus::Sata
    } else if name.starts_with("sd") {
        Bus::Scsi
    } else {
        Bus::Other
    }
}

/// Describes the whole disk `name` (a directory of `/sys/block`). `Ok(None)` when there is no
/// such disk.
pub fn probe(root: &SysRoot, tables: &Tables, name: &str) -> anyhow::Result<Option<Device>> {
    let dir = root.sys.join("block").join(name);
    if !dir.is_dir() {
        return Ok(None);
    }
    let canonical = fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
    let sectors: u64 = read_trim(&dir.join("size"))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("reading {}", dir.join("size").display()))?;
    let dev_dir = dir.join("device");
    let model = read_trim(&dev_dir.join("model"))
        .filter(|s| !s.is_empty())
        .or_else(|| read_trim(&dev_dir.join("name")))
        .unwrap_or_default();
    // virtio and NVMe controllers put a numeric PCI vendor id there: not worth showing.
    let vendor = read_trim(&dev_dir.join("vendor"))
        .filter(|v| !v.starts_with("0x"))
        .unwrap_or_default();
    let bus = bus_of(name, &canonical);
    let emmc = bus == Bus::Mmc && read_trim(&dev_dir.join("type")).as_deref() == Some("MMC");
    let backing_file = if bus == Bus::Loop {
        read_trim(&dir.join("loop").join("backing_file"))
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    } else {
        None
    };

    let parts = partition_dirs(&dir);
    // Every name whose mounts and swaps count against this disk, and the holders on top.
    let mut names: BTreeSet<String> = BTreeSet::from([name.to_string()]);
    let mut holders: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<PathBuf> = vec![dir.join("holders")];
    for (_, p) in &parts {
        names.insert(p.clone());
        todo.push(dir.join(p).join("holders"));
    }
    while let Some(h) = todo.pop() {
        for holder in dir_names(&h) {
            if holders.insert(holder.clone()) {
                todo.push(root.sys.join("block").join(&holder).join("holders"));
            }
        }
    }

    let mut mounts = Vec::new();
    for m in &tables.mounts {
        let dev = tables.mount_device(root, m);
        let via_holder = holders.contains(&dev);
        if names.contains(&dev) || via_holder {
            mounts.push(MountUse {
                device: root.dev.join(&dev),
                mount_point: m.mount_point.clone(),
                via_holder,
            });
        }
    }
    let swaps: Vec<PathBuf> = tables
        .swaps
        .iter()
        .filter(|(owner, _)| names.contains(owner) || holders.contains(owner))
        .map(|(_, p)| p.clone())
        .collect();

    let partitions = parts
        .iter()
        .map(|(number, p)| {
            let pd = dir.join(p);
            let size = read_trim(&pd.join("size"))
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
            Partition {
                number: *number,
                name: p.clone(),
                path: root.dev.join(p),
                size: size.saturating_mul(512),
                label: tables.labels.get(p).cloned(),
                mount_points: mounts
                    .iter()
                    .filter(|m| m.device == root.dev.join(p))
                    .map(|m| m.mount_point.clone())
                    .collect(),
            }
        })
        .collect();

    Ok(Some(Device {
        name: name.to_string(),
        path: root.dev.join(name),
        size: sectors.saturating_mul(512),
        model,
        vendor,
        bus,
        removable: read_flag(&dir.join("removable")),
        read_only: read_flag(&dir.join("ro")),
        emmc,
        internal: None,
        holders: holders.into_iter().collect(),
        mounts,
        swaps,
        partitions,
        backing_file,
    }))
}

/// Every candidate disk under `root`, sorted by name: virtual devices (see
/// [`is_virtual_name`]) and loop devices without a backing file are left out.
pub fn list(root: &SysRoot) -> anyhow::Result<Vec<Device>> {
    let tables = Tables::read(root)?;
    let block = root.sys.join("block");
    let names = fs::read_dir(&block).with_context(|| format!("listing {}", block.display()))?;
    let mut out = Vec::new();
    for e in names {
        let e = e.with_context(|| format!("listing {}", block.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if is_virtual_name(&name) {
            continue;
        }
        if let Some(d) = probe(root, &tables, &name)? {
            if d.bus == Bus::Loop && d.backing_file.is_none() {
                continue;
            }
            out.push(d);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What a kernel name is, for a path the user gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A whole disk (a directory of `/sys/block`).
    Disk(String),
    /// A partition of the named whole disk.
    Partition { disk: String },
    /// The kernel does not know it.
    Unknown,
}

/// Classifies the kernel name `name` under `root`.
pub fn lookup(root: &SysRoot, name: &str) -> Lookup {
    let block = root.sys.join("block");
    if block.join(name).is_dir() {
        return Lookup::Disk(name.to_string());
    }
    for disk in dir_names(&block) {
        if block.join(&disk).join(name).join("partition").is_file() {
            return Lookup::Partition { disk };
        }
    }
    Lookup::Unknown
}

/// The kernel name of a real block device node from its device number, through
/// `/sys/dev/block/MAJ:MIN` (covers udev-renamed nodes such as `/dev/root`).
pub fn name_from_devnum(root: &SysRoot, major: u32, minor: u32) -> Option<String> {
    let link = root
        .sys
        .join("dev")
        .join("block")
        .join(format!("{major}:{minor}"));
    let c = fs::canonicalize(link).ok()?;
    Some(c.file_name()?.to_string_lossy().into_owned())
}

/// What a block device sits on, as far as sysfs tells: the devices (`major:minor`) and the
/// files behind loop devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stack {
    /// The device itself, its whole disk when it is a partition, and everything it is stacked
    /// on (dm/md slaves, recursively, and their whole disks).
    pub devices: Vec<(u32, u32)>,
    /// The backing files of loop devices among them.
    pub files: Vec<PathBuf>,
}

/// The [`Stack`] under the block device `devnum` (e.g. the `st_dev` of a file: the disk a
/// file lives on). Unknown numbers (a tmpfs, overlayfs, btrfs subvolume's anonymous device)
/// give just themselves.
pub fn stack_of(root: &SysRoot, devnum: (u32, u32)) -> Stack {
    let mut st = Stack::default();
    let mut todo = vec![devnum];
    let dev_of = |dir: &Path| read_trim(&dir.join("dev")).and_then(|s| parse_devnum(&s));
    // Bounded: a stack deeper than that is not a real machine's.
    while let Some(d) = todo.pop() {
        if st.devices.contains(&d) || st.devices.len() >= 256 {
            continue;
        }
        st.devices.push(d);
        let link = root.sys.join("dev/block").join(format!("{}:{}", d.0, d.1));
        let Ok(dir) = fs::canonicalize(link) else {
            continue;
        };
        if dir.join("partition").is_file()
            && let Some(disk) = dir.parent().and_then(dev_of)
        {
            todo.push(disk);
        }
        let slaves = dir.join("slaves");
        for s in dir_names(&slaves) {
            if let Some(n) = fs::canonicalize(slaves.join(&s))
                .ok()
                .and_then(|p| dev_of(&p))
            {
                todo.push(n);
            }
        }
        if let Some(f) = read_trim(&dir.join("loop").join("backing_file")).filter(|f| !f.is_empty())
        {
            let f = f.strip_suffix(" (deleted)").unwrap_or(&f).to_owned();
            st.files.push(PathBuf::from(f));
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_stack_follows_partitions_slaves_and_loop_files() {
        let d = tempfile::tempdir().unwrap();
        let root = SysRoot::under(d.path());
        let dev = |rel: &str, devnum: &str| {
            let p = d.path().join("sys/devices").join(rel);
            fs::create_dir_all(&p).unwrap();
            fs::write(p.join("dev"), format!("{devnum}\n")).unwrap();
            let links = d.path().join("sys/dev/block");
            fs::create_dir_all(&links).unwrap();
            std::os::unix::fs::symlink(&p, links.join(devnum)).unwrap();
            p
        };
        let _sdb = dev("usb/block/sdb", "8:16");
        let sdb1 = dev("usb/block/sdb/sdb1", "8:17");
        fs::write(sdb1.join("partition"), "1\n").unwrap();
        let loop0 = dev("virtual/block/loop0", "7:0");
        fs::create_dir_all(loop0.join("loop")).unwrap();
        fs::write(loop0.join("loop/backing_file"), "/srv/x.img (deleted)\n").unwrap();
        let dm = dev("virtual/block/dm-0", "254:0");
        fs::create_dir_all(dm.join("slaves")).unwrap();
        std::os::unix::fs::symlink(&sdb1, dm.join("slaves/sdb1")).unwrap();
        std::os::unix::fs::symlink(&loop0, dm.join("slaves/loop0")).unwrap();
        let st = stack_of(&root, (254, 0));
        let mut devs = st.devices.clone();
        devs.sort();
        assert_eq!(devs, [(7, 0), (8, 16), (8, 17), (254, 0)]);
        assert_eq!(st.files, [PathBuf::from("/srv/x.img")]);
        assert_eq!(stack_of(&root, (0, 42)).devices, [(0, 42)]);
    }

    #[test]
    fn bus_comes_from_the_sysfs_path() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            bus_of(
                "sdb",
                &p("/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/block/sdb")
            ),
            Bus::Usb
        );
        assert_eq!(
            bus_of(
                "sda",
                &p("/sys/devices/pci0000:00/0000:00:17.0/ata3/host2/block/sda")
            ),
            Bus::Sata
        );
        assert_eq!(
            bus_of(
                "mmcblk0",
                &p(
                    "/sys/devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0"
                )
            ),
            Bus::Mmc
        );
        assert_eq!(
            bus_of(
                "nvme0n1",
                &p("/sys/devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1")
            ),
            Bus::Nvme
        );
        assert_eq!(
            bus_of(
                "vda",
                &p("/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda")
            ),
            Bus::Virtio
        );
        assert_eq!(
            bus_of("loop3", &p("/sys/devices/virtual/block/loop3")),
            Bus::Loop
        );
        assert_eq!(
            bus_of("sdc", &p("/sys/devices/platform/host0/block/sdc")),
            Bus::Scsi
        );
        // "usbmisc" or "usb-storage" are not bus nodes; only usbN counts.
        assert_eq!(
            bus_of("xyz", &p("/sys/devices/usbmisc/block/xyz")),
            Bus::Other
        );
    }

    #[test]
    fn udev_label_escapes_decode() {
        assert_eq!(unescape_udev(r"my\x20card"), "my card");
        assert_eq!(unescape_udev(r"bootfs"), "bootfs");
        assert_eq!(unescape_udev(r"odd\x2"), r"odd\x2");
    }

    #[test]
    fn virtual_names_are_skipped() {
        for n in ["ram0", "zram0", "dm-1", "md127", "sr0", "nbd3"] {
            assert!(is_virtual_name(n), "{n}");
        }
        for n in ["sda", "mmcblk0", "nvme0n1", "loop0", "vda"] {
            assert!(!is_virtual_name(n), "{n}");
        }
    }
}
