//! Executes planned [`Action`]s on a root prefix and a boot directory, converging: each action
//! first compares what is there with what should be there and changes only the difference, so a
//! second run (or a run resumed after a power cut) is a no-op for what is already done.
//!
//! Files are written through a temporary file in the same directory, fsynced, then renamed over
//! the target, so a reader (or the next boot) sees the old or the new file, never half of one.
//! What a root prefix cannot express (owners when not running as root, `sync`, the running
//! hostname) goes through the small [`System`] trait. This module decides nothing: the plan does.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use piforge_config::atomic::AtomicFile;
use tracing::{debug, info};

use crate::action::{Action, Base, Dirs, Owner};

/// What the prefix cannot express.
pub trait System {
    /// Sets the owner of `path` (not following symlinks).
    fn chown(&mut self, path: &Path, owner: Owner) -> io::Result<()>;
    /// The owner of `path` as this system sees it.
    fn owner(&self, path: &Path) -> io::Result<Owner>;
    /// Flushes every file system to stable storage.
    fn sync(&mut self) -> io::Result<()>;
    /// Sets the running system's hostname.
    fn set_hostname(&mut self, name: &str) -> io::Result<()>;
    /// The running system's hostname, if it can be known.
    fn hostname(&self) -> Option<String>;
    /// Waits `d` (polling for hardware that is still appearing, or for the OS's first boot).
    fn sleep(&mut self, d: std::time::Duration);
    /// The units systemd has a queued or running job for; `None` when systemd cannot be asked
    /// (a root prefix, no `systemctl`).
    fn systemd_jobs(&self) -> Option<Vec<String>> {
        None
    }
    /// Unmounts `path` (systemd's transient `/etc/machine-id`), so the file beneath it, on
    /// disk, can be written.
    fn unmount(&mut self, path: &Path) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("cannot unmount {} here", path.display()),
        ))
    }
}

/// The real machine. Owners are set for real only when running as root; otherwise (a prefix
/// build as a normal user) they are remembered, like [`RecordingSystem`].
#[derive(Debug)]
pub struct RealSystem {
    is_root: bool,
    touch_kernel: bool,
    recorded: RecordingSystem,
}

impl RealSystem {
    /// `touch_kernel`: the root is `/` of the running system, so the kernel hostname is ours to
    /// set; with a prefix it is not.
    pub fn new(touch_kernel: bool) -> RealSystem {
        // /proc/self belongs to the effective uid of the process.
        let is_root = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        RealSystem {
            is_root,
            touch_kernel,
            recorded: RecordingSystem::default(),
        }
    }
}

impl System for RealSystem {
    fn chown(&mut self, path: &Path, owner: Owner) -> io::Result<()> {
        if self.is_root {
            std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid))
        } else {
            self.recorded.chown(path, owner)
        }
    }

    fn owner(&self, path: &Path) -> io::Result<Owner> {
        if self.is_root {
            let m = fs::symlink_metadata(path)?;
            Ok(Owner {
                uid: m.uid(),
                gid: m.gid(),
            })
        } else {
            self.recorded.owner(path)
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        // Every file we write is fsynced with its directory; this catches the rest (removals on
        // the FAT). `sync` is in coreutils on every Raspberry Pi OS.
        match std::process::Command::new("sync").status() {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn set_hostname(&mut self, name: &str) -> io::Result<()> {
        if self.touch_kernel {
            fs::write("/proc/sys/kernel/hostname", name)
        } else {
            self.recorded.set_hostname(name)
        }
    }

    fn hostname(&self) -> Option<String> {
        if self.touch_kernel {
            fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        } else {
            self.recorded.hostname()
        }
    }

    fn sleep(&mut self, d: std::time::Duration) {
        std::thread::sleep(d);
    }

    fn systemd_jobs(&self) -> Option<Vec<String>> {
        if !self.touch_kernel {
            return None;
        }
        let out = std::process::Command::new("systemctl")
            .args(["list-jobs", "--no-legend", "--no-pager", "--plain"])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| parse_jobs(&String::from_utf8_lossy(&out.stdout)))
    }

    fn unmount(&mut self, path: &Path) -> io::Result<()> {
        if !self.touch_kernel {
            return self.recorded.unmount(path);
        }
        let st = std::process::Command::new("umount").arg(path).status()?;
        if st.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "umount {} failed: {st}",
                path.display()
            )))
        }
    }
}

