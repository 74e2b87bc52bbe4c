//! A FAT boot partition read from an untrusted image: opening it, listing and reading files
//! through `BootFs` must fail cleanly, never panic or loop.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use piforge::image::{FsKind, PartType, Partition, fat::BootFs};

fuzz_target!(|data: &[u8]| {
    let part = Partition {
        number: 1,
        start: 0,
        len: data.len() as u64,
        part_type: PartType::Mbr(0x0c),
        fs: FsKind::Fat32,
        label: None,
        guid: None,
    };
    let Ok(fs) = BootFs::open(Cursor::new(data.to_vec()), &part) else { return };
    let _ = fs.free_bytes();
    let _ = fs.label();
    if let Ok(names) = fs.list("") {
        for n in names.iter().take(16) {
            let _ = fs.read(n);
            let _ = fs.list(n);
        }
    }
    let _ = fs.read("cmdline.txt");
    let _ = fs.read("piforge/card.toml");
});
