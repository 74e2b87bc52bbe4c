//! `cargo run --release -p piforge --example bmap -- IMAGE OUT.bmap`: writes the bmap v2.0 file
//! of a raw image from its partition table and filesystem allocation, and prints a one-line
//! summary. Used by `ci/release` until `piforge export` writes `.bmap` files itself; it
//! deliberately has no options.
#![forbid(unsafe_code)]

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use piforge::image::blockmap::map_image;
use piforge::image::bmap::write_bmap;

fn run(image: PathBuf, out: PathBuf) -> anyhow::Result<()> {
    let mut f = File::open(&image).with_context(|| format!("opening {}", image.display()))?;
    let size = f
        .metadata()
        .with_context(|| format!("reading {}", image.display()))?
        .len();
    let map = map_image(&mut f, size).with_context(|| format!("mapping {}", image.display()))?;
    // Rendered in memory (a bmap is kilobytes), then put in place whole: an interrupted run
    // leaves no half-written .bmap for a release to publish.
    let mut text = Vec::new();
    let s = write_bmap(&mut f, &map, &mut text)
        .with_context(|| format!("rendering the bmap of {}", image.display()))?;
    piforge::io::write_atomic(&out, &text, 0o644)?;
    let kinds: Vec<String> = map
        .partitions
        .iter()
        .map(|p| format!("{:?}", p.kind))
        .collect();
    println!(
        "{}: {} of {} blocks mapped ({:.1}%) in {} ranges; partitions: {}",
        out.display(),
        s.mapped_blocks,
        s.blocks,
        s.mapped_blocks as f64 * 100.0 / s.blocks.max(1) as f64,
        s.ranges,
        kinds.join(", ")
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [image, out] = <[PathBuf; 2]>::try_from(args).unwrap_or_else(|_| {
        eprintln!("usage: bmap IMAGE OUT.bmap");
        std::process::exit(2)
    });
    match run(image, out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bmap: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