/// A system that remembers owners, syncs and hostnames instead of asking the kernel: for tests
/// and for prefix runs by a normal user. Files it has not seen are owned by root.
#[derive(Debug, Default, Clone)]
pub struct RecordingSystem {
    /// Owner of each path that was chowned.
    pub owners: BTreeMap<PathBuf, Owner>,
    /// How many times `sync` was called.
    pub syncs: usize,
    /// The hostname set last.
    pub running_hostname: Option<String>,
    /// Time asked to sleep, in total (nothing actually sleeps).
    pub slept: std::time::Duration,
    /// Paths unmounted, in order (nothing is actually unmounted).
    pub unmounted: Vec<PathBuf>,
}

impl System for RecordingSystem {
    fn chown(&mut self, path: &Path, owner: Owner) -> io::Result<()> {
        fs::symlink_metadata(path)?;
        // Temporary files are renamed over their target, which is chowned after the rename.
        if !path.to_string_lossy().ends_with(".piforge-tmp") {
            self.owners.insert(path.to_path_buf(), owner);
        }
        Ok(())
    }

    fn owner(&self, path: &Path) -> io::Result<Owner> {
        fs::symlink_metadata(path)?;
        Ok(self.owners.get(path).copied().unwrap_or(Owner::ROOT))
    }

    fn sync(&mut self) -> io::Result<()> {
        self.syncs += 1;
        Ok(())
    }

    fn set_hostname(&mut self, name: &str) -> io::Result<()> {
        self.running_hostname = Some(name.to_string());
        Ok(())
    }

    fn hostname(&self) -> Option<String> {
        self.running_hostname.clone()
    }

    fn sleep(&mut self, d: std::time::Duration) {
        self.slept += d;
    }

    fn unmount(&mut self, path: &Path) -> io::Result<()> {
        self.unmounted.push(path.to_path_buf());
        Ok(())
    }
}

/// What applying the plan did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// One line per action that changed something (never file contents).
    pub changed: Vec<String>,
    /// Actions that were already satisfied.
    pub unchanged: usize,
    /// True when a step limit stopped the run early.
    pub stopped_early: bool,
}

/// Applies `actions` in order. `step_limit` stops after that many actions (a simulated power
/// cut, for tests); `None` runs them all.
pub fn apply(
    actions: &[Action],
    dirs: &Dirs,
    sys: &mut dyn System,
    step_limit: Option<usize>,
) -> Result<Applied> {
    let mut out = Applied::default();
    for (i, a) in actions.iter().enumerate() {
        if step_limit.is_some_and(|n| i >= n) {
            out.stopped_early = true;
            break;
        }
        let changed = apply_one(a, dirs, sys).with_context(|| format!("applying: {a}"))?;
        if changed {
            info!(step = i, "{a}");
            out.changed.push(a.to_string());
        } else {
            debug!(step = i, "already done: {a}");
            out.unchanged += 1;
        }
    }
    Ok(out)
}

/// Applies one action; returns whether anything changed.
fn apply_one(a: &Action, dirs: &Dirs, sys: &mut dyn System) -> Result<bool> {
    match a {
        Action::Write {
            loc,
            contents,
            mode,
            owner,
            create_only,
        } => {
            let p = loc.under(dirs);
            if *create_only && fs::symlink_metadata(&p).is_ok() {
                return Ok(false);
            }
            ensure_file(&p, contents, *mode, *owner, loc.base, sys)
        }
        Action::Copy {
            from,
            to,
            mode,
            owner,
            create_only,
        } => {
            let src = from.under(dirs);
            let dst = to.under(dirs);
            if *create_only && fs::symlink_metadata(&dst).is_ok() {
                return Ok(false);
            }
            let bytes = match fs::read(&src) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound && dst.exists() => return Ok(false),
                Err(e) => return Err(e).with_context(|| format!("reading {}", src.display())),
            };
            ensure_file(&dst, &bytes, *mode, *owner, to.base, sys)
        }
        Action::Mkdir { loc, mode, owner } => {
            let p = loc.under(dirs);
            let mut changed = false;
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => anyhow::bail!("{} exists and is not a directory", p.display()),
                Err(_) => {
                    fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
                    changed = true;
                }
            }
            changed |= ensure_meta(&p, *mode, *owner, loc.base, sys)?;
            Ok(changed)
        }
        Action::Symlink { loc, target } => {
            let p = loc.under(dirs);
            if fs::read_link(&p).is_ok_and(|t| t == Path::new(target)) {
                return Ok(false);
            }
            create_parent(&p)?;
            let tmp = tmp_path(&p);
            let _ = fs::remove_file(&tmp);
            std::os::unix::fs::symlink(target, &tmp)
                .with_context(|| format!("creating link {}", tmp.display()))?;
            if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            }
            fs::rename(&tmp, &p).with_context(|| format!("renaming link to {}", p.display()))?;
            sync_dir(&p);
            Ok(true)
        }
        Action::Remove { loc } => {
            let p = loc.under(dirs);
            match fs::symlink_metadata(&p) {
                Err(_) => Ok(false),
                Ok(m) if m.is_dir() => {
                    fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
                    sync_dir(&p);
                    Ok(true)
                }
                Ok(_) => {
                    fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
                    sync_dir(&p);
                    Ok(true)
                }
            }
        }
        Action::Rename { from, to } => {
            let f = from.under(dirs);
            let t = to.under(dirs);
            if fs::symlink_metadata(&t).is_ok() || fs::symlink_metadata(&f).is_err() {
                return Ok(false);
            }
            create_parent(&t)?;
            fs::rename(&f, &t)
                .with_context(|| format!("renaming {} to {}", f.display(), t.display()))?;
            sync_dir(&t);
            Ok(true)
        }
        Action::SetHostname(h) => {
            if sys.hostname().as_deref() == Some(h.as_str()) {
                return Ok(false);
            }
            sys.set_hostname(h)
                .context("setting the running hostname")?;
            Ok(true)
        }
    }
}

