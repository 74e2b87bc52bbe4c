//! `cargo run -p piforge --example payload_manifest -- DIR TARGET...`: writes `DIR/manifest.toml`
//! for the binaries `ci/payload` copied to `DIR/<arch>/` for each TARGET (a name of
//! `ci/payload --targets`: `arm64`, `armv6hf`, `armhf`), with the type `piforge` reads it with.
//! `ci/payload` runs it; it deliberately builds and copies nothing itself.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use piforge::build::payload::{MANIFEST_FILE, Manifest, write_manifest};
use piforge_config::arch::PayloadTarget;

fn run(args: &[String]) -> anyhow::Result<PathBuf> {
    let Some((dir, names)) = args.split_first() else {
        bail!("usage: payload_manifest DIR TARGET...");
    };
    if names.is_empty() {
        bail!("usage: payload_manifest DIR TARGET... (no target given)");
    }
    let targets = names
        .iter()
        .map(|n| PayloadTarget::find(n).with_context(|| format!("unknown payload target {n:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let dir = PathBuf::from(dir);
    let manifest = Manifest::describe(&dir, env!("CARGO_PKG_VERSION"), &targets)?;
    write_manifest(&dir, &manifest)?;
    Ok(dir.join(MANIFEST_FILE))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(path) => {
            eprintln!("payload_manifest: wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("payload_manifest: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
