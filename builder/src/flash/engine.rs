//! The write/verify engine: takes image bytes from a [`ChunkSource`] (already restricted to the
//! blocks worth writing) and puts them on a [`TargetIo`], in an order that fails safe:
//!
//! 1. the first MiB of the target is zeroed and synced before anything else, and the image's
//!    own first MiB (partition table, boot code) is held back in memory: an interrupted flash
//!    leaves a card without a partition table (unbootable, obviously blank), never a
//!    half-written card that looks valid;
//! 2. the mapped data, 1 MiB at a time, hashed (XXH3-128) per written piece on the way;
//! 3. on a device, the regions old data must not survive in even though the image does not
//!    map them: the gap before the first partition, the first and last MiB of every partition
//!    (stale filesystem/RAID/LVM signatures that blkid would find), and the device's last MiB
//!    (an old GPT backup header) — the last one with a deadline, since a card that stalls
//!    writing its end is likely counterfeit (it claims more capacity than it has);
//! 4. fsync, then the first MiB, then fsync again.
//!
//! Verification reads back every written piece (page cache dropped or bypassed by the target)
//! and compares hashes, reporting the byte ranges that differ. The hash is XXH3-128, not
//! sha256: it looks for what storage does wrong (dropped, stale, wrapped or flipped blocks),
//! and a 128-bit hash misses a random fault with odds of 2^-128 at ~10x the speed of sha256
//! (SHA-NI) — on a file target, whose read-back comes from the page cache, sha256 of both
//! sides was most of the verify time. A card that lies on purpose can't be caught by any hash
//! of what it returns; the image itself is checked against its published sha256 elsewhere.
//! [`verify_against`] compares a target with a source byte for byte (`--verify-only`). The
//! fake-capacity check that runs before all this on a device is [`super::capacity`].
//! Deliberately not here: choosing what to write (`flash::source`), opening devices
//! (`flash::target`), safety checks (`devices`).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use xxhash_rust::xxh3::{Xxh3Default, xxh3_128};

use super::target::{AlignedBuf, TargetIo};
use crate::image::blockmap::{self, ByteRange};
use crate::io::sparse::is_zero;
use crate::term::progress::Progress;

/// Bytes per write (and per read of the image). 1 MiB, as bmaptool: with 4 MiB, a file target
/// written right after another big copy took 4.2-7.7 s of mostly kernel copying instead of
/// 2.6-3.4 s (the buffers no longer fit the CPU's caches); a loop device is as fast with 1 MiB
/// (2.4 s verify on, 1.8-2.8 s off), and a card reader splits larger requests anyway.
pub const CHUNK: usize = 1 << 20;
/// Writes (and read-back reads) in flight at once on a device: a card reader or a loop
/// device serves several `O_DIRECT` requests in parallel better than one after the other.
const DEVICE_QUEUE: usize = 4;
/// The same for a file target: one writer. Writes to one file serialise on its inode lock in
/// the kernel anyway, and a second writer spinning on that lock cost up to 2x the wall time
/// (`ci/bench-flash`, a file target written right after bmaptool's: 4.8-5.8 s with two
/// writers, 2.9-3.0 s with one). The reader thread still reads ahead of the writer.
const FILE_QUEUE: usize = 1;
/// Readers of a file target's read-back: it comes from the page cache, so it is copying and
/// hashing, which two threads share.
const FILE_READERS: usize = 2;
/// The head that is zeroed first and written last.
pub const HOLD: u64 = 1 << 20;
/// Zeroed at the start and end of partitions and at the device's end.
pub const EDGE: u64 = 1 << 20;

/// Image bytes to write, in ascending offset order.
pub trait ChunkSource {
    /// Fills the start of `buf` with the next bytes to write; returns their offset and length,
    /// or `None` at the end. A chunk never exceeds `buf.len()`.
    fn next_chunk(&mut self, buf: &mut [u8]) -> io::Result<Option<(u64, usize)>>;
    /// The image's length, when known (a stream knows it at its end at the latest).
    fn image_len(&self) -> Option<u64>;
    /// Total bytes the chunks will hold, when known (for progress).
    fn total(&self) -> Option<u64>;
}

