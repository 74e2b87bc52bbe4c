//! fetch: download base images over HTTP(S) into a file, resumably, verified before use.
//!
//! A download goes to `<dest>.part`; a `.part` left by an interrupted run is continued with a
//! `Range` request (and restarted cleanly when the server ignores `Range`). The sha256 is computed
//! while streaming and, when a value is expected, compared before `<dest>.part` is renamed to
//! `<dest>`: a file at `dest` is therefore always complete and, if a hash was given, verified.
//! On a mismatch the `.part` is deleted (resuming corrupt bytes would never succeed).
//! Deliberately not here: where files live (`cache`), what they contain (`decompress`), and
//! retries (a failed run is re-run; it resumes).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::acquire::catalog::url_file_name;
use crate::acquire::verify::{Sha256Reader, VerifyError, parse_sha256_file, sha256_reader};
use crate::term::progress::{Progress, ProgressReader};

/// Where an image comes from, as given to `--from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An `http://` or `https://` URL.
    Http(String),
    /// A local file.
    File(PathBuf),
}

impl Source {
    /// `http(s)://…` is a URL, `file://…` and anything else a local path.
    pub fn parse(s: &str) -> Source {
        let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            Source::Http(s.to_owned())
        } else if let Some(p) = s.strip_prefix("file://") {
            Source::File(PathBuf::from(p))
        } else {
            Source::File(PathBuf::from(s))
        }
    }
}

/// Failures of a download. Each message names the URL and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The complete download's sha256 is not the expected one. The `.part` has been deleted.
    #[error(
        "{url}: checksum mismatch: expected sha256 {expected}, got {actual}; the download was \
         deleted, run again to retry (if it keeps failing the mirror is serving other bytes)"
    )]
    ChecksumMismatch {
        /// What was downloaded.
        url: String,
        /// The sha256 that was expected.
        expected: String,
        /// The sha256 of what arrived.
        actual: String,
    },
    /// The publisher's `<url>.sha256` disagrees with the catalog pin; nothing was downloaded.
    #[error(
        "{url}: the published sha256 {published} disagrees with the catalog pin {pinned}; \
         refusing to download: the catalog may be out of date (update piforge) or the mirror \
         compromised (use --from with a file you verified yourself)"
    )]
    PinDisagrees {
        /// The image URL.
        url: String,
        /// The catalog's sha256.
        pinned: String,
        /// The sha256 in `<url>.sha256`.
        published: String,
    },
    /// The server answered with an unusable HTTP status (404, 500, ...).
    #[error("{url}: the server answered HTTP {status}; check the URL")]
    Http {
        /// The URL asked for.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The connection could not be made or broke before the response started.
    #[error("{url}: {source}; check the network and run again")]
    Transport {
        /// The URL asked for.
        url: String,
        /// What ureq reported.
        source: ureq::Error,
    },
    /// The connection broke mid-body. What arrived is kept in `part` for the next run.
    #[error(
        "{url}: the download was interrupted after {got} bytes ({source}); the partial file \
         {} is kept, run again to resume",
        part.display()
    )]
    Interrupted {
        /// The URL being downloaded.
        url: String,
        /// The partial file kept for resuming.
        part: PathBuf,
        /// Bytes in `part` now.
        got: u64,
        /// The I/O error from the body.
        source: io::Error,
    },
    /// The server's answer does not make sense (e.g. a `206` for the wrong range).
    #[error("{url}: {reason}")]
    Protocol {
        /// The URL asked for.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// A published checksum file is not usable.
    #[error("{url}: {source}")]
    ChecksumFile {
        /// The URL of the checksum file.
        url: String,
        /// Why it is unusable.
        source: VerifyError,
    },
    /// A local file could not be read or written.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "writing".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FetchError + 'a {
    move |source| FetchError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The `.part` file a download into `dest` uses.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        host_port.split(':').next().unwrap_or(host_port)
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The HTTP client: rustls, no transparent decompression (we want the bytes the checksum is
/// about), statuses handled by us, a read timeout so a stalled server does not hang a build.
fn agent(url: &str) -> ureq::Agent {
    let mut cfg = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .accept_encoding("")
        .user_agent(concat!("piforge/", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)));
    if is_loopback(url) {
        // Local servers (tests, a LAN mirror on this host) never go through a proxy.
        cfg = cfg.proxy(None);
    }
    cfg.build().new_agent()
}

/// GET a small text resource such as `<url>.sha256`. `Ok(None)` when the server says it does
/// not exist (404/410), so callers can tell "no checksum published" from "network down".
pub fn fetch_text(url: &str, limit: u64) -> Result<Option<String>, FetchError> {
    let resp = agent(url)
        .get(url)
        .call()
        .map_err(|source| FetchError::Transport {
            url: url.to_owned(),
            source,
        })?;
    let status = resp.status().as_u16();
    if status == 404 || status == 410 {
        return Ok(None);
    }
    if !(200..300).contains(&status) {
        return Err(FetchError::Http {
            url: url.to_owned(),
            status,
        });
    }
    let mut body = Vec::new();
    resp.into_body()
        .into_with_config()
        .limit(limit)
        .reader()
        .read_to_end(&mut body)
        .map_err(|source| FetchError::Protocol {
            url: url.to_owned(),
            reason: format!("reading the response: {source}"),
        })?;
    Ok(Some(String::from_utf8_lossy(&body).into_owned()))
}

/// The sha256 the publisher lists for `url` in `<url>.sha256`, `None` if there is no such file.
pub fn published_sha256(url: &str) -> Result<Option<String>, FetchError> {
    let sums_url = format!("{url}.sha256");
    let Some(text) = fetch_text(&sums_url, 64 * 1024)? else {
        return Ok(None);
    };
    parse_sha256_file(&text, url_file_name(url))
        .map(Some)
        .map_err(|source| FetchError::ChecksumFile {
            url: sums_url,
            source,
        })
}

/// Download `url` to `dest`, resuming a `<dest>.part` from an earlier run, and return the
/// sha256 of the complete file.
///
/// With `expected_sha256`, a mismatch deletes the `.part` and fails with
/// [`FetchError::ChecksumMismatch`]; `dest` only ever appears complete and verified.
pub fn download(
    url: &str,
    dest: &Path,
    expected_sha256: Option<&str>,
    progress: bool,
) -> Result<String, FetchError> {
    let part = part_path(dest);
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    }
    let actual = match download_part(url, &part, progress) {
        Ok(a) => a,
        // A stale or over-long .part the server cannot continue: start over once.
        Err(Restart) => {
            info!(part = %part.display(), "the partial download cannot be resumed, restarting");
            fs::remove_file(&part).map_err(io_err("removing", &part))?;
            match download_part(url, &part, progress) {
                Ok(a) => a,
                Err(Restart) => {
                    return Err(FetchError::Protocol {
                        url: url.to_owned(),
                        reason: "the server refuses a download from the start (HTTP 416)".into(),
                    });
                }
                Err(Failed(e)) => return Err(e),
            }
        }
        Err(Failed(e)) => return Err(e),
    };
    if let Some(expected) = expected_sha256
        && !actual.eq_ignore_ascii_case(expected)
    {
        // Log first so a failing cleanup cannot hide the real problem.
        warn!(url, expected, actual = %actual, "checksum mismatch, deleting the download");
        if let Err(e) = fs::remove_file(&part) {
            warn!(part = %part.display(), error = %e, "could not delete the bad download");
        }
        return Err(FetchError::ChecksumMismatch {
            url: url.to_owned(),
            expected: expected.to_ascii_lowercase(),
            actual,
        });
    }
    piforge_config::atomic::rename_durably(&part, dest)
        .map_err(io_err("renaming the download to", dest))?;
    debug!(url, dest = %dest.display(), sha256 = %actual, "download complete");
    Ok(actual)
}

