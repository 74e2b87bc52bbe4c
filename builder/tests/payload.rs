//! Payload tests (issue 3): payload directories and embedded payloads made by the test, with
//! small ELF files whose headers say what the checks look at; plus, when a real payload exists
//! (`$PIFORGE_PAYLOAD_DIR`, or `payload/` from `ci/payload`), the real cross-compiled binaries.
//!
//! Running the binaries under qemu-user is `ci/test-payload`, not this file.

use std::fs;
use std::path::{Path, PathBuf};

use piforge::arch::Arch;
use piforge::build::payload::{EmbeddedPayload, Payload, PayloadError, Search};
use sha2::{Digest, Sha256};

/// A minimal static little-endian ELF executable header for `arch` (one PT_LOAD), padded with
/// `tag` so two binaries differ.
fn fake_elf(class: u8, machine: u16, flags: u32, tag: u8) -> Vec<u8> {
    let (ehsize, phentsize) = if class == 2 {
        (64usize, 56usize)
    } else {
        (52, 32)
    };
    let mut b = vec![tag; ehsize + phentsize + 64];
    b[..ehsize + phentsize].fill(0);
    b[0..4].copy_from_slice(b"\x7fELF");
    b[4] = class;
    b[5] = 1;
    b[6] = 1;
    b[16..18].copy_from_slice(&2u16.to_le_bytes());
    b[18..20].copy_from_slice(&machine.to_le_bytes());
    if class == 2 {
        b[32..40].copy_from_slice(&(ehsize as u64).to_le_bytes());
        b[48..52].copy_from_slice(&flags.to_le_bytes());
        b[54..56].copy_from_slice(&(phentsize as u16).to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
    } else {
        b[28..32].copy_from_slice(&(ehsize as u32).to_le_bytes());
        b[36..40].copy_from_slice(&flags.to_le_bytes());
        b[42..44].copy_from_slice(&(phentsize as u16).to_le_bytes());
        b[44..46].copy_from_slice(&1u16.to_le_bytes());
    }
    b[ehsize..ehsize + 4].copy_from_slice(&1u32.to_le_bytes());
    b
}

fn arm64_elf(tag: u8) -> Vec<u8> {
    fake_elf(2, 183, 0, tag)
}

fn armhf_elf(tag: u8) -> Vec<u8> {
    fake_elf(1, 40, 0x0500_0400, tag)
}

fn manifest(files: &[(&str, &str, &[u8])]) -> String {
    let mut m = String::from("schema-version = 1\nversion = \"0.1.0\"\n");
    for (arch, name, bytes) in files {
        m.push_str(&format!(
            "\n[[binary]]\narch = \"{arch}\"\ntriple = \"test\"\nname = \"{name}\"\n\
             file = \"{arch}/{name}\"\nsize = {}\nsha256 = \"{}\"\nversion = \"0.1.0\"\n",
            bytes.len(),
            hex::encode(Sha256::digest(bytes))
        ));
    }
    m
}

/// Writes a payload directory like `ci/payload` does.
fn write_payload(dir: &Path, files: &[(&str, &str, &[u8])]) {
    for (arch, name, bytes) in files {
        fs::create_dir_all(dir.join(arch)).unwrap();
        fs::write(dir.join(arch).join(name), bytes).unwrap();
    }
    fs::write(dir.join("manifest.toml"), manifest(files)).unwrap();
}

fn good_files() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        ("arm64", "piforge-firstboot", arm64_elf(1)),
        ("arm64", "piforge-node", arm64_elf(2)),
        ("armhf", "piforge-firstboot", armhf_elf(3)),
        ("armhf", "piforge-node", armhf_elf(4)),
    ]
}

fn as_refs<'a>(
    v: &'a [(&'static str, &'static str, Vec<u8>)],
) -> Vec<(&'static str, &'static str, &'a [u8])> {
    v.iter().map(|(a, n, b)| (*a, *n, b.as_slice())).collect()
}

#[test]
fn good_payload_dir_gives_each_arch_its_binaries() {
    let tmp = tempfile::tempdir().unwrap();
    let files = good_files();
    write_payload(tmp.path(), &as_refs(&files));
    let p = Payload::locate(Some(tmp.path())).unwrap();
    assert_eq!(p.arches(), vec![Arch::Arm64, Arch::Armhf]);
    let b = p.binaries(Arch::Armhf).unwrap();
    assert_eq!(b.firstboot, files[2].2);
    assert_eq!(b.node, files[3].2);
    let b = p.binaries(Arch::Arm64).unwrap();
    assert_eq!(b.node, files[1].2);
    assert_eq!(p.verify_all().unwrap(), vec![Arch::Arm64, Arch::Armhf]);
}

#[test]
fn arm64_node_offered_for_armhf_image_is_refused_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = good_files();
    files[3].2 = arm64_elf(9); // an arm64 node in the armhf slot, checksum consistent
    write_payload(tmp.path(), &as_refs(&files));
    let p = Payload::locate(Some(tmp.path())).unwrap();
    let err = p.binaries(Arch::Armhf).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            PayloadError::WrongArch {
                wanted: Arch::Armhf,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(msg.contains("armhf/piforge-node"), "{msg}");
    assert!(msg.contains("arm64 binary"), "{msg}");
    assert!(msg.contains("image is armhf"), "{msg}");
    // The arm64 half of the payload is still fine.
    p.binaries(Arch::Arm64).unwrap();
}

#[test]
fn soft_float_arm_binary_is_refused_for_armhf() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = good_files();
    files[2].2 = fake_elf(1, 40, 0x0500_0200, 7);
    write_payload(tmp.path(), &as_refs(&files));
    let err = Payload::locate(Some(tmp.path()))
        .unwrap()
        .binaries(Arch::Armhf)
        .unwrap_err();
    assert!(err.to_string().contains("soft-float"), "{err}");
}

