//! The Pi payload: the cross-compiled `piforge-firstboot` and `piforge-node` binaries that
//! `piforge build` puts on the card, one pair per image architecture.
//!
//! A payload is a `manifest.toml` ([`Manifest`], in `manifest.rs`: the one type `ci/payload`
//! writes it with, through `examples/payload_manifest.rs`, and piforge reads it with) plus
//! `<arch>/<binary>` files. It comes from `--payload DIR`, from the copy embedded at build time
//! (`PIFORGE_EMBED_PAYLOAD`, see `build.rs`), from `$PIFORGE_PAYLOAD_DIR`, from `payload/` next
//! to the executable, or from `payload/` in the source tree this `piforge` was built from, in
//! that order.
//! [`Payload::binaries`] refuses anything that does not match the manifest (size, sha256) or the
//! image (ELF class, machine, ARM hard-float ABI, static), so a corrupt or wrong-arch payload is
//! caught before a single byte goes into an image. [`check_elf`] is the pure header check.
//!
//! It deliberately doesn't build anything (that is `ci/payload`), nor write to images.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::arch::Arch;

mod manifest;

pub use manifest::{
    BINARY_NAMES, MANIFEST_FILE, MANIFEST_SCHEMA_VERSION, Manifest, ManifestEntry, write_manifest,
};

/// A payload compiled into the executable by `build.rs` (`include_bytes!`).
#[derive(Debug)]
pub struct EmbeddedPayload {
    /// The directory it was embedded from, for messages.
    pub source: &'static str,
    /// `manifest.toml`.
    pub manifest: &'static [u8],
    /// `(relative path, bytes)` of every file in the arch subdirectories.
    pub files: &'static [(&'static str, &'static [u8])],
}

mod embedded {
    use super::EmbeddedPayload;
    include!(concat!(env!("OUT_DIR"), "/embedded_payload.rs"));
}

/// The payload embedded in this executable, if it was built with `PIFORGE_EMBED_PAYLOAD`.
pub fn embedded() -> Option<&'static EmbeddedPayload> {
    embedded::EMBEDDED.as_ref()
}

/// Why a payload can't be used. Every variant is raised before anything is written.
#[derive(Debug, Error)]
pub enum PayloadError {
    /// No payload anywhere: not given, not embedded, no payload directory found.
    #[error(
        "this piforge has no Pi payload (the piforge-firstboot and piforge-node binaries); \
         looked in: {searched}. Get it with: {command}"
    )]
    Missing {
        /// The places searched, for the message.
        searched: String,
        /// The one command that gets a payload.
        command: String,
    },
    /// The manifest is missing, unreadable, malformed or of another schema.
    #[error("reading the payload manifest {path}: {reason}")]
    Manifest {
        /// Where the manifest was (or should have been).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file the manifest lists could not be read.
    #[error("reading payload file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The payload has no binaries for the image's architecture.
    #[error("the payload from {origin} has no {name} for {arch} images (it has: {have})")]
    NoArch {
        /// Where the payload came from.
        origin: String,
        /// The image's architecture.
        arch: Arch,
        /// The binary looked for.
        name: String,
        /// The architectures the payload does have.
        have: String,
    },
    /// A file's size or sha256 does not match the manifest: corrupt or tampered with.
    #[error(
        "payload file {file} from {origin} is corrupt: {what} is {actual}, the manifest says \
         {expected}; refusing to use it"
    )]
    Corrupt {
        /// Where the payload came from.
        origin: String,
        /// The file, relative to the payload.
        file: String,
        /// `size` or `sha256`.
        what: &'static str,
        /// Manifest value.
        expected: String,
        /// Actual value.
        actual: String,
    },
    /// A binary is for another architecture or float ABI than the image.
    #[error(
        "payload file {file} is {found}, but the image is {wanted} and needs {needs}; \
         refusing to put it on the card"
    )]
    WrongArch {
        /// The file, relative to the payload.
        file: String,
        /// The image's architecture.
        wanted: Arch,
        /// What the file's ELF header describes (e.g. `an arm64 binary (ELF64 AArch64)`).
        found: String,
        /// What the image needs (e.g. `ELF32 ARM hard-float`).
        needs: String,
    },
    /// A binary is not a static ELF executable (not ELF at all, truncated, dynamic).
    #[error("payload file {file} is not a usable Pi binary: {reason}")]
    BadElf {
        /// The file, relative to the payload.
        file: String,
        /// What the header check found.
        reason: ElfError,
    },
}

