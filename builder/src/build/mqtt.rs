//! The MQTT broker given on the command line (`--mqtt-url`, `--mqtt-password-file`, ...): read
//! the files and make the card's `[node.mqtt]`.
//!
//! The password and client key become [`Secret`]s on the card (removed from the FAT by the
//! first boot, installed in the 0600 node.toml, redacted by `inspect`); they are never put in
//! an error message. Checking the URL is `piforge_config`'s job ([`MqttSettings::endpoint`]).

use std::path::PathBuf;

use anyhow::Context;
use piforge_config::Secret;
use piforge_config::node::MqttSettings;

use crate::build::password::read_password_file;

/// The broker flags of `piforge build`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MqttSpec {
    /// `mqtts://[user@]host[:port]`, `mqtt://...` or `host:port`.
    pub url: String,
    /// File whose first line is the password (`-`: stdin).
    pub password_file: Option<PathBuf>,
    /// PEM file of the CA(s) to trust instead of the Pi's system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate file.
    pub client_cert: Option<PathBuf>,
    /// PEM client key file.
    pub client_key: Option<PathBuf>,
}

impl MqttSpec {
    /// Reads the files; the settings are checked with the card.
    pub fn settings(&self) -> anyhow::Result<MqttSettings> {
        let read = |p: &PathBuf, what: &str| {
            std::fs::read_to_string(p)
                .with_context(|| format!("reading the MQTT {what} {}", p.display()))
        };
        let mut m = MqttSettings::plain(self.url.trim());
        if let Some(p) = &self.password_file {
            m.password = Some(Secret::new(read_password_file(p)?));
        }
        if let Some(p) = &self.ca_file {
            m.ca = Some(read(p, "CA file")?);
        }
        if let Some(p) = &self.client_cert {
            m.client_cert = Some(read(p, "client certificate")?);
        }
        if let Some(p) = &self.client_key {
            m.client_key = Some(Secret::new(read(p, "client key")?));
        }
        m.endpoint()
            .map_err(|e| anyhow::anyhow!("--mqtt-url: {e}"))?;
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_become_settings_and_errors_hide_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret-mq\nignored\n").unwrap();
        let spec = MqttSpec {
            url: "mqtts://alerts@mq.example.com".into(),
            password_file: Some(pw.clone()),
            ..MqttSpec::default()
        };
        let m = spec.settings().unwrap();
        assert_eq!(m.password.as_ref().unwrap().expose(), "s3cret-mq");
        assert_eq!(m.endpoint().unwrap().port, 8883);
        // A password without a user in the URL is refused, without echoing it.
        let e = format!(
            "{:#}",
            MqttSpec {
                url: "mqtts://mq.example.com".into(),
                ..spec.clone()
            }
            .settings()
            .unwrap_err()
        );
        assert!(e.contains("needs a user") && !e.contains("s3cret"), "{e}");
        let e = format!(
            "{:#}",
            MqttSpec {
                ca_file: Some(dir.path().join("missing.pem")),
                ..spec
            }
            .settings()
            .unwrap_err()
        );
        assert!(e.contains("reading the MQTT CA file"), "{e}");
    }
}
