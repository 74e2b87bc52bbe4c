//! Text read out of images and downloads: os-release, fstab, published .sha256 files, the
//! payload manifest and ELF headers of payload binaries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piforge::arch::Arch;

fuzz_target!(|data: &[u8]| {
    for a in Arch::ALL {
        let _ = piforge::build::payload::check_elf(data, a);
    }
    let _ = piforge::image::ext4::arch_from_elf(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = piforge_config::rootfs::parse_os_release(text);
    let _ = piforge_config::rootfs::boot_mount_from_fstab(text);
    let _ = piforge::acquire::verify::parse_sha256_file(text, "x.img.xz");
    let _ = piforge::build::payload::Manifest::parse(text);
    let _ = piforge::acquire::catalog::Catalog::parse(text);
});