/// Why `download_part` stopped.
enum PartError {
    /// The `.part` cannot be continued (416): delete it and try once more from zero.
    Restart,
    /// A real failure.
    Failed(FetchError),
}
use PartError::{Failed, Restart};

impl From<FetchError> for PartError {
    fn from(e: FetchError) -> Self {
        Failed(e)
    }
}

/// Bring `part` to the complete file; return its sha256.
fn download_part(url: &str, part: &Path, progress: bool) -> Result<String, PartError> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(part)
        .map_err(io_err("opening", part))?;
    let have = file.metadata().map_err(io_err("reading", part))?.len();

    let mut req = agent(url).get(url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
        info!(url, bytes = have, "resuming download");
    }
    let resp = req.call().map_err(|source| FetchError::Transport {
        url: url.to_owned(),
        source,
    })?;
    let status = resp.status().as_u16();
    let content_range = resp
        .headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let length = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());

    let (start, total) = match status {
        206 if have > 0 => {
            let (start, total) = content_range
                .as_deref()
                .and_then(parse_content_range)
                .ok_or_else(|| FetchError::Protocol {
                    url: url.to_owned(),
                    reason: format!("HTTP 206 with an unusable Content-Range {content_range:?}"),
                })?;
            if start != have {
                return Err(Failed(FetchError::Protocol {
                    url: url.to_owned(),
                    reason: format!("asked to resume at byte {have}, the server sent {start}"),
                }));
            }
            (have, total)
        }
        200..=299 => {
            if have > 0 {
                info!(url, "the server ignores Range, downloading from the start");
            }
            (0, length)
        }
        416 if have > 0 => {
            // Maybe the .part is already complete ("bytes */N" with N == have).
            let complete = content_range
                .as_deref()
                .and_then(|v| v.strip_prefix("bytes */"))
                .and_then(|n| n.trim().parse::<u64>().ok())
                == Some(have);
            if !complete {
                return Err(Restart);
            }
            (have, Some(have))
        }
        _ => {
            return Err(Failed(FetchError::Http {
                url: url.to_owned(),
                status,
            }));
        }
    };

    // Hash what is kept, then continue the hash over the rest while writing it.
    file.set_len(start).map_err(io_err("truncating", part))?;
    file.seek(SeekFrom::Start(0))
        .map_err(io_err("reading", part))?;
    let (hasher, kept) = sha256_reader((&mut file).take(start)).map_err(io_err("reading", part))?;
    if kept != start {
        return Err(Failed(FetchError::Io {
            action: "reading",
            path: part.to_owned(),
            source: io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while read"),
        }));
    }
    file.seek(SeekFrom::Start(start))
        .map_err(io_err("seeking in", part))?;

    let name = url_file_name(url);
    let bar = Progress::maybe(progress, &format!("fetching {name}"), total);
    bar.set_position(start);
    let body = resp.into_body().into_reader();
    let mut reader = Sha256Reader::resume(ProgressReader::new(body, bar.clone()), hasher, start);
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut buf = vec![0u8; 256 * 1024];
    let body_result: io::Result<()> = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => out.write_all(&buf[..n]).map_err(io_err("writing", part))?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(e),
        }
    };
    bar.finish();
    let file = out.into_inner().map_err(|e| FetchError::Io {
        action: "writing",
        path: part.to_owned(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io_err("syncing", part))?;
    let (actual, got) = reader.finish();
    if let Err(source) = body_result {
        warn!(url, got, error = %source, "download interrupted, keeping the partial file");
        return Err(Failed(FetchError::Interrupted {
            url: url.to_owned(),
            part: part.to_owned(),
            got,
            source,
        }));
    }
    if let Some(total) = total
        && got != total
    {
        return Err(Failed(FetchError::Interrupted {
            url: url.to_owned(),
            part: part.to_owned(),
            got,
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("expected {total} bytes"),
            ),
        }));
    }
    Ok(actual)
}