/// The Pi binaries for one architecture, verified.
#[derive(Clone, PartialEq, Eq)]
pub struct Binaries {
    /// `piforge-firstboot`.
    pub firstboot: Vec<u8>,
    /// `piforge-node`.
    pub node: Vec<u8>,
}

impl fmt::Debug for Binaries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binaries")
            .field("firstboot", &format_args!("{} bytes", self.firstboot.len()))
            .field("node", &format_args!("{} bytes", self.node.len()))
            .finish()
    }
}

/// Where a payload's files are.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A directory on disk.
    Dir(PathBuf),
    /// Compiled into this executable.
    Embedded(&'static EmbeddedPayload),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Dir(d) => write!(f, "{}", d.display()),
            Origin::Embedded(e) => write!(f, "the payload embedded in piforge (from {})", e.source),
        }
    }
}

/// A located payload: its manifest and where its files are. Nothing is trusted until
/// [`Payload::binaries`] has checked it.
#[derive(Debug, Clone)]
pub struct Payload {
    origin: Origin,
    manifest: Manifest,
}

/// The places [`Payload::locate`] looks, for [`Payload::locate_in`].
#[derive(Debug, Clone, Default)]
pub struct Search<'a> {
    /// `--payload DIR`: must hold a payload.
    pub explicit: Option<&'a Path>,
    /// The embedded payload.
    pub embedded: Option<&'static EmbeddedPayload>,
    /// `$PIFORGE_PAYLOAD_DIR`: must hold a payload when set.
    pub env_dir: Option<PathBuf>,
    /// Directories used if they hold a `manifest.toml`, in order.
    pub candidates: Vec<PathBuf>,
    /// The `ci/payload` script of the source tree, if it exists: names the fix in
    /// [`PayloadError::Missing`].
    pub build_script: Option<PathBuf>,
}

impl Payload {
    /// Finds the payload: `explicit` (`--payload DIR`), then the embedded one, then
    /// `$PIFORGE_PAYLOAD_DIR`, then `payload/` next to the executable, then `payload/` in the
    /// source tree this piforge was built from.
    pub fn locate(explicit: Option<&Path>) -> Result<Payload, PayloadError> {
        let source_tree = Path::new(env!("CARGO_MANIFEST_DIR")).parent();
        let mut candidates = Vec::new();
        if let Some(dir) = std::env::current_exe()
            .ok()
            .as_deref()
            .and_then(Path::parent)
        {
            candidates.push(dir.join("payload"));
        }
        if let Some(root) = source_tree {
            candidates.push(root.join("payload"));
        }
        let build_script = source_tree
            .map(|r| r.join("ci").join("payload"))
            .filter(|script| script.is_file());
        Payload::locate_in(Search {
            explicit,
            embedded: embedded(),
            env_dir: std::env::var_os("PIFORGE_PAYLOAD_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            candidates,
            build_script,
        })
    }

    /// [`Payload::locate`] over given places (tests, and callers with their own rules).
    pub fn locate_in(search: Search<'_>) -> Result<Payload, PayloadError> {
        if let Some(dir) = search.explicit {
            return Payload::from_dir(dir);
        }
        if let Some(e) = search.embedded {
            return Payload::from_embedded(e);
        }
        if let Some(dir) = &search.env_dir {
            return Payload::from_dir(dir);
        }
        for dir in &search.candidates {
            if dir.join(MANIFEST_FILE).is_file() {
                return Payload::from_dir(dir);
            }
        }
        let mut searched: Vec<String> = vec!["--payload (not given)".into()];
        searched.push("the executable (nothing embedded)".into());
        searched.push("$PIFORGE_PAYLOAD_DIR (not set)".into());
        searched.extend(search.candidates.iter().map(|d| d.display().to_string()));
        let command = match &search.build_script {
            Some(script) => format!("{} (builds payload/ in the source tree)", script.display()),
            None => "piforge --payload DIR, with DIR the payload/ of a piforge release or of \
                     ci/payload in the source tree"
                .to_string(),
        };
        Err(PayloadError::Missing {
            searched: searched.join(", "),
            command,
        })
    }

    /// Reads the payload in `dir` (its `manifest.toml`; files are read by [`Payload::binaries`]).
    pub fn from_dir(dir: &Path) -> Result<Payload, PayloadError> {
        let path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&path).map_err(|e| PayloadError::Manifest {
            path: path.display().to_string(),
            reason: if e.kind() == io::ErrorKind::NotFound {
                "no such file: not a payload directory (ci/payload writes one)".to_string()
            } else {
                e.to_string()
            },
        })?;
        let manifest = Manifest::parse(&text).map_err(|reason| PayloadError::Manifest {
            path: path.display().to_string(),
            reason,
        })?;
        Ok(Payload::with_manifest(
            Origin::Dir(dir.to_path_buf()),
            manifest,
        ))
    }