/// Makes `p` hold `contents` with `mode`/`owner`, writing only if something differs.
fn ensure_file(
    p: &Path,
    contents: &[u8],
    mode: u32,
    owner: Owner,
    base: Base,
    sys: &mut dyn System,
) -> Result<bool> {
    let same = fs::symlink_metadata(p).is_ok_and(|m| m.is_file())
        && fs::read(p).is_ok_and(|c| c == contents);
    if same {
        return ensure_meta(p, mode, owner, base, sys);
    }
    write_atomic(p, contents, mode, owner, base, sys)?;
    Ok(true)
}

/// Fixes mode and owner of an existing path; returns whether it changed them. The FAT has
/// neither modes nor owners, so boot paths are left alone.
fn ensure_meta(
    p: &Path,
    mode: u32,
    owner: Owner,
    base: Base,
    sys: &mut dyn System,
) -> Result<bool> {
    if base == Base::Boot {
        return Ok(false);
    }
    let mut changed = false;
    let m = fs::symlink_metadata(p).with_context(|| format!("inspecting {}", p.display()))?;
    if m.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(p, fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting mode of {}", p.display()))?;
        changed = true;
    }
    if sys.owner(p).ok() != Some(owner) {
        sys.chown(p, owner)
            .with_context(|| format!("setting owner of {}", p.display()))?;
        changed = true;
    }
    Ok(changed)
}

/// Writes `contents` to a uniquely named temporary file next to `p`, sets mode and owner,
/// fsyncs, renames it over `p` and fsyncs the directory ([`piforge_config::atomic`]). On error
/// the temporary file is removed and `p` is untouched.
pub fn write_atomic(
    p: &Path,
    contents: &[u8],
    mode: u32,
    owner: Owner,
    base: Base,
    sys: &mut dyn System,
) -> Result<()> {
    create_parent(p)?;
    let result = (|| -> Result<()> {
        // The FAT has no modes: only the root file system gets one.
        let mut f = AtomicFile::create(p, (base == Base::Root).then_some(mode))
            .with_context(|| format!("writing {}", p.display()))?;
        f.file()
            .write_all(contents)
            .with_context(|| format!("writing {}", f.tmp_path().display()))?;
        if base == Base::Root {
            sys.chown(f.tmp_path(), owner)
                .with_context(|| format!("setting owner of {}", f.tmp_path().display()))?;
        }
        if fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()) {
            anyhow::bail!("{} is a directory", p.display());
        }
        match f.commit() {
            // A file bind-mounted over (systemd's transient /etc/machine-id before it is
            // committed, or a container's /etc/hostname) cannot be replaced, only rewritten.
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
                tracing::warn!(path = %p.display(), "busy (a mount point?): rewriting in place");
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(p)
                    .with_context(|| format!("opening {}", p.display()))?;
                f.write_all(contents)
                    .with_context(|| format!("writing {}", p.display()))?;
                f.sync_all()
                    .with_context(|| format!("syncing {}", p.display()))?;
                Ok(())
            }
            r => r.with_context(|| format!("renaming over {}", p.display())),
        }
    })();
    // On error the temp file is gone already (AtomicFile removes an uncommitted one).
    result?;
    if base == Base::Root {
        // The recording system keys owners by path: carry the temp file's owner over.
        sys.chown(p, owner)
            .with_context(|| format!("setting owner of {}", p.display()))?;
    }
    Ok(())
}

