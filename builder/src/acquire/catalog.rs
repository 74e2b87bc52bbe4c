//! catalog: the base images piforge knows by name, read from `images.toml`.
//!
//! The catalog is data compiled into the binary ([`Catalog::builtin`]) and checked when parsed:
//! unique names, well-formed sha256 pins, https URLs. It says what to fetch and what the image
//! is expected to be; it does not fetch (see `fetch`/`cache`) and it is not the last word on the
//! image's first-boot mechanism (the image layer re-detects that from the root filesystem).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::acquire::verify::normalize_sha256;
use crate::arch::Arch;

/// The catalog file, compiled in.
const BUILTIN: &str = include_str!("../../../images.toml");

/// The `schema-version` this code reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Failures reading or querying the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The text is not valid TOML or does not match the schema (unknown keys are refused).
    #[error("parsing the image catalog: {0}")]
    Parse(#[from] toml::de::Error),
    /// An entry is well-formed TOML but makes no sense (bad hash, duplicate name, ...).
    #[error("image catalog entry {name:?} is invalid: {reason}")]
    Invalid {
        /// The entry's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The catalog was written for another version of piforge.
    #[error("image catalog has schema-version {found}, this piforge reads {SCHEMA_VERSION}")]
    Schema {
        /// The version in the file.
        found: u32,
    },
    /// `get` was asked for a name the catalog does not have.
    #[error("no image named {name:?} in the catalog; known images: {}", known.join(", "))]
    Unknown {
        /// The name asked for.
        name: String,
        /// Every name the catalog has.
        known: Vec<String>,
    },
}

/// All known base images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Catalog {
    /// Version of this file's format.
    pub schema_version: u32,
    /// The entries, in file order (newest first by convention).
    #[serde(rename = "image", default)]
    pub images: Vec<Entry>,
}

/// One published image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Entry {
    /// What `--image` takes.
    pub name: String,
    /// Release date as in the file name, `YYYY-MM-DD`.
    pub release_date: String,
    /// Debian suite: `bookworm` or `trixie`.
    pub suite: String,
    /// Userland architecture.
    pub arch: Arch,
    /// Where to download it.
    pub url: String,
    /// sha256 of the download (lowercase hex).
    pub sha256: String,
    /// Bytes of the download, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// sha256 of the extracted raw image, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extracted_sha256: Option<String>,
    /// Bytes of the extracted raw image, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extracted_size: Option<u64>,
    /// The stock first-boot mechanism ours has to coexist with.
    pub firstboot: FirstbootGen,
    /// One line for humans.
    pub description: String,
}

/// How a stock image does its own first boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirstbootGen {
    /// Bookworm: `init=/usr/lib/raspberrypi-sys-mods/firstboot` on the kernel command line.
    SysMods,
    /// Trixie: `resize` on the command line, the initramfs and `rpi-resize.service`.
    Resize,
    /// Trixie with a cloud-init NoCloud seed (`meta-data`, `user-data`, `network-config`).
    CloudInit,
}

impl FirstbootGen {
    /// The name used in `images.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            FirstbootGen::SysMods => "sys-mods",
            FirstbootGen::Resize => "resize",
            FirstbootGen::CloudInit => "cloud-init",
        }
    }
}

impl Entry {
    /// The download's file name (the last component of the URL path).
    pub fn file_name(&self) -> &str {
        url_file_name(&self.url)
    }

    /// Where the publisher keeps the download's checksum.
    pub fn sha256_url(&self) -> String {
        format!("{}.sha256", self.url)
    }

    fn check(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !name_ok {
            return Err("the name must be non-empty lowercase letters, digits, '-' or '.'".into());
        }
        if normalize_sha256(&self.sha256).as_deref() != Some(self.sha256.as_str()) {
            return Err(format!(
                "sha256 {:?} is not 64 lowercase hex digits",
                self.sha256
            ));
        }
        if let Some(x) = &self.extracted_sha256
            && normalize_sha256(x).as_deref() != Some(x.as_str())
        {
            return Err(format!(
                "extracted-sha256 {x:?} is not 64 lowercase hex digits"
            ));
        }
        if !self.url.starts_with("https://") {
            return Err(format!("url {:?} must be https", self.url));
        }
        if self.file_name().is_empty() {
            return Err(format!("url {:?} does not end in a file name", self.url));
        }
        if !is_date(&self.release_date) {
            return Err(format!(
                "release-date {:?} is not YYYY-MM-DD",
                self.release_date
            ));
        }
        if !matches!(self.suite.as_str(), "bookworm" | "trixie" | "bullseye") {
            return Err(format!("suite {:?} is not bookworm or trixie", self.suite));
        }
        Ok(())
    }
}

/// The last path component of a URL, without query or fragment.
pub fn url_file_name(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path)
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

impl Catalog {
    /// The catalog compiled into this binary.
    pub fn builtin() -> Catalog {
        Catalog::parse(BUILTIN).expect("images.toml is parsed by a unit test")
    }

