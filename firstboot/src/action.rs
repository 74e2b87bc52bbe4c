//! The vocabulary of a plan, shared by everything that plans and by [`crate::apply`], which
//! executes: where a file lives ([`Loc`] in a [`Base`] tree, made real under [`Dirs`]), who owns
//! it ([`Owner`]) and one idempotent step ([`Action`]), plus the short constructors the planners
//! (`plan`, `locale`, `overlay`, ...) write their actions with.
//!
//! Values only: nothing here reads or writes a file.

use std::fmt;
use std::path::PathBuf;

/// Which tree a path lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Base {
    /// The root file system (`/` on the Pi).
    Root,
    /// The FAT boot partition (`/boot/firmware` on Bookworm).
    Boot,
}

/// A path relative to the root or the boot directory (no leading `/`, no `..`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    /// Tree.
    pub base: Base,
    /// Relative path, `/`-separated.
    pub rel: String,
}

impl Loc {
    /// A path on the root file system; `p` may start with `/`.
    pub fn root(p: &str) -> Loc {
        Loc {
            base: Base::Root,
            rel: p.trim_start_matches('/').to_string(),
        }
    }

    /// A path on the boot partition; `p` may start with `/`.
    pub fn boot(p: &str) -> Loc {
        Loc {
            base: Base::Boot,
            rel: p.trim_start_matches('/').to_string(),
        }
    }

    /// The real path under the given directories.
    pub fn under(&self, dirs: &Dirs) -> PathBuf {
        match self.base {
            Base::Root => dirs.root.join(&self.rel),
            Base::Boot => dirs.boot.join(&self.rel),
        }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.base {
            Base::Root => write!(f, "/{}", self.rel),
            Base::Boot => write!(f, "<boot>/{}", self.rel),
        }
    }
}

/// The two directories firstboot works on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// Root prefix (`/` on the Pi).
    pub root: PathBuf,
    /// Boot partition mount (`/boot/firmware` on Bookworm).
    pub boot: PathBuf,
}

/// Owner of a file, numeric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl Owner {
    /// root:root.
    pub const ROOT: Owner = Owner { uid: 0, gid: 0 };
}

/// One idempotent step.
#[derive(Clone, PartialEq, Eq)]
pub enum Action {
    /// The file holds exactly `contents` with `mode` and `owner`.
    Write {
        /// Where.
        loc: Loc,
        /// Bytes.
        contents: Vec<u8>,
        /// Permission bits.
        mode: u32,
        /// Owner.
        owner: Owner,
        /// Leave an existing file alone (skeleton files the user may have edited).
        create_only: bool,
    },
    /// A copy of `from` (skipped when `from` is gone and `to` exists: resumed after cleanup).
    Copy {
        /// Source, usually on the boot partition.
        from: Loc,
        /// Destination.
        to: Loc,
        /// Permission bits of the destination.
        mode: u32,
        /// Owner of the destination.
        owner: Owner,
        /// Leave an existing destination alone (skeleton files the user may have edited).
        create_only: bool,
    },
    /// A directory (parents created 0755 root).
    Mkdir {
        /// Where.
        loc: Loc,
        /// Permission bits.
        mode: u32,
        /// Owner.
        owner: Owner,
    },
    /// A symbolic link pointing at `target`.
    Symlink {
        /// Where.
        loc: Loc,
        /// Link text.
        target: String,
    },
    /// Nothing at `loc` (file, link or whole directory tree).
    Remove {
        /// What.
        loc: Loc,
    },
    /// Move `from` to `to` unless `to` exists already (home directory of a renamed user).
    Rename {
        /// Old path.
        from: Loc,
        /// New path.
        to: Loc,
    },
    /// The running kernel's hostname (re-identification without a reboot).
    SetHostname(String),
}

impl fmt::Debug for Action {
    // Never prints contents: they may be secret (node.toml, Wi-Fi profile, shadow).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Write {
                loc, mode, owner, ..
            } => write!(
                f,
                "write {loc} mode {mode:04o} owner {}:{}",
                owner.uid, owner.gid
            ),
            Action::Copy { from, to, mode, .. } => write!(f, "copy {from} to {to} mode {mode:04o}"),
            Action::Mkdir { loc, mode, .. } => write!(f, "mkdir {loc} mode {mode:04o}"),
            Action::Symlink { loc, target } => write!(f, "link {loc} -> {target}"),
            Action::Remove { loc } => write!(f, "remove {loc}"),
            Action::Rename { from, to } => write!(f, "rename {from} to {to}"),
            Action::SetHostname(h) => write!(f, "set running hostname {h}"),
        }
    }
}

/// A path on the root file system ([`Loc::root`]).
pub(crate) fn r(p: &str) -> Loc {
    Loc::root(p)
}
/// A path on the boot partition ([`Loc::boot`]).
pub(crate) fn b(p: &str) -> Loc {
    Loc::boot(p)
}

/// `loc` holds `contents` with `mode`, owned by root.
pub(crate) fn write(loc: Loc, contents: impl Into<Vec<u8>>, mode: u32) -> Action {
    Action::Write {
        loc,
        contents: contents.into(),
        mode,
        owner: Owner::ROOT,
        create_only: false,
    }
}

/// The root directory `p` with `mode`, owned by root.
pub(crate) fn mkdir(p: &str, mode: u32) -> Action {
    Action::Mkdir {
        loc: r(p),
        mode,
        owner: Owner::ROOT,
    }
}

/// The root path `p` is a symbolic link to `target`.
pub(crate) fn link(p: &str, target: &str) -> Action {
    Action::Symlink {
        loc: r(p),
        target: target.to_string(),
    }
}
