//! The text and bytes `piforge devices` and the flash safety rules read: `/proc/self/mountinfo`,
//! `/proc/swaps`, `diskutil list -plist` / `info -plist DISK` / `info -plist /` output (NULs
//! split the input into the list, one disk's info and the root's info), and the Windows
//! `STORAGE_DEVICE_DESCRIPTOR` and `VOLUME_DISK_EXTENTS` layouts.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use piforge::devices::{diskutil, mountinfo, partition_parent, windows};

fuzz_target!(|data: &[u8]| {
    if let Some(d) = windows::parse_device_descriptor(data) {
        assert!(d.vendor.len() <= data.len() && d.product.len() <= data.len());
    }
    if let Some(e) = windows::parse_disk_extents(data) {
        assert!(e.len() * 24 + 8 <= data.len());
    }
    let mut parts = data.splitn(3, |&b| b == 0);
    let list = parts.next().unwrap_or_default();
    let info = parts.next().unwrap_or_default();
    let root = parts.next();
    let infos = BTreeMap::from([("disk4".to_string(), info.to_vec())]);
    if let Ok(disks) = diskutil::disks_from_plists(list, &infos, root) {
        for d in disks {
            assert!(
                !matches!(
                    diskutil::mac_path(&d.device.path),
                    diskutil::MacPath::Partition { .. }
                ),
                "a partition listed as a disk"
            );
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mounts = mountinfo::parse_mountinfo(text);
    assert!(mounts.len() <= text.lines().count());
    let swaps = mountinfo::parse_swaps(text);
    assert!(swaps.len() <= text.lines().count());
    let _ = mountinfo::unescape(text);
    let _ = partition_parent(text);
});
