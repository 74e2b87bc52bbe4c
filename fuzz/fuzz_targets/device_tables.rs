//! The text `piforge devices` and the flash safety rules read: `/proc/self/mountinfo`,
//! `/proc/swaps`, and `diskutil list -plist` / `info -plist` output (a NUL splits the input into
//! the list and one disk's info).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use piforge::devices::{diskutil, mountinfo, partition_parent, plist};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mounts = mountinfo::parse_mountinfo(text);
    assert!(mounts.len() <= text.lines().count());
    let swaps = mountinfo::parse_swaps(text);
    assert!(swaps.len() <= text.lines().count());
    let _ = mountinfo::unescape(text);
    let _ = partition_parent(text);
    let _ = plist::parse(text);
    let (list, info) = text.split_once('\0').unwrap_or((text, ""));
    let infos = BTreeMap::from([("disk4".to_string(), info.to_string())]);
    if let Ok(devs) = diskutil::devices_from_plists(list, &infos) {
        for d in devs {
            assert!(
                partition_parent(&d.name).is_none(),
                "a partition listed as a disk"
            );
        }
    }
});
