//! `piforge flash`: puts images on cards (or image files), fast and verified.
//!
//! With a batch (`piforge build`), each target gets the next card not yet flashed (or
//! `--card K`), personalised on the way (see [`source`]: a patch of the boot partition, never
//! a copy of the whole image), and the card is recorded as flashed in `batch.toml` (atomically)
//! once its read-back verified. Each card is claimed with a lock file in the batch directory
//! while it is written, so two `piforge flash` processes (two terminals, two readers) never
//! pick the same card, and `batch.toml` is rewritten under a batch-wide lock so neither loses
//! the other's record. `--image FILE` writes any image (`.img` read along its block
//! map; `.xz`/`.gz`/`.zst`/`.zip` decoded on the fly, along `FILE.bmap` when there is one).
//! Several targets are written at once, one thread and one progress bar each.
//!
//! Safety (all before a byte is written to any target): every target is opened once
//! ([`target::open_target`]) and that handle is what is checked and written through
//! (SECURITY finding 4): `crate::devices::check_opened` (system disk, mounted, non-removable,
//! too large, too small, busy) on the handle's `fstat`; [`guard`]: not the image, the disk or
//! loop device holding it, nor anything in the batch or cache directory (finding 2); device
//! targets through the confirmation unless `--yes` and their unmount, then re-opened
//! exclusively through the checked handle and re-checked (same device, size, facts); a file
//! target's filesystem must have room for the image's used bytes. A device then gets the
//! fake-capacity check ([`capacity::check_capacity`], unless `--no-capacity-check`). File
//! targets are written in place like a device (created 0600 or narrowed to 0600: they hold
//! the card's secrets; truncated, first MiB held back), so an interrupted flash leaves a file
//! with a zero first MiB, exactly as it leaves a card.
//! Picking and claiming the cards of a batch, and recording them as flashed, is `claim`.
//! Deliberately not here: device discovery and the safety rules (`devices`), the write order
//! (`engine`).

pub mod blockdev;
pub mod capacity;
mod claim;
pub mod engine;
#[cfg(unix)]
pub mod guard;
#[cfg(not(unix))]
#[path = "guard_paths.rs"]
pub mod guard;
pub mod sector;
pub mod source;
pub mod target;
#[cfg(windows)]
mod windows_target;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::MultiProgress;

use crate::acquire::decompress::{self, Format};
use crate::build::batch::Batch;
use crate::devices;
use crate::image;
use crate::image::blockmap::{self, BlockMap, ByteRange};
use crate::image::bmap;
use crate::term::progress::{Progress, human_bytes};
use engine::{ChunkSource, FlashError, WriteOptions};
use source::{MappedSource, PlanRange, StreamSource};
use target::{DeviceTarget, FileTarget, Opened, TargetIo, TargetKind};

use claim::pick_cards;
pub use claim::{CardClaim, claim_card, mark_flashed};

/// A checked `piforge flash`.
#[derive(Debug, Clone)]
pub struct FlashRequest {
    /// Devices or files to write (at least one).
    pub targets: Vec<PathBuf>,
    /// Batch dir (used unless `image` is given).
    pub batch_dir: PathBuf,
    /// Write this card of the batch (one target only).
    pub card: Option<u32>,
    /// Write this image instead of a batch card.
    pub image: Option<PathBuf>,
    /// Use this bmap (default: `<image>.bmap` beside `--image` when present).
    pub bmap: Option<PathBuf>,
    /// Don't ask before overwriting a device.
    pub yes: bool,
    /// Read back and compare after writing.
    pub verify: bool,
    /// Allow devices the safety rules would refuse as too large or not removable.
    pub force: bool,
    /// Only compare the targets with the image.
    pub verify_only: bool,
    /// Eject devices afterwards where the OS supports it.
    pub eject: bool,
    /// Draw progress.
    pub progress: bool,
    /// Engine options (counterfeit deadline, test throttle).
    pub write: WriteOptions,
}

