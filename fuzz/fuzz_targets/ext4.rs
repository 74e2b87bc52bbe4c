//! An ext4 root file system from an untrusted image (a download, a user's file, a card being
//! flashed): the block-map reader (superblock, group descriptors, block bitmaps) and the root
//! facts read through `ext4-view` must fail cleanly: no panic, no overflow, no endless loop,
//! and no allocation bigger than the image (libFuzzer's malloc limit catches one).
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use piforge::image::blockmap::{self, ByteRange};
use piforge::image::{FsKind, PartType, Partition, ext4};

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let whole = ByteRange::at(0, len);
    if let Ok(ranges) = blockmap::ext4_ranges(&mut Cursor::new(data), whole) {
        for r in &ranges {
            assert!(r.start < r.end && r.end <= len, "range {r:?} outside the image");
        }
    }
    // A partition that claims more than the file holds: reads must stop at the file's end.
    let _ = blockmap::ext4_ranges(&mut Cursor::new(data), ByteRange::at(0, u64::MAX));
    if let Ok(sup) = blockmap::parse_ext4_superblock(data.get(1024..).unwrap_or_default()) {
        let _ = sup.gdt_blocks();
        let _ = sup.gdt_offset();
        let _ = sup.inode_table_blocks();
        if let Ok(groups) = blockmap::parse_group_descriptors(&sup, data) {
            let _ = blockmap::ext4_metadata_blocks(&sup, &groups);
        }
        let _ = blockmap::ext4_bitmap_blocks(&sup, 0, data);
    }
    let part = Partition {
        number: 2,
        start: 0,
        len,
        part_type: PartType::Mbr(0x83),
        fs: FsKind::Ext4,
        label: None,
        guid: None,
    };
    let _ = ext4::root_facts(Cursor::new(data.to_vec()), &part);
});
