//! The head of a disk image (MBR, GPT, boot sectors) comes from a download or a user's file:
//! the table parsers and file system probes must never panic on it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piforge::image;

fuzz_target!(|data: &[u8]| {
    let size = (data.len() as u64).max(1 << 20);
    if let Ok(layout) = image::layout_from_bytes(data, size) {
        for p in &layout.partitions {
            assert!(p.start + p.len <= layout.disk_size, "partition past the end: {p:?}");
            let _ = layout.partuuid(p.number);
        }
        let _ = layout.boot();
        let _ = layout.root();
    }
    let _ = image::detect_fs(data);
    let _ = image::fat::FatGeometry::parse(data);
    if let Some(sector0) = data.get(..512) {
        let _ = piforge::image::blockmap::parse_mbr(sector0);
        let _ = piforge::image::blockmap::parse_gpt_header(sector0);
    }
    let _ = piforge::image::blockmap::parse_gpt_entries(data, 128);
});