/// What happened to one target.
#[derive(Debug, Clone)]
pub struct FlashOutcome {
    /// The target.
    pub target: PathBuf,
    /// The batch card written: (index, hostname).
    pub card: Option<(u32, String)>,
    /// Image length.
    pub image_len: u64,
    /// Bytes written (or compared, with `--verify-only`).
    pub bytes: u64,
    /// Whether the read-back matched.
    pub verified: bool,
    /// Wall time.
    pub elapsed: Duration,
    /// Writing (or, with `--verify-only`, comparing), from the first write to the last sync.
    pub write_time: Duration,
    /// Reading back and comparing, when verified after writing: (bytes read, time).
    pub verify: Option<(u64, Duration)>,
    /// Remarks (partition table re-read, eject), for the output.
    pub notes: Vec<String>,
}

/// Where the bytes come from, shared by every target of one run.
enum Image {
    /// A raw image file along a plan.
    Raw {
        path: PathBuf,
        len: u64,
        plan: Vec<PlanRange>,
    },
    /// A compressed file decoded per target.
    Stream {
        path: PathBuf,
        format: Format,
        plan: Option<Vec<PlanRange>>,
        len: Option<u64>,
    },
}

impl Image {
    fn len(&self) -> Option<u64> {
        match self {
            Image::Raw { len, .. } => Some(*len),
            Image::Stream { len, .. } => *len,
        }
    }
    fn planned(&self) -> Option<u64> {
        match self {
            Image::Raw { plan, .. } => Some(source::plan_bytes(plan)),
            Image::Stream { plan, len, .. } => plan.as_deref().map(source::plan_bytes).or(*len),
        }
    }
}

/// One target's job: where, what (card and its patch), and the handle it was checked through
/// (`opened`) until it becomes the one written through (`io`, `device`).
struct Job {
    target: PathBuf,
    kind: TargetKind,
    card: Option<(u32, String)>,
    patch: Option<Patch>,
    checked: devices::Target,
    opened: Option<Opened>,
    io: Option<Arc<dyn TargetIo>>,
    device: Option<Arc<DeviceTarget>>,
}

/// A personalised boot partition: a sparse temp file the image's size holding the MBR and the
/// boot partition's mapped bytes, personalised, and the plan of that partition.
struct Patch {
    file: tempfile::NamedTempFile,
    boot: ByteRange,
    plan: Vec<PlanRange>,
}