/// Why a flash or verification failed. The variants callers branch on.
#[derive(Debug, Error)]
pub enum FlashError {
    /// The target cannot hold the image; nothing was written.
    #[error(
        "the target holds {} but the image needs {}; nothing was written",
        crate::term::progress::human_bytes(*target),
        crate::term::progress::human_bytes(*image)
    )]
    TooSmall {
        /// Image bytes.
        image: u64,
        /// Target capacity.
        target: u64,
    },
    /// A stream of unknown length turned out longer than the target, mid-way.
    #[error(
        "the image is larger than the target ({}): the stream went past its end; the target is \
         left without a partition table",
        crate::term::progress::human_bytes(*target)
    )]
    Overflow {
        /// Target capacity.
        target: u64,
    },
    /// Sentinel blocks written across the device collided: it holds less than it claims.
    #[error(
        "fake capacity: the device claims {} but holds only about {}: the sentinel block \
         written at byte {written_at} {}; only {sentinels} sentinel blocks of 4 KiB were \
         written, nothing else (use another card, or --no-capacity-check to write anyway)",
        crate::term::progress::human_bytes(*claimed),
        crate::term::progress::human_bytes(*real),
        match read_at { Some(r) => format!("came back at byte {r} (addresses wrap around)"), None => "did not come back (writes past the real end are lost)".to_owned() }
    )]
    FakeCapacity {
        /// What the device reports.
        claimed: u64,
        /// What it really holds (the wrap period, or the first offset that loses writes).
        real: u64,
        /// A sentinel that did not read back where it was written.
        written_at: u64,
        /// Where it was found instead (`None`: nowhere among the sentinels).
        read_at: Option<u64>,
        /// Sentinels written.
        sentinels: usize,
    },
    /// Writing the device's last MiB did not finish in time.
    #[error(
        "writing the end of the device (byte {offset}) did not finish in {} s: possibly a \
         counterfeit card that reports more capacity than it has; the card is left without a \
         partition table",
        timeout.as_secs()
    )]
    Counterfeit {
        /// Where the stalled write was.
        offset: u64,
        /// The deadline.
        timeout: Duration,
    },
    /// Read-back differs from what was written.
    #[error("verify failed: the target differs from the image at {}", describe(.ranges, *.count))]
    Mismatch {
        /// The first differing ranges (at most 8).
        ranges: Vec<ByteRange>,
        /// How many ranges differ in all.
        count: usize,
    },
    /// Reading the image failed (corrupt download, bmap checksum mismatch, ...).
    #[error("reading the image")]
    Source(#[source] io::Error),
    /// Writing or reading the target failed.
    #[error("{what} at byte {offset}")]
    Target {
        /// E.g. `writing the target`.
        what: &'static str,
        /// Where.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

fn describe(ranges: &[ByteRange], count: usize) -> String {
    let mut s: Vec<String> = ranges
        .iter()
        .map(|r| format!("bytes {}..{}", r.start, r.end))
        .collect();
    if count > ranges.len() {
        s.push(format!("and {} more ranges", count - ranges.len()));
    }
    s.join(", ")
}

/// How to write.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Deadline for writing the device's last MiB (counterfeit detection).
    pub end_timeout: Duration,
    /// Sleep after every chunk (tests interrupt a slowed-down flash; `None` in real use).
    pub throttle: Option<Duration>,
    /// Hash what is written, for [`verify_written`] (off for `--no-verify`: it costs time).
    pub hash: bool,
    /// Pause after the checks, before the first write (tests repoint a target's path there).
    pub pause: Option<Duration>,
    /// Check a device for fake capacity before writing ([`super::capacity::check_capacity`]).
    pub capacity_check: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            end_timeout: Duration::from_secs(60),
            throttle: None,
            hash: true,
            pause: None,
            capacity_check: true,
        }
    }
}

/// A written range and the XXH3-128 of its bytes (zero when not hashing).
type Piece = (ByteRange, u128);

