//! Acquire: from a catalog name, a URL or a file to a verified, read-only raw base image in the
//! cache. The stages, in the order a build runs them:
//!
//! [`catalog`] (what `images.toml` names) → [`fetch`] (HTTP(S) download, resumable) →
//! [`verify`] (sha256 while streaming, published `.sha256` files) → [`decompress`] (xz, gz,
//! zst, zip to a sparse raw image) → [`cache`] (where it all lives, and the one call,
//! [`cache::base_image`], that runs the others).
//!
//! Deliberately not here: reading what is inside the image (`image`).

pub mod cache;
pub mod catalog;
pub mod decompress;
pub mod fetch;
pub mod verify;
