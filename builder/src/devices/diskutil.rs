//! macOS device discovery: turns `diskutil list -plist` and `diskutil info -plist DISK` output
//! into [`Device`]s.
//!
//! The parsing is pure ([`devices_from_plists`]: text in, devices out) and compiled on every
//! platform so tests on Linux feed it plist text they write. Only the functions that run
//! `diskutil` are `cfg(target_os = "macos")`. An APFS container (a synthesized disk) is treated
//! like a Linux holder: its mounted volumes count against the physical disk that stores it, so
//! the internal disk holding `/` (through `disk3s1s1` on `disk0s2`) is a system disk.
//! Deliberately not handled: CoreStorage, RAID sets, and disks that appear between the two
//! diskutil calls (they show up on the next run).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::plist::{self, Value};
use super::{Bus, Device, MountUse, Partition, partition_parent};

/// Maps diskutil's `BusProtocol` to a [`Bus`].
pub fn bus_of(protocol: &str) -> Bus {
    match protocol {
        "USB" => Bus::Usb,
        "Secure Digital" | "SD" => Bus::Mmc,
        "PCI-Express" | "PCI" | "Apple Fabric" | "NVMe" => Bus::Nvme,
        "SATA" | "ATA" => Bus::Sata,
        "SAS" | "SCSI" | "Fibre Channel Interface" => Bus::Scsi,
        "Disk Image" | "Virtual Interface" => Bus::Loop,
        _ => Bus::Other,
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn mount_of(v: &Value) -> Option<PathBuf> {
    str_of(v, "MountPoint")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
}

/// Builds the devices from `diskutil list -plist` (`list`) and, per whole disk,
/// `diskutil info -plist DISK` (`infos`, keyed by `DeviceIdentifier`; a disk without an entry
/// gets conservative defaults: not removable, internal). APFS containers and other
/// synthesized disks are not listed themselves; their mounts count against their stores.
pub fn devices_from_plists(
    list: &str,
    infos: &BTreeMap<String, String>,
) -> Result<Vec<Device>, plist::PlistError> {
    let root = plist::parse(list)?;
    let entries = root
        .get("AllDisksAndPartitions")
        .map(Value::items)
        .unwrap_or_default();
    let dev = Path::new("/dev");

    // Mounts of APFS containers, by the physical store partition they live on.
    let mut container_mounts: BTreeMap<String, (String, Vec<MountUse>)> = BTreeMap::new();
    for e in entries {
        let Some(id) = str_of(e, "DeviceIdentifier") else {
            continue;
        };
        let stores = e
            .get("APFSPhysicalStores")
            .map(Value::items)
            .unwrap_or_default();
        if stores.is_empty() {
            continue;
        }
        let mut mounts = Vec::new();
        for vol in e.get("APFSVolumes").map(Value::items).unwrap_or_default() {
            if let (Some(mp), Some(vid)) = (mount_of(vol), str_of(vol, "DeviceIdentifier")) {
                mounts.push(MountUse {
                    device: dev.join(vid),
                    mount_point: mp,
                    via_holder: true,
                });
            }
            // A sealed system volume's snapshot (`disk3s3s1`) is where `/` really is.
            for snap in vol
                .get("MountedSnapshots")
                .map(Value::items)
                .unwrap_or_default()
            {
                if let Some(mp) = str_of(snap, "SnapshotMountPoint") {
                    mounts.push(MountUse {
                        device: dev.join(str_of(snap, "SnapshotBSD").unwrap_or(id)),
                        mount_point: mp.into(),
                        via_holder: true,
                    });
                }
            }
        }
        for s in stores {
            if let Some(sid) = str_of(s, "DeviceIdentifier") {
                container_mounts.insert(sid.to_string(), (id.to_string(), mounts.clone()));
            }
        }
    }

    let mut out = Vec::new();
    for e in entries {
        let Some(id) = str_of(e, "DeviceIdentifier") else {
            continue;
        };
        if e.get("APFSPhysicalStores").is_some() || partition_parent(id).is_some() {
            continue;
        }
        let info = match infos.get(id) {
            Some(text) => Some(plist::parse(text)?),
            None => None,
        };
        let flag = |k: &str| {
            info.as_ref()
                .and_then(|i| i.get(k))
                .and_then(Value::as_bool)
        };
        if info.as_ref().and_then(|i| str_of(i, "VirtualOrPhysical")) == Some("Virtual")
            && flag("WholeDisk") == Some(true)
            && info.as_ref().and_then(|i| str_of(i, "BusProtocol")) != Some("Disk Image")
        {
            continue;
        }
        let mut mounts = Vec::new();
        let mut holders = Vec::new();
        if let Some(mp) = mount_of(e) {
            mounts.push(MountUse {
                device: dev.join(id),
                mount_point: mp,
                via_holder: false,
            });
        }
        let mut partitions = Vec::new();
        for (i, p) in e
            .get("Partitions")
            .map(Value::items)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let Some(pid) = str_of(p, "DeviceIdentifier") else {
                continue;
            };
            let mp = mount_of(p);
            if let Some(m) = &mp {
                mounts.push(MountUse {
                    device: dev.join(pid),
                    mount_point: m.clone(),
                    via_holder: false,
                });
            }
            if let Some((container, cm)) = container_mounts.get(pid) {
                holders.push(container.clone());
                mounts.extend(cm.iter().cloned());
            }
            let number = pid
                .rsplit_once('s')
                .and_then(|(_, n)| n.parse().ok())
                .unwrap_or(u32::try_from(i + 1).unwrap_or(u32::MAX));
            partitions.push(Partition {
                number,
                name: pid.to_string(),
                path: dev.join(pid),
                size: p.get("Size").and_then(Value::as_u64).unwrap_or(0),
                label: str_of(p, "VolumeName")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
                mount_points: mp.into_iter().collect(),
            });
        }
        let size = info
            .as_ref()
            .and_then(|i| i.get("TotalSize").or_else(|| i.get("Size")))
            .and_then(Value::as_u64)
            .or_else(|| e.get("Size").and_then(Value::as_u64))
            .unwrap_or(0);
        let protocol = info
            .as_ref()
            .and_then(|i| str_of(i, "BusProtocol"))
            .unwrap_or("");
        let internal = flag("Internal").or(Some(true));
        let removable = flag("Removable").unwrap_or(false)
            || flag("RemovableMedia").unwrap_or(false)
            || (internal == Some(false) && flag("RemovableMediaOrExternalDevice").unwrap_or(false));
        let writable = flag("WritableMedia").unwrap_or(true);
        let model = info
            .as_ref()
            .and_then(|i| str_of(i, "MediaName").or_else(|| str_of(i, "IORegistryEntryName")))
            .unwrap_or("")
            .trim()
            .to_string();
        holders.sort();
        holders.dedup();
        out.push(Device {
            name: id.to_string(),
            path: dev.join(id),
            size,
            model,
            vendor: String::new(),
            bus: bus_of(protocol),
            removable,
            read_only: !writable,
            emmc: false,
            internal,
            holders,
            mounts,
            swaps: Vec::new(),
            partitions,
            backing_file: None,
        });
    }
    out.sort_by(|a, b| {
        disk_number(&a.name)
            .cmp(&disk_number(&b.name))
            .then(a.name.cmp(&b.name))
    });
    Ok(out)
}

fn disk_number(id: &str) -> u64 {
    id.trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(u64::MAX)
}

#[cfg(target_os = "macos")]
fn run_diskutil(args: &[&str]) -> anyhow::Result<String> {
    use anyhow::Context;
    let out = std::process::Command::new("diskutil")
        .args(args)
        .output()
        .with_context(|| format!("running diskutil {}", args.join(" ")))?;
    anyhow::ensure!(
        out.status.success(),
        "running diskutil {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8(out.stdout).with_context(|| format!("reading diskutil {}", args.join(" ")))
}

/// Runs `diskutil list -plist` and `diskutil info -plist` for each whole disk.
#[cfg(target_os = "macos")]
pub fn list() -> anyhow::Result<Vec<Device>> {
    let list = run_diskutil(&["list", "-plist"])?;
    let root = plist::parse(&list)?;
    let mut infos = BTreeMap::new();
    for d in root.get("WholeDisks").map(Value::items).unwrap_or_default() {
        if let Some(id) = d.as_str() {
            infos.insert(id.to_string(), run_diskutil(&["info", "-plist", id])?);
        }
    }
    Ok(devices_from_plists(&list, &infos)?)
}

/// `diskutil unmountDisk DISK`.
#[cfg(target_os = "macos")]
pub fn unmount_disk(path: &Path) -> anyhow::Result<()> {
    let disk = path.to_string_lossy();
    run_diskutil(&["unmountDisk", disk.as_ref()]).map(|_| ())
}

/// macOS [`super::check_target`]: `/dev/diskN` or `/dev/rdiskN` (partitions refused), judged
/// with [`super::assess`]; `/dev/diskN` gets a note to use `/dev/rdiskN`.
#[cfg(target_os = "macos")]
pub fn check_target(
    path: &Path,
    image_len: u64,
    policy: &super::Policy,
) -> Result<super::Target, super::SafetyError> {
    use super::{SafetyError, Target, TargetKind};
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return super::new_file_target(path, path.starts_with("/dev"));
        }
        Err(e) => {
            return Err(SafetyError::Inspect {
                path: path.into(),
                source: e,
            });
        }
    };
    if meta.is_dir() {
        return Err(SafetyError::NotATarget {
            path: path.into(),
            what: "directory",
        });
    }
    if meta.is_file() {
        return Ok(Target {
            path: path.into(),
            kind: TargetKind::File {
                existing_len: Some(meta.len()),
            },
            notes: Vec::new(),
        });
    }
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = file
        .strip_prefix('r')
        .filter(|n| n.starts_with("disk"))
        .unwrap_or(&file);
    if let Some(disk) = partition_parent(&file) {
        return Err(SafetyError::Partition {
            path: path.into(),
            disk: path.with_file_name(disk),
        });
    }
    let devices = list().map_err(|e| SafetyError::Discovery(format!("{e:#}")))?;
    let mut dev = devices
        .into_iter()
        .find(|d| d.name == name)
        .ok_or_else(|| SafetyError::NoSuchDevice { path: path.into() })?;
    dev.path = path.to_path_buf();
    super::assess(&dev, Some(image_len), policy)?;
    let notes: Vec<String> = super::raw_disk_hint(path).into_iter().collect();
    for n in &notes {
        tracing::warn!("{n}");
    }
    Ok(Target {
        path: path.into(),
        kind: TargetKind::Device(Box::new(dev)),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(body: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE plist PUBLIC \"-//Apple//DTD \
             PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n<plist \
             version=\"1.0\">\n{body}\n</plist>\n"
        )
    }

    /// A MacBook: internal disk0 (APFS store disk0s2 → container disk3 holding `/` through a
    /// sealed snapshot and /System/Volumes/Data), and an SD card disk4 in the built-in reader
    /// with bootfs mounted.
    fn macbook() -> (String, BTreeMap<String, String>) {
        let list = doc(r#"<dict>
<key>AllDisks</key><array><string>disk0</string><string>disk0s1</string><string>disk0s2</string><string>disk3</string><string>disk4</string><string>disk4s1</string><string>disk4s2</string></array>
<key>AllDisksAndPartitions</key>
<array>
  <dict>
    <key>Content</key><string>GUID_partition_scheme</string>
    <key>DeviceIdentifier</key><string>disk0</string>
    <key>OSInternal</key><false/>
    <key>Partitions</key>
    <array>
      <dict><key>Content</key><string>EFI</string><key>DeviceIdentifier</key><string>disk0s1</string><key>Size</key><integer>314572800</integer><key>VolumeName</key><string>EFI</string></dict>
      <dict><key>Content</key><string>Apple_APFS</string><key>DeviceIdentifier</key><string>disk0s2</string><key>Size</key><integer>500963741696</integer></dict>
    </array>
    <key>Size</key><integer>500277790720</integer>
  </dict>
  <dict>
    <key>APFSPhysicalStores</key><array><dict><key>DeviceIdentifier</key><string>disk0s2</string></dict></array>
    <key>APFSVolumes</key>
    <array>
      <dict><key>DeviceIdentifier</key><string>disk3s1</string><key>MountPoint</key><string>/System/Volumes/Data</string><key>VolumeName</key><string>Data</string></dict>
      <dict><key>DeviceIdentifier</key><string>disk3s3</string><key>MountedSnapshots</key><array><dict><key>Sealed</key><string>Yes</string><key>SnapshotBSD</key><string>disk3s3s1</string><key>SnapshotMountPoint</key><string>/</string></dict></array><key>VolumeName</key><string>Macintosh HD</string></dict>
    </array>
    <key>Content</key><string>EF57347C-0000-11AA-AA11-00306543ECAC</string>
    <key>DeviceIdentifier</key><string>disk3</string>
    <key>Size</key><integer>500963741696</integer>
  </dict>
  <dict>
    <key>Content</key><string>FDisk_partition_scheme</string>
    <key>DeviceIdentifier</key><string>disk4</string>
    <key>Partitions</key>
    <array>
      <dict><key>Content</key><string>Windows_FAT_32</string><key>DeviceIdentifier</key><string>disk4s1</string><key>MountPoint</key><string>/Volumes/bootfs</string><key>Size</key><integer>536870912</integer><key>VolumeName</key><string>bootfs</string></dict>
      <dict><key>Content</key><string>Linux</string><key>DeviceIdentifier</key><string>disk4s2</string><key>Size</key><integer>31373000704</integer></dict>
    </array>
    <key>Size</key><integer>31914983424</integer>
  </dict>
</array>
<key>VolumesFromDisks</key><array><string>bootfs</string></array>
<key>WholeDisks</key><array><string>disk0</string><string>disk3</string><string>disk4</string></array>
</dict>"#);
        let info0 = doc(r#"<dict>
<key>BusProtocol</key><string>Apple Fabric</string>
<key>DeviceIdentifier</key><string>disk0</string>
<key>Internal</key><true/>
<key>MediaName</key><string>APPLE SSD AP0512Q</string>
<key>Removable</key><false/><key>RemovableMedia</key><false/>
<key>RemovableMediaOrExternalDevice</key><false/>
<key>Size</key><integer>500277790720</integer>
<key>VirtualOrPhysical</key><string>Physical</string>
<key>WholeDisk</key><true/><key>WritableMedia</key><true/>
</dict>"#);
        let info3 = doc(r#"<dict>
<key>BusProtocol</key><string>Apple Fabric</string>
<key>DeviceIdentifier</key><string>disk3</string>
<key>Internal</key><true/>
<key>VirtualOrPhysical</key><string>Virtual</string>
<key>WholeDisk</key><true/>
</dict>"#);
        let info4 = doc(r#"<dict>
<key>BusProtocol</key><string>Secure Digital</string>
<key>DeviceIdentifier</key><string>disk4</string>
<key>Ejectable</key><true/>
<key>Internal</key><true/>
<key>MediaName</key><string>SD Card Reader</string>
<key>Removable</key><true/><key>RemovableMedia</key><true/>
<key>RemovableMediaOrExternalDevice</key><true/>
<key>TotalSize</key><integer>31914983424</integer>
<key>VirtualOrPhysical</key><string>Physical</string>
<key>WholeDisk</key><true/><key>WritableMedia</key><true/>
</dict>"#);
        let infos = BTreeMap::from([
            ("disk0".to_string(), info0),
            ("disk3".to_string(), info3),
            ("disk4".to_string(), info4),
        ]);
        (list, infos)
    }

    #[test]
    fn a_macbook_lists_its_internal_disk_as_system_and_the_sd_card_as_flashable() {
        let (list, infos) = macbook();
        let devs = devices_from_plists(&list, &infos).expect("parses");
        let names: Vec<_> = devs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["disk0", "disk4"],
            "the APFS container is not a disk to flash"
        );

        let d0 = &devs[0];
        assert_eq!(d0.bus, Bus::Nvme);
        assert_eq!(d0.holders, vec!["disk3".to_string()]);
        let e = super::super::assess(
            d0,
            None,
            &super::super::Policy {
                force: true,
                ..Default::default()
            },
        )
        .expect_err("system disk");
        assert_eq!(e.code(), "system-disk");
        assert!(e.to_string().contains("holds / "), "{e}");

        let d4 = &devs[1];
        assert_eq!(d4.bus, Bus::Mmc);
        assert!(d4.removable);
        assert_eq!(d4.size, 31_914_983_424);
        assert_eq!(d4.model, "SD Card Reader");
        assert_eq!(d4.partitions[0].label.as_deref(), Some("bootfs"));
        assert_eq!(d4.partitions[1].number, 2);
        assert_eq!(
            d4.mount_points_to_unmount(),
            vec![PathBuf::from("/Volumes/bootfs")]
        );
        assert!(super::super::assess(d4, Some(4 << 30), &Default::default()).is_ok());
    }

    #[test]
    fn a_locked_card_is_read_only_and_missing_info_is_conservative() {
        let (list, mut infos) = macbook();
        let locked = infos["disk4"].replace(
            "<key>WritableMedia</key><true/>",
            "<key>WritableMedia</key><false/>",
        );
        infos.insert("disk4".into(), locked);
        let devs = devices_from_plists(&list, &infos).expect("parses");
        assert!(devs[1].read_only);
        infos.remove("disk4");
        let devs = devices_from_plists(&list, &infos).expect("parses");
        assert_eq!(devs[1].internal, Some(true));
        assert!(!devs[1].removable);
        assert_eq!(devs[1].size, 31_914_983_424, "size falls back to the list");
    }

    #[test]
    fn broken_plists_are_errors() {
        let (_, infos) = macbook();
        assert!(devices_from_plists("<plist><dict>", &infos).is_err());
        let (list, mut infos) = macbook();
        infos.insert("disk4".into(), "not xml".into());
        assert!(devices_from_plists(&list, &infos).is_err());
        // A document without the expected keys is simply empty.
        assert_eq!(
            devices_from_plists(&doc("<dict/>"), &BTreeMap::new()),
            Ok(vec![])
        );
    }
}
