//! piforge: the host-side builder. Turns a stock Raspberry Pi OS image into a cloneable cluster
//! image plus per-card identities, without root, loop mounts or Docker: every edit goes through
//! the image *file* (MBR/GPT tables, FAT through a partition window, ext4 read-only).
//!
//! The folders are the pipeline, in the order a build runs it, each stage with a pure core
//! (builder/README.md says where to start reading):
//! - [`acquire`]: catalog → fetch → verify → decompress → cache, a verified read-only base image.
//! - [`image`]: what is on a disk image, from its bytes: partitions, FAT edits, ext4 facts, the
//!   block map and `.bmap` files, `piforge inspect`.
//! - [`build`]: inputs checked → plan (`customize`) → apply (`image::fat`) → the batch
//!   (`piforge build`); one image out of it (`piforge export`).
//! - [`flash`]: images onto cards, each target judged first by the rules of [`devices`].
//! - [`cluster`]: the running cards seen from the laptop (`piforge status`, `inventory`).
//!
//! Shared by the stages: [`arch`] (CPU architectures, re-exported from `piforge-config`),
//! [`io`] (file plumbing) and [`term`] (progress and tables). [`commands`] runs one
//! subcommand and prints its result. The clap definitions belong to the binary (`src/cli/`):
//! this library takes checked requests.
// `deny`, not `forbid`: the block-device ioctls are the one place that allows unsafe code,
// each block with a SAFETY comment: flash::blockdev (Linux) and devices::winapi (Windows).
#![deny(unsafe_code)]

pub mod acquire;
pub use piforge_config::arch;
pub mod build;
pub mod cluster;
pub mod commands;
pub mod devices;
pub mod flash;
pub mod image;
pub mod io;
pub mod term;
