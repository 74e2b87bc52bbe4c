//! decompress: turn a downloaded image (`.img.xz`, `.img.gz`, `.img.zst`, `.zip`, or raw) into a
//! raw `.img`, streaming, in one pass.
//!
//! The format is recognised by magic bytes ([`sniff`]), never by file name. xz uses liblzma's
//! multi-threaded decoder (Raspberry Pi OS images are multi-block, so it scales with cores). The
//! output is written to `<dest>.part` *sparsely*: all-zero 4 KiB blocks are skipped with a seek,
//! so a 2.9 GiB image with 1.5 GiB of data takes 1.5 GiB of disk. The sha256 of the output is
//! computed on the way and can be checked before `<dest>.part` is renamed to `<dest>`; on any
//! error the `.part` is removed, so `dest` only ever appears complete.
//! Deliberately not here: deciding whether the bytes are a disk image (the image layer does
//! that; an unknown format passes through as [`Format::Raw`]) and where files live (`cache`).

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tracing::{debug, warn};

use crate::acquire::fetch::part_path;
use crate::io::sparse::{is_zero, read_full};
use crate::term::progress::{Progress, ProgressReader};

/// Blocks of this size that are all zero are not written (they stay holes).
pub const SPARSE_BLOCK: usize = 4096;
/// How much decompressed data is handled at once.
const CHUNK: usize = 4 << 20;
/// Memory the xz decoder may use before it reduces its thread count (it never fails because
/// of this limit; it falls back to fewer threads, down to one).
const XZ_MEMLIMIT_THREADING: u64 = 2 << 30;

/// A container/compression format, as recognised by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Not a format we know: used as is.
    Raw,
    /// xz (`FD 37 7A 58 5A 00`).
    Xz,
    /// gzip (`1F 8B`).
    Gz,
    /// Zstandard (`28 B5 2F FD`).
    Zst,
    /// zip (`PK\x03\x04`), holding one `.img`.
    Zip,
}

impl Format {
    /// A short lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Xz => "xz",
            Format::Gz => "gzip",
            Format::Zst => "zstd",
            Format::Zip => "zip",
        }
    }

    /// Whether the data needs decompressing at all.
    pub fn is_compressed(self) -> bool {
        self != Format::Raw
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The format of data starting with `head` (a few bytes are enough; 8 are plenty).
pub fn sniff(head: &[u8]) -> Format {
    if head.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
        Format::Xz
    } else if head.starts_with(&[0x1F, 0x8B]) {
        Format::Gz
    } else if head.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        Format::Zst
    } else if head.starts_with(b"PK\x03\x04") {
        Format::Zip
    } else {
        Format::Raw
    }
}

/// What a decompression did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecompressStats {
    /// The input's format.
    pub format: Format,
    /// Bytes of input (the compressed file's size).
    pub input_bytes: u64,
    /// Bytes of output (the raw image's size).
    pub output_bytes: u64,
    /// Bytes actually written; the rest are holes.
    pub data_bytes: u64,
    /// sha256 of the output.
    pub sha256: String,
    /// Wall time.
    pub elapsed: Duration,
}

/// Failures of decompression. Each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    /// The compressed data ends early or does not decode (bad CRC, garbage, ...).
    #[error("{} is truncated or corrupt: {source}; delete it and download it again", path.display())]
    Corrupt {
        /// The compressed file.
        path: PathBuf,
        /// Its format.
        format: Format,
        /// What the decoder said.
        source: io::Error,
    },
    /// A zip archive does not hold exactly one disk image.
    #[error("{}: {reason}", path.display())]
    Zip {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The output is not the image the catalog describes. The output was deleted.
    #[error(
        "{} does not extract to the expected image: sha256 {actual}, expected {expected}; \
         delete it and download it again",
        path.display()
    )]
    ExtractedMismatch {
        /// The compressed file.
        path: PathBuf,
        /// The sha256 that was expected.
        expected: String,
        /// The sha256 of the output.
        actual: String,
    },
    /// A local file could not be read or written (disk full, permissions, ...).
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> DecompressError + 'a {
    move |source| DecompressError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Sniff the format of a file from its first bytes.
