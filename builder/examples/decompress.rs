//! Dev tool: run `piforge::acquire::decompress::decompress_to` on one file, for `ci/bench-build` and for
//! poking at real images by hand. Not part of the CLI.
//!
//! `cargo run --release -p piforge --example decompress -- SRC DEST [--sha256 HEX]`
//! prints one line: `format=xz in=… out=… written=… seconds=… sha256=…`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (src, dest, expect) = match args.as_slice() {
        [s, d] => (s, d, None),
        [s, d, flag, h] if flag == "--sha256" => (s, d, Some(h.as_str())),
        _ => {
            eprintln!("usage: decompress SRC DEST [--sha256 HEX]");
            return ExitCode::from(2);
        }
    };
    let progress = std::env::var_os("PIFORGE_PROGRESS").is_some();
    match piforge::acquire::decompress::decompress_to_checked(
        &PathBuf::from(src),
        &PathBuf::from(dest),
        expect,
        progress,
    ) {
        Ok(s) => {
            println!(
                "format={} in={} out={} written={} seconds={:.3} sha256={}",
                s.format,
                s.input_bytes,
                s.output_bytes,
                s.data_bytes,
                s.elapsed.as_secs_f64(),
                s.sha256
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
