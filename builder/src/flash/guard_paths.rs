//! Windows: refuses a flash target that is, or is inside, what the flash reads from or keeps
//! (SECURITY finding 2), comparing canonical paths. Disks are named `\\.\PhysicalDriveN` and
//! are never a file of ours; the disk holding the image is refused by the system-disk and
//! mounted-volume rules of `devices` instead (Windows has no sysfs stack to follow).

use std::path::{Path, PathBuf};

use super::target::{Opened, TargetKind};

/// The protected paths of one flash run.
#[derive(Debug, Default)]
pub struct Guard {
    entries: Vec<(PathBuf, String, bool)>,
}

impl Guard {
    /// Nothing protected yet.
    pub fn new() -> Guard {
        Guard::default()
    }

    /// Protects `path` (ignored when it does not exist), called `what` in refusals.
    pub fn protect(&mut self, path: &Path, what: &str) {
        if let Ok(real) = std::fs::canonicalize(path) {
            let dir = real.is_dir();
            self.entries
                .push((real, format!("{what} ({})", path.display()), dir));
        }
    }

    /// Refuses a file target that is a protected file or lies in a protected directory.
    pub fn check(&self, t: &Opened) -> anyhow::Result<()> {
        if t.kind != TargetKind::File {
            return Ok(());
        }
        let real = t.real_path().unwrap_or_else(|_| t.path.clone());
        for (p, what, dir) in &self.entries {
            if (*dir && real.starts_with(p)) || (!*dir && &real == p) {
                anyhow::bail!(
                    "refusing {}: it is {}{what}; nothing was written (pick another target)",
                    t.path.display(),
                    if *dir { "inside " } else { "" }
                );
            }
        }
        Ok(())
    }
}
