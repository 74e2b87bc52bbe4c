//! Sparse file copies: images are mostly zeros, and a copy that keeps the holes costs the disk
//! only what the image uses. Copies read 1 MiB at a time and seek over all-zero blocks.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::Context;

/// Granularity of hole detection.
const BLOCK: usize = 64 * 1024;

/// Copies `src` into the (new, empty) file `dst`, leaving all-zero 64 KiB blocks as holes.
/// Calls `progress` with the bytes done so far.
pub fn copy_sparse(
    src: &Path,
    dst: &mut File,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<u64> {
    let mut input = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let len = input
        .metadata()
        .with_context(|| format!("reading {}", src.display()))?
        .len();
    let mut buf = vec![0u8; 16 * BLOCK];
    let mut done = 0u64;
    loop {
        let n = read_full(&mut input, &mut buf)
            .with_context(|| format!("reading {}", src.display()))?;
        if n == 0 {
            break;
        }
        for chunk in buf[..n].chunks(BLOCK) {
            if chunk.iter().all(|&b| b == 0) {
                dst.seek(SeekFrom::Current(chunk.len() as i64))
                    .context("seeking in the copy")?;
            } else {
                dst.write_all(chunk).context("writing the copy")?;
            }
        }
        done += n as u64;
        progress(done);
    }
    dst.set_len(len).context("setting the length of the copy")?;
    Ok(len)
}

/// Reads until `buf` is full or the reader is at its end; the number of bytes read.
pub fn read_full(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether `b` is all zeros (a branch-free OR per 4 KiB: vectorises, unlike `all`).
pub fn is_zero(b: &[u8]) -> bool {
    b.chunks(4096)
        .all(|c| c.iter().fold(0u8, |acc, &x| acc | x) == 0)
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    #[test]
    fn copy_is_identical_and_sparse() {
        use super::*;
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        let mut f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(10 << 20)).unwrap();
        f.write_all(&[0xa5; 100_000]).unwrap();
        drop(f);
        let dst = d.path().join("dst");
        let mut out = File::create(&dst).unwrap();
        copy_sparse(&src, &mut out, |_| {}).unwrap();
        drop(out);
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        let used = std::fs::metadata(&dst).unwrap().blocks() * 512;
        assert!(used < 1 << 20, "copy uses {used} bytes of disk");
    }
}
