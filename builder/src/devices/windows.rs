//! Windows devices, the pure part: what the drive and volume queries return, turned into
//! [`Device`]s, the Windows path rules (`\\.\PhysicalDriveN` is a disk, `E:` a volume to
//! refuse with its disk named) and the Windows system-drive rule ([`system_rule`]).
//!
//! Compiled on every OS so Linux tests drive it with the byte layouts Windows documents
//! (`STORAGE_DEVICE_DESCRIPTOR`, `VOLUME_DISK_EXTENTS`). The calls that fill
//! [`DriveInfo`] and [`VolumeInfo`] (`DeviceIoControl`, `FindFirstVolumeW`, ...) live in
//! `winapi`, compiled on Windows only.
//! Deliberately not handled: dynamic disks and Storage Spaces beyond refusing them as busy
//! (a volume spanning several disks makes each of them busy).

use std::path::{Path, PathBuf};

use super::{Bus, Device, MountUse, Partition, Policy, SafetyError};

/// One physical drive, as `IOCTL_STORAGE_QUERY_PROPERTY` and `IOCTL_DISK_GET_LENGTH_INFO`
/// describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveInfo {
    /// N of `\\.\PhysicalDriveN`.
    pub number: u32,
    /// Size in bytes (0: no medium).
    pub size: u64,
    /// What the storage descriptor says.
    pub descriptor: Descriptor,
    /// `IOCTL_DISK_IS_WRITABLE` succeeded (a locked card fails it).
    pub writable: bool,
}

/// The fields of a `STORAGE_DEVICE_DESCRIPTOR` piforge uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// `RemovableMedia`.
    pub removable_media: bool,
    /// `BusType` (`STORAGE_BUS_TYPE`).
    pub bus_type: u32,
    /// Vendor id string, trimmed.
    pub vendor: String,
    /// Product id string, trimmed.
    pub product: String,
}

/// One volume (`\\?\Volume{GUID}\`), where it is mounted and which disks hold it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeInfo {
    /// The volume GUID path with its trailing backslash.
    pub name: String,
    /// Drive letters and mounted folders (`C:\`, `D:\mnt\card\`).
    pub mount_points: Vec<String>,
    /// `(disk number, starting offset, length)` of each extent.
    pub extents: Vec<(u32, u64, u64)>,
}

/// `BusType` of `STORAGE_BUS_TYPE` as a [`Bus`].
pub fn bus_of(bus_type: u32) -> Bus {
    match bus_type {
        7 => Bus::Usb,                   // BusTypeUsb
        12 | 13 => Bus::Mmc,             // BusTypeSd, BusTypeMmc
        17 => Bus::Nvme,                 // BusTypeNvme
        3 | 11 => Bus::Sata,             // BusTypeAta, BusTypeSata
        1 | 2 | 6 | 9 | 10 => Bus::Scsi, // Scsi, Atapi, Fibre, iScsi, Sas
        14 | 15 => Bus::Loop,            // BusTypeVirtual, BusTypeFileBackedVirtual (VHD)
        _ => Bus::Other,                 // 1394, SSA, RAID, Spaces, SCM, UFS, unknown
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The NUL-terminated ASCII string at `offset` (0: none), trimmed; bytes outside `b` are not
/// read.
fn c_string(b: &[u8], offset: u32) -> String {
    let Some(rest) = usize::try_from(offset)
        .ok()
        .filter(|&o| o != 0)
        .and_then(|o| b.get(o..))
    else {
        return String::new();
    };
    let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
    // The device says what it is: printable ASCII only (a hostile USB descriptor must not put
    // control sequences on the terminal), one byte out for each byte in.
    rest[..end]
        .iter()
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                c as char
            } else {
                '?'
            }
        })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Parses the bytes `IOCTL_STORAGE_QUERY_PROPERTY` (`StorageDeviceProperty`) returned:
/// `Version`, `Size`, `DeviceType`, `DeviceTypeModifier`, `RemovableMedia` (offset 10),
/// `CommandQueueing`, `VendorIdOffset` (12), `ProductIdOffset` (16), ..., `BusType` (28).
/// String offsets are bounded by the buffer and by `Size`; `None` when it is shorter than
/// the fixed part.
pub fn parse_device_descriptor(b: &[u8]) -> Option<Descriptor> {
    let size = usize::try_from(u32_at(b, 4)?).ok()?;
    let b = if (32..b.len()).contains(&size) {
        &b[..size]
    } else {
        b
    };
    Some(Descriptor {
        removable_media: *b.get(10)? != 0,
        bus_type: u32_at(b, 28)?,
        vendor: c_string(b, u32_at(b, 12)?),
        product: c_string(b, u32_at(b, 16)?),
    })
}

