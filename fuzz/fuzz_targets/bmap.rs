//! bmap files (`piforge flash --bmap FILE`, or found beside `--image`): the parser must never
//! panic, and whatever it accepts must have sorted, disjoint ranges inside the image whose
//! byte ranges the flash plan can use without overflow. Also the xz index reader flash uses to
//! learn an `.img.xz`'s size before writing a device.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = piforge::acquire::decompress::parse_xz_index(data);
    let _ = piforge::acquire::decompress::xz_uncompressed_size(&mut std::io::Cursor::new(data));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(b) = piforge::image::bmap::parse(text) else {
        return;
    };
    let mut prev_end = 0;
    for r in &b.ranges {
        let (start, end) = b.byte_range(r);
        assert!(start <= end && end <= b.image_size);
        assert!(start >= prev_end);
        prev_end = end;
    }
    let plan = piforge::flash::source::plan_from_bmap(&b);
    assert_eq!(piforge::flash::source::plan_bytes(&plan), b.mapped_bytes());
});
