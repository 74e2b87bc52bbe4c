//! cache: where downloads and extracted base images live, and the one call that turns "this
//! catalog entry / URL / file" into a verified, read-only raw base image on disk.
//!
//! Layout under the cache root (`$PIFORGE_CACHE_DIR`, else the platform cache dir + `piforge`):
//! ```text
//! images/<catalog name>/<download>.img.xz   verified download (renamed from .part after sha256)
//! images/<catalog name>/<download>.img      extracted base image, mode 0444, sparse
//! urls/<sha256(url)[..16]>/...              the same for `--from URL`, plus <download>.sha256
//! files/<sha256(file)[..16]>/<name>.img     extraction of a compressed `--from FILE`
//! ```
//! A file without `.part` is complete and verified, so its presence is the cache hit; base images
//! are never modified after extraction (builds copy or overlay them). Deliberately not here:
//! eviction and locking between concurrent piforge runs (two runs may download the same file
//! twice; the rename keeps the result consistent).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::acquire::catalog::{Entry, url_file_name};
use crate::acquire::decompress::{Format, decompress_to_checked, sniff_file};
use crate::acquire::fetch::{self, FetchError};
use crate::acquire::verify::{parse_sha256_file, sha256_file};

/// The cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// Its root; created on first use.
    pub root: PathBuf,
}

impl Cache {
    /// A cache rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// `$PIFORGE_CACHE_DIR`, else the platform cache dir (`$XDG_CACHE_HOME` or `~/.cache` on
    /// Linux, `~/Library/Caches` on macOS) + `piforge`, else a `piforge-cache` temp dir.
    pub fn default_root() -> PathBuf {
        match std::env::var_os("PIFORGE_CACHE_DIR").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => dirs::cache_dir()
                .map(|d| d.join("piforge"))
                .unwrap_or_else(|| std::env::temp_dir().join("piforge-cache")),
        }
    }

    /// The directory of a catalog image.
    pub fn catalog_dir(&self, entry: &Entry) -> PathBuf {
        self.root.join("images").join(&entry.name)
    }

    /// The directory of a `--from URL` download.
    pub fn url_dir(&self, url: &str) -> PathBuf {
        self.root.join("urls").join(short_key(url.as_bytes()))
    }

    /// The directory of the extraction of a compressed local file with this sha256.
    pub fn file_dir(&self, sha256: &str) -> PathBuf {
        self.root
            .join("files")
            .join(&sha256[..16.min(sha256.len())])
    }
}

fn short_key(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// What the build starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseRequest {
    /// A catalog image (`--image NAME`).
    Catalog(Entry),
    /// Any URL (`--from URL`).
    Url(String),
    /// A local file, raw or compressed (`--from PATH`).
    File(PathBuf),
}

/// A raw base image, ready to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImage {
    /// The raw `.img`. Read-only: never write to it (cache images are mode 0444; a raw
    /// `--from FILE` is the user's own file, used in place).
    pub path: PathBuf,
    /// A short name: the catalog name, or the file name without extensions.
    pub name: String,
    /// sha256 of the download / the compressed file, when there was one.
    pub download_sha256: Option<String>,
    /// The catalog entry, for `--image`.
    pub entry: Option<Entry>,
}

/// Make `req` available as a raw image on disk, downloading, verifying and extracting it once.
///
/// Catalog images: the published `<url>.sha256` must agree with the pin before anything is
/// downloaded ([`FetchError::PinDisagrees`] otherwise, reachable with `downcast_ref`); the
/// download must match the pin, the extraction the catalog's `extracted-sha256` when known.
/// URLs: the published `.sha256` is used when the server has one (a warning when it has none).
/// Raw local files are used in place.
pub fn base_image(req: &BaseRequest, cache: &Cache, progress: bool) -> Result<BaseImage> {
    match req {
        BaseRequest::Catalog(entry) => catalog_image(entry, cache, progress)
            .with_context(|| format!("preparing base image {}", entry.name)),
        BaseRequest::Url(url) => {
            url_image(url, cache, progress).with_context(|| format!("preparing base image {url}"))
        }
        BaseRequest::File(path) => file_image(path, cache, progress)
            .with_context(|| format!("preparing base image {}", path.display())),
    }
}