/// One chunk on its way to a writer thread: `buf[from..to]` goes to byte `at`.
struct WriteJob {
    buf: AlignedBuf,
    from: usize,
    to: usize,
    at: u64,
    /// `false`: zeros on a file target (a hole already).
    write: bool,
    /// Image bytes this chunk accounts for (progress).
    n: u64,
}

/// What [`write_image`] did.
#[derive(Debug, Clone)]
pub struct WriteReport {
    /// The image's length.
    pub image_len: u64,
    /// Bytes written to the target (data, zeroing and the first MiB).
    pub written: u64,
    /// Every written piece with the XXH3-128 of what was written there, for
    /// [`verify_written`] (zero unless `hashed`).
    pub pieces: Vec<Piece>,
    /// Whether the pieces were hashed ([`WriteOptions::hash`]).
    pub hashed: bool,
    /// Wall time.
    pub elapsed: Duration,
}

pub(super) fn target_err(what: &'static str, offset: u64) -> impl FnOnce(io::Error) -> FlashError {
    move |source| FlashError::Target {
        what,
        offset,
        source,
    }
}

/// The hash of a written piece, compared with the read-back's (module docs: why XXH3-128).
fn digest(b: &[u8]) -> u128 {
    xxh3_128(b)
}

/// Writes the image from `src` to `target` (see the module docs for the order).
pub fn write_image(
    src: &mut dyn ChunkSource,
    target: &Arc<dyn TargetIo>,
    opts: &WriteOptions,
    progress: &Progress,
) -> Result<WriteReport, FlashError> {
    let start = Instant::now();
    let cap = target.capacity();
    if let Some(len) = src.image_len()
        && len > cap
    {
        return Err(FlashError::TooSmall {
            image: len,
            target: cap,
        });
    }
    let device = target.is_device();
    let mut written = 0u64;
    // 1. Blank the head first: until the very end the target has no partition table.
    let head = HOLD.min(cap);
    let zeros = AlignedBuf::new(CHUNK);
    target
        .write_at(&zeros.as_slice()[..head as usize], 0)
        .and_then(|()| target.sync())
        .map_err(target_err("blanking the start of the target", 0))?;
    written += head;

    // 2. The data: this thread reads, writer threads hash and write, so reading the image,
    // hashing and writing the target overlap (with the hashing spread over the writers: on
    // one thread, sha256 of 2 GiB held the whole flash back by ~1.5 s). Buffers go round.
    let mut held = vec![0u8; HOLD as usize];
    let mut pieces: Vec<Piece> = Vec::new();
    let hash = opts.hash;
    let throttle = opts.throttle;
    let queue = if device { DEVICE_QUEUE } else { FILE_QUEUE };
    let failed = AtomicBool::new(false);
    let (tx, rx) = mpsc::sync_channel::<WriteJob>(queue);
    let rx = Mutex::new(rx);
    let (read_result, write_result) = std::thread::scope(|s| {
        let (back_tx, back_rx) = mpsc::channel::<AlignedBuf>();
        // `queue` writers take chunks in turn, so that many writes are in flight.
        let writers: Vec<_> = (0..queue)
            .map(|_| {
                let back_tx = back_tx.clone();
                let (rx, failed) = (&rx, &failed);
                s.spawn(move || -> Result<(u64, Vec<Piece>), FlashError> {
                    let mut written = 0u64;
                    let mut pieces = Vec::new();
                    loop {
                        if failed.load(Ordering::Relaxed) {
                            return Ok((written, pieces)); // another writer's error says why
                        }
                        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(j) = next else {
                            return Ok((written, pieces));
                        };
                        if j.from < j.to {
                            let rest = &j.buf.as_slice()[j.from..j.to];
                            let d = if hash { digest(rest) } else { 0 };
                            pieces.push((ByteRange::at(j.at, rest.len() as u64), d));
                        }
                        if j.write {
                            let r = target
                                .write_at(&j.buf.as_slice()[j.from..j.to], j.at)
                                .map_err(target_err("writing the target", j.at));
                            if let Err(e) = r {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                            written += (j.to - j.from) as u64;
                        }
                        progress.inc(j.n);
                        if let Some(t) = throttle {
                            std::thread::sleep(t);
                        }
                        let _ = back_tx.send(j.buf);
                    }
                })
            })
            .collect();
        drop(back_tx);
        let mut allocated = 0;
        let read = (|| -> Result<(), FlashError> {
            loop {
                if failed.load(Ordering::Relaxed) {
                    return Ok(()); // the writer's error says why
                }
                let mut buf = match back_rx.try_recv() {
                    Ok(b) => b,
                    Err(_) if allocated < queue + 2 => {
                        allocated += 1;
                        AlignedBuf::new(CHUNK)
                    }
                    Err(_) => match back_rx.recv() {
                        Ok(b) => b,
                        Err(_) => return Ok(()), // the writer stopped: its error says why
                    },
                };
                let Some((off, n)) = src
                    .next_chunk(buf.as_mut_slice())
                    .map_err(FlashError::Source)?
                else {
                    return Ok(());
                };
                let end = off + n as u64;
                if end > cap {
                    return Err(FlashError::Overflow { target: cap });
                }
                let data = &buf.as_slice()[..n];
                let mut from = 0usize;
                if off < HOLD {
                    let k = (HOLD - off).min(n as u64) as usize;
                    held[off as usize..off as usize + k].copy_from_slice(&data[..k]);
                    from = k;
                }
                let rest = &data[from..];
                let at = off + from as u64;
                // A file target starts as holes: zeros need no writing there.
                let write = !rest.is_empty() && (device || !is_zero(rest));
                let job = WriteJob {
                    buf,
                    from,
                    to: n,
                    at,
                    write,
                    n: n as u64,
                };
                if tx.send(job).is_err() {
                    return Ok(()); // the writer stopped: its error says why
                }
            }
        })();
        drop(tx);
        let mut wrote = Ok(0u64);
        for w in writers {
            let r = w
                .join()
                .unwrap_or_else(|_| Err(FlashError::Source(io::Error::other("a writer panicked"))));
            wrote = match (wrote, r) {
                (Ok(a), Ok((b, p))) => {
                    pieces.extend(p);
                    Ok(a + b)
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
        }
        (read, wrote)
    });
    // The writer's error first: a reader that stopped early stopped because of it.
    written += write_result?;
    read_result?;
    // Writers finish pieces in any order.
    pieces.sort_by_key(|p| p.0.start);
    let image_len = src
        .image_len()
        .or_else(|| pieces.last().map(|p| p.0.end))
        .unwrap_or(0);
    if image_len > cap {
        return Err(FlashError::TooSmall {
            image: image_len,
            target: cap,
        });
    }
    target
        .set_len(image_len)
        .map_err(target_err("sizing the target", image_len))?;

    // 3. Old data the image doesn't overwrite but correctness needs gone (devices only).
    if device {
        let covered = blockmap::normalize(
            pieces
                .iter()
                .map(|p| p.0)
                .chain([ByteRange::at(0, HOLD)])
                .collect(),
        );
        for r in zero_ranges(&held, image_len, &covered) {
            let mut pos = r.start;
            while pos < r.end {
                let n = (r.end - pos).min(CHUNK as u64) as usize;
                target
                    .write_at(&zeros.as_slice()[..n], pos)
                    .map_err(target_err("zeroing the target", pos))?;
                pieces.push((ByteRange::at(pos, n as u64), digest(&zeros.as_slice()[..n])));
                written += n as u64;
                pos += n as u64;
            }
        }
    }
    target
        .sync()
        .map_err(target_err("syncing the target", image_len))?;
    if device && cap >= image_len + HOLD + EDGE {
        written += zero_end(target, cap, opts.end_timeout)?;
    }

    // 4. The head, last.
    let head_len = HOLD.min(image_len) as usize;
    if head_len > 0 {
        let mut hb = AlignedBuf::new(HOLD as usize);
        hb.as_mut_slice()[..head_len].copy_from_slice(&held[..head_len]);
        // Write whole aligned sectors; the tail past the image (if any) is zeros anyway.
        let wlen = if device {
            (head_len as u64).div_ceil(512) * 512
        } else {
            head_len as u64
        } as usize;
        target
            .write_at(&hb.as_slice()[..wlen], 0)
            .and_then(|()| target.sync())
            .map_err(target_err("writing the partition table", 0))?;
        pieces.push((ByteRange::at(0, head_len as u64), digest(&held[..head_len])));
        written += wlen as u64;
    }
    progress.finish();
    Ok(WriteReport {
        image_len,
        written,
        hashed: hash,
        pieces,
        elapsed: start.elapsed(),
    })
}

/// Zeroes the device's last MiB under a deadline (the write runs on its own thread; if it
/// stalls, the thread is abandoned and the flash fails).
fn zero_end(target: &Arc<dyn TargetIo>, cap: u64, timeout: Duration) -> Result<u64, FlashError> {
    let at = (cap - EDGE) / 4096 * 4096;
    let len = cap - at;
    let t = Arc::clone(target);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let zeros = AlignedBuf::new(len as usize);
        let r = t.write_at(zeros.as_slice(), at).and_then(|()| t.sync());
        let _ = tx.send(r);
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(())) => Ok(len),
        Ok(Err(e)) => Err(target_err("zeroing the end of the device", at)(e)),
        Err(_) => Err(FlashError::Counterfeit {
            offset: at,
            timeout,
        }),
    }
}

/// What must be zeroed on a device beyond what was written (pure): from the partition table in
/// `head` (the image's first MiB), the gap between the first MiB and the first partition and
/// the first and last MiB of each partition, minus `covered` (sorted, merged), inside
/// `image_len`.
pub fn zero_ranges(head: &[u8], image_len: u64, covered: &[ByteRange]) -> Vec<ByteRange> {
    let mut parts: Vec<ByteRange> = blockmap::parse_mbr(head)
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.range)
        .collect();
    if let Some((lba, count, size)) = head.get(512..1024).and_then(blockmap::parse_gpt_header) {
        let start = (lba * 512) as usize;
        let end = start.saturating_add(count as usize * size as usize);
        if let Some(entries) = head.get(start..end) {
            parts = blockmap::parse_gpt_entries(entries, size)
                .into_iter()
                .map(|p| p.range)
                .collect();
        }
    }
    let mut want = Vec::new();
    if let Some(first) = parts.iter().map(|p| p.start).min() {
        want.push(ByteRange {
            start: HOLD,
            end: first,
        });
    }
    for p in &parts {
        want.push(ByteRange::at(p.start, EDGE.min(p.len())));
        want.push(ByteRange {
            start: p.end.saturating_sub(EDGE).max(p.start),
            end: p.end,
        });
    }
    let want: Vec<ByteRange> = blockmap::normalize(
        want.into_iter()
            .map(|r| ByteRange {
                start: r.start,
                end: r.end.min(image_len),
            })
            .collect(),
    );
    subtract(&want, covered)
}

