//! `overlays/<name>/overlay.toml`: the manifest of a role overlay.
//!
//! An overlay directory holds `overlay.toml`, a `files/` tree copied onto the root file system,
//! and `templates/*.hbs` rendered with the card (and, for live templates, the membership).
//! The builder validates overlays and copies them onto the card; firstboot applies them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::card::CardError;

/// Parsed `overlay.toml`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct OverlayManifest {
    /// One line shown by `piforge inspect`.
    #[serde(default)]
    pub description: String,
    /// Debian packages installed (once the network is up) by a separate unit.
    #[serde(default)]
    pub packages: Vec<String>,
    /// systemd units to enable.
    #[serde(default)]
    pub enable: Vec<String>,
    /// Tags the node advertises when this overlay is applied.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Templates to render.
    #[serde(default, rename = "template")]
    pub templates: Vec<Template>,
}

/// `[[template]]` of an overlay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Template {
    /// File under `templates/`.
    pub source: String,
    /// Absolute destination path on the Pi.
    pub dest: String,
    /// Re-render whenever the cluster membership changes (rendered by the node agent).
    #[serde(default)]
    pub live: bool,
    /// Command run after the output changed (e.g. `systemctl reload haproxy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

impl OverlayManifest {
    /// Parses and validates overlay.toml text.
    pub fn parse(text: &str) -> Result<OverlayManifest, CardError> {
        let m: OverlayManifest =
            toml::from_str(text).map_err(|e| CardError::Syntax(e.message().to_string()))?;
        for p in &m.packages {
            let ok = !p.is_empty()
                && p.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+-.".contains(&c));
            if !ok {
                return Err(CardError::Invalid {
                    field: "packages",
                    reason: format!("{p:?} is not a Debian package name (a-z, 0-9, '+', '-', '.')"),
                });
            }
        }
        for t in &m.templates {
            if !t.dest.starts_with('/') || t.dest.contains("..") {
                return Err(CardError::Invalid {
                    field: "template.dest",
                    reason: format!("{:?} must be an absolute path without '..'", t.dest),
                });
            }
            if t.source.contains("..") || t.source.starts_with('/') {
                return Err(CardError::Invalid {
                    field: "template.source",
                    reason: format!("{:?} must be a file name under templates/", t.source),
                });
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_shell_in_packages() {
        let ok = "description = \"web\"\npackages = [\"lighttpd\"]\n[[template]]\nsource = \"a.hbs\"\ndest = \"/etc/a\"\n";
        let m = OverlayManifest::parse(ok).unwrap();
        assert_eq!(m.templates[0].dest, "/etc/a");
        let bad = "packages = [\"curl; rm -rf /\"]\n";
        assert!(
            OverlayManifest::parse(bad)
                .unwrap_err()
                .to_string()
                .contains("packages")
        );
        assert!(
            OverlayManifest::parse("colour = 1")
                .unwrap_err()
                .to_string()
                .contains("colour")
        );
    }
}