fn catalog_image(entry: &Entry, cache: &Cache, progress: bool) -> Result<BaseImage> {
    let dir = cache.catalog_dir(entry);
    let download = dir.join(entry.file_name());
    if !download.exists() && !image_path(&download).exists() {
        match fetch::published_sha256(&entry.url)? {
            Some(published) if published != entry.sha256 => {
                return Err(FetchError::PinDisagrees {
                    url: entry.url.clone(),
                    pinned: entry.sha256.clone(),
                    published,
                }
                .into());
            }
            Some(_) => info!(url = %entry.url, "published sha256 agrees with the catalog pin"),
            None => warn!(
                url = %entry.url,
                "no published .sha256 next to the image; relying on the catalog pin alone"
            ),
        }
        fetch::download(&entry.url, &download, Some(&entry.sha256), progress)?;
    }
    let path = extract_once(
        &download,
        entry.extracted_sha256.as_deref(),
        entry.extracted_size,
        progress,
    )?;
    Ok(BaseImage {
        path,
        name: entry.name.clone(),
        download_sha256: Some(entry.sha256.clone()),
        entry: Some(entry.clone()),
    })
}

fn url_image(url: &str, cache: &Cache, progress: bool) -> Result<BaseImage> {
    let dir = cache.url_dir(url);
    let name = url_file_name(url);
    anyhow::ensure!(!name.is_empty(), "{url} does not end in a file name");
    let download = dir.join(name);
    let sidecar = sidecar_path(&download);
    let recorded = fs::read_to_string(&sidecar)
        .ok()
        .and_then(|t| parse_sha256_file(&t, name).ok());
    let published = match (fetch::published_sha256(url), &recorded) {
        (Ok(p), _) => p,
        // Arbitrary servers answer missing files with HTML pages ("soft 404"): treat an
        // unusable checksum file like a missing one (the catalog path stays strict).
        (Err(e @ FetchError::ChecksumFile { .. }), _) => {
            warn!(url, error = %e, "ignoring an unusable published checksum file");
            None
        }
        // Offline with a complete cached copy: use it.
        (Err(e), Some(_)) if download.exists() => {
            warn!(url, error = %e, "cannot check for a newer image, using the cached one");
            recorded.clone()
        }
        (Err(e), _) => return Err(e.into()),
    };
    let fresh =
        download.exists() && recorded.is_some() && (published.is_none() || published == recorded);
    let sha256 = if fresh {
        recorded.expect("checked by `fresh`")
    } else {
        if download.exists() {
            info!(url, "the published image changed, downloading it again");
            remove_if_exists(&image_path(&download))?;
            remove_if_exists(&download)?;
        }
        if published.is_none() {
            warn!(
                url,
                "no published .sha256 next to the image: the download cannot be verified \
                 (it is hashed and the hash recorded)"
            );
        }
        let sha = fetch::download(url, &download, published.as_deref(), progress)?;
        piforge_config::atomic::write_atomic(&sidecar, format!("{sha}  {name}\n").as_bytes(), None)
            .with_context(|| format!("writing {}", sidecar.display()))?;
        sha
    };
    let path = extract_once(&download, None, None, progress)?;
    Ok(BaseImage {
        name: image_name(&path),
        path,
        download_sha256: Some(sha256),
        entry: None,
    })
}

