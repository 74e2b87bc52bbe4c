//! verify: sha256 of what we download and extract, and the published `.sha256` format.
//!
//! [`Sha256Reader`] hashes while streaming so a download or an extraction is read exactly once;
//! [`parse_sha256_file`] reads the checksum files published next to images (`sha256sum` output,
//! and the BSD `SHA256 (name) = hex` form). Deliberately no signature checking (Raspberry Pi does
//! not sign its images) and no policy: callers decide what a mismatch means.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Failures of checksum handling.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Reading a file to hash it failed.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file being hashed.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A published checksum file could not be understood, or does not mention the file.
    #[error("checksum file for {file_name} is unusable: {reason}")]
    BadChecksumFile {
        /// The file whose checksum was looked for.
        file_name: String,
        /// What is wrong with the checksum file.
        reason: String,
    },
}

/// A `Read` adapter that computes the sha256 and the length of everything read through it.
pub struct Sha256Reader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Sha256Reader<R> {
    /// Hash everything read from `inner`, starting from nothing.
    pub fn new(inner: R) -> Self {
        Self::resume(inner, Sha256::new(), 0)
    }

    /// Continue a hash that already covers `bytes` bytes (e.g. the part of a download that is
    /// already on disk).
    pub fn resume(inner: R, hasher: Sha256, bytes: u64) -> Self {
        Sha256Reader {
            inner,
            hasher,
            bytes,
        }
    }

    /// Bytes hashed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The inner reader, e.g. to look at the HTTP body's state.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Finish: the lowercase hex sha256 and the number of bytes hashed.
    pub fn finish(self) -> (String, u64) {
        (hex::encode(self.hasher.finalize()), self.bytes)
    }
}

impl<R: Read> Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Hash a whole reader: lowercase hex sha256 and its length. Also used to seed a resumed
/// download's hash with the bytes already on disk.
pub fn sha256_reader(r: impl Read) -> io::Result<(Sha256, u64)> {
    let mut hasher = Sha256::new();
    let mut r = r;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher, total))
}

/// The lowercase hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, VerifyError> {
    let io_err = |source| VerifyError::Io {
        path: path.to_owned(),
        source,
    };
    let f = File::open(path).map_err(io_err)?;
    let (hasher, _) = sha256_reader(f).map_err(io_err)?;
    Ok(hex::encode(hasher.finalize()))
}

/// `s` as a lowercase 64-digit hex sha256, or `None` if it is not one.
pub fn normalize_sha256(s: &str) -> Option<String> {
    let s = s.trim();
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

/// Find the sha256 of `file_name` in a published checksum file.
///
/// Accepts `sha256sum` output (`hex  name`, `hex *name`, one or more lines), the BSD form
/// (`SHA256 (name) = hex`) and a bare hash. Names are compared by their last path component, so
/// `hex  ./dir/name` matches `name`. A file listing other names only is an error: taking the
/// wrong hash would make every verification meaningless.
pub fn parse_sha256_file(text: &str, file_name: &str) -> Result<String, VerifyError> {
    let want = base_name(file_name);
    let bad = |reason: String| VerifyError::BadChecksumFile {
        file_name: want.to_owned(),
        reason,
    };
    let mut seen = Vec::new();
    let mut bare = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (hash, name) = if let Some(rest) = line.strip_prefix("SHA256 (") {
            let Some((name, hash)) = rest.rsplit_once(") = ") else {
                return Err(bad(format!("malformed line {:?}", truncate(line))));
            };
            (hash.trim(), Some(name))
        } else {
            match line.split_once(char::is_whitespace) {
                Some((hash, name)) => {
                    let name = name.trim_start();
                    (hash, Some(name.strip_prefix('*').unwrap_or(name)))
                }
                None => (line, None),
            }
        };
        let Some(hash) = normalize_sha256(hash) else {
            return Err(bad(format!("{:?} is not a sha256", truncate(hash))));
        };
        match name {
            Some(name) if base_name(name) == want => return Ok(hash),
            Some(name) => seen.push(base_name(name).to_owned()),
            None => bare.push(hash),
        }
    }
    match (bare.len(), seen.is_empty()) {
        (1, true) => Ok(bare.remove(0)),
        (0, true) => Err(bad("it is empty".to_owned())),
        (0, false) => Err(bad(format!("it only lists {}", seen.join(", ")))),
        _ => Err(bad("it holds several hashes without names".to_owned())),
    }
}