/// Parses `VOLUME_DISK_EXTENTS` (`IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS`): a count at 0, then
/// from offset 8 one 24-byte `DISK_EXTENT` each (`DiskNumber`, padding, `StartingOffset`,
/// `ExtentLength`). The count is capped by what the buffer holds.
pub fn parse_disk_extents(b: &[u8]) -> Option<Vec<(u32, u64, u64)>> {
    // The header is 8 bytes (the count, then padding to the 8-byte alignment of the array).
    if b.len() < 8 {
        return None;
    }
    let n = usize::try_from(u32_at(b, 0)?).ok()?;
    let fits = b.len().saturating_sub(8) / 24;
    (0..n.min(fits))
        .map(|i| {
            let at = 8 + i * 24;
            Some((u32_at(b, at)?, u64_at(b, at + 8)?, u64_at(b, at + 16)?))
        })
        .collect()
}

/// `\\.\PhysicalDriveN`.
pub fn drive_path(n: u32) -> PathBuf {
    PathBuf::from(format!(r"\\.\PhysicalDrive{n}"))
}

/// N when `path` names a physical drive: `\\.\PhysicalDriveN`, `\\?\PhysicalDriveN` or bare
/// `PhysicalDriveN`, any case.
pub fn drive_number(path: &Path) -> Option<u32> {
    let s = path.to_str()?;
    let s = s
        .strip_prefix(r"\\.\")
        .or_else(|| s.strip_prefix(r"\\?\"))
        .unwrap_or(s);
    let (head, n) = s.split_at_checked("physicaldrive".len())?;
    if !head.eq_ignore_ascii_case("physicaldrive") || n.is_empty() {
        return None;
    }
    if !n.bytes().all(|b| b.is_ascii_digit()) || (n.len() > 1 && n.starts_with('0')) {
        return None;
    }
    n.parse().ok()
}

/// The drive letter when `path` names a volume rather than a file: `E:`, `E:\`, `\\.\E:`.
pub fn volume_letter(path: &Path) -> Option<char> {
    let s = path.to_str()?;
    let s = s
        .strip_prefix(r"\\.\")
        .or_else(|| s.strip_prefix(r"\\?\"))
        .unwrap_or(s);
    let s = s.strip_suffix('\\').unwrap_or(s);
    let mut c = s.chars();
    match (c.next(), c.next(), c.next()) {
        (Some(l), Some(':'), None) if l.is_ascii_alphabetic() => Some(l.to_ascii_uppercase()),
        _ => None,
    }
}

fn same_mount(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim_end_matches('\\').to_ascii_uppercase();
    norm(a) == norm(b)
}

/// The disks holding the volume mounted at `letter:\`.
pub fn disks_of_letter(letter: char, volumes: &[VolumeInfo]) -> Vec<u32> {
    let root = format!("{letter}:\\");
    let mut v: Vec<u32> = volumes
        .iter()
        .filter(|vol| vol.mount_points.iter().any(|m| same_mount(m, &root)))
        .flat_map(|vol| vol.extents.iter().map(|e| e.0))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Builds the devices: each drive with the volumes that have an extent on it. A volume that
/// spans several disks (dynamic disk, Storage Spaces) makes each of them busy (a holder).
pub fn devices_from(drives: &[DriveInfo], volumes: &[VolumeInfo]) -> Vec<Device> {
    let mut out: Vec<Device> = drives
        .iter()
        .map(|d| {
            let path = drive_path(d.number);
            let mut mounts = Vec::new();
            let mut partitions = Vec::new();
            let mut holders = Vec::new();
            for vol in volumes {
                let mine: Vec<&(u32, u64, u64)> =
                    vol.extents.iter().filter(|e| e.0 == d.number).collect();
                if mine.is_empty() {
                    continue;
                }
                let spans = vol.extents.iter().any(|e| e.0 != d.number);
                if spans {
                    holders.push(vol.name.clone());
                }
                for m in &vol.mount_points {
                    mounts.push(MountUse {
                        device: PathBuf::from(&vol.name),
                        mount_point: PathBuf::from(m),
                        via_holder: spans,
                    });
                }
                partitions.push(Partition {
                    number: u32::try_from(partitions.len() + 1).unwrap_or(u32::MAX),
                    name: vol.name.clone(),
                    path: PathBuf::from(&vol.name),
                    size: mine.iter().map(|e| e.2).sum(),
                    label: None,
                    mount_points: vol.mount_points.iter().map(PathBuf::from).collect(),
                });
            }
            Device {
                name: format!("PhysicalDrive{}", d.number),
                path,
                size: d.size,
                model: d.descriptor.product.clone(),
                vendor: d.descriptor.vendor.clone(),
                bus: bus_of(d.descriptor.bus_type),
                removable: d.descriptor.removable_media,
                read_only: !d.writable,
                emmc: false,
                internal: None,
                holders,
                mounts,
                swaps: Vec::new(),
                partitions,
                backing_file: None,
            }
        })
        .collect();
    out.sort_by(|a, b| (a.name.len(), &a.name).cmp(&(b.name.len(), &b.name)));
    out
}

/// The Windows system rule: a disk holding the volume Windows runs from (`system_root`, the
/// volume of `GetSystemWindowsDirectory`, e.g. `C:\`) is the system disk, refused whatever
/// `--force` says.
pub fn system_rule(d: &Device, system_root: &str) -> Result<(), SafetyError> {
    match d
        .mounts
        .iter()
        .find(|m| same_mount(&m.mount_point.to_string_lossy(), system_root))
    {
        Some(m) => Err(SafetyError::SystemDisk {
            path: d.path.clone(),
            mount_point: m.mount_point.clone(),
            device: m.device.clone(),
        }),
        None => Ok(()),
    }
}

/// Every Windows rule: [`system_rule`], then [`super::judge_portable`].
pub fn judge(
    d: &Device,
    image_len: Option<u64>,
    policy: &Policy,
    system_root: &str,
) -> Result<(), SafetyError> {
    system_rule(d, system_root)?;
    super::judge_portable(d, image_len, policy)
}

/// The error for a disk this user may not open for writing: run it as Administrator.
pub fn access_error(path: &Path, e: &std::io::Error) -> Option<SafetyError> {
    // ERROR_ACCESS_DENIED (5) is what CreateFileW on \\.\PhysicalDriveN says without admin.
    let denied = e.kind() == std::io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(5);
    denied.then(|| SafetyError::NoAccess {
        path: path.to_path_buf(),
        how: "writing a physical drive needs an Administrator terminal (Run as administrator)",
    })
}

/// Checks a flash target on Windows with the machine's drives and volumes (asked for lazily)
/// and its system volume: `\\.\PhysicalDriveN` is judged with [`judge`]; a drive letter is
/// refused with its physical drive named; `None` for anything else (a file).
pub fn check_disk_path(
    path: &Path,
    image_len: u64,
    policy: &Policy,
    system_root: &str,
    machine: impl FnOnce() -> Result<(Vec<DriveInfo>, Vec<VolumeInfo>), SafetyError>,
) -> Result<Option<super::Target>, SafetyError> {
    if let Some(letter) = volume_letter(path) {
        let (_, volumes) = machine()?;
        return Err(match disks_of_letter(letter, &volumes).first() {
            Some(&n) => SafetyError::Partition {
                path: path.into(),
                disk: drive_path(n),
            },
            None => SafetyError::NoSuchDevice { path: path.into() },
        });
    }
    let Some(n) = drive_number(path) else {
        return Ok(None);
    };
    let (drives, volumes) = machine()?;
    let mut dev = devices_from(&drives, &volumes)
        .into_iter()
        .find(|d| d.name == format!("PhysicalDrive{n}"))
        .ok_or_else(|| SafetyError::NoSuchDevice { path: path.into() })?;
    judge(&dev, Some(image_len), policy, system_root)?;
    dev.path = drive_path(n);
    Ok(Some(super::Target {
        path: drive_path(n),
        kind: super::TargetKind::Device(Box::new(dev)),
        notes: Vec::new(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `STORAGE_DEVICE_DESCRIPTOR` as Windows lays it out, strings after the fixed part.
    fn descriptor(removable: bool, bus: u32, vendor: &str, product: &str) -> Vec<u8> {
        let mut b = vec![0u8; 40];
        let vendor_at = b.len();
        b.extend_from_slice(vendor.as_bytes());
        b.push(0);
        let product_at = b.len();
        b.extend_from_slice(product.as_bytes());
        b.push(0);
        let size = b.len() as u32;
        b[0..4].copy_from_slice(&(40u32).to_le_bytes()); // Version: sizeof the struct
        b[4..8].copy_from_slice(&size.to_le_bytes());
        b[8] = 0; // DeviceType: FILE_DEVICE_DISK's SCSI peripheral type
        b[10] = u8::from(removable);
        b[12..16].copy_from_slice(&(vendor_at as u32).to_le_bytes());
        b[16..20].copy_from_slice(&(product_at as u32).to_le_bytes());
        b[28..32].copy_from_slice(&bus.to_le_bytes());
        b
    }

    fn extents(list: &[(u32, u64, u64)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(list.len() as u32).to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        for &(disk, start, len) in list {
            b.extend_from_slice(&disk.to_le_bytes());
            b.extend_from_slice(&[0; 4]);
            b.extend_from_slice(&start.to_le_bytes());
            b.extend_from_slice(&len.to_le_bytes());
        }
        b
    }

    /// A laptop: NVMe disk 0 with C:\ (and an unmounted EFI partition), a USB SD reader
    /// (disk 1) with a card whose bootfs is E:\, a 1 TB USB SSD (disk 2) with D:\, and a
    /// SATA data disk (disk 3) with F:\.
    fn laptop() -> (Vec<DriveInfo>, Vec<VolumeInfo>) {
        let drive = |number, size, d: Vec<u8>| DriveInfo {
            number,
            size,
            descriptor: parse_device_descriptor(&d).expect("descriptor"),
            writable: true,
        };
        let drives = vec![
            drive(
                0,
                512 << 30,
                descriptor(false, 17, "", "Samsung SSD 980 PRO 512GB"),
            ),
            drive(
                1,
                31_914_983_424,
                descriptor(true, 7, "Generic ", "STORAGE DEVICE  "),
            ),
            drive(2, 1 << 40, descriptor(false, 7, "Samsung ", "PSSD T7")),
            drive(3, 2 << 40, descriptor(false, 11, "", "ST2000DM008")),
        ];
        let vol = |name: &str, mounts: &[&str], ext: &[(u32, u64, u64)]| VolumeInfo {
            name: format!(r"\\?\Volume{{{name}}}\"),
            mount_points: mounts.iter().map(|s| s.to_string()).collect(),
            extents: parse_disk_extents(&extents(ext)).expect("extents"),
        };
        let volumes = vec![
            vol("efi0", &[], &[(0, 1 << 20, 100 << 20)]),
            vol("c0", &["C:\\"], &[(0, 116 << 20, 400 << 30)]),
            vol("boot1", &["E:\\"], &[(1, 8 << 20, 512 << 20)]),
            vol("d2", &["D:\\"], &[(2, 1 << 20, 1 << 40)]),
            vol("f3", &["F:\\", "C:\\data\\"], &[(3, 1 << 20, 2 << 40)]),
        ];
        (drives, volumes)
    }

    fn verdicts(force: bool) -> Vec<(String, Option<&'static str>)> {
        let (drives, volumes) = laptop();
        let p = Policy {
            force,
            ..Policy::default()
        };
        devices_from(&drives, &volumes)
            .iter()
            .map(|d| {
                let v = judge(d, Some(4 << 30), &p, "C:\\").err().map(|e| e.code());
                (d.name.clone(), v)
            })
            .collect()
    }

    #[test]
    fn descriptors_and_extents_parse_from_their_documented_layouts() {
        let d =
            parse_device_descriptor(&descriptor(true, 7, "Generic ", "STORAGE DEVICE ")).unwrap();
        assert_eq!(
            d,
            Descriptor {
                removable_media: true,
                bus_type: 7,
                vendor: "Generic".into(),
                product: "STORAGE DEVICE".into()
            }
        );
        assert_eq!(bus_of(d.bus_type), Bus::Usb);
        assert_eq!(bus_of(12), Bus::Mmc);
        assert_eq!(bus_of(17), Bus::Nvme);
        assert_eq!(
            parse_device_descriptor(&[0; 20]),
            None,
            "shorter than the fixed part"
        );
        // Offsets pointing outside the buffer give empty strings, not a panic.
        let mut wild = descriptor(false, 11, "v", "p");
        wild[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_device_descriptor(&wild).unwrap().vendor, "");

        let e = extents(&[(2, 1 << 20, 5 << 30), (3, 0, 7)]);
        assert_eq!(
            parse_disk_extents(&e),
            Some(vec![(2, 1 << 20, 5 << 30), (3, 0, 7)])
        );
        // Found by the device_tables fuzz target: bytes that are not printable ASCII become
        // '?' (no control sequences, no growth by lossy UTF-8 replacement)...
        let hostile = descriptor(true, 7, "\u{1b}[2Jx\u{ff}", "p");
        assert_eq!(parse_device_descriptor(&hostile).unwrap().vendor, "?[2Jx??");
        // ...and a buffer shorter than the extents' 8-byte header gives nothing.
        assert_eq!(parse_disk_extents(b"\n\n\n\n"), None);
        // A count larger than the buffer is capped by the buffer.
        let mut lying = e.clone();
        lying[0..4].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(parse_disk_extents(&lying).unwrap().len(), 2);
        assert_eq!(parse_disk_extents(&[1, 0]), None);
    }

    #[test]
    fn the_system_disk_is_refused_even_with_force() {
        assert_eq!(
            verdicts(false),
            [
                ("PhysicalDrive0".to_string(), Some("system-disk")),
                ("PhysicalDrive1".to_string(), None),
                ("PhysicalDrive2".to_string(), Some("too-large")),
                ("PhysicalDrive3".to_string(), Some("not-removable")),
            ]
        );
        // Disk 3 holds a folder of C:\, not C:\ itself: only the Windows volume's disk is the
        // system disk. Folder mounts of other disks are allowed with --force.
        let forced = verdicts(true);
        assert_eq!(forced[0].1, Some("system-disk"));
        assert_eq!(forced[1].1, None);
        assert_eq!(forced[2].1, None);
        assert_eq!(forced[3].1, None);
        let (drives, volumes) = laptop();
        let devs = devices_from(&drives, &volumes);
        let e = system_rule(&devs[0], "c:").unwrap_err();
        assert!(e.to_string().contains("C:\\"), "{e}");
        assert!(system_rule(&devs[1], "C:\\").is_ok());
    }

    #[test]
    fn a_spanned_volume_makes_its_disks_busy() {
        let (drives, mut volumes) = laptop();
        volumes.push(VolumeInfo {
            name: r"\\?\Volume{span}\".into(),
            mount_points: vec!["S:\\".into()],
            extents: vec![(1, 600 << 20, 1 << 30), (2, 0, 1 << 30)],
        });
        let devs = devices_from(&drives, &volumes);
        let p = Policy {
            force: true,
            ..Policy::default()
        };
        assert_eq!(
            judge(&devs[1], None, &p, "C:\\").unwrap_err().code(),
            "busy"
        );
    }

    #[test]
    fn drive_paths_and_letters() {
        for ok in [
            r"\\.\PhysicalDrive2",
            r"\\?\PHYSICALDRIVE2",
            "physicaldrive2",
        ] {
            assert_eq!(drive_number(Path::new(ok)), Some(2), "{ok}");
        }
        for bad in [
            r"\\.\PhysicalDrive",
            r"\\.\PhysicalDrive02",
            r"\\.\PhysicalDrive2x",
            r"\\.\C:",
            "card.img",
            "",
        ] {
            assert_eq!(drive_number(Path::new(bad)), None, "{bad}");
        }
        assert_eq!(drive_path(7), Path::new(r"\\.\PhysicalDrive7"));
        for l in ["E:", "e:\\", r"\\.\E:"] {
            assert_eq!(volume_letter(Path::new(l)), Some('E'), "{l}");
        }
        assert_eq!(volume_letter(Path::new("E:card.img")), None);
        assert_eq!(volume_letter(Path::new(r"E:\card.img")), None);
    }

    #[test]
    fn check_disk_path_names_the_drive_of_a_letter_and_refuses_the_system_disk() {
        let machine = || Ok(laptop());
        let p = Policy::default();
        let t = check_disk_path(
            Path::new(r"\\.\PhysicalDrive1"),
            4 << 30,
            &p,
            "C:\\",
            machine,
        )
        .unwrap()
        .expect("a disk");
        assert_eq!(t.path, Path::new(r"\\.\PhysicalDrive1"));
        let e = check_disk_path(Path::new("E:"), 1, &p, "C:\\", machine).unwrap_err();
        assert_eq!(e.code(), "partition");
        assert!(e.to_string().contains(r"\\.\PhysicalDrive1"), "{e}");
        let forced = Policy {
            force: true,
            ..Policy::default()
        };
        for (path, code) in [
            (r"\\.\PhysicalDrive0", "system-disk"),
            (r"\\.\PhysicalDrive9", "no-such-device"),
            ("Z:", "no-such-device"),
        ] {
            let e = check_disk_path(Path::new(path), 1, &forced, "C:\\", machine).unwrap_err();
            assert_eq!(e.code(), code, "{path}");
        }
        assert!(
            check_disk_path(Path::new("card.img"), 1, &p, "C:\\", || {
                panic!("a file needs no drive query")
            })
            .unwrap()
            .is_none()
        );
    }

    #[test]
    fn access_denied_says_administrator() {
        let e = access_error(
            Path::new(r"\\.\PhysicalDrive1"),
            &std::io::Error::from_raw_os_error(5),
        );
        let msg = e.expect("denied").to_string();
        assert!(
            msg.contains("Administrator") && msg.contains("nothing was written"),
            "{msg}"
        );
    }
}