/// Runs a flash (or `--verify-only`): checks every target, asks for confirmation of device
/// targets unless `--yes` (on stdin/stderr), then writes all targets at once. Returns one
/// result per target; an `Err` of the whole means nothing was written.
pub fn flash(req: &FlashRequest) -> anyhow::Result<Vec<anyhow::Result<FlashOutcome>>> {
    if req.targets.is_empty() {
        bail!("no target: name a device (see `piforge devices`) or an image file to write");
    }
    if req.card.is_some() && req.targets.len() > 1 {
        bail!("--card K writes one card: give one target");
    }
    let mut seen = std::collections::HashSet::new();
    for t in &req.targets {
        if !seen.insert(t) {
            bail!("{} is given twice", t.display());
        }
    }
    // Held until every target is written and recorded (released when this returns).
    let _claims: Vec<CardClaim>;
    let (mut image, batch, cards) = match &req.image {
        Some(p) => (
            open_image(p, req.bmap.as_deref())?,
            None,
            vec![None; req.targets.len()],
        ),
        None => {
            let b = Batch::load(&req.batch_dir)?;
            let (cards, claims) = pick_cards(&b, req)?;
            _claims = claims;
            let path = b.image_path(&req.batch_dir);
            (raw_image(&path, None)?, Some(b), cards)
        }
    };
    if let Image::Stream {
        path,
        format,
        len: len @ None,
        ..
    } = &mut image
    {
        // Sizes the container records (zip directory, zstd frame header) cost no decoding.
        // Otherwise the stream is decoded once, while it is written: a device's size is then
        // checked as the bytes arrive (the card is left without a partition table if they
        // do not fit), never by a second decoding pass.
        *len = decompress::recorded_size(path, *format);
    }
    let image = Arc::new(image);

    // Safety first, for every target, before any is written: each is opened once, and the
    // checks judge that handle (SECURITY finding 4).
    let policy = devices::Policy {
        force: req.force,
        ..devices::Policy::default()
    };
    let guard = source_guard(req, &image, batch.is_some());
    let mut jobs: Vec<Job> = Vec::new();
    for (t, card) in req.targets.iter().zip(cards) {
        match open_checked(req, t, &image, &policy, &guard) {
            Ok((opened, checked)) => jobs.push(Job {
                target: checked.path.clone(),
                kind: opened.kind,
                card,
                patch: None,
                checked,
                opened: Some(opened),
                io: None,
                device: None,
            }),
            Err(e) => {
                discard_all(jobs);
                return Err(e);
            }
        }
    }
    match prepare(req, &image, batch.as_ref(), &mut jobs) {
        Ok(()) => {}
        Err(e) => {
            discard_all(jobs);
            return Err(e);
        }
    }

    if let Some(p) = req.write.pause {
        eprintln!("piforge: test pause of {} ms before writing", p.as_millis());
        std::thread::sleep(p);
    }
    let multi = MultiProgress::new();
    let record = Arc::new(Mutex::new(()));
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|mut job| {
                let image = Arc::clone(&image);
                let record = Arc::clone(&record);
                let multi = &multi;
                s.spawn(move || {
                    let r = run_job(req, &image, &mut job, multi);
                    if let (Ok(o), Some((k, _))) = (&r, &job.card)
                        && !req.verify_only
                        && (o.verified || !req.verify)
                    {
                        let _guard = record.lock().unwrap_or_else(|e| e.into_inner());
                        mark_flashed(&req.batch_dir, *k)?;
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("the flashing thread panicked")))
            })
            .collect::<Vec<_>>()
    });
    Ok(results)
}

