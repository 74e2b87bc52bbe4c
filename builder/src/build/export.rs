//! `piforge export`: one complete image out of a batch — the cloneable one, or card K
//! personalised — as `.img` or multi-threaded `.img.xz`, with a `.sha256` beside it.
//!
//! The output is written to `FILE.part` and renamed when complete; the `.sha256` and the
//! `.bmap` (`FILE.bmap`: the used blocks of the raw image from its FAT/ext4 allocation, each
//! range with its sha256, for `bmaptool copy` and `piforge flash --image`) are written after
//! the image they describe. The image (`.img` or `.img.xz`, and its `.part`) is mode 0600,
//! whatever the umask: it holds the cluster key and the card's secrets (SECURITY finding 6). xz uses a fixed block size, so the compressed bytes do not
//! depend on the number of threads (reproducible releases on any machine).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::build::batch::{self, Batch};
use crate::build::customize::{self, ImageFacts};
use crate::image::{self, fat::BootFs};
use crate::io::sparse;
use crate::term::progress::Progress;

/// xz block size: independent blocks make multi-threaded compression and decompression
/// possible, and a fixed size makes the output the same for any thread count.
pub const XZ_BLOCK_SIZE: u64 = 32 << 20;

/// A checked `piforge export`.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Batch dir.
    pub batch_dir: PathBuf,
    /// Card to personalise; `None`: the cloneable image.
    pub card: Option<u32>,
    /// Output file; `.xz` compresses.
    pub output: PathBuf,
    /// Draw progress.
    pub progress: bool,
}

/// Result of an export.
#[derive(Debug)]
pub struct ExportOutcome {
    /// The image written.
    pub output: PathBuf,
    /// Its sha256 (of the file as written, compressed or not).
    pub sha256: String,
    /// The `.bmap` written beside it.
    pub bmap: PathBuf,
}

/// Runs an export.
pub fn export(req: &ExportRequest) -> anyhow::Result<ExportOutcome> {
    let batch = Batch::load(&req.batch_dir)?;
    let src = batch.image_path(&req.batch_dir);
    let dir = match req.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let compress = req.output.extension().is_some_and(|e| e == "xz");

    // The personalised raw image, in a temp file beside the output.
    let mut raw = tempfile::Builder::new()
        .prefix(".piforge-")
        .suffix(".img.part")
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    let size = std::fs::metadata(&src)
        .with_context(|| format!("reading {}", src.display()))?
        .len();
    let bar = Progress::maybe(req.progress, "copying image", Some(size));
    sparse::copy_sparse(&src, raw.as_file_mut(), |n| bar.set_position(n))?;
    bar.finish();
    if let Some(k) = req.card {
        personalise(raw.as_file_mut(), &batch, &req.batch_dir, k)?;
    }
    owner_only(raw.as_file())?;
    raw.as_file().sync_all().context("syncing the image")?;
    let bmap = bmap_of(raw.as_file_mut())?;

    let sha256 = if compress {
        let part = part_path(&req.output);
        let result = compress_xz(raw.path(), &part, req.progress);
        if result.is_err() {
            let _ = std::fs::remove_file(&part);
        }
        let sha = result?;
        piforge_config::atomic::rename_durably(&part, &req.output)
            .with_context(|| format!("renaming to {}", req.output.display()))?;
        sha
    } else {
        let sha = crate::acquire::verify::sha256_file(raw.path())?;
        raw.persist(&req.output)
            .map_err(|e| e.error)
            .with_context(|| format!("renaming to {}", req.output.display()))?;
        piforge_config::atomic::sync_parent(&req.output)?;
        sha
    };
    let name = req
        .output
        .file_name()
        .expect("an output file has a name")
        .to_string_lossy();
    crate::io::write_atomic(
        &sha_path(&req.output),
        format!("{sha256}  {name}\n").as_bytes(),
        0o644,
    )?;
    let bmap_path = bmap_path(&req.output);
    crate::io::write_atomic(&bmap_path, &bmap, 0o644)?;
    Ok(ExportOutcome {
        output: req.output.clone(),
        sha256,
        bmap: bmap_path,
    })
}