    /// Parse and check a catalog.
    pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
        let cat: Catalog = toml::from_str(text)?;
        if cat.schema_version != SCHEMA_VERSION {
            return Err(CatalogError::Schema {
                found: cat.schema_version,
            });
        }
        let mut names = BTreeSet::new();
        for e in &cat.images {
            e.check().map_err(|reason| CatalogError::Invalid {
                name: e.name.clone(),
                reason,
            })?;
            if !names.insert(e.name.as_str()) {
                return Err(CatalogError::Invalid {
                    name: e.name.clone(),
                    reason: "the name is used twice".into(),
                });
            }
        }
        Ok(cat)
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Result<&Entry, CatalogError> {
        self.images
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| CatalogError::Unknown {
                name: name.to_owned(),
                known: self.images.iter().map(|e| e.name.clone()).collect(),
            })
    }

    /// An aligned text table for `piforge images`.
    pub fn table(&self) -> String {
        let header = [
            "NAME",
            "DATE",
            "SUITE",
            "ARCH",
            "SIZE",
            "FIRST BOOT",
            "DESCRIPTION",
        ];
        let rows: Vec<[String; 7]> = self
            .images
            .iter()
            .map(|e| {
                [
                    e.name.clone(),
                    e.release_date.clone(),
                    e.suite.clone(),
                    e.arch.to_string(),
                    e.size
                        .map(crate::term::progress::human_bytes)
                        .unwrap_or_else(|| "-".into()),
                    e.firstboot.as_str().to_owned(),
                    e.description.clone(),
                ]
            })
            .collect();
        let mut all = vec![header.map(String::from)];
        all.extend(rows);
        crate::term::table::aligned(&all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses_and_covers_both_arches_and_suites() {
        let cat = Catalog::parse(BUILTIN).unwrap();
        for (suite, arch) in [
            ("trixie", Arch::Arm64),
            ("trixie", Arch::Armhf),
            ("bookworm", Arch::Arm64),
            ("bookworm", Arch::Armhf),
        ] {
            assert!(
                cat.images
                    .iter()
                    .any(|e| e.suite == suite && e.arch == arch),
                "no {suite} {arch} image"
            );
        }
        for e in &cat.images {
            assert!(
                e.url.starts_with("https://downloads.raspberrypi.com/"),
                "{}",
                e.url
            );
            assert!(e.file_name().contains(&e.release_date), "{}", e.name);
            assert!(e.file_name().contains(&e.suite), "{}", e.name);
            assert!(e.file_name().contains(e.arch.debian_name()), "{}", e.name);
            let gen_ok = match e.suite.as_str() {
                "bookworm" => e.firstboot == FirstbootGen::SysMods,
                _ => e.firstboot != FirstbootGen::SysMods,
            };
            assert!(gen_ok, "{} has first boot {:?}", e.name, e.firstboot);
        }
        assert_eq!(cat.get("trixie-lite-arm64").unwrap().arch, Arch::Arm64);
    }

    #[test]
    fn unknown_name_lists_known_names() {
        let err = Catalog::builtin().get("nope").unwrap_err().to_string();
        assert!(err.contains("\"nope\""), "{err}");
        assert!(
            err.contains("trixie-lite-arm64") && err.contains("bookworm-lite-armhf"),
            "{err}"
        );
    }

    fn entry_toml(extra: &str) -> String {
        format!(
            r#"schema-version = 1
[[image]]
name = "x"
release-date = "2025-11-24"
suite = "bookworm"
arch = "arm64"
url = "https://example.org/2025-11-24-x.img.xz"
sha256 = "{}"
firstboot = "sys-mods"
description = "d"
{extra}"#,
            "ab".repeat(32)
        )
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(Catalog::parse(&entry_toml("")).is_ok());
        let e = Catalog::parse(&entry_toml("colour = 1")).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = Catalog::parse(&entry_toml("extracted-sha256 = \"xyz\"")).unwrap_err();
        assert!(e.to_string().contains("extracted-sha256"), "{e}");
        let upper = entry_toml("").replace(&"ab".repeat(32), &"AB".repeat(32));
        assert!(Catalog::parse(&upper).is_err());
        let http = entry_toml("").replace("https://", "http://");
        assert!(
            Catalog::parse(&http)
                .unwrap_err()
                .to_string()
                .contains("https")
        );
        let twice = format!(
            "{}{}",
            entry_toml(""),
            entry_toml("").replace("schema-version = 1", "")
        );
        assert!(
            Catalog::parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let v2 = entry_toml("").replace("schema-version = 1", "schema-version = 2");
        assert!(matches!(
            Catalog::parse(&v2),
            Err(CatalogError::Schema { found: 2 })
        ));
    }

    #[test]
    fn table_is_aligned_and_json_round_trips() {
        let cat = Catalog::builtin();
        let t = cat.table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), cat.images.len() + 1);
        let col = lines[0].find("DATE").unwrap();
        for (l, e) in lines[1..].iter().zip(&cat.images) {
            assert!(l[col..].starts_with(&e.release_date), "{l}");
        }
        assert!(t.contains("500.6 MiB"), "{t}");
        let json = serde_json::to_string(&cat).unwrap();
        assert!(json.contains("\"release-date\""));
        let back: Catalog = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cat);
    }

    #[test]
    fn file_name_ignores_query() {
        assert_eq!(url_file_name("https://h/a/b.img.xz?x=1#f"), "b.img.xz");
        assert_eq!(url_file_name("b.img"), "b.img");
    }
}