/// Opens `t` once and checks that handle: the device rules (`devices`), the source guard
/// (SECURITY finding 2) and a file target's free space. A file the open created is removed
/// again when refused.
fn open_checked(
    req: &FlashRequest,
    t: &Path,
    image: &Image,
    policy: &devices::Policy,
    guard: &guard::Guard,
) -> anyhow::Result<(Opened, devices::Target)> {
    let check = || format!("checking {}", t.display());
    let image_len = image.len().unwrap_or(0);
    if !req.verify_only
        && matches!(std::fs::metadata(t), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    {
        // A new file: its directory must exist, and not under /dev (before creating it).
        devices::check_target(t, image_len, policy).with_context(check)?;
    }
    // Linux judges the opened handle (its device number, in sysfs). macOS and Windows
    // recognise disks by name (diskutil, `\\.\PhysicalDriveN`): the path is judged, then the
    // path it names is opened (macOS: `/dev/diskN` becomes the raw `/dev/rdiskN`).
    #[cfg(not(target_os = "linux"))]
    let (t, checked) = {
        let checked = devices::check_target(t, image_len, policy).with_context(check)?;
        (checked.path.clone(), checked)
    };
    #[cfg(not(target_os = "linux"))]
    let t = t.as_path();
    let opened = target::open_target(t, !req.verify_only).with_context(check)?;
    let r = (|| {
        #[cfg(target_os = "linux")]
        let checked = devices::check_opened(t, &opened.file, opened.created, image_len, policy)?;
        guard.check(&opened)?;
        if opened.kind == TargetKind::File && !req.verify_only {
            check_file_target(t, image)?;
        }
        anyhow::Ok(checked)
    })()
    .with_context(check);
    match r {
        Ok(checked) => Ok((opened, checked)),
        Err(e) => {
            opened.discard();
            Err(e)
        }
    }
}

fn discard_all(jobs: Vec<Job>) {
    for j in jobs {
        if let Some(o) = j.opened {
            o.discard();
        }
    }
}

/// What no target may be, hold or sit in: the image (and its bmap), the batch directory and
/// the cache.
fn source_guard(req: &FlashRequest, image: &Image, batch: bool) -> guard::Guard {
    let mut g = guard::Guard::new();
    let src = match image {
        Image::Raw { path, .. } | Image::Stream { path, .. } => path,
    };
    g.protect(src, "the image being written");
    if let Some(b) = req.bmap.clone().or_else(|| {
        req.image
            .as_deref()
            .filter(|_| !batch)
            .and_then(bmap_beside)
    }) {
        g.protect(&b, "the bmap being read");
    }
    g.protect(&req.batch_dir, "the batch directory");
    g.protect(
        &crate::acquire::cache::Cache::default_root(),
        "the cache directory",
    );
    g
}

/// Everything between the checks and the first write: personalising each card's boot
/// partition (fails here if the FAT is full), the confirmation of devices, their unmount,
/// then the handles the writes go through: a file target narrowed to 0600 and sized, a
/// device re-opened exclusively through its checked handle and re-checked (same device,
/// same size and facts as confirmed).
fn prepare(
    req: &FlashRequest,
    image: &Image,
    batch: Option<&Batch>,
    jobs: &mut [Job],
) -> anyhow::Result<()> {
    if let (Some(b), Image::Raw { path, len, plan }) = (batch, image) {
        for j in jobs.iter_mut() {
            if let Some((k, _)) = &j.card {
                j.patch = Some(personalise(path, *len, plan, b, &req.batch_dir, *k)?);
            }
        }
    }
    if !req.verify_only {
        for j in jobs.iter().filter(|j| j.kind == TargetKind::Device) {
            devices::confirm_stdin(&j.checked, req.yes)
                .with_context(|| format!("confirming {}", j.target.display()))?;
        }
        for j in jobs.iter().filter(|j| j.kind == TargetKind::Device) {
            devices::unmount(&j.checked)
                .with_context(|| format!("unmounting {}", j.target.display()))?;
        }
    }
    for j in jobs.iter_mut() {
        let opened = j.opened.as_ref().expect("every job is opened");
        let what = || format!("opening {}", j.target.display());
        match (j.kind, req.verify_only) {
            (TargetKind::File, verify_only) => {
                let f = opened.file.try_clone().with_context(what)?;
                let t = if verify_only {
                    FileTarget::reading(f)
                } else {
                    FileTarget::from_handle(f, image.len())
                }
                .with_context(what)?;
                j.io = Some(Arc::new(t));
            }
            #[cfg(windows)]
            (TargetKind::Device, verify_only) => {
                // Locks and dismounts the disk's volumes, then opens it unbuffered.
                let _ = opened;
                let d = Arc::new(DeviceTarget::open(&j.target, !verify_only)?);
                j.io = Some(d.clone());
                j.device = Some(d);
            }
            #[cfg(unix)]
            (TargetKind::Device, verify_only) => {
                let f = if verify_only {
                    opened.file.try_clone().with_context(what)?
                } else {
                    let f = opened.reopen_exclusive()?;
                    if let Some(d) = j.checked.device() {
                        devices::recheck_opened(&j.target, &f, d)?;
                    }
                    f
                };
                let d = Arc::new(DeviceTarget::from_handle(f, &j.target, !verify_only)?);
                j.io = Some(d.clone());
                j.device = Some(d);
            }
        }
    }
    Ok(())
}

/// A raw image and its plan (a bmap's if given, else the block map).
fn raw_image(path: &Path, bmap: Option<&Bmapped>) -> anyhow::Result<Image> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let plan = match bmap {
        Some(b) => {
            check_bmap_len(b, len)?;
            source::plan_from_bmap(&b.bmap)
        }
        None => {
            let map = blockmap::map_image(&mut f, len)
                .with_context(|| format!("mapping the used blocks of {}", path.display()))?;
            source::plan_from_map(&map)
        }
    };
    Ok(Image::Raw {
        path: path.to_owned(),
        len,
        plan,
    })
}

struct Bmapped {
    path: PathBuf,
    bmap: bmap::Bmap,
}