fn file_image(path: &Path, cache: &Cache, progress: bool) -> Result<BaseImage> {
    let format = sniff_file(path)?;
    if !format.is_compressed() {
        let path =
            fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
        return Ok(BaseImage {
            name: image_name(&path),
            path,
            download_sha256: None,
            entry: None,
        });
    }
    let sha = sha256_file(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".to_owned());
    let dir = cache.file_dir(&sha);
    let img = dir.join(image_file_name(&name));
    let path = if img.exists() {
        img
    } else {
        info!(file = %path.display(), format = %format, "extracting into the cache");
        extract_to(path, &img, None, progress)?;
        img
    };
    Ok(BaseImage {
        name: image_name(&path),
        path,
        download_sha256: Some(sha),
        entry: None,
    })
}

/// The raw image next to a verified download: extracted once, then reused.
fn extract_once(
    download: &Path,
    expected_sha256: Option<&str>,
    expected_size: Option<u64>,
    progress: bool,
) -> Result<PathBuf> {
    let mut img = image_path(download);
    if img == download {
        if !sniff_file(download)?.is_compressed() {
            // A raw `.img` download is already the image: make it read-only and use it.
            set_read_only(download)?;
            return Ok(img);
        }
        // Compressed bytes named `.img`: extract next to it under another name.
        let mut name = download.as_os_str().to_owned();
        name.push(".extracted.img");
        img = PathBuf::from(name);
    }
    if img.exists() {
        if let Some(size) = expected_size {
            let have = fs::metadata(&img)
                .with_context(|| format!("reading {}", img.display()))?
                .len();
            anyhow::ensure!(
                have == size,
                "the cached image {} is {have} bytes, expected {size}; delete it and run again",
                img.display()
            );
        }
        return Ok(img);
    }
    if sniff_file(download)? == Format::Raw {
        // Raw bytes under a compressed-looking name: use them as they are.
        set_read_only(download)?;
        return Ok(download.to_owned());
    }
    extract_to(download, &img, expected_sha256, progress)?;
    Ok(img)
}

fn extract_to(src: &Path, img: &Path, expected_sha256: Option<&str>, progress: bool) -> Result<()> {
    let stats = decompress_to_checked(src, img, expected_sha256, progress)?;
    set_read_only(img)?;
    info!(
        image = %img.display(),
        bytes = stats.output_bytes,
        written = stats.data_bytes,
        seconds = stats.elapsed.as_secs_f64(),
        "base image extracted"
    );
    Ok(())
}

fn set_read_only(path: &Path) -> Result<()> {
    let mut perms = fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions();
    perms.set_readonly(true);
    fs::set_permissions(path, perms).with_context(|| format!("making {} read-only", path.display()))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

fn sidecar_path(download: &Path) -> PathBuf {
    let mut s = download.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// Where the extraction of `download` goes (same directory).
fn image_path(download: &Path) -> PathBuf {
    let name = download
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    download.with_file_name(image_file_name(&name))
}

/// `x.img.xz` → `x.img`, `x.zip` → `x.img`, `x.xz` → `x.img`, `x.img` → `x.img`.
pub fn image_file_name(download_name: &str) -> String {
    let lower = download_name.to_ascii_lowercase();
    let mut stem = download_name;
    for ext in [".xz", ".gz", ".zst", ".zstd", ".zip"] {
        if lower.ends_with(ext) {
            stem = &download_name[..download_name.len() - ext.len()];
            break;
        }
    }
    if stem.to_ascii_lowercase().ends_with(".img") {
        stem.to_owned()
    } else {
        format!("{stem}.img")
    }
}

fn image_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let img = image_file_name(&name);
    img.strip_suffix(".img").unwrap_or(&img).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        assert_eq!(image_file_name("2025-x-lite.img.xz"), "2025-x-lite.img");
        assert_eq!(image_file_name("a.IMG.GZ"), "a.IMG");
        assert_eq!(image_file_name("a.zip"), "a.img");
        assert_eq!(image_file_name("a.img.zst"), "a.img");
        assert_eq!(image_file_name("a.img"), "a.img");
        assert_eq!(image_file_name("disk"), "disk.img");
        assert_eq!(image_name(Path::new("/c/2025-x-lite.img")), "2025-x-lite");
    }

    #[test]
    fn default_root_honours_env() {
        // Only reads the variable when set; no mutation of the process environment here.
        let root = Cache::default_root();
        match std::env::var_os("PIFORGE_CACHE_DIR").filter(|v| !v.is_empty()) {
            Some(v) => assert_eq!(root, PathBuf::from(v)),
            None => assert!(root.ends_with("piforge") || root.ends_with("piforge-cache")),
        }
    }

    #[test]
    fn keys_are_stable_and_distinct() {
        let c = Cache::new("/c");
        assert_eq!(
            c.url_dir("https://a/x.img.xz"),
            c.url_dir("https://a/x.img.xz")
        );
        assert_ne!(
            c.url_dir("https://a/x.img.xz"),
            c.url_dir("https://b/x.img.xz")
        );
        assert_eq!(
            c.file_dir(&"ab".repeat(32)),
            PathBuf::from("/c/files/abababababababab")
        );
    }
}