/// A `Content-Range` header from the server, `bytes START-END/TOTAL` → (START, TOTAL if known).
/// Untrusted input; a fuzz target calls this.
pub fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start {
        return None;
    }
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().ok()?),
    };
    Some((start, total))
}

/// Copy a local file (`--from PATH` pointing at a download we should keep) into `dest`,
/// verifying like [`download`]. Returns the sha256.
pub fn copy_verified(
    src: &Path,
    dest: &Path,
    expected_sha256: Option<&str>,
) -> Result<String, FetchError> {
    let part = part_path(dest);
    let input = File::open(src).map_err(io_err("opening", src))?;
    let mut reader = Sha256Reader::new(input);
    let mut out = File::create(&part).map_err(io_err("creating", &part))?;
    io::copy(&mut reader, &mut out).map_err(io_err("copying to", &part))?;
    out.sync_all().map_err(io_err("syncing", &part))?;
    let (actual, _) = reader.finish();
    if let Some(expected) = expected_sha256.filter(|e| !e.eq_ignore_ascii_case(&actual)) {
        let _ = fs::remove_file(&part);
        return Err(FetchError::ChecksumMismatch {
            url: src.display().to_string(),
            expected: expected.to_ascii_lowercase(),
            actual,
        });
    }
    piforge_config::atomic::rename_durably(&part, dest)
        .map_err(io_err("renaming the copy to", dest))?;
    Ok(actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_parse() {
        assert_eq!(
            Source::parse("https://x/y.img.xz"),
            Source::Http("https://x/y.img.xz".into())
        );
        assert_eq!(
            Source::parse("HTTP://x/y"),
            Source::Http("HTTP://x/y".into())
        );
        assert_eq!(
            Source::parse("file:///a/b.img"),
            Source::File("/a/b.img".into())
        );
        assert_eq!(Source::parse("./b.img"), Source::File("./b.img".into()));
        assert_eq!(Source::parse("httpx.img"), Source::File("httpx.img".into()));
    }

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("bytes 9-5/20"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("http://127.0.0.1:3456/x"));
        assert!(is_loopback("http://localhost/x"));
        assert!(is_loopback("http://[::1]:80/x"));
        assert!(!is_loopback("https://downloads.raspberrypi.com/x"));
        assert!(!is_loopback("https://127.0.0.1.evil.example/x"));
        assert!(!is_loopback("https://127.0.0.1@evil.example/x"));
    }

    #[test]
    fn part_path_appends() {
        assert_eq!(
            part_path(Path::new("/c/x.img.xz")),
            PathBuf::from("/c/x.img.xz.part")
        );
    }
}