fn check_bmap_len(b: &Bmapped, len: u64) -> anyhow::Result<()> {
    if b.bmap.image_size != len {
        bail!(
            "{} describes an image of {} bytes, the image has {len}: wrong bmap for this image",
            b.path.display(),
            b.bmap.image_size
        );
    }
    Ok(())
}

/// The bmap beside an image: `FILE.bmap`, or with the compression suffix replaced
/// (`x.img.xz` → `x.img.bmap`), or the stem's (`x.img.xz` → `x.bmap`).
pub fn bmap_beside(image: &Path) -> Option<PathBuf> {
    let name = image.file_name()?.to_string_lossy().into_owned();
    let mut candidates = vec![format!("{name}.bmap")];
    let mut stem = name.as_str();
    while let Some((s, _)) = stem.rsplit_once('.') {
        candidates.push(format!("{s}.bmap"));
        stem = s;
    }
    candidates
        .into_iter()
        .map(|c| image.with_file_name(c))
        .find(|p| p.is_file())
}

fn load_bmap(path: &Path) -> anyhow::Result<Bmapped> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let bmap = bmap::parse(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Bmapped {
        path: path.to_owned(),
        bmap,
    })
}

/// `--image FILE`: raw or compressed, with its bmap.
fn open_image(path: &Path, bmap: Option<&Path>) -> anyhow::Result<Image> {
    let format = decompress::sniff_file(path)?;
    let bmap_path = bmap.map(Path::to_owned).or_else(|| bmap_beside(path));
    let bm = bmap_path.as_deref().map(load_bmap).transpose()?;
    if let Some(b) = &bm {
        tracing::info!(bmap = %b.path.display(), "writing the ranges of the bmap");
    }
    if format == Format::Raw {
        return raw_image(path, bm.as_ref());
    }
    let (plan, len) = match &bm {
        Some(b) => (
            Some(source::plan_from_bmap(&b.bmap)),
            Some(b.bmap.image_size),
        ),
        // xz records the decompressed size in its index: no need to decode to learn it.
        None if format == Format::Xz => {
            let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            (
                None,
                decompress::xz_uncompressed_size(&mut f).ok().flatten(),
            )
        }
        None => (None, None),
    };
    Ok(Image::Stream {
        path: path.to_owned(),
        format,
        plan,
        len,
    })
}

/// A file target: its directory must exist and its filesystem hold the image's used bytes.
fn check_file_target(path: &Path, image: &Image) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut free = crate::io::hostfs::free_space(&dir)
        .with_context(|| format!("reading the free space of {}", dir.display()))?;
    if let Ok(m) = std::fs::metadata(path) {
        // Its own blocks are freed when it is truncated.
        free += crate::io::hostfs::allocated(&m);
    }
    if let Some(need) = image.planned()
        && need > free
    {
        return Err(FlashError::TooSmall {
            image: need,
            target: free,
        })
        .with_context(|| format!("checking the free space for {}", path.display()));
    }
    Ok(())
}

/// Copies the MBR and the boot partition's mapped bytes into a sparse temp file, writes card
/// `k` there, and maps the result.
fn personalise(
    image: &Path,
    len: u64,
    plan: &[PlanRange],
    b: &Batch,
    dir: &Path,
    k: u32,
) -> anyhow::Result<Patch> {
    let mut src = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let layout = image::read_layout(&mut src).context("reading the image's partition table")?;
    let boot = layout.boot()?.clone();
    let boot_range = ByteRange::at(boot.start, boot.len);
    let mut tmp = tempfile::Builder::new()
        .prefix(".piforge-flash-")
        .suffix(".part")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.as_file()
        .set_len(len)
        .context("sizing the card's temp file")?;
    let mut buf = vec![0u8; engine::CHUNK];
    let wanted = [ByteRange::at(0, 512), boot_range];
    for p in plan {
        for w in &wanted {
            let (a, e) = (p.range.start.max(w.start), p.range.end.min(w.end));
            let mut pos = a;
            while pos < e {
                let n = ((e - pos) as usize).min(buf.len());
                crate::io::hostfs::read_exact_at(&src, &mut buf[..n], pos)
                    .with_context(|| format!("reading {}", image.display()))?;
                crate::io::hostfs::write_all_at(tmp.as_file(), &buf[..n], pos)
                    .context("writing the card's temp file")?;
                pos += n as u64;
            }
        }
    }
    crate::build::export::personalise(tmp.as_file_mut(), b, dir, k)
        .with_context(|| format!("personalising card {k}"))?;
    tmp.as_file_mut().flush().context("flushing the card")?;
    let ranges = blockmap::fat_ranges(tmp.as_file_mut(), boot_range)
        .with_context(|| format!("mapping the boot partition of card {k}"))?;
    let map = BlockMap {
        image_size: len,
        ranges,
        partitions: vec![],
    };
    Ok(Patch {
        file: tmp,
        boot: boot_range,
        plan: source::plan_from_map(&map),
    })
}

