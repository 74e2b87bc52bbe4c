//! firstboot reads files of the root it configures (os-release, fstab, passwd, group,
//! cpuinfo, its own identity record) and of the device tree: none of it may panic it, or a
//! Pi would boot without an identity. (fstab and os-release are parsed by piforge_config::rootfs,
//! which image_text fuzzes too.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use piforge_firstboot::{facts, identity};

fuzz_target!(|data: &[u8]| {
    let _ = facts::parse_dt_serial(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = facts::parse_cpuinfo_serial(text);
    let _ = facts::parse_mac(text);
    let _ = facts::parse_passwd(text);
    let _ = facts::parse_group(text);
    let _ = identity::IdentityRecord::parse(text);
});
