//! piforge: the host-side builder. Turns a stock Raspberry Pi OS image into a cloneable cluster
//! image plus per-card identities, without root, loop mounts or Docker: every edit goes through
//! the image *file* (MBR/GPT tables, FAT through a partition window, ext4 read-only).
//!
//! The pipeline, one module a stage, each with a pure core:
//! catalog → fetch → verify → decompress → cache → plan (customize) → apply (image::fat) → outputs.
// `deny`, not `forbid`: the block-device ioctls are the one place that allows unsafe code,
// each block with a SAFETY comment: flash::blockdev (Linux) and devices::winapi (Windows).
#![deny(unsafe_code)]

pub mod acquire;
pub mod arch;
pub mod build;
pub mod cluster;
pub mod commands;
pub mod devices;
pub mod flash;
pub mod image;
pub mod io;
pub mod term;