/// `a` minus `b`; both sorted and merged (pure).
pub fn subtract(a: &[ByteRange], b: &[ByteRange]) -> Vec<ByteRange> {
    let mut out = Vec::new();
    for r in a {
        let mut pos = r.start;
        for c in b.iter().filter(|c| c.end > r.start && c.start < r.end) {
            if c.start > pos {
                out.push(ByteRange {
                    start: pos,
                    end: c.start,
                });
            }
            pos = pos.max(c.end);
        }
        if pos < r.end {
            out.push(ByteRange {
                start: pos,
                end: r.end,
            });
        }
    }
    out
}

/// Reads back every piece of `report` from `target` and compares hashes.
pub fn verify_written(
    target: &dyn TargetIo,
    report: &WriteReport,
    progress: &Progress,
) -> Result<(), FlashError> {
    assert!(
        report.hashed,
        "verify_written needs a write with WriteOptions::hash"
    );
    target
        .drop_cache()
        .map_err(target_err("dropping the page cache of the target", 0))?;
    let mut pieces = report.pieces.clone();
    pieces.sort_by_key(|p| p.0.start);
    // Several readers take pieces in turn (in ascending order), so that many reads are in
    // flight and hashing overlaps reading.
    let readers = if target.is_device() {
        DEVICE_QUEUE
    } else {
        FILE_READERS
    };
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let bad = Mutex::new(Vec::new());
    let results: Vec<Result<(), FlashError>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..readers)
            .map(|_| {
                s.spawn(|| -> Result<(), FlashError> {
                    let mut buf = AlignedBuf::new(CHUNK);
                    while !stop.load(Ordering::Relaxed) {
                        let Some((r, want)) = pieces.get(next.fetch_add(1, Ordering::Relaxed))
                        else {
                            break;
                        };
                        let mut pos = r.start;
                        let mut h = Xxh3Default::new();
                        while pos < r.end {
                            let n = (r.end - pos).min(CHUNK as u64) as usize;
                            if let Err(e) = read_padded(target, &mut buf, pos, n) {
                                stop.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                            h.update(&buf.as_slice()[..n]);
                            pos += n as u64;
                            progress.inc(n as u64);
                        }
                        if h.digest128() != *want {
                            bad.lock().unwrap_or_else(|e| e.into_inner()).push(*r);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(FlashError::Source(io::Error::other("a reader panicked")))
                })
            })
            .collect()
    });
    results.into_iter().collect::<Result<(), FlashError>>()?;
    progress.finish();
    let mut bad = bad.into_inner().unwrap_or_else(|e| e.into_inner());
    bad.sort_by_key(|r| r.start);
    mismatch(bad)
}

