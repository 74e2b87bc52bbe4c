//! progress: how long-running byte streams (downloads, extraction) report how far they are.
//!
//! On a terminal, an indicatif bar on stderr. Otherwise (CI, journald, pipes) a plain line on
//! stderr every few seconds, e.g. `fetching x.img.xz: 512.0 MiB of 1.1 GiB (45%), 80.0 MiB/s`,
//! and one closing line. Results never go here: stdout belongs to the command's output.
//! The line format is a pure function ([`format_line`]) so it is tested without a clock.

use std::io::{self, IsTerminal, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the plain (non-TTY) reporter prints.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// A progress reporter. Cheap to clone; clones report to the same bar.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    what: String,
    total: Option<u64>,
    pos: AtomicU64,
    start: Instant,
    mode: Mode,
}

enum Mode {
    Bar(ProgressBar),
    Plain(Mutex<PlainState>),
    Hidden,
}

struct PlainState {
    last: Instant,
    finished: bool,
}

impl Progress {
    /// A reporter for `what` (e.g. "fetching x.img.xz") of `total` bytes if known: a bar when
    /// stderr is a terminal, plain lines otherwise.
    pub fn new(what: &str, total: Option<u64>) -> Progress {
        Progress::new_in(
            &MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            what,
            total,
        )
    }

    /// [`Progress::new`], the bar drawn as one of the lines of `multi` (several at once, e.g.
    /// one per card being flashed). A `multi` whose draw target is hidden means: own bar.
    pub fn new_in(multi: &MultiProgress, what: &str, total: Option<u64>) -> Progress {
        let mode = if io::stderr().is_terminal() {
            let bar = match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::new_spinner(),
            };
            bar.set_draw_target(ProgressDrawTarget::stderr());
            let template = if total.is_some() {
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({percent}%) {bytes_per_sec} eta {eta}"
            } else {
                "{msg} {spinner} {bytes} {bytes_per_sec}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what.to_owned());
            let bar = if multi.is_hidden() {
                bar
            } else {
                multi.add(bar)
            };
            Mode::Bar(bar)
        } else {
            Mode::Plain(Mutex::new(PlainState {
                last: Instant::now(),
                finished: false,
            }))
        };
        Progress::with_mode(what, total, mode)
    }

    /// A reporter that shows nothing (for `progress = false` and tests).
    pub fn hidden() -> Progress {
        Progress::with_mode("", None, Mode::Hidden)
    }

    /// `new` when `show`, else `hidden`.
    pub fn maybe(show: bool, what: &str, total: Option<u64>) -> Progress {
        if show {
            Progress::new(what, total)
        } else {
            Progress::hidden()
        }
    }

    fn with_mode(what: &str, total: Option<u64>, mode: Mode) -> Progress {
        Progress {
            inner: Arc::new(Inner {
                what: what.to_owned(),
                total,
                pos: AtomicU64::new(0),
                start: Instant::now(),
                mode,
            }),
        }
    }

    /// `n` more bytes are done.
    pub fn inc(&self, n: u64) {
        let pos = self.inner.pos.fetch_add(n, Ordering::Relaxed) + n;
        self.report(pos);
    }

    /// `n` bytes are done in total (e.g. a resumed download starts past zero).
    pub fn set_position(&self, n: u64) {
        self.inner.pos.store(n, Ordering::Relaxed);
        self.report(n);
    }

    /// Bytes done so far.
    pub fn position(&self) -> u64 {
        self.inner.pos.load(Ordering::Relaxed)
    }

    fn report(&self, pos: u64) {
        match &self.inner.mode {
            Mode::Bar(bar) => bar.set_position(pos),
            Mode::Plain(state) => {
                let Ok(mut st) = state.lock() else { return };
                if st.last.elapsed() >= PLAIN_EVERY {
                    st.last = Instant::now();
                    let line = format_line(
                        &self.inner.what,
                        pos,
                        self.inner.total,
                        self.inner.start.elapsed(),
                    );
                    eprintln!("{line}");
                }
            }
            Mode::Hidden => {}
        }
    }

    /// The work is over: clear the bar, or print a closing plain line. Idempotent.
    pub fn finish(&self) {
        match &self.inner.mode {
            Mode::Bar(bar) => bar.finish_and_clear(),
            Mode::Plain(state) => {
                let Ok(mut st) = state.lock() else { return };
                if !st.finished {
                    st.finished = true;
                    let pos = self.position();
                    eprintln!(
                        "{}",
                        format_done(&self.inner.what, pos, self.inner.start.elapsed())
                    );
                }
            }
            Mode::Hidden => {}
        }
    }
}

/// A `Read` adapter that reports every byte read to a [`Progress`].
pub struct ProgressReader<R> {
    inner: R,
    progress: Progress,
}

impl<R: Read> ProgressReader<R> {
    /// Report reads from `inner` to `progress`.
    pub fn new(inner: R, progress: Progress) -> Self {
        ProgressReader { inner, progress }
    }

    /// The reporter.
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The wrapped reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }
}

/// Seeking moves the reported position to the new offset, so reading a zip's central directory
/// and then its member still shows how far into the file we are.
impl<R: Seek> Seek for ProgressReader<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let at = self.inner.seek(pos)?;
        self.progress.set_position(at);
        Ok(at)
    }
}

/// `1536` → `1.5 KiB`; binary units, one decimal.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// One plain progress line.
pub fn format_line(what: &str, pos: u64, total: Option<u64>, elapsed: Duration) -> String {
    let rate = rate(pos, elapsed);
    match total {
        Some(t) if t > 0 => {
            let pct = (pos as f64 * 100.0 / t as f64).min(100.0) as u64;
            format!(
                "{what}: {} of {} ({pct}%), {rate}",
                human_bytes(pos),
                human_bytes(t)
            )
        }
        _ => format!("{what}: {}, {rate}", human_bytes(pos)),
    }
}

/// The closing plain line.
pub fn format_done(what: &str, pos: u64, elapsed: Duration) -> String {
    format!(
        "{what}: done, {} in {:.1} s, {}",
        human_bytes(pos),
        elapsed.as_secs_f64(),
        rate(pos, elapsed)
    )
}

fn rate(pos: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return "- /s".to_owned();
    }
    format!("{}/s", human_bytes((pos as f64 / secs) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(512 << 20), "512.0 MiB");
        assert_eq!(human_bytes(1_181_116_006), "1.1 GiB");
    }

    #[test]
    fn plain_line_has_amount_total_percent_and_rate() {
        let l = format_line(
            "fetching x",
            512 << 20,
            Some(1_181_116_006),
            Duration::from_secs(8),
        );
        assert_eq!(l, "fetching x: 512.0 MiB of 1.1 GiB (45%), 64.0 MiB/s");
        let l = format_line("fetching x", 2048, None, Duration::ZERO);
        assert_eq!(l, "fetching x: 2.0 KiB, - /s");
        let d = format_done("extracting y", 3 << 30, Duration::from_secs(2));
        assert_eq!(d, "extracting y: done, 3.0 GiB in 2.0 s, 1.5 GiB/s");
    }

    #[test]
    fn reader_counts_bytes() {
        let p = Progress::hidden();
        let mut r = ProgressReader::new(&[7u8; 10_000][..], p.clone());
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(p.position(), 10_000);
        p.set_position(3);
        assert_eq!(r.progress().position(), 3);
        p.finish();
    }
}