    /// The payload compiled into the executable (or a test's stand-in for it).
    pub fn from_embedded(e: &'static EmbeddedPayload) -> Result<Payload, PayloadError> {
        let path = format!("manifest.toml embedded from {}", e.source);
        let text = std::str::from_utf8(e.manifest).map_err(|err| PayloadError::Manifest {
            path: path.clone(),
            reason: err.to_string(),
        })?;
        let manifest =
            Manifest::parse(text).map_err(|reason| PayloadError::Manifest { path, reason })?;
        Ok(Payload::with_manifest(Origin::Embedded(e), manifest))
    }

    fn with_manifest(origin: Origin, manifest: Manifest) -> Payload {
        if manifest.version != env!("CARGO_PKG_VERSION") {
            tracing::warn!(
                payload = %manifest.version,
                piforge = env!("CARGO_PKG_VERSION"),
                origin = %origin,
                "payload version differs from piforge's"
            );
        }
        Payload { origin, manifest }
    }

    /// Where this payload comes from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The architectures the manifest lists binaries for (known ones only), sorted.
    pub fn arches(&self) -> Vec<Arch> {
        let mut v: Vec<Arch> = Arch::ALL
            .into_iter()
            .filter(|a| {
                self.manifest
                    .binaries
                    .iter()
                    .any(|b| b.arch == a.debian_name())
            })
            .collect();
        v.sort();
        v
    }

    /// The verified binaries for `arch`: present, size and sha256 as in the manifest, and
    /// static ELF executables for `arch` (class, machine, hard-float on 32-bit ARM).
    pub fn binaries(&self, arch: Arch) -> Result<Binaries, PayloadError> {
        let firstboot = self.verified(arch, BINARY_NAMES[0])?;
        let node = self.verified(arch, BINARY_NAMES[1])?;
        Ok(Binaries { firstboot, node })
    }

    /// Checks every binary of every known architecture; returns the architectures.
    pub fn verify_all(&self) -> Result<Vec<Arch>, PayloadError> {
        let arches = self.arches();
        for &a in &arches {
            self.binaries(a)?;
        }
        Ok(arches)
    }

    fn verified(&self, arch: Arch, name: &str) -> Result<Vec<u8>, PayloadError> {
        let entry = self
            .manifest
            .binaries
            .iter()
            .find(|b| b.arch == arch.debian_name() && b.name == name)
            .ok_or_else(|| {
                let mut have: Vec<&str> = self
                    .manifest
                    .binaries
                    .iter()
                    .map(|b| b.arch.as_str())
                    .collect();
                have.dedup();
                PayloadError::NoArch {
                    origin: self.origin.to_string(),
                    arch,
                    name: name.to_string(),
                    have: if have.is_empty() {
                        "nothing".into()
                    } else {
                        have.join(", ")
                    },
                }
            })?;
        let bytes = self.read(&entry.file)?;
        verify_entry(entry, &bytes).map_err(|(what, expected, actual)| PayloadError::Corrupt {
            origin: self.origin.to_string(),
            file: entry.file.clone(),
            what,
            expected,
            actual,
        })?;
        check_elf(&bytes, arch).map_err(|e| match e {
            ElfError::WrongArch { found } => PayloadError::WrongArch {
                file: entry.file.clone(),
                wanted: arch,
                found,
                needs: needs(arch).to_string(),
            },
            reason => PayloadError::BadElf {
                file: entry.file.clone(),
                reason,
            },
        })?;
        Ok(bytes)
    }

