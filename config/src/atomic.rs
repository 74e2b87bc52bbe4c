//! The one way piforge replaces a file that must survive a power cut (builder, firstboot and
//! node all use it): a new temp file with a unique name beside the destination (created
//! `O_EXCL`, so it never follows a planted symlink and two writers never share it), the
//! bytes, `fsync` of the file, `rename` over the destination, `fsync` of the directory. After
//! a crash at any point the destination holds the old bytes or the new ones, never a mix,
//! never nothing; a failed write removes its temp file.
//!
//! It deliberately doesn't lock: two writers of the same file each replace it whole, and the
//! last rename wins.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
#[cfg(unix)]
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Replaces `dest` with `bytes`, atomically and durably. With `mode`, the file gets exactly
/// that mode whatever the umask (`None`: the default, e.g. on a FAT that has no modes).
/// Windows has no modes: `mode` is ignored there (the user's files get the profile's ACL).
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    let mut f = AtomicFile::create(dest, mode)?;
    f.file()
        .write_all(bytes)
        .map_err(|e| context(e, "writing", f.tmp_path()))?;
    f.commit()
}

/// A file being written under a temp name, renamed over its destination by [`commit`]
/// (dropped without it: removed).
///
/// [`commit`]: AtomicFile::commit
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Creates a uniquely named temp file in `dest`'s directory (which must exist).
    pub fn create(dest: &Path, mode: Option<u32>) -> io::Result<AtomicFile> {
        #[cfg(not(unix))]
        let _ = mode;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = parent(dest);
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut last = None;
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let mut tmp_name = OsString::from(".");
            tmp_name.push(format!("{name}.{}.{n}.{nanos:x}.tmp", std::process::id()));
            let tmp = dir.join(tmp_name);
            let mut opts = OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            if let Some(m) = mode {
                // Created no wider than `m`; set exactly below (the umask may narrow it).
                opts.mode(m & 0o777);
            }
            match opts.open(&tmp) {
                Ok(file) => {
                    let f = AtomicFile {
                        file,
                        tmp,
                        dest: dest.to_path_buf(),
                        committed: false,
                    };
                    #[cfg(unix)]
                    if let Some(m) = mode {
                        f.file
                            .set_permissions(fs::Permissions::from_mode(m))
                            .map_err(|e| context(e, "setting the mode of", &f.tmp))?;
                    }
                    return Ok(f);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(context(e, "creating", &tmp)),
            }
        }
        Err(context(
            last.unwrap_or_else(|| io::Error::other("no free temp name")),
            "creating a temp file beside",
            dest,
        ))
    }

    /// The open temp file, to write (or chown) before committing.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Path of the temp file.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// fsyncs the temp file, renames it over the destination and fsyncs the directory. On
    /// error the temp file is removed and the destination is as it was (the error keeps the
    /// rename's kind, e.g. `ResourceBusy` for a bind-mounted destination).
    pub fn commit(mut self) -> io::Result<()> {
        self.file
            .sync_all()
            .map_err(|e| context(e, "syncing", &self.tmp))?;
        fs::rename(&self.tmp, &self.dest).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "renaming {} to {}: {e}",
                    self.tmp.display(),
                    self.dest.display()
                ),
            )
        })?;
        self.committed = true;
        sync_parent(&self.dest)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Renames a finished file (`tmp`, written by a streaming writer that needs a name of its
/// own, like a resumable `.part` download) over `dest` durably: fsync `tmp`, rename, fsync
/// the directory.
pub fn rename_durably(tmp: &Path, dest: &Path) -> io::Result<()> {
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| context(e, "syncing", tmp))?;
    fs::rename(tmp, dest).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("renaming {} to {}: {e}", tmp.display(), dest.display()),
        )
    })?;
    sync_parent(dest)
}

/// fsyncs the directory holding `path`, so a rename or removal in it survives a power cut.
/// File systems that cannot sync a directory (`EINVAL`) are skipped.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = parent(path);
    if cfg!(windows) {
        // Windows cannot open a directory as a file; NTFS journals the rename itself.
        return Ok(());
    }
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
        r => r.map_err(|e| context(e, "syncing directory", dir)),
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn context(e: io::Error, verb: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{verb} {}: {e}", path.display()))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn replaces_with_exact_mode_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("key");
        fs::write(&p, "old").unwrap();
        write_atomic(&p, b"new", Some(0o600)).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        write_atomic(&p, b"x", Some(0o755)).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        assert!(leftovers(d.path()).is_empty());
    }

    #[test]
    fn temp_names_are_unique_and_a_dropped_file_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let a = AtomicFile::create(&p, None).unwrap();
        let b = AtomicFile::create(&p, None).unwrap();
        assert_ne!(a.tmp_path(), b.tmp_path());
        drop(a);
        drop(b);
        assert!(leftovers(d.path()).is_empty());
        assert!(!p.exists(), "an uncommitted write created the destination");
    }

    #[test]
    fn a_failed_rename_keeps_the_destination_and_removes_the_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("dir");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("inside"), "x").unwrap();
        let e = write_atomic(&p, b"new", None).unwrap_err();
        assert!(e.to_string().contains("renaming"), "{e}");
        assert!(p.join("inside").exists());
        assert!(leftovers(d.path()).is_empty());
    }
}
