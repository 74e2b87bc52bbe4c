//! File plumbing every stage shares, with no knowledge of images or cards: the few file
//! operations that differ between Unix and Windows ([`hostfs`]), sparse copies ([`sparse`]), a
//! stream whose writes fail ([`readonly`]) and [`write_atomic`].
//!
//! Deliberately not here: what the user sees (`term`) and anything about disks (`devices`),
//! although [`hostfs::free_space`] asks `devices::winapi` on Windows.

use std::path::Path;

use anyhow::Context;

pub mod hostfs;
pub mod readonly;
pub mod sparse;

/// Replaces `path` with `bytes` (exactly `mode`) atomically and durably
/// ([`piforge_config::atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    piforge_config::atomic::write_atomic(path, bytes, Some(mode))
        .with_context(|| format!("writing {}", path.display()))
}
