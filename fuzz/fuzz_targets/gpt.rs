//! A GPT disk image from an untrusted source: the header and entry parsers, the image layout
//! and the whole block map over it (`export`, `flash` and `.bmap` files use it) must fail
//! cleanly: no panic, no overflow, and no allocation sized by the header instead of the file
//! (a 4 GiB entry size or a huge entry count once made us allocate terabytes).
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use piforge::image;
use piforge::image::blockmap;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    if let Some((lba, count, size)) = data.get(512..1024).and_then(blockmap::parse_gpt_header) {
        assert!(size >= 128 && size <= blockmap::GPT_MAX_ENTRY_SIZE);
        assert!(count <= blockmap::GPT_MAX_ENTRIES);
        assert!(lba.checked_mul(512).is_some());
        let start = usize::try_from(lba * 512).unwrap_or(usize::MAX);
        if let Some(entries) = data.get(start..) {
            for e in blockmap::parse_gpt_entries(entries, size) {
                assert!(e.range.start <= e.range.end);
            }
        }
    }
    if let Ok(map) = blockmap::map_image(&mut Cursor::new(data), len) {
        for r in &map.ranges {
            assert!(r.start < r.end && r.end <= len, "range {r:?} outside the image");
        }
    }
    if let Ok(layout) = image::layout_from_bytes(data, len.max(1 << 20)) {
        for p in &layout.partitions {
            assert!(p.start + p.len <= layout.disk_size, "partition past the end: {p:?}");
        }
    }
    let _ = piforge::flash::engine::zero_ranges(data, len, &[]);
});
