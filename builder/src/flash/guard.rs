//! Refuses a flash target that is, contains, or is inside what the flash reads from or keeps
//! (SECURITY finding 2): the image being written (a batch's image or `--image`, and its bmap),
//! the batch directory and the cache directory.
//!
//! Everything is compared by identity, never by name: a protected path is recorded as its inode
//! (`st_dev`, `st_ino`) plus the stack of block devices its filesystem lives on (the partition,
//! its whole disk, dm/md slaves, loop devices and the files behind them, from sysfs). Then an
//! opened target ([`Opened`], its `fstat`) is refused when
//! - a file target is a protected file (also through a hard link or symlink), is the backing
//!   file of a loop device a protected path lives on, or has a protected directory among its
//!   ancestors;
//! - a device target is in the stack of a protected path (the disk holding the image), or is a
//!   loop device whose backing file is a protected file or lies inside a protected directory.
//!
//! Limits: filesystems on anonymous devices (tmpfs, overlayfs, btrfs subvolumes) have no sysfs
//! stack; only inode comparisons protect what lives there. Deliberately not here: the safety
//! rules for devices (`devices`), opening targets (`target`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::target::{Opened, TargetKind};
use crate::devices::{SysRoot, sysfs};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Inode {
    dev: u64,
    ino: u64,
}

impl Inode {
    fn of(m: &std::fs::Metadata) -> Inode {
        Inode {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

#[derive(Debug)]
struct Entry {
    /// E.g. `the image being written (out/base.img)`.
    what: String,
    inode: Inode,
    dir: bool,
    /// Block devices its filesystem sits on.
    devices: Vec<(u32, u32)>,
    /// Files behind loop devices among them.
    files: Vec<Inode>,
}

/// The protected paths of one flash run.
#[derive(Debug)]
pub struct Guard {
    root: SysRoot,
    entries: Vec<Entry>,
}

fn devnum(dev: u64) -> (u32, u32) {
    // `dev_t` is 64 bits on Linux, 32 on macOS.
    #[allow(clippy::unnecessary_cast)]
    let dev = dev as rustix::fs::Dev;
    (rustix::fs::major(dev), rustix::fs::minor(dev))
}

/// A refusal, worded for the user.
fn refuse(t: &Opened, why: String) -> anyhow::Error {
    anyhow::anyhow!(
        "refusing {}: {why}; nothing was written (pick another target)",
        t.path.display()
    )
}

impl Guard {
    /// Nothing protected yet, on this machine.
    pub fn new() -> Guard {
        Guard::with_root(SysRoot::host())
    }

    /// Nothing protected yet, devices described under `root` (tests).
    pub fn with_root(root: SysRoot) -> Guard {
        Guard {
            root,
            entries: Vec::new(),
        }
    }

    /// Protects `path` (a file or directory; ignored when it does not exist), called `what` in
    /// refusals (e.g. "the cache directory").
    pub fn protect(&mut self, path: &Path, what: &str) {
        let Ok(m) = std::fs::metadata(path) else {
            return;
        };
        let mut devices = Vec::new();
        let mut files = Vec::new();
        let mut todo = vec![devnum(m.dev())];
        // Loop devices on files on loop devices...: bounded.
        while let Some(d) = todo.pop() {
            if devices.contains(&d) || devices.len() >= 256 {
                continue;
            }
            let st = sysfs::stack_of(&self.root, d);
            for f in st.files {
                if let Ok(fm) = std::fs::metadata(&f) {
                    files.push(Inode::of(&fm));
                    todo.push(devnum(fm.dev()));
                }
            }
            for x in st.devices {
                if !devices.contains(&x) {
                    devices.push(x);
                }
            }
        }
        self.entries.push(Entry {
            what: format!("{what} ({})", path.display()),
            inode: Inode::of(&m),
            dir: m.is_dir(),
            devices,
            files,
        });
    }

    /// The protected directory `p` is inside (`p` itself or an ancestor), if any.
    fn dir_holding(&self, p: &Path) -> Option<&Entry> {
        p.ancestors().find_map(|a| {
            let m = std::fs::metadata(a).ok()?;
            let i = Inode::of(&m);
            self.entries.iter().find(|e| e.dir && e.inode == i)
        })
    }

    /// Refuses `t` when it is, holds or is inside a protected path (see the module docs).
    pub fn check(&self, t: &Opened) -> anyhow::Result<()> {
        let me = Inode {
            dev: t.id.dev,
            ino: t.id.ino,
        };
        match t.kind {
            TargetKind::File => {
                if let Some(e) = self.entries.iter().find(|e| !e.dir && e.inode == me) {
                    return Err(refuse(t, format!("it is {}", e.what)));
                }
                if let Some(e) = self.entries.iter().find(|e| e.files.contains(&me)) {
                    return Err(refuse(
                        t,
                        format!("it holds {} (as the file behind a loop device)", e.what),
                    ));
                }
                let real = t.real_path().unwrap_or_else(|_| t.path.clone());
                if let Some(e) = real.parent().and_then(|p| self.dir_holding(p)) {
                    return Err(refuse(t, format!("it is inside {}", e.what)));
                }
            }
            TargetKind::Device => {
                let d = devnum(t.id.rdev);
                if let Some(e) = self.entries.iter().find(|e| e.devices.contains(&d)) {
                    return Err(refuse(t, format!("it holds {}", e.what)));
                }
                for f in sysfs::stack_of(&self.root, d).files {
                    let Ok(m) = std::fs::metadata(&f) else {
                        continue;
                    };
                    let i = Inode::of(&m);
                    if let Some(e) = self.entries.iter().find(|e| !e.dir && e.inode == i) {
                        return Err(refuse(t, format!("its backing file is {}", e.what)));
                    }
                    let real = std::fs::canonicalize(&f).unwrap_or(f);
                    if let Some(e) = self.dir_holding(&real) {
                        return Err(refuse(
                            t,
                            format!("its backing file {} is inside {}", real.display(), e.what),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Default for Guard {
    fn default() -> Guard {
        Guard::new()
    }
}

/// Protected paths: `protected` as (path, what).
pub fn guard_of(protected: &[(PathBuf, &str)]) -> Guard {
    let mut g = Guard::new();
    for (p, what) in protected {
        g.protect(p, what);
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::target::open_target;

    #[test]
    fn the_source_its_links_and_files_in_protected_dirs_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("a.img");
        std::fs::write(&img, b"image").unwrap();
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::hard_link(&img, d.path().join("hard.img")).unwrap();
        std::os::unix::fs::symlink(&img, d.path().join("soft.img")).unwrap();
        let g = guard_of(&[
            (img.clone(), "the image being written"),
            (out.clone(), "the batch directory"),
        ]);
        for t in ["a.img", "hard.img", "soft.img"] {
            let o = open_target(&d.path().join(t), true).unwrap();
            let e = g.check(&o).unwrap_err().to_string();
            assert!(e.contains("it is the image being written"), "{t}: {e}");
        }
        let o = open_target(&out.join("sub.img"), true).unwrap();
        let e = g.check(&o).unwrap_err().to_string();
        assert!(e.contains("inside the batch directory"), "{e}");
        o.discard();
        assert!(!out.join("sub.img").exists());
        let o = open_target(&d.path().join("other.img"), true).unwrap();
        g.check(&o).unwrap();
    }
}