/// Writes card `k`'s card.toml (and cloud-init meta-data) onto the FAT of `image`.
pub fn personalise(image: &mut File, batch: &Batch, dir: &Path, k: u32) -> anyhow::Result<()> {
    let bc = batch.card(k)?;
    let card = batch::load_card(dir, &bc.hostname)?;
    let layout = image::read_layout(image).context("reading the image's partition table")?;
    let boot = layout.boot()?.clone();
    let facts = ImageFacts {
        boot_mount: batch.boot_mount.clone(),
        cloud_init: batch.cloud_init,
    };
    let files = customize::plan_card(&card, &facts, &batch.instance_id(&bc.hostname));
    let fs = BootFs::open(image, &boot)?;
    crate::build::assemble::check_space(&fs, &files)?;
    for (path, bytes) in &files {
        fs.write(path, bytes)?;
    }
    fs.flush()?;
    Ok(())
}

/// Compresses `src` into `dest` with the multi-threaded xz encoder; returns the sha256 of the
/// compressed bytes.
fn compress_xz(src: &Path, dest: &Path, progress: bool) -> anyhow::Result<String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let stream = liblzma::stream::MtStreamBuilder::new()
        .threads(threads)
        .block_size(XZ_BLOCK_SIZE)
        .preset(6)
        .check(liblzma::stream::Check::Crc64)
        .encoder()
        .context("setting up the xz encoder")?;
    let mut input = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let size = input
        .metadata()
        .with_context(|| format!("reading {}", src.display()))?
        .len();
    let out = crate::io::hostfs::with_mode(
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true),
        0o600,
    )
    .open(dest)
    .with_context(|| format!("creating {}", dest.display()))?;
    owner_only(&out)?;
    let hashing = HashWriter {
        inner: BufWriter::new(out),
        hash: Sha256::new(),
    };
    let mut enc = liblzma::write::XzEncoder::new_stream(hashing, stream);
    let bar = Progress::maybe(progress, "compressing", Some(size));
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input
            .read(&mut buf)
            .with_context(|| format!("reading {}", src.display()))?;
        if n == 0 {
            break;
        }
        enc.write_all(&buf[..n])
            .with_context(|| format!("writing {}", dest.display()))?;
        bar.inc(n as u64);
    }
    bar.finish();
    let hashing = enc
        .finish()
        .with_context(|| format!("finishing {}", dest.display()))?;
    let HashWriter { inner, hash } = hashing;
    let file = inner
        .into_inner()
        .map_err(|e| e.into_error())
        .context("flushing the output")?;
    file.sync_all()
        .with_context(|| format!("syncing {}", dest.display()))?;
    Ok(hex::encode(hash.finalize()))
}

/// Mode 0600 on an open file, whatever the umask and whatever mode it had.
fn owner_only(f: &File) -> anyhow::Result<()> {
    crate::io::hostfs::owner_only(f).context("making the image readable by its owner only (0600)")
}

struct HashWriter<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn part_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// The bmap v2.0 text of a raw image (its block map, ranges checksummed).
fn bmap_of(raw: &mut File) -> anyhow::Result<Vec<u8>> {
    let len = raw.metadata().context("reading the image's size")?.len();
    let map =
        crate::image::blockmap::map_image(raw, len).context("mapping the image's used blocks")?;
    let mut out = Vec::new();
    crate::image::bmap::write_bmap(raw, &map, &mut out).context("writing the bmap")?;
    Ok(out)
}

/// `FILE.bmap` beside `FILE` (where `bmaptool copy FILE` looks first).
pub fn bmap_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".bmap");
    PathBuf::from(s)
}

/// `FILE.sha256` beside `FILE`.
pub fn sha_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}