fn base_name(name: &str) -> &str {
    name.rsplit(['/', '\\']).next().unwrap_or(name)
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: &str = "e6a69b5a5a8cd4afc0e9dbdc8404f6fed7c93e0d1796f438e7c780e0eac2d482";

    #[test]
    fn sha256_of_known_input() {
        let mut r = Sha256Reader::new(&b"abc"[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        let (hex, n) = r.finish();
        assert_eq!(n, 3);
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn resumed_hash_equals_whole_hash() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (head, _) = sha256_reader(&data[..40_000]).unwrap();
        let mut r = Sha256Reader::resume(&data[40_000..], head, 40_000);
        io::copy(&mut r, &mut io::sink()).unwrap();
        let (resumed, n) = r.finish();
        let (whole, _) = sha256_reader(&data[..]).unwrap();
        assert_eq!(n, 100_000);
        assert_eq!(resumed, hex::encode(whole.finalize()));
    }

    #[test]
    fn sha256_file_hashes_contents_and_names_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"abc").unwrap();
        assert!(sha256_file(&p).unwrap().starts_with("ba7816bf"));
        let err = sha256_file(&dir.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn published_format_is_parsed() {
        let name = "2025-11-24-raspios-bookworm-arm64-lite.img.xz";
        assert_eq!(
            parse_sha256_file(&format!("{H}  {name}\n"), name).unwrap(),
            H
        );
        assert_eq!(parse_sha256_file(&format!("{H} *{name}"), name).unwrap(), H);
        let upper = H.to_uppercase();
        assert_eq!(
            parse_sha256_file(&format!("{upper}  ./x/{name}"), name).unwrap(),
            H
        );
        assert_eq!(
            parse_sha256_file(&format!("SHA256 ({name}) = {H}"), name).unwrap(),
            H
        );
        assert_eq!(parse_sha256_file(&format!("{H}\n"), name).unwrap(), H);
        let other = "1b3e49b67b15050a9f20a60267c145e6d468dc9559dd9cd945130a11401a49ff";
        let two = format!("{other}  a.img.xz\n{H}  {name}\n");
        assert_eq!(parse_sha256_file(&two, name).unwrap(), H);
    }

    #[test]
    fn wrong_or_missing_entries_are_refused() {
        let e = parse_sha256_file(&format!("{H}  other.img.xz"), "mine.img.xz").unwrap_err();
        assert!(e.to_string().contains("only lists other.img.xz"), "{e}");
        let e = parse_sha256_file("", "mine.img.xz").unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = parse_sha256_file("<html>404</html>", "mine.img.xz").unwrap_err();
        assert!(e.to_string().contains("not a sha256"), "{e}");
        let e = parse_sha256_file(&format!("{}  mine.img.xz", &H[1..]), "mine.img.xz");
        assert!(e.is_err());
    }

    proptest! {
        #[test]
        fn parse_sha256_file_never_panics(text in ".{0,300}", name in "[a-z./*]{0,20}") {
            let _ = parse_sha256_file(&text, &name);
        }

        #[test]
        fn parse_finds_the_named_line(hash in "[0-9a-fA-F]{64}", name in "[a-z0-9.-]{1,30}") {
            let text = format!("{}  {}\n", hash, name);
            prop_assert_eq!(parse_sha256_file(&text, &name).unwrap(), hash.to_ascii_lowercase());
        }
    }
}
