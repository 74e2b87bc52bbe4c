//! CPU architectures of Raspberry Pi OS images, with the names each world uses for them
//! (Debian `arm64`/`armhf`, Rust target triples, ELF machine ids).

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

    /// The Rust target the Pi binaries for this architecture are built for.
    pub fn payload_triple(self) -> &'static str {
        match self {
            Arch::Arm64 => "aarch64-unknown-linux-musl",
            // ARMv6 + VFPv2, hard float: runs on the ARM1176 of a Pi 1 / Zero and every later
            // core; an ARMv7 build dies with SIGILL on a Zero.
            Arch::Armhf => "arm-unknown-linux-musleabihf",
        }
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
}