#[test]
fn flipped_byte_in_payload_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let files = good_files();
    write_payload(tmp.path(), &as_refs(&files));
    let path = tmp.path().join("arm64/piforge-node");
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    let err = Payload::locate(Some(tmp.path()))
        .unwrap()
        .binaries(Arch::Arm64)
        .unwrap_err();
    assert!(
        matches!(err, PayloadError::Corrupt { what: "sha256", .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("arm64/piforge-node"), "{err}");
}

#[test]
fn corrupt_embedded_payload_is_refused() {
    let files = good_files();
    let manifest: &'static [u8] = Box::leak(manifest(&as_refs(&files)).into_bytes().into());
    let mut embedded_files: Vec<(&'static str, &'static [u8])> = Vec::new();
    for (arch, name, bytes) in &files {
        let mut bytes = bytes.clone();
        if *arch == "armhf" && *name == "piforge-firstboot" {
            bytes[60] ^= 0x80; // one flipped bit in the embedded copy
        }
        let rel: &'static str = Box::leak(format!("{arch}/{name}").into_boxed_str());
        embedded_files.push((rel, Box::leak(bytes.into_boxed_slice())));
    }
    let e: &'static EmbeddedPayload = Box::leak(Box::new(EmbeddedPayload {
        source: "/build/payload",
        manifest,
        files: Box::leak(embedded_files.into_boxed_slice()),
    }));
    // The embedded payload is preferred over any directory.
    let p = Payload::locate_in(Search {
        embedded: Some(e),
        candidates: vec![PathBuf::from("/nonexistent")],
        ..Search::default()
    })
    .unwrap();
    p.binaries(Arch::Arm64).unwrap();
    let err = p.binaries(Arch::Armhf).unwrap_err();
    assert!(matches!(err, PayloadError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("embedded"), "{err}");
}

#[test]
fn truncated_file_is_refused_by_size() {
    let tmp = tempfile::tempdir().unwrap();
    write_payload(tmp.path(), &as_refs(&good_files()));
    let path = tmp.path().join("armhf/piforge-node");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = Payload::locate(Some(tmp.path()))
        .unwrap()
        .binaries(Arch::Armhf)
        .unwrap_err();
    assert!(
        matches!(err, PayloadError::Corrupt { what: "size", .. }),
        "{err:?}"
    );
}

#[test]
fn payload_without_the_images_arch_says_what_it_has() {
    let tmp = tempfile::tempdir().unwrap();
    let files = good_files();
    write_payload(tmp.path(), &as_refs(&files[..2]));
    let err = Payload::locate(Some(tmp.path()))
        .unwrap()
        .binaries(Arch::Armhf)
        .unwrap_err();
    assert!(
        matches!(
            err,
            PayloadError::NoArch {
                arch: Arch::Armhf,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("it has: arm64"), "{err}");
}

#[test]
fn no_payload_anywhere_names_the_one_command() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Payload::locate_in(Search {
        candidates: vec![tmp.path().join("payload")],
        build_script: Some(PathBuf::from("/src/piforge/ci/payload")),
        ..Search::default()
    })
    .unwrap_err();
    assert!(matches!(err, PayloadError::Missing { .. }));
    assert!(
        err.to_string()
            .contains("Get it with: /src/piforge/ci/payload"),
        "{err}"
    );
    // Without a source tree (a copied binary), the fix is --payload.
    let err = Payload::locate_in(Search::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("Get it with: piforge --payload DIR"),
        "{err}"
    );
}

#[test]
fn explicit_dir_without_manifest_is_an_error_not_a_fallthrough() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tempfile::tempdir().unwrap();
    write_payload(good.path(), &as_refs(&good_files()));
    let err = Payload::locate_in(Search {
        explicit: Some(tmp.path()),
        candidates: vec![good.path().to_path_buf()],
        ..Search::default()
    })
    .unwrap_err();
    assert!(matches!(err, PayloadError::Manifest { .. }), "{err:?}");
    // Candidates without a manifest are skipped; the first one with a manifest wins.
    let p = Payload::locate_in(Search {
        candidates: vec![tmp.path().to_path_buf(), good.path().to_path_buf()],
        ..Search::default()
    })
    .unwrap();
    assert_eq!(p.origin().to_string(), good.path().display().to_string());
}

/// The real payload from `ci/payload`, when there is one: every binary verifies and is real
/// (bigger than a header). `ci/payload --targets arm64` makes a one-architecture payload, so
/// the test checks the architectures the manifest lists, not a fixed pair.
#[test]
fn real_cross_compiled_payload_verifies() {
    let dir = std::env::var_os("PIFORGE_PAYLOAD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../payload"));
    if !dir.join("manifest.toml").is_file() {
        eprintln!("skipping: no payload at {} (run ci/payload)", dir.display());
        return;
    }
    let p = Payload::locate(Some(&dir)).unwrap();
    let arches = p.verify_all().unwrap();
    assert!(
        !arches.is_empty(),
        "payload at {} lists no binaries",
        dir.display()
    );
    for arch in arches {
        let b = p.binaries(arch).unwrap();
        assert!(
            b.node.len() > 10_000,
            "{arch} node is only {} bytes",
            b.node.len()
        );
        assert!(
            b.node.len() <= 5 << 20,
            "{arch} node is {} bytes, over 5 MB",
            b.node.len()
        );
        // And the other arch's binaries are refused for this one.
        let other = Arch::ALL.into_iter().find(|a| *a != arch).unwrap();
        assert!(piforge::build::payload::check_elf(&b.node, other).is_err());
    }
}
