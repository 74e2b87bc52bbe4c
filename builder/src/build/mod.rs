//! Build: a base image in, a batch out (`piforge build`), and one image out of a batch
//! (`piforge export`).
//!
//! [`assemble`] runs a build: it reads and checks every input — the cluster key ([`keystore`]),
//! the password ([`password`]), the MQTT broker ([`mqtt`]), the overlays ([`overlay`]), the
//! Pi binaries ([`payload`]) — asks [`customize`] for the plan (pure: values in, the files of
//! the FAT out), applies it through `image::fat`, and writes the [`batch`] (the image plus one
//! identity per card). [`export`] writes the cloneable image or card K, personalised, as
//! `.img`/`.img.xz` with its `.sha256` and `.bmap`.
//!
//! Deliberately not here: getting the base image (`acquire`) and writing cards (`flash`).

pub mod assemble;
pub mod batch;
pub mod customize;
pub mod export;
pub mod keystore;
pub mod mqtt;
pub mod overlay;
pub mod password;
pub mod payload;