    fn read(&self, file: &str) -> Result<Vec<u8>, PayloadError> {
        match &self.origin {
            Origin::Dir(dir) => {
                let path = dir.join(file);
                fs::read(&path).map_err(|source| PayloadError::Io { path, source })
            }
            Origin::Embedded(e) => e
                .files
                .iter()
                .find(|(rel, _)| *rel == file)
                .map(|(_, bytes)| bytes.to_vec())
                .ok_or_else(|| PayloadError::Io {
                    path: PathBuf::from(file),
                    source: io::Error::new(
                        io::ErrorKind::NotFound,
                        "listed in the embedded manifest but not embedded",
                    ),
                }),
        }
    }
}

/// Compares bytes with their manifest entry: `Err((what, expected, actual))` on mismatch.
fn verify_entry(entry: &ManifestEntry, bytes: &[u8]) -> Result<(), (&'static str, String, String)> {
    if bytes.len() as u64 != entry.size {
        return Err(("size", entry.size.to_string(), bytes.len().to_string()));
    }
    let actual = hex::encode(Sha256::digest(bytes));
    if !actual.eq_ignore_ascii_case(&entry.sha256) {
        return Err(("sha256", entry.sha256.clone(), actual));
    }
    Ok(())
}

/// What a binary for `arch` must be, in words.
fn needs(arch: Arch) -> &'static str {
    match arch {
        Arch::Arm64 => "ELF64 AArch64",
        Arch::Armhf => "ELF32 ARM hard-float",
    }
}

/// ELF `e_machine` values we name in messages.
const EM_386: u16 = 3;
const EM_ARM: u16 = 40;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
/// `e_flags` bit: the ARM binary uses the hard-float (VFP register) calling convention.
pub const EF_ARM_ABI_FLOAT_HARD: u32 = 0x400;
/// `e_flags` bit: explicitly soft-float.
const EF_ARM_ABI_FLOAT_SOFT: u32 = 0x200;
const PT_INTERP: u32 = 3;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

/// What the ELF header check found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ElfError {
    /// No `\x7fELF` magic.
    #[error("not an ELF file")]
    NotElf,
    /// The header or program headers run past the end of the file.
    #[error("truncated ELF file")]
    Truncated,
    /// Big-endian or unknown data encoding / class.
    #[error("unsupported ELF encoding ({0})")]
    Encoding(String),
    /// Another architecture or float ABI; `found` describes it.
    #[error("{found}")]
    WrongArch {
        /// E.g. `an arm64 binary (ELF64 AArch64)`.
        found: String,
    },
    /// Not an executable (a relocatable object, a core file).
    #[error("ELF type {0} is not an executable")]
    NotExecutable(u16),
    /// Has a `PT_INTERP`: needs a dynamic loader and libraries the image may not have.
    #[error("dynamically linked (has an ELF interpreter); the Pi binaries must be static")]
    Dynamic,
}

/// The facts [`check_elf`] reads from an ELF header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfInfo {
    /// 1 = ELF32, 2 = ELF64.
    pub class: u8,
    /// `e_machine`.
    pub machine: u16,
    /// `e_flags`.
    pub flags: u32,
    /// `e_type`.
    pub kind: u16,
    /// No `PT_INTERP` program header.
    pub is_static: bool,
}

