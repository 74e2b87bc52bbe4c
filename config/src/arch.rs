//! CPU architectures of Raspberry Pi OS images and the one table of the names each world uses
//! for them: Debian (`arm64`/`armhf`), the Debian multiarch tuple and dynamic loader, ELF
//! machine ids, and the Rust target triples the Pi binaries are built for ([`PAYLOAD_TARGETS`]).
//!
//! The shell scripts of `ci/` read the same table from `ci/lib/targets.sh`; the test at the
//! end of this file checks that the two agree. It deliberately holds only names and numbers:
//! reading an ELF header or a root file system is the caller's business.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The architecture of an image's userland, and so of the payload binaries it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// 64-bit: Pi 3, 4, 5, Zero 2 W. Debian `arm64`.
    Arm64,
    /// 32-bit hard-float: every Pi on a 32-bit OS, Pi 1 and Zero (W) included. Debian `armhf`,
    /// which Raspberry Pi OS builds for ARMv6 with VFP; so is our payload
    /// ([`Arch::payload_triple`]).
    Armhf,
}

/// A Rust target the Pi binaries can be built for: what `ci/payload --targets` takes and what
/// a payload manifest's `triple` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadTarget {
    /// The name `ci/payload --targets` takes (`arm64`, `armv6hf`, `armhf`).
    pub name: &'static str,
    /// The other name it accepts for it (`aarch64`, `armv6`, `armv7`).
    pub alias: &'static str,
    /// The Rust target triple.
    pub triple: &'static str,
    /// The images its binaries are for; also the payload subdirectory they go to.
    pub arch: Arch,
}

/// Every payload target, the default one of each architecture first (the one piforge's own
/// payload is built for, [`Arch::payload_target`]).
pub const PAYLOAD_TARGETS: [PayloadTarget; 3] = [
    PayloadTarget {
        name: "arm64",
        alias: "aarch64",
        triple: "aarch64-unknown-linux-musl",
        arch: Arch::Arm64,
    },
    // ARMv6 + VFPv2, hard float: runs on the ARM1176 of a Pi 1 / Zero and every later core, like
    // Raspberry Pi OS armhf itself.
    PayloadTarget {
        name: "armv6hf",
        alias: "armv6",
        triple: "arm-unknown-linux-musleabihf",
        arch: Arch::Armhf,
    },
    // ARMv7: Pi 2 and later only; an ARMv7 build dies with SIGILL on a Zero. Never the default.
    PayloadTarget {
        name: "armhf",
        alias: "armv7",
        triple: "armv7-unknown-linux-musleabihf",
        arch: Arch::Armhf,
    },
];

impl PayloadTarget {
    /// The target `name` (or its alias) names.
    pub fn find(name: &str) -> Option<&'static PayloadTarget> {
        PAYLOAD_TARGETS
            .iter()
            .find(|t| t.name == name || t.alias == name)
    }
}

impl Arch {
    /// Every architecture piforge knows, in a stable order.
    pub const ALL: [Arch; 2] = [Arch::Arm64, Arch::Armhf];

    /// Debian's name.
    pub fn debian_name(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::Armhf => "armhf",
        }
    }

    /// Debian's multiarch tuple: the library directory under `/lib` and `/usr/lib`.
    pub fn multiarch(self) -> &'static str {
        match self {
            Arch::Arm64 => "aarch64-linux-gnu",
            Arch::Armhf => "arm-linux-gnueabihf",
        }
    }

    /// The file name of the glibc dynamic loader of this architecture.
    pub fn dynamic_loader(self) -> &'static str {
        match self {
            Arch::Arm64 => "ld-linux-aarch64.so.1",
            Arch::Armhf => "ld-linux-armhf.so.3",
        }
    }

    /// The target piforge's own payload for this architecture is built for: the first of
    /// [`PAYLOAD_TARGETS`] with this arch.
    pub fn payload_target(self) -> &'static PayloadTarget {
        PAYLOAD_TARGETS
            .iter()
            .find(|t| t.arch == self)
            .expect("PAYLOAD_TARGETS has a target for every Arch (tested)")
    }

    /// The Rust target the Pi binaries for this architecture are built for.
    pub fn payload_triple(self) -> &'static str {
        self.payload_target().triple
    }

    /// ELF `e_machine` of binaries for this architecture.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::Arm64 => 183, // EM_AARCH64
            Arch::Armhf => 40,  // EM_ARM
        }
    }

    /// ELF class: 2 for 64-bit, 1 for 32-bit.
    pub fn elf_class(self) -> u8 {
        match self {
            Arch::Arm64 => 2,
            Arch::Armhf => 1,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.debian_name())
    }
}

impl FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "arm64" | "aarch64" => Ok(Arch::Arm64),
            "armhf" | "armv7" | "arm" => Ok(Arch::Armhf),
            other => Err(format!(
                "unknown architecture {other:?}: use arm64 or armhf"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Arch::ALL {
            assert_eq!(a.debian_name().parse::<Arch>().unwrap(), a);
        }
        assert!(
            "x86"
                .parse::<Arch>()
                .unwrap_err()
                .contains("arm64 or armhf")
        );
    }

    #[test]
    fn every_arch_has_a_default_target() {
        assert_eq!(Arch::Arm64.payload_triple(), "aarch64-unknown-linux-musl");
        assert_eq!(Arch::Armhf.payload_triple(), "arm-unknown-linux-musleabihf");
        for t in PAYLOAD_TARGETS {
            assert_eq!(PayloadTarget::find(t.name), Some(&t));
            assert_eq!(PayloadTarget::find(t.alias), Some(&t));
        }
        assert_eq!(PayloadTarget::find("x86"), None);
    }

    /// The whitespace-separated rows of the shell variable `var` in `ci/lib/targets.sh`.
    fn shell_rows(var: &str) -> Vec<Vec<String>> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/lib/targets.sh");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let start = format!("{var}='");
        let body = text
            .split_once(&start)
            .unwrap_or_else(|| panic!("{} has no {start}", path.display()))
            .1;
        let body = body
            .split_once('\'')
            .expect("the table ends with a quote")
            .0;
        body.lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .filter(|r| !r.is_empty())
            .collect()
    }

    #[test]
    fn shell_table_is_this_table() {
        let targets: Vec<Vec<String>> = PAYLOAD_TARGETS
            .iter()
            .map(|t| {
                [t.name, t.alias, t.triple, t.arch.debian_name()]
                    .map(str::to_owned)
                    .to_vec()
            })
            .collect();
        assert_eq!(shell_rows("PIFORGE_PAYLOAD_TARGETS"), targets);
        let arches: Vec<Vec<String>> = Arch::ALL
            .iter()
            .map(|a| {
                [a.debian_name(), a.multiarch(), a.dynamic_loader()]
                    .map(str::to_owned)
                    .to_vec()
            })
            .collect();
        assert_eq!(shell_rows("PIFORGE_ARCHES"), arches);
    }
}
