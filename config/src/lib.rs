//! The piforge card contract: the formats that `piforge` (host), `piforge-firstboot` and
//! `piforge-node` (on the Pi) exchange, defined once.
//!
//! - [`card`]: `piforge/card.toml` on the FAT boot partition (written by the builder, read and
//!   deleted by firstboot).
//! - [`node`]: `/etc/piforge/node.toml` (written by firstboot, read by the node agent).
//! - [`overlay`]: `overlays/<name>/overlay.toml`, the manifest of a role overlay.
//! - [`cmdline`]: the kernel command line arguments piforge adds and removes.
//! - [`cloudinit`]: the cloud-init NoCloud seed piforge owns on cloud-init images.
//! - [`discovery`]: the mDNS service type and TXT keys agents advertise.
//! - [`members`]: the node API's member list; [`inventory`]: Ansible inventories of it.
//! - [`secret`]: types for secrets whose `Debug` never prints them.
//! - [`tags`]: the limits of a node's tags (checked by builder, node and receivers alike).
//! - [`atomic`]: the one atomic, durable file replacement all three programs use.
//! - [`host_keys`]: SSH host keys made on the host (`[host-keys]` of the card; generation and
//!   parsing with the `ssh` feature).
//! - [`api_auth`]: the HMAC proof of cluster membership on node API answers.
//! - [`status`]: what a node reports about itself to `piforge status`.
//! - [`rootfs`]: what a root file system says (release, boot mount, network stack, cloud-init),
//!   by the rules the builder and firstboot share.
//! - [`arch`]: CPU architectures and their names (Debian, ELF, Rust target triples), the one
//!   table `ci/lib/targets.sh` mirrors.
//!
//! Apart from [`atomic`], this crate does no I/O: it parses and renders strings. It
//! deliberately knows nothing about disks, images or the network.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api_auth;
pub mod arch;
pub mod atomic;
pub mod card;
pub mod cloudinit;
pub mod cmdline;
pub mod discovery;
pub mod host_keys;
pub mod inventory;
pub mod members;
pub mod mountinfo;
pub mod mqtt;
pub mod node;
pub mod overlay;
pub mod rootfs;
pub mod secret;
pub mod status;
pub mod tags;
mod validate;

pub use card::{Card, CardError};
pub use node::NodeConfig;
pub use overlay::OverlayManifest;
pub use secret::{ClusterKey, Secret};
pub use validate::{REGULAR_UIDS, check_login_user, valid_hostname, valid_username};

/// Version of the `card.toml` / `node.toml` / `overlay.toml` schema this build reads and writes.
/// A file with another version is refused, never guessed at.
pub const SCHEMA_VERSION: u32 = 1;

/// Directory on the FAT boot partition that holds the card payload.
pub const CARD_DIR: &str = "piforge";

/// Path of the card config, relative to the root of the FAT boot partition.
pub const CARD_PATH: &str = "piforge/card.toml";

/// Path of the first-boot program on the FAT boot partition, the `systemd.run=` of
/// `cmdline.txt`. Its name avoids every word a stock hook looks for on the command line:
/// Raspberry Pi's initramfs resizes the root when the line contains `firstboot` anywhere, and
/// Trixie's when it contains ` resize`.
pub const FIRSTBOOT_BIN_PATH: &str = "piforge/setup";

/// Where the first-boot program was before it was renamed (removed by the clean-up, and
/// recognised on a command line written by an older piforge).
pub const OLD_FIRSTBOOT_BIN_PATH: &str = "piforge/firstboot";

/// Path of the first-boot log, relative to the root of the FAT boot partition. It stays on the
/// card after first boot so it can be read from a laptop.
pub const FIRSTBOOT_LOG_PATH: &str = "piforge/firstboot.log";

/// Where firstboot installs the node config on the Pi.
pub const NODE_CONFIG_PATH: &str = "/etc/piforge/node.toml";

/// Default UDP port of the gossip protocol.
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;

/// Default TCP port of the node's HTTP API and dashboard.
pub const DEFAULT_HTTP_PORT: u16 = 8080;