impl ElfInfo {
    /// In words, e.g. `an arm64 binary (ELF64 AArch64)`.
    pub fn describe(&self) -> String {
        let bits = if self.class == 2 { "ELF64" } else { "ELF32" };
        match (self.class, self.machine) {
            (2, EM_AARCH64) => format!("an arm64 binary ({bits} AArch64)"),
            (1, EM_ARM) if self.flags & EF_ARM_ABI_FLOAT_HARD != 0 => {
                format!("an armhf binary ({bits} ARM hard-float)")
            }
            (1, EM_ARM) => format!("an armel binary ({bits} ARM soft-float)"),
            (_, EM_X86_64) => format!("an x86-64 binary ({bits} x86-64)"),
            (_, EM_386) => format!("an i386 binary ({bits} x86)"),
            (_, m) => format!("a binary for another machine ({bits} e_machine {m})"),
        }
    }
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, ElfError> {
    let s = b.get(off..off + 2).ok_or(ElfError::Truncated)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, ElfError> {
    let s = b.get(off..off + 4).ok_or(ElfError::Truncated)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, ElfError> {
    let s = b.get(off..off + 8).ok_or(ElfError::Truncated)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

/// Reads the ELF header and program headers (little-endian ELF32/ELF64 only). Pure.
pub fn parse_elf(bytes: &[u8]) -> Result<ElfInfo, ElfError> {
    if bytes.get(0..4) != Some(b"\x7fELF".as_slice()) {
        return Err(ElfError::NotElf);
    }
    let class = *bytes.get(4).ok_or(ElfError::Truncated)?;
    let data = *bytes.get(5).ok_or(ElfError::Truncated)?;
    if data != 1 {
        return Err(ElfError::Encoding(format!(
            "EI_DATA {data}, not little-endian"
        )));
    }
    let kind = u16_at(bytes, 16)?;
    let machine = u16_at(bytes, 18)?;
    let (phoff, flags, phentsize, phnum) = match class {
        1 => (
            u64::from(u32_at(bytes, 28)?),
            u32_at(bytes, 36)?,
            u16_at(bytes, 42)?,
            u16_at(bytes, 44)?,
        ),
        2 => (
            u64_at(bytes, 32)?,
            u32_at(bytes, 48)?,
            u16_at(bytes, 54)?,
            u16_at(bytes, 56)?,
        ),
        c => return Err(ElfError::Encoding(format!("EI_CLASS {c}"))),
    };
    let mut is_static = true;
    for i in 0..u64::from(phnum) {
        let off = phoff
            .checked_add(i * u64::from(phentsize))
            .and_then(|o| usize::try_from(o).ok())
            .ok_or(ElfError::Truncated)?;
        if u32_at(bytes, off)? == PT_INTERP {
            is_static = false;
        }
    }
    Ok(ElfInfo {
        class,
        machine,
        flags,
        kind,
        is_static,
    })
}

/// Checks that `bytes` is a static executable for `arch`: ELF class and `e_machine`, and on
/// 32-bit ARM the hard-float ABI flag (`EF_ARM_ABI_FLOAT_HARD`). Pure; never panics.
pub fn check_elf(bytes: &[u8], arch: Arch) -> Result<ElfInfo, ElfError> {
    let info = parse_elf(bytes)?;
    let right_machine = info.class == arch.elf_class() && info.machine == arch.elf_machine();
    let right_float = match arch {
        Arch::Arm64 => true,
        Arch::Armhf => {
            info.flags & EF_ARM_ABI_FLOAT_HARD != 0 && info.flags & EF_ARM_ABI_FLOAT_SOFT == 0
        }
    };
    if !right_machine || !right_float {
        return Err(ElfError::WrongArch {
            found: info.describe(),
        });
    }
    if info.kind != ET_EXEC && info.kind != ET_DYN {
        return Err(ElfError::NotExecutable(info.kind));
    }
    if !info.is_static {
        return Err(ElfError::Dynamic);
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal little-endian ELF header + program headers, enough for [`parse_elf`].
    fn fake_elf(class: u8, machine: u16, flags: u32, interp: bool) -> Vec<u8> {
        let (ehsize, phentsize) = if class == 2 {
            (64usize, 56usize)
        } else {
            (52, 32)
        };
        let phnum = if interp { 2 } else { 1 };
        let mut b = vec![0u8; ehsize + phentsize * phnum + 16];
        b[0..4].copy_from_slice(b"\x7fELF");
        b[4] = class;
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&ET_EXEC.to_le_bytes());
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        if class == 2 {
            b[32..40].copy_from_slice(&(ehsize as u64).to_le_bytes());
            b[48..52].copy_from_slice(&flags.to_le_bytes());
            b[54..56].copy_from_slice(&(phentsize as u16).to_le_bytes());
            b[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        } else {
            b[28..32].copy_from_slice(&(ehsize as u32).to_le_bytes());
            b[36..40].copy_from_slice(&flags.to_le_bytes());
            b[42..44].copy_from_slice(&(phentsize as u16).to_le_bytes());
            b[44..46].copy_from_slice(&(phnum as u16).to_le_bytes());
        }
        b[ehsize..ehsize + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        if interp {
            let o = ehsize + phentsize;
            b[o..o + 4].copy_from_slice(&PT_INTERP.to_le_bytes());
        }
        b
    }

    const HARD: u32 = 0x0500_0000 | EF_ARM_ABI_FLOAT_HARD;

    #[test]
    fn right_binaries_pass() {
        let a = check_elf(&fake_elf(2, EM_AARCH64, 0, false), Arch::Arm64).unwrap();
        assert!(a.is_static);
        check_elf(&fake_elf(1, EM_ARM, HARD, false), Arch::Armhf).unwrap();
    }

    #[test]
    fn arm64_binary_for_armhf_image_is_wrong_arch() {
        let err = check_elf(&fake_elf(2, EM_AARCH64, 0, false), Arch::Armhf).unwrap_err();
        assert_eq!(
            err,
            ElfError::WrongArch {
                found: "an arm64 binary (ELF64 AArch64)".into()
            }
        );
        let err = check_elf(&fake_elf(1, EM_ARM, HARD, false), Arch::Arm64).unwrap_err();
        assert!(matches!(err, ElfError::WrongArch { .. }));
    }

    #[test]
    fn soft_float_and_host_binaries_are_wrong_arch() {
        let soft = check_elf(&fake_elf(1, EM_ARM, 0x0500_0200, false), Arch::Armhf).unwrap_err();
        assert!(soft.to_string().contains("soft-float"), "{soft}");
        let x86 = check_elf(&fake_elf(2, EM_X86_64, 0, false), Arch::Arm64).unwrap_err();
        assert!(x86.to_string().contains("x86-64"), "{x86}");
    }

    #[test]
    fn dynamic_and_junk_are_refused() {
        let dynamic = check_elf(&fake_elf(2, EM_AARCH64, 0, true), Arch::Arm64).unwrap_err();
        assert_eq!(dynamic, ElfError::Dynamic);
        assert_eq!(
            check_elf(b"#!/bin/sh\n", Arch::Arm64).unwrap_err(),
            ElfError::NotElf
        );
        let full = fake_elf(2, EM_AARCH64, 0, false);
        assert_eq!(
            check_elf(&full[..66], Arch::Arm64).unwrap_err(),
            ElfError::Truncated
        );
    }

    #[test]
    fn missing_names_the_build_command() {
        let err = Payload::locate_in(Search {
            candidates: vec![PathBuf::from("/nonexistent/payload")],
            build_script: Some(PathBuf::from("/src/piforge/ci/payload")),
            ..Search::default()
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PayloadError::Missing { .. }));
        assert!(
            msg.contains("Get it with: /src/piforge/ci/payload"),
            "{msg}"
        );
        assert!(msg.contains("/nonexistent/payload"), "{msg}");
    }

    proptest! {
        #[test]
        fn check_elf_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = check_elf(&bytes, Arch::Arm64);
            let _ = check_elf(&bytes, Arch::Armhf);
        }

        #[test]
        fn check_elf_never_panics_on_mutated_headers(
            class in 0u8..4, machine: u16, flags: u32, interp: bool,
            cut in 0usize..200, flip in 0usize..200, v: u8,
        ) {
            let mut b = fake_elf(class.clamp(1, 2), machine, flags, interp);
            if flip < b.len() { b[flip] = v; }
            b.truncate(cut.max(8));
            if class == 0 || class == 3 { b[4] = class; }
            let _ = check_elf(&b, Arch::Armhf);
            let _ = check_elf(&b, Arch::Arm64);
        }
    }
}
