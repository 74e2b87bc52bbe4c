//! A payload directory for tests of the builder: `manifest.toml` plus, per architecture, two
//! files that pass the builder's ELF checks (right class, machine, float ABI, static). They are
//! not programs — the builder never runs them; the payload's own tests run the real
//! cross-compiled binaries under qemu-user.

use std::path::Path;

use piforge::arch::Arch;
use sha2::{Digest, Sha256};

const ET_EXEC: u16 = 2;
const PT_LOAD: u32 = 1;
const EF_ARM_ABI_FLOAT_HARD: u32 = 0x400;
const EF_ARM_EABI_VER5: u32 = 0x0500_0000;

/// ELF header + one PT_LOAD program header for `arch`, then `tag` so the files differ.
pub fn static_elf(arch: Arch, tag: &str) -> Vec<u8> {
    let (ehsize, phentsize) = if arch.elf_class() == 2 {
        (64usize, 56usize)
    } else {
        (52, 32)
    };
    let mut b = vec![0u8; ehsize + phentsize];
    b[0..4].copy_from_slice(b"\x7fELF");
    b[4] = arch.elf_class();
    b[5] = 1;
    b[6] = 1;
    b[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
    b[18..20].copy_from_slice(&arch.elf_machine().to_le_bytes());
    let flags = match arch {
        Arch::Arm64 => 0,
        Arch::Armhf => EF_ARM_EABI_VER5 | EF_ARM_ABI_FLOAT_HARD,
    };
    if arch.elf_class() == 2 {
        b[32..40].copy_from_slice(&(ehsize as u64).to_le_bytes());
        b[48..52].copy_from_slice(&flags.to_le_bytes());
        b[52..54].copy_from_slice(&(ehsize as u16).to_le_bytes());
        b[54..56].copy_from_slice(&(phentsize as u16).to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
    } else {
        b[28..32].copy_from_slice(&(ehsize as u32).to_le_bytes());
        b[36..40].copy_from_slice(&flags.to_le_bytes());
        b[40..42].copy_from_slice(&(ehsize as u16).to_le_bytes());
        b[42..44].copy_from_slice(&(phentsize as u16).to_le_bytes());
        b[44..46].copy_from_slice(&1u16.to_le_bytes());
    }
    b[ehsize..ehsize + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
    b.extend_from_slice(tag.as_bytes());
    b
}

/// Writes a payload with both binaries for each of `arches` into `dir`.
pub fn write_payload(dir: &Path, arches: &[Arch]) {
    let mut manifest = String::from("schema-version = 1\nversion = \"0.1.0\"\n");
    for &arch in arches {
        for name in ["piforge-firstboot", "piforge-node"] {
            let rel = format!("{}/{name}", arch.debian_name());
            let bytes = static_elf(arch, &format!("{name} for {arch}"));
            std::fs::create_dir_all(dir.join(arch.debian_name())).unwrap();
            std::fs::write(dir.join(&rel), &bytes).unwrap();
            manifest.push_str(&format!(
                "\n[[binary]]\narch = \"{arch}\"\ntriple = \"{}\"\nname = \"{name}\"\n\
                 file = \"{rel}\"\nsize = {}\nsha256 = \"{}\"\nversion = \"0.1.0\"\n",
                arch.payload_triple(),
                bytes.len(),
                hex::encode(Sha256::digest(&bytes)),
            ));
        }
    }
    std::fs::write(dir.join("manifest.toml"), manifest).unwrap();
}
