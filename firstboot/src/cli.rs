//! Command line: clap types turned into checked requests for the library. Only the binary uses
//! clap; the library takes [`FirstbootRequest`] / [`ReidentifyRequest`].

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use piforge_firstboot::{FirstbootRequest, ReidentifyRequest, TestHooks};

/// Apply piforge/card.toml on the Pi's first boot (started by systemd.run= from cmdline.txt).
#[derive(Debug, Parser)]
#[command(name = "piforge-firstboot", version, help_expected = true)]
pub struct Cli {
    /// Root file system to configure.
    #[arg(long, value_name = "DIR", default_value = "/", global = true)]
    pub root: PathBuf,
    /// Boot partition [default: vfat /boot* mount in <root>/etc/fstab]
    #[arg(long, value_name = "DIR", global = true)]
    pub boot: Option<PathBuf>,
    /// Log more (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do (default: first boot).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Clone check: re-identify if the recorded serial is not this board's.
    Reidentify,
    /// Make the SSH host keys left for later (ECDSA, RSA), if any.
    Hostkeys,
}

/// What the binary should run.
pub enum Request {
    /// First boot.
    Firstboot(FirstbootRequest),
    /// Clone check.
    Reidentify(ReidentifyRequest),
    /// Pending host keys.
    HostKeys(ReidentifyRequest),
}

impl Cli {
    /// The checked request.
    pub fn request(&self) -> Request {
        match self.command {
            None => Request::Firstboot(FirstbootRequest {
                root: self.root.clone(),
                boot: self.boot.clone(),
                hooks: TestHooks::default(),
            }),
            Some(Command::Reidentify) => Request::Reidentify(ReidentifyRequest {
                root: self.root.clone(),
                boot: self.boot.clone(),
                hooks: TestHooks::default(),
            }),
            Some(Command::Hostkeys) => Request::HostKeys(ReidentifyRequest {
                root: self.root.clone(),
                boot: self.boot.clone(),
                hooks: TestHooks::default(),
            }),
        }
    }
}