pub fn sniff_file(path: &Path) -> Result<Format, DecompressError> {
    let mut f = File::open(path).map_err(io_err("opening", path))?;
    let mut head = [0u8; 8];
    let n = read_full(&mut f, &mut head).map_err(io_err("reading", path))?;
    Ok(sniff(&head[..n]))
}

/// Decompress `src` into `dest` (see the module docs). Raw input is copied (sparsely).
pub fn decompress_to(
    src: &Path,
    dest: &Path,
    progress: bool,
) -> Result<DecompressStats, DecompressError> {
    decompress_to_checked(src, dest, None, progress)
}

/// [`decompress_to`], and when `expected_sha256` is given, refuse (deleting the output) unless
/// the output has that sha256.
pub fn decompress_to_checked(
    src: &Path,
    dest: &Path,
    expected_sha256: Option<&str>,
    progress: bool,
) -> Result<DecompressStats, DecompressError> {
    let start = Instant::now();
    let part = part_path(dest);
    let result = decompress_part(src, &part, progress).and_then(|mut stats| {
        stats.elapsed = start.elapsed();
        if let Some(expected) = expected_sha256
            && !stats.sha256.eq_ignore_ascii_case(expected)
        {
            return Err(DecompressError::ExtractedMismatch {
                path: src.to_owned(),
                expected: expected.to_ascii_lowercase(),
                actual: stats.sha256.clone(),
            });
        }
        piforge_config::atomic::rename_durably(&part, dest)
            .map_err(io_err("renaming the extracted image to", dest))?;
        Ok(stats)
    });
    match result {
        Ok(stats) => {
            debug!(
                src = %src.display(),
                dest = %dest.display(),
                format = %stats.format,
                bytes = stats.output_bytes,
                written = stats.data_bytes,
                "extracted"
            );
            Ok(stats)
        }
        Err(e) => {
            // Log the real error first: a failing cleanup must not hide it.
            warn!(src = %src.display(), error = %e, "extraction failed, removing the partial output");
            if let Err(rm) = fs::remove_file(&part)
                && rm.kind() != io::ErrorKind::NotFound
            {
                warn!(part = %part.display(), error = %rm, "could not remove the partial output");
            }
            Err(e)
        }
    }
}

fn decompress_part(
    src: &Path,
    part: &Path,
    progress: bool,
) -> Result<DecompressStats, DecompressError> {
    let format = sniff_file(src)?;
    let input = File::open(src).map_err(io_err("opening", src))?;
    let input_bytes = input.metadata().map_err(io_err("reading", src))?.len();
    if let Some(dir) = part.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    }
    let mut out = File::create(part).map_err(io_err("creating", part))?;
    let name = src.file_name().map_or_else(
        || src.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let bar = Progress::maybe(progress, &format!("extracting {name}"), Some(input_bytes));
    let counted = ProgressReader::new(input, bar.clone());
    let copied = with_decoder(format, counted, |reader| sparse_copy(reader, &mut out));
    bar.finish();
    let (output_bytes, data_bytes, sha256) = match copied {
        Ok(Ok(c)) => c,
        Ok(Err(CopyError::Read(source))) | Err(source) => {
            return Err(match source.kind() {
                io::ErrorKind::InvalidInput if format == Format::Zip => DecompressError::Zip {
                    path: src.to_owned(),
                    reason: source.to_string(),
                },
                _ => DecompressError::Corrupt {
                    path: src.to_owned(),
                    format,
                    source,
                },
            });
        }
        Ok(Err(CopyError::Write(source))) => {
            return Err(DecompressError::Io {
                action: "writing",
                path: part.to_owned(),
                source,
            });
        }
    };
    out.sync_all().map_err(io_err("syncing", part))?;
    Ok(DecompressStats {
        format,
        input_bytes,
        output_bytes,
        data_bytes,
        sha256,
        elapsed: Duration::ZERO,
    })
}