fn tmp_path(p: &Path) -> PathBuf {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    p.with_file_name(format!(".{name}.piforge-tmp"))
}

fn create_parent(p: &Path) -> Result<()> {
    if let Some(dir) = p.parent()
        && !dir.is_dir()
    {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// fsyncs the directory holding `p`, so a rename or removal survives a power cut. Best effort:
/// some file systems refuse to open directories for sync.
fn sync_dir(p: &Path) {
    if let Some(dir) = p.parent()
        && let Ok(d) = fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// The units with a job in `systemctl list-jobs --no-legend` output (`ID UNIT TYPE STATE`).
pub fn parse_jobs(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next()?;
            let unit = f.next()?;
            id.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| unit.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Loc;

    fn dirs(t: &tempfile::TempDir) -> Dirs {
        let d = Dirs {
            root: t.path().join("root"),
            boot: t.path().join("boot"),
        };
        fs::create_dir_all(&d.root).unwrap();
        fs::create_dir_all(&d.boot).unwrap();
        d
    }

    #[test]
    fn write_is_idempotent_and_fixes_mode_and_owner() {
        let t = tempfile::tempdir().unwrap();
        let d = dirs(&t);
        let mut sys = RecordingSystem::default();
        let a = vec![Action::Write {
            loc: Loc::root("etc/x/y"),
            contents: b"hello\n".to_vec(),
            mode: 0o600,
            owner: Owner {
                uid: 1000,
                gid: 1000,
            },
            create_only: false,
        }];
        let r = apply(&a, &d, &mut sys, None).unwrap();
        assert_eq!(r.changed.len(), 1);
        let p = d.root.join("etc/x/y");
        assert_eq!(fs::read(&p).unwrap(), b"hello\n");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        assert_eq!(
            sys.owner(&p).unwrap(),
            Owner {
                uid: 1000,
                gid: 1000
            }
        );
        let r = apply(&a, &d, &mut sys, None).unwrap();
        assert!(r.changed.is_empty(), "{r:?}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let r = apply(&a, &d, &mut sys, None).unwrap();
        assert_eq!(r.changed.len(), 1, "mode drift is repaired");
        assert!(!d.root.join("etc/x/.y.piforge-tmp").exists());
    }

    #[test]
    fn symlink_remove_rename_converge() {
        let t = tempfile::tempdir().unwrap();
        let d = dirs(&t);
        let mut sys = RecordingSystem::default();
        fs::create_dir_all(d.root.join("home/pi")).unwrap();
        fs::write(d.boot.join("secret"), "k").unwrap();
        let a = vec![
            Action::Symlink {
                loc: Loc::root("etc/localtime"),
                target: "/usr/share/zoneinfo/UTC".into(),
            },
            Action::Rename {
                from: Loc::root("home/pi"),
                to: Loc::root("home/alice"),
            },
            Action::Remove {
                loc: Loc::boot("secret"),
            },
        ];
        assert_eq!(apply(&a, &d, &mut sys, None).unwrap().changed.len(), 3);
        assert!(d.root.join("home/alice").is_dir());
        assert!(!d.boot.join("secret").exists());
        assert!(apply(&a, &d, &mut sys, None).unwrap().changed.is_empty());
    }

    #[test]
    fn failed_write_leaves_target_untouched() {
        let t = tempfile::tempdir().unwrap();
        let d = dirs(&t);
        let mut sys = RecordingSystem::default();
        // A directory where the file should go: the rename must fail, the dir survives.
        fs::create_dir_all(d.root.join("etc/hostname")).unwrap();
        let a = vec![Action::Write {
            loc: Loc::root("etc/hostname"),
            contents: b"x\n".to_vec(),
            mode: 0o644,
            owner: Owner::ROOT,
            create_only: false,
        }];
        let e = apply(&a, &d, &mut sys, None).unwrap_err();
        assert!(format!("{e:#}").contains("etc/hostname"), "{e:#}");
        assert!(d.root.join("etc/hostname").is_dir());
        assert!(!d.root.join("etc/.hostname.piforge-tmp").exists());
    }
}