/// `plan` with the boot partition's ranges replaced by the patch's.
fn patched_plan(plan: &[PlanRange], patch: &Patch) -> Vec<PlanRange> {
    let outside: Vec<ByteRange> = engine::subtract(
        &plan.iter().map(|p| p.range).collect::<Vec<_>>(),
        &[patch.boot],
    );
    let all = outside
        .into_iter()
        .chain(patch.plan.iter().map(|p| p.range))
        .collect();
    blockmap::normalize(all)
        .into_iter()
        .map(|range| PlanRange {
            range,
            sha256: None,
        })
        .collect()
}

fn label(job: &Job) -> String {
    let name = job.target.file_name().map_or_else(
        || job.target.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    match &job.card {
        Some((k, host)) => format!("{name} (card {k} {host})"),
        None => name,
    }
}

fn bar(req: &FlashRequest, multi: &MultiProgress, what: &str, total: Option<u64>) -> Progress {
    if req.progress {
        Progress::new_in(multi, what, total)
    } else {
        Progress::hidden()
    }
}

/// Writes (and verifies) one target.
fn run_job(
    req: &FlashRequest,
    image: &Image,
    job: &mut Job,
    multi: &MultiProgress,
) -> anyhow::Result<FlashOutcome> {
    let start = std::time::Instant::now();
    let name = label(job);
    // The last handles: dropping them releases the device (exclusive open) for the eject.
    let target = job.io.take().expect("prepared");
    let device = job.device.take();
    let checked_handle = job.opened.take();
    let mut notes = Vec::new();
    let len = image.len();
    if job.kind == TargetKind::File && !req.verify_only {
        notes.push("mode 0600: it holds the card's secrets".to_owned());
    }
    if job.kind == TargetKind::Device && !req.verify_only {
        if req.write.capacity_check {
            let n = capacity::check_capacity(&*target)
                .with_context(|| format!("checking the capacity of {}", job.target.display()))?;
            notes.push(format!(
                "capacity checked: {n} sentinel blocks up to {}",
                human_bytes(target.capacity())
            ));
        } else {
            notes.push("capacity not checked (--no-capacity-check)".to_owned());
        }
    }
    let what = if req.verify_only {
        "verifying"
    } else {
        "writing"
    };
    let total = match (image, &job.patch) {
        (Image::Raw { plan, .. }, Some(p)) => Some(source::plan_bytes(&patched_plan(plan, p))),
        _ => image.planned(),
    };
    let p = bar(req, multi, &format!("{what} {name}"), total);
    type Ran = (u64, u64, bool, Duration, Option<(u64, Duration)>);
    let run = |src: &mut dyn ChunkSource| -> anyhow::Result<Ran> {
        let t0 = std::time::Instant::now();
        if req.verify_only {
            let n = engine::verify_against(src, &*target, &p)
                .with_context(|| format!("verifying {}", job.target.display()))?;
            return Ok((src.image_len().unwrap_or(n), n, true, t0.elapsed(), None));
        }
        let report = engine::write_image(src, &target, &req.write, &p)
            .with_context(|| format!("writing {}", job.target.display()))?;
        let verify = if req.verify {
            let t1 = std::time::Instant::now();
            let total: u64 = report.pieces.iter().map(|p| p.0.len()).sum();
            let vp = bar(req, multi, &format!("verifying {name}"), Some(total));
            engine::verify_written(&*target, &report, &vp)
                .with_context(|| format!("verifying {}", job.target.display()))?;
            Some((total, t1.elapsed()))
        } else {
            None
        };
        Ok((
            report.image_len,
            report.written,
            verify.is_some(),
            report.elapsed,
            verify,
        ))
    };
    let (image_len, bytes, verified, write_time, verify) = match image {
        Image::Raw { path, len, plan } => {
            let mut src = match &job.patch {
                Some(patch) => MappedSource::new(path, *len, patched_plan(plan, patch))?
                    .with_patch(patch.file.path(), patch.boot)?,
                None => MappedSource::new(path, *len, plan.clone())?,
            };
            run(&mut src)?
        }
        Image::Stream {
            path, format, plan, ..
        } => {
            let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            decompress::with_decoder(*format, f, |r| {
                let mut src = StreamSource::new(r, plan.clone(), len);
                run(&mut src)
            })
            .with_context(|| format!("decoding {}", path.display()))??
        }
    };
    drop((target, checked_handle));
    if let Some(d) = device.filter(|_| !req.verify_only) {
        notes.extend(after_device(d, &job.target, req.eject));
    }
    Ok(FlashOutcome {
        target: job.target.clone(),
        card: job.card.clone(),
        image_len,
        bytes,
        verified,
        elapsed: start.elapsed(),
        write_time,
        verify,
        notes,
    })
}

/// Re-reads the partition table (through the handle written through, still exclusive) and
/// ejects, saying what happened.
fn after_device(d: Arc<DeviceTarget>, path: &Path, eject: bool) -> Vec<String> {
    let mut notes = Vec::new();
    if cfg!(any(target_os = "linux", windows)) {
        match d.reread_partitions() {
            Ok(()) => notes.push("partition table re-read".to_owned()),
            Err(e) => notes.push(format!("partition table not re-read: {e:#}")),
        }
    }
    drop(d);
    let is_loop = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("loop"));
    if eject && !is_loop {
        notes.push(target::eject(path));
    }
    notes
}

