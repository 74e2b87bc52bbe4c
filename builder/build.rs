//! Build script: embeds the Pi payload into `piforge` when asked to.
//!
//! With `PIFORGE_EMBED_PAYLOAD=<dir>` (a directory written by `ci/payload`; relative paths are
//! taken from the workspace root) it generates `$OUT_DIR/embedded_payload.rs` with
//! `include_bytes!` of `manifest.toml` and of every file in the arch subdirectories, so a
//! release `piforge` needs nothing next to it. Without it, the generated file says "nothing
//! embedded", so ordinary dev builds and `cargo test` stay small and fast.
//!
//! It deliberately doesn't verify checksums or ELF headers: `payload.rs` does that at run
//! time, before anything is written, for embedded and on-disk payloads alike.
#![forbid(unsafe_code)]

use std::env;
use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-env-changed=PIFORGE_EMBED_PAYLOAD");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(env::var("OUT_DIR")?).join("embedded_payload.rs");
    let code = match env::var_os("PIFORGE_EMBED_PAYLOAD").filter(|v| !v.is_empty()) {
        None => "/// Nothing embedded: built without `PIFORGE_EMBED_PAYLOAD`.\n\
                 pub static EMBEDDED: Option<EmbeddedPayload> = None;\n"
            .to_string(),
        Some(dir) => {
            let dir = PathBuf::from(dir);
            let dir = if dir.is_absolute() {
                dir
            } else {
                let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
                manifest_dir.parent().unwrap_or(&manifest_dir).join(dir)
            };
            embed(&dir)?
        }
    };
    fs::write(&out, code).map_err(|e| format!("writing {}: {e}", out.display()))?;
    Ok(())
}

/// Generates the code embedding `dir`: its manifest and the files of its arch subdirectories.
fn embed(dir: &Path) -> Result<String, Box<dyn Error>> {
    let manifest = dir.join("manifest.toml");
    if !manifest.is_file() {
        return Err(format!(
            "PIFORGE_EMBED_PAYLOAD={}: no manifest.toml there; run ci/payload first",
            dir.display()
        )
        .into());
    }
    println!("cargo:rerun-if-changed={}", dir.display());
    println!("cargo:rerun-if-changed={}", manifest.display());
    let mut files = Vec::new();
    let mut arch_dirs: Vec<_> = fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .collect::<Result<_, _>>()?;
    arch_dirs.sort_by_key(|e| e.file_name());
    for arch in arch_dirs {
        if !arch.file_type()?.is_dir() {
            continue;
        }
        println!("cargo:rerun-if-changed={}", arch.path().display());
        let mut entries: Vec<_> = fs::read_dir(arch.path())?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for f in entries {
            if !f.file_type()?.is_file() {
                continue;
            }
            let rel = format!(
                "{}/{}",
                arch.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            );
            println!("cargo:rerun-if-changed={}", f.path().display());
            files.push((rel, f.path()));
        }
    }
    let mut code = String::new();
    writeln!(
        code,
        "/// Embedded from {:?} by build.rs.",
        dir.display().to_string()
    )?;
    writeln!(
        code,
        "pub static EMBEDDED: Option<EmbeddedPayload> = Some(EmbeddedPayload {{"
    )?;
    writeln!(code, "    source: {:?},", dir.display().to_string())?;
    writeln!(
        code,
        "    manifest: include_bytes!({:?}),",
        manifest.display().to_string()
    )?;
    writeln!(code, "    files: &[")?;
    for (rel, path) in files {
        writeln!(
            code,
            "        ({rel:?}, include_bytes!({:?})),",
            path.display().to_string()
        )?;
    }
    writeln!(code, "    ],")?;
    writeln!(code, "}});")?;
    Ok(code)
}