fn mismatch(bad: Vec<ByteRange>) -> Result<(), FlashError> {
    if bad.is_empty() {
        return Ok(());
    }
    let count = bad.len();
    Err(FlashError::Mismatch {
        ranges: bad.into_iter().take(8).collect(),
        count,
    })
}

/// Reads `n` bytes at `pos` into `buf`, as an aligned read when the target needs it.
fn read_padded(
    target: &dyn TargetIo,
    buf: &mut AlignedBuf,
    pos: u64,
    n: usize,
) -> Result<(), FlashError> {
    let aligned = pos.is_multiple_of(4096) && n.is_multiple_of(4096);
    if aligned || !target.is_device() {
        return target
            .read_at(&mut buf.as_mut_slice()[..n], pos)
            .map_err(target_err("reading back the target", pos));
    }
    // Unaligned on a device: read the enclosing aligned span, then move the bytes down.
    let a = pos / 4096 * 4096;
    let e = (pos + n as u64).div_ceil(4096) * 4096;
    let e = e.min(target.capacity());
    let span = (e - a) as usize;
    if span > buf.as_slice().len() {
        let mut big = AlignedBuf::new(span.div_ceil(4096) * 4096);
        target
            .read_at(&mut big.as_mut_slice()[..span], a)
            .map_err(target_err("reading back the target", a))?;
        let skip = (pos - a) as usize;
        buf.as_mut_slice()[..n].copy_from_slice(&big.as_slice()[skip..skip + n]);
        return Ok(());
    }
    target
        .read_at(&mut buf.as_mut_slice()[..span], a)
        .map_err(target_err("reading back the target", a))?;
    let skip = (pos - a) as usize;
    buf.as_mut_slice().copy_within(skip..skip + n, 0);
    Ok(())
}