/// Run `body` with a reader of the decompressed contents of `input` (in `format`).
///
/// The outer `io::Result` is an error opening the container (e.g. a zip without an image); the
/// reader itself reports corrupt data as read errors.
pub fn with_decoder<R, T>(
    format: Format,
    input: R,
    body: impl FnOnce(&mut dyn Read) -> T,
) -> io::Result<T>
where
    R: Read + Seek,
{
    match format {
        Format::Raw => {
            let mut r = input;
            Ok(body(&mut r))
        }
        Format::Xz => {
            let mut r = XzReader::new(input)?;
            Ok(body(&mut r))
        }
        Format::Gz => {
            let mut r =
                flate2::bufread::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, input));
            Ok(body(&mut r))
        }
        Format::Zst => {
            let mut r =
                zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(1 << 20, input))?;
            Ok(body(&mut r))
        }
        Format::Zip => {
            let mut archive = zip::ZipArchive::new(input).map_err(zip_err)?;
            let index = zip_image_index(&mut archive)?;
            let mut member = archive.by_index(index).map_err(zip_err)?;
            Ok(body(&mut member))
        }
    }
}

/// The decompressed size the container itself records, without decoding: an `.xz` file's
/// indexes, a `.zip` member's central-directory entry. `None` for gzip and zstd (their sizes
/// are absent or only per frame) and for anything unreadable. A hint for checks made before
/// writing: the decoder's own end of data stays authoritative.
pub fn recorded_size(path: &Path, format: Format) -> Option<u64> {
    let mut f = std::fs::File::open(path).ok()?;
    match format {
        Format::Xz => xz_uncompressed_size(&mut f).ok().flatten(),
        Format::Zip => {
            let mut archive = zip::ZipArchive::new(f).ok()?;
            let index = zip_image_index(&mut archive).ok()?;
            let member = archive.by_index_raw(index).ok()?;
            Some(member.size())
        }
        Format::Raw => f.metadata().ok().map(|m| m.len()),
        Format::Gz | Format::Zst => None,
    }
}

/// Reads the decompressed contents of an `.xz` file with liblzma's multi-threaded decoder,
/// including concatenated streams (`cat a.xz b.xz`, pixz), which a single decoder would stop
/// after the first of, silently. Stream padding is skipped; anything else after a stream must
/// be another stream, or reading fails.
pub struct XzReader<R: Read> {
    decoder: Option<liblzma::bufread::XzDecoder<BufReader<R>>>,
}

impl<R: Read> XzReader<R> {
    /// Start decoding `input`.
    pub fn new(input: R) -> io::Result<Self> {
        let decoder = liblzma::bufread::XzDecoder::new_stream(
            BufReader::with_capacity(1 << 20, input),
            xz_mt_decoder()?,
        );
        Ok(XzReader {
            decoder: Some(decoder),
        })
    }
}

impl<R: Read> Read for XzReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(0);
            };
            let n = decoder.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // End of one stream: skip padding (zero bytes), then another stream or the end.
            let mut input = self.decoder.take().expect("checked above").into_inner();
            loop {
                let avail = input.fill_buf()?;
                if avail.is_empty() {
                    return Ok(0);
                }
                let zeros = avail.iter().take_while(|&&b| b == 0).count();
                if zeros == 0 {
                    break;
                }
                input.consume(zeros);
            }
            self.decoder = Some(liblzma::bufread::XzDecoder::new_stream(
                input,
                xz_mt_decoder()?,
            ));
        }
    }
}

