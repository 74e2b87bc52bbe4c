//! Downloads are untrusted until verified, and `--from FILE` is never verified: format
//! sniffing and every decoder (xz, gz, zst, zip) must fail cleanly on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = piforge::acquire::decompress::decompress_slice(data, 1 << 20);
});