/// Compares `target` with every chunk of `src` (`--verify-only`); returns the bytes compared.
pub fn verify_against(
    src: &mut dyn ChunkSource,
    target: &dyn TargetIo,
    progress: &Progress,
) -> Result<u64, FlashError> {
    if let Some(len) = src.image_len()
        && len > target.capacity()
    {
        return Err(FlashError::TooSmall {
            image: len,
            target: target.capacity(),
        });
    }
    target
        .drop_cache()
        .map_err(target_err("dropping the page cache of the target", 0))?;
    let mut want = AlignedBuf::new(CHUNK);
    let mut got = AlignedBuf::new(CHUNK);
    let mut bad = Vec::new();
    let mut done = 0;
    while let Some((off, n)) = src
        .next_chunk(want.as_mut_slice())
        .map_err(FlashError::Source)?
    {
        if off + n as u64 > target.capacity() {
            bad.push(ByteRange::at(off, n as u64));
            break;
        }
        read_padded(target, &mut got, off, n)?;
        if want.as_slice()[..n] != got.as_slice()[..n] {
            bad.push(ByteRange::at(off, n as u64));
        }
        done += n as u64;
        progress.inc(n as u64);
    }
    progress.finish();
    mismatch(bad)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A target in memory; optionally stalls on writes past `stall_from`.
    struct MemTarget {
        data: Mutex<Vec<u8>>,
        device: bool,
        stall_from: u64,
        writes: Mutex<Vec<ByteRange>>,
    }

    impl MemTarget {
        fn new(len: usize, device: bool) -> Arc<MemTarget> {
            Arc::new(MemTarget {
                data: Mutex::new(vec![0xEE; len]),
                device,
                stall_from: u64::MAX,
                writes: Mutex::new(vec![]),
            })
        }
    }

    impl TargetIo for MemTarget {
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            if offset >= self.stall_from {
                std::thread::sleep(Duration::from_secs(5));
            }
            self.writes
                .lock()
                .unwrap()
                .push(ByteRange::at(offset, buf.len() as u64));
            let mut d = self.data.lock().unwrap();
            d[offset as usize..offset as usize + buf.len()].copy_from_slice(buf);
            Ok(())
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            let d = self.data.lock().unwrap();
            buf.copy_from_slice(&d[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
        fn sync(&self) -> io::Result<()> {
            Ok(())
        }
        fn drop_cache(&self) -> io::Result<()> {
            Ok(())
        }
        fn capacity(&self) -> u64 {
            self.data.lock().unwrap().len() as u64
        }
        fn is_device(&self) -> bool {
            self.device
        }
    }

    /// Chunks of an in-memory image over given ranges.
    struct MemSource {
        image: Vec<u8>,
        ranges: Vec<ByteRange>,
        i: usize,
        pos: u64,
    }

    impl ChunkSource for MemSource {
        fn next_chunk(&mut self, buf: &mut [u8]) -> io::Result<Option<(u64, usize)>> {
            while let Some(r) = self.ranges.get(self.i) {
                let pos = self.pos.max(r.start);
                if pos >= r.end {
                    self.i += 1;
                    continue;
                }
                let n = ((r.end - pos) as usize).min(buf.len());
                buf[..n].copy_from_slice(&self.image[pos as usize..pos as usize + n]);
                self.pos = pos + n as u64;
                return Ok(Some((pos, n)));
            }
            Ok(None)
        }
        fn image_len(&self) -> Option<u64> {
            Some(self.image.len() as u64)
        }
        fn total(&self) -> Option<u64> {
            None
        }
    }

    /// An 8 MiB image: MBR with one partition at 2 MiB..7 MiB, data at 3 MiB.
    fn image() -> Vec<u8> {
        let mut img = vec![0u8; 8 << 20];
        img[446 + 4] = 0x83;
        img[446 + 8..446 + 12].copy_from_slice(&4096u32.to_le_bytes());
        img[446 + 12..446 + 16].copy_from_slice(&10240u32.to_le_bytes());
        img[510] = 0x55;
        img[511] = 0xAA;
        for (i, b) in img[3 << 20..(3 << 20) + 8192].iter_mut().enumerate() {
            *b = i as u8 | 1;
        }
        img
    }

    fn source(img: &[u8]) -> MemSource {
        MemSource {
            image: img.to_vec(),
            ranges: vec![ByteRange::at(0, 512), ByteRange::at(3 << 20, 8192)],
            i: 0,
            pos: 0,
        }
    }

    #[test]
    fn head_is_blanked_first_and_written_last_and_edges_are_zeroed() {
        let img = image();
        let t = MemTarget::new(16 << 20, true);
        let dyn_t: Arc<dyn TargetIo> = t.clone();
        let r = write_image(
            &mut source(&img),
            &dyn_t,
            &WriteOptions::default(),
            &Progress::hidden(),
        )
        .unwrap();
        let w = t.writes.lock().unwrap().clone();
        assert_eq!(w.first().unwrap(), &ByteRange::at(0, HOLD));
        assert_eq!(w.last().unwrap(), &ByteRange::at(0, HOLD));
        let d = t.data.lock().unwrap().clone();
        assert_eq!(&d[..8 << 20][..512], &img[..512]);
        assert_eq!(
            &d[3 << 20..(3 << 20) + 8192],
            &img[3 << 20..(3 << 20) + 8192]
        );
        // Gap before the partition, its first and last MiB, the device's last MiB: zero.
        for at in [HOLD, 2 << 20, (6 << 20) + 5, (16 << 20) - 1] {
            assert_eq!(d[at as usize], 0, "byte {at}");
        }
        // Unmapped middle of the partition: old data left alone.
        assert_eq!(d[(4 << 20) + 100], 0xEE);
        verify_written(&*t, &r, &Progress::hidden()).unwrap();
    }

    #[test]
    fn a_flipped_byte_is_reported_with_its_range() {
        let img = image();
        let t = MemTarget::new(8 << 20, false);
        let dyn_t: Arc<dyn TargetIo> = t.clone();
        let opts = WriteOptions::default();
        let r = write_image(&mut source(&img), &dyn_t, &opts, &Progress::hidden()).unwrap();
        t.data.lock().unwrap()[(3 << 20) + 4000] ^= 0x40;
        let e = verify_written(&*t, &r, &Progress::hidden()).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, FlashError::Mismatch { count: 1, .. }), "{text}");
        assert!(
            text.contains(&format!("bytes {}..{}", 3 << 20, (3 << 20) + 8192)),
            "{text}"
        );
        let e = verify_against(&mut source(&img), &*t, &Progress::hidden()).unwrap_err();
        assert!(matches!(e, FlashError::Mismatch { count: 1, .. }), "{e}");
    }

    #[test]
    fn too_small_writes_nothing() {
        let img = image();
        let t = MemTarget::new(4 << 20, true);
        let dyn_t: Arc<dyn TargetIo> = t.clone();
        let opts = WriteOptions::default();
        let e = write_image(&mut source(&img), &dyn_t, &opts, &Progress::hidden()).unwrap_err();
        assert!(matches!(e, FlashError::TooSmall { .. }), "{e}");
        assert!(t.writes.lock().unwrap().is_empty());
    }

    #[test]
    fn a_stalling_end_of_device_is_a_counterfeit_card() {
        let img = image();
        let t = Arc::new(MemTarget {
            stall_from: (32 << 20) - EDGE,
            ..Arc::into_inner(MemTarget::new(32 << 20, true)).unwrap()
        });
        let dyn_t: Arc<dyn TargetIo> = t.clone();
        let opts = WriteOptions {
            end_timeout: Duration::from_millis(300),
            ..WriteOptions::default()
        };
        let e = write_image(&mut source(&img), &dyn_t, &opts, &Progress::hidden()).unwrap_err();
        assert!(e.to_string().contains("possibly a counterfeit card"), "{e}");
        // The partition table was never written.
        assert!(
            t.data.lock().unwrap()[..HOLD as usize]
                .iter()
                .all(|&b| b == 0)
        );
    }

    #[test]
    fn subtract_and_zero_ranges() {
        let r = |a, b| ByteRange { start: a, end: b };
        assert_eq!(
            subtract(&[r(0, 100)], &[r(10, 20), r(50, 200)]),
            vec![r(0, 10), r(20, 50)]
        );
        let img = image();
        let z = zero_ranges(&img[..HOLD as usize], img.len() as u64, &[r(0, HOLD)]);
        assert_eq!(z, vec![r(HOLD, 3 << 20), r(6 << 20, 7 << 20)]);
    }
}