/// The decompressed size of an `.xz` file, from its stream footers and indexes (read backwards
/// from the end, every concatenated stream, stream padding skipped), without decoding any
/// data. `None` when the file is not a well-formed xz file (the caller then has to decode it
/// to learn the size).
pub fn xz_uncompressed_size<R: Read + Seek>(r: &mut R) -> io::Result<Option<u64>> {
    /// The largest index read (an index lists 16-byte-ish records per block: 64 MiB is
    /// millions of blocks).
    const MAX_INDEX: u64 = 64 << 20;
    let mut pos = r.seek(SeekFrom::End(0))?;
    let mut total = 0u64;
    let mut word = [0u8; 4];
    while pos > 0 {
        // Stream padding: zero words between and after streams.
        r.seek(SeekFrom::Start(pos.saturating_sub(4)))?;
        r.read_exact(&mut word)?;
        if pos >= 4 && word == [0; 4] {
            pos -= 4;
            continue;
        }
        if pos < 24 {
            return Ok(None);
        }
        let mut footer = [0u8; 12];
        r.seek(SeekFrom::Start(pos - 12))?;
        r.read_exact(&mut footer)?;
        if footer[10..] != *b"YZ" {
            return Ok(None);
        }
        let backward = (u64::from(u32::from_le_bytes([
            footer[4], footer[5], footer[6], footer[7],
        ])) + 1)
            * 4;
        if backward > MAX_INDEX || backward + 24 > pos {
            return Ok(None);
        }
        let index_start = pos - 12 - backward;
        let mut index = vec![0u8; backward as usize];
        r.seek(SeekFrom::Start(index_start))?;
        r.read_exact(&mut index)?;
        let Some((size, blocks)) = parse_xz_index(&index) else {
            return Ok(None);
        };
        let Some(start) = index_start
            .checked_sub(blocks)
            .and_then(|s| s.checked_sub(12))
        else {
            return Ok(None);
        };
        let mut magic = [0u8; 6];
        r.seek(SeekFrom::Start(start))?;
        r.read_exact(&mut magic)?;
        if magic != [0xFD, b'7', b'z', b'X', b'Z', 0x00] {
            return Ok(None);
        }
        let Some(t) = total.checked_add(size) else {
            return Ok(None);
        };
        total = t;
        pos = start;
    }
    Ok(Some(total))
}

/// Parses an xz index (indicator, record count, records of unpadded and uncompressed size,
/// padding, CRC32 not checked): returns (uncompressed bytes, bytes of the blocks it lists,
/// each padded to 4) (pure).
pub fn parse_xz_index(index: &[u8]) -> Option<(u64, u64)> {
    fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..9 {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= u64::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    if index.first() != Some(&0) {
        return None;
    }
    let mut at = 1;
    let count = varint(index, &mut at)?;
    let (mut size, mut blocks) = (0u64, 0u64);
    for _ in 0..count {
        let unpadded = varint(index, &mut at)?;
        let uncompressed = varint(index, &mut at)?;
        size = size.checked_add(uncompressed)?;
        blocks = blocks.checked_add(unpadded.checked_add(3)? / 4 * 4)?;
    }
    // What is left: 0-3 padding bytes and the CRC32.
    (index.len().checked_sub(at)? <= 7).then_some((size, blocks))
}

/// liblzma's multi-threaded xz decoder, one thread per available core.
pub fn xz_mt_decoder() -> io::Result<liblzma::stream::Stream> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    liblzma::stream::MtStreamBuilder::new()
        .threads(u32::try_from(threads).unwrap_or(u32::MAX))
        .memlimit_threading(XZ_MEMLIMIT_THREADING)
        .memlimit_stop(u64::MAX)
        .decoder()
        .map_err(|e| io::Error::other(format!("starting the xz decoder: {e}")))
}

