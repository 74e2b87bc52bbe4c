//! Taking a checked disk from the operating system before it is written: [`unmount`] its
//! file systems, then prove with an exclusive open ([`probe_exclusive`], [`exclusive_flag`])
//! that nothing holds it any more.
//!
//! Deliberately not here: deciding whether the disk may be written (`target`, `safety`) and
//! the open the flash writes through (`flash::target`).

#[cfg(unix)]
use std::fs;
#[cfg(unix)]
use std::path::Path;

#[cfg(unix)]
use super::SafetyError;
use super::Target;

/// The `custom_flags` bit that makes an open of a block device exclusive: on Linux `O_EXCL`
/// (fails with EBUSY while anything has the disk mounted or exclusively open, and keeps the
/// kernel from mounting it while we hold it); 0 elsewhere.
pub fn exclusive_flag() -> i32 {
    #[cfg(target_os = "linux")]
    {
        rustix::fs::OFlags::EXCL.bits() as i32
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Opens `path` read-only and exclusively, then closes it: [`SafetyError::InUse`] on EBUSY.
/// (Unix only: Windows locks the volumes when it opens the disk.)
#[cfg(unix)]
pub fn probe_exclusive(path: &Path) -> Result<(), SafetyError> {
    use std::os::unix::fs::OpenOptionsExt;
    match fs::OpenOptions::new()
        .read(true)
        .custom_flags(exclusive_flag())
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy => {
            Err(SafetyError::InUse { path: path.into() })
        }
        Err(e) => Err(SafetyError::Inspect {
            path: path.into(),
            source: e,
        }),
    }
}

/// Unmounts everything mounted from the target's disk (nothing for a file). Linux: `umount`
/// each mount point, deepest first, then an exclusive open must succeed (an
/// [`SafetyError::InUse`] inside the error otherwise). macOS: `diskutil unmountDisk`.
pub fn unmount(t: &Target) -> anyhow::Result<()> {
    let Some(d) = t.device() else {
        return Ok(());
    };
    #[cfg(target_os = "macos")]
    {
        let _ = d;
        super::diskutil::unmount_disk(&t.path)
    }
    #[cfg(windows)]
    {
        let _ = d;
        Ok(())
    }
    #[cfg(not(any(target_os = "macos", windows)))]
    {
        use anyhow::Context;
        for mp in d.mount_points_to_unmount() {
            tracing::info!(mount_point = %mp.display(), "unmounting");
            let out = std::process::Command::new("umount")
                .arg(&mp)
                .output()
                .with_context(|| format!("running umount {}", mp.display()))?;
            anyhow::ensure!(
                out.status.success(),
                "unmounting {}: umount: {}",
                mp.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        if super::target::is_block_device(&fs::metadata(&t.path)?.file_type()) {
            probe_exclusive(&t.path)?;
        }
        Ok(())
    }
}