/// One line per outcome, for stdout.
pub fn render_outcome(o: &FlashOutcome, verify_only: bool) -> String {
    let card = o
        .card
        .as_ref()
        .map(|(k, h)| format!("card {k} {h}  "))
        .unwrap_or_default();
    let what = if verify_only {
        format!("matches the image ({} compared)", human_bytes(o.bytes))
    } else {
        let rate =
            |n: u64, t: Duration| format!("{:.0} MB/s", n as f64 / 1e6 / t.as_secs_f64().max(1e-3));
        let verified = match o.verify {
            Some((n, t)) => format!(
                ", verified ({} read back at {})",
                human_bytes(n),
                rate(n, t)
            ),
            None if o.verified => ", verified".to_owned(),
            None => ", not verified".to_owned(),
        };
        format!(
            "{} image, {} written in {:.1} s (at {}){verified}",
            human_bytes(o.image_len),
            human_bytes(o.bytes),
            o.elapsed.as_secs_f64(),
            rate(o.bytes, o.write_time),
        )
    };
    let notes = if o.notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", o.notes.join("; "))
    };
    format!("{card}{}  {what}{notes}", o.target.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bmap_is_found_beside_compressed_images() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("x.img.xz");
        std::fs::write(&img, b"").unwrap();
        assert_eq!(bmap_beside(&img), None);
        std::fs::write(d.path().join("x.img.bmap"), b"").unwrap();
        assert_eq!(bmap_beside(&img), Some(d.path().join("x.img.bmap")));
        std::fs::write(d.path().join("x.img.xz.bmap"), b"").unwrap();
        assert_eq!(bmap_beside(&img), Some(d.path().join("x.img.xz.bmap")));
    }
}