fn zip_err(e: zip::result::ZipError) -> io::Error {
    match e {
        zip::result::ZipError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

/// A zip that does not hold exactly one image (reported as [`DecompressError::Zip`]).
fn not_one(reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, reason)
}

/// The member of a zip that is the disk image: the only `*.img`, or the only file.
fn zip_image_index<R: Read + Seek>(archive: &mut zip::ZipArchive<R>) -> io::Result<usize> {
    let mut files = Vec::new();
    for i in 0..archive.len() {
        let f = archive.by_index_raw(i).map_err(zip_err)?;
        if f.is_file() {
            files.push((i, f.name().to_owned()));
        }
    }
    let imgs: Vec<&(usize, String)> = files
        .iter()
        .filter(|(_, n)| n.to_ascii_lowercase().ends_with(".img"))
        .collect();
    match (imgs.as_slice(), files.as_slice()) {
        ([(i, _)], _) => Ok(*i),
        ([], [(i, _)]) => Ok(*i),
        ([], []) => Err(not_one("the archive holds no files".to_owned())),
        ([], _) => Err(not_one(format!(
            "the archive holds no .img among {} files; extract the image and use --from IMG",
            files.len()
        ))),
        (many, _) => Err(not_one(format!(
            "the archive holds {} .img files ({}); extract the one you want and use --from IMG",
            many.len(),
            many.iter()
                .map(|(_, n)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Why a copy stopped.
#[derive(Debug)]
pub enum CopyError {
    /// Reading (i.e. decoding) failed: the input is bad.
    Read(io::Error),
    /// Writing failed: our disk is the problem.
    Write(io::Error),
}

/// Copy `reader` into `out` from its current position, leaving all-zero [`SPARSE_BLOCK`]s as
/// holes, and set the final length. Returns (bytes, bytes actually written, sha256 of all).
pub fn sparse_copy(
    reader: &mut dyn Read,
    out: &mut (impl Write + Seek + SetLen),
) -> Result<(u64, u64, String), CopyError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64; // bytes of output so far
    let mut cursor = 0u64; // where `out` is positioned
    let mut written = 0u64;
    loop {
        let n = read_full(reader, &mut buf).map_err(CopyError::Read)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        hasher.update(chunk);
        let mut i = 0;
        while i < n {
            // Skip a run of zero blocks, then write a run of data blocks in one call.
            while i < n && is_zero(&chunk[i..(i + SPARSE_BLOCK).min(n)]) {
                i += SPARSE_BLOCK;
            }
            let data_start = i.min(n);
            while i < n && !is_zero(&chunk[i..(i + SPARSE_BLOCK).min(n)]) {
                i += SPARSE_BLOCK;
            }
            let data_end = i.min(n);
            if data_end > data_start {
                let at = pos + data_start as u64;
                if cursor != at {
                    out.seek(SeekFrom::Start(at)).map_err(CopyError::Write)?;
                }
                out.write_all(&chunk[data_start..data_end])
                    .map_err(CopyError::Write)?;
                cursor = pos + data_end as u64;
                written += (data_end - data_start) as u64;
            }
        }
        pos += n as u64;
        if n < buf.len() {
            break;
        }
    }
    out.flush().map_err(CopyError::Write)?;
    out.set_len_to(pos).map_err(CopyError::Write)?;
    Ok((pos, written, hex::encode(hasher.finalize())))
}

/// Setting a file's length; implemented for `File` (and `&mut File`), and for test sinks.
pub trait SetLen {
    /// Make the output exactly `len` bytes long (extending with zeros/holes).
    fn set_len_to(&mut self, len: u64) -> io::Result<()>;
}

impl SetLen for File {
    fn set_len_to(&mut self, len: u64) -> io::Result<()> {
        self.set_len(len)
    }
}

impl SetLen for io::Cursor<Vec<u8>> {
    fn set_len_to(&mut self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        self.get_mut().resize(len, 0);
        Ok(())
    }
}

/// Decompress untrusted bytes held in memory, at most `limit` bytes of output. The entry point
/// for fuzzing the format sniffing and every decoder; also handy in tests.
pub fn decompress_slice(data: &[u8], limit: u64) -> io::Result<(Format, Vec<u8>)> {
    let format = sniff(data);
    let out = with_decoder(format, io::Cursor::new(data), |r| {
        let mut out = Vec::new();
        r.take(limit).read_to_end(&mut out).map(|_| out)
    })??;
    Ok((format, out))
}

#[cfg(test)]
mod tests {
    #[test]
    fn xz_size_comes_from_the_indexes_of_every_stream() {
        use liblzma::write::XzEncoder;
        let enc = |data: &[u8]| {
            let mut e = XzEncoder::new(Vec::new(), 1);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        };
        let a: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let mut file = enc(&a);
        assert_eq!(
            super::xz_uncompressed_size(&mut io::Cursor::new(&file)).unwrap(),
            Some(300_000)
        );
        // Concatenated streams with stream padding between them.
        file.extend_from_slice(&[0; 8]);
        file.extend(enc(&a[..1000]));
        file.extend_from_slice(&[0; 4]);
        assert_eq!(
            super::xz_uncompressed_size(&mut io::Cursor::new(&file)).unwrap(),
            Some(301_000)
        );
        let cut = &file[..file.len() - 30];
        assert_eq!(
            super::xz_uncompressed_size(&mut io::Cursor::new(cut)).unwrap(),
            None
        );
        assert_eq!(
            super::xz_uncompressed_size(&mut io::Cursor::new(b"not xz at all, no")).unwrap(),
            None
        );
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sniff_by_magic_not_name() {
        assert_eq!(sniff(&[0xFD, b'7', b'z', b'X', b'Z', 0, 0, 4]), Format::Xz);
        assert_eq!(sniff(&[0x1F, 0x8B, 8]), Format::Gz);
        assert_eq!(sniff(&[0x28, 0xB5, 0x2F, 0xFD, 0]), Format::Zst);
        assert_eq!(sniff(b"PK\x03\x04rest"), Format::Zip);
        assert_eq!(sniff(&[0u8; 512]), Format::Raw);
        assert_eq!(sniff(b""), Format::Raw);
        assert_eq!(sniff(&[0xFD, b'7']), Format::Raw);
    }

    #[test]
    fn sparse_copy_skips_zero_blocks_and_keeps_bytes() {
        let mut data = vec![0u8; 3 * SPARSE_BLOCK + 100];
        data[SPARSE_BLOCK + 5] = 1; // second block has data
        data[3 * SPARSE_BLOCK + 99] = 9; // short tail has data
        let mut out = io::Cursor::new(Vec::new());
        let (n, written, sha) = sparse_copy(&mut &data[..], &mut out).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(written, SPARSE_BLOCK as u64 + 100);
        assert_eq!(out.into_inner(), data);
        assert_eq!(sha, hex::encode(Sha256::digest(&data)));
    }

    #[test]
    fn sparse_copy_of_all_zeros_writes_nothing_but_has_the_length() {
        let data = vec![0u8; CHUNK + 3];
        let mut out = io::Cursor::new(Vec::new());
        let (n, written, _) = sparse_copy(&mut &data[..], &mut out).unwrap();
        assert_eq!((n, written), (data.len() as u64, 0));
        assert_eq!(out.into_inner().len(), data.len());
    }

    #[test]
    fn round_trips_in_memory() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&data[..], 1).unwrap();
        let xz = {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        for (bytes, format) in [(gz, Format::Gz), (zst, Format::Zst), (xz, Format::Xz)] {
            let (f, out) = decompress_slice(&bytes, u64::MAX).unwrap();
            assert_eq!(f, format);
            assert!(out == data, "{format} differs");
            let cut = &bytes[..bytes.len() - 9];
            let e = decompress_slice(cut, u64::MAX).expect_err(format.as_str());
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn concatenated_xz_streams_are_all_decoded() {
        let xz = |data: &[u8]| {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        };
        let (a, b) = (vec![1u8; 100_000], vec![2u8; 70_000]);
        let both = [xz(&a), vec![0; 8], xz(&b)].concat();
        let (format, out) = decompress_slice(&both, u64::MAX).unwrap();
        assert_eq!(format, Format::Xz);
        assert!(out == [a.clone(), b].concat());
        let garbage = [xz(&a), b"trailing junk".to_vec()].concat();
        assert!(decompress_slice(&garbage, u64::MAX).is_err());
    }

    proptest! {
        #[test]
        fn sniff_never_panics(head in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = sniff(&head);
        }

        #[test]
        fn decompress_slice_never_panics(
            magic in 0usize..5,
            tail in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let prefix: &[u8] = match magic {
                0 => &[0xFD, b'7', b'z', b'X', b'Z', 0],
                1 => &[0x1F, 0x8B],
                2 => &[0x28, 0xB5, 0x2F, 0xFD],
                3 => b"PK\x03\x04",
                _ => b"",
            };
            let data = [prefix, &tail].concat();
            let _ = decompress_slice(&data, 1 << 20);
        }
    }
}
