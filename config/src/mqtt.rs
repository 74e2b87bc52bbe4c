//! `[mqtt]` of node.toml and of a card: where the alert broker is and how to log in.
//!
//! Its own module because both the card ([`crate::card`]) and node.toml ([`crate::node`])
//! carry it.

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// `[mqtt]` of node.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MqttSettings {
    /// Broker: `mqtts://[user@]host[:port]` (TLS, default port 8883),
    /// `mqtt://[user@]host[:port]` (plain TCP, 1883) or `host:port` (plain TCP). Never a
    /// password: that is [`MqttSettings::password`].
    pub broker: String,
    /// Topic prefix: events go to `<prefix>/<cluster>/events`, status to
    /// `<prefix>/<cluster>/nodes/<name>/status` (retained; the last will sets `offline`).
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Password of the broker URL's user (secret: node.toml is 0600, never logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// PEM certificates of the CAs trusted for `mqtts://` instead of the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// PEM client certificate (chain) for `mqtts://`, with [`MqttSettings::client_key`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    /// PEM private key of the client certificate (secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<Secret>,
}

/// `url` with the password of its user part (`user:password@`), if any, replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

/// Where and how to reach the broker, from [`MqttSettings::endpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    /// TLS (`mqtts://`).
    pub tls: bool,
    /// Login user.
    pub user: Option<String>,
    /// Host name or IP address (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl MqttSettings {
    /// Settings for a plain broker `host:port` with defaults for the rest.
    pub fn plain(broker: impl Into<String>) -> MqttSettings {
        MqttSettings {
            broker: broker.into(),
            topic_prefix: default_topic_prefix(),
            password: None,
            ca: None,
            client_cert: None,
            client_key: None,
        }
    }

    /// Parses [`MqttSettings::broker`] and checks that the other fields fit it. Errors say
    /// what a valid value is and never contain a secret.
    pub fn endpoint(&self) -> Result<BrokerEndpoint, String> {
        let shown = redact_url(self.broker.trim());
        self.parse_endpoint()
            .map_err(|e| format!("mqtt broker {shown:?}: {e}"))
    }

    fn parse_endpoint(&self) -> Result<BrokerEndpoint, String> {
        let b = self.broker.trim();
        let (tls, rest, default_port) = if let Some(r) = b.strip_prefix("mqtts://") {
            (true, r, 8883)
        } else if let Some(r) = b.strip_prefix("mqtt://") {
            (false, r, 1883)
        } else if b.contains("://") {
            return Err("the scheme must be mqtts:// (TLS) or mqtt://".to_string());
        } else {
            (false, b, 0)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, _)) if u.contains(':') => {
                return Err("no password in the URL (it would land in logs and shell \
                     history); give it as a password file"
                    .to_string());
            }
            Some(("", _)) => return Err("empty user before '@'".to_string()),
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, rest),
        };
        let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
            let (h, p) = r
                .split_once(']')
                .ok_or_else(|| "unclosed '[' in the host".to_string())?;
            (h, p.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{p:?} is not a port"))?,
            None if default_port != 0 => default_port,
            None => {
                return Err(
                    "write host:port, mqtt://host[:port] or mqtts://[user@]host[:port]".to_string(),
                );
            }
        };
        if host.is_empty() || host.contains(['/', ' ', '@']) {
            return Err(format!("{host:?} is not a host"));
        }
        if self.password.is_some() && user.is_none() {
            return Err("a password needs a user (mqtts://USER@host)".to_string());
        }
        if !tls && (self.ca.is_some() || self.client_cert.is_some() || self.client_key.is_some()) {
            return Err("a CA or client certificate needs mqtts://".to_string());
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(
                "a client certificate needs its key, and a key its certificate".to_string(),
            );
        }
        for (what, pem) in [("CA", &self.ca), ("client certificate", &self.client_cert)] {
            if let Some(p) = pem
                && !p.contains("-----BEGIN CERTIFICATE-----")
            {
                return Err(format!(
                    "the {what} is not PEM (-----BEGIN CERTIFICATE-----)"
                ));
            }
        }
        if let Some(k) = &self.client_key
            && !k.expose().contains("PRIVATE KEY-----")
        {
            return Err("the client key is not a PEM private key".to_string());
        }
        Ok(BrokerEndpoint {
            tls,
            user,
            host: host.to_string(),
            port,
        })
    }
}

fn default_topic_prefix() -> String {
    "piforge".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let ep = |b: &str| MqttSettings::plain(b).endpoint();
        let e = ep("mqtts://alerts@broker.example.com:8883").unwrap();
        assert!(e.tls && e.user.as_deref() == Some("alerts"));
        assert_eq!((e.host.as_str(), e.port), ("broker.example.com", 8883));
        assert_eq!(ep("mqtts://h").unwrap().port, 8883);
        assert_eq!(ep("mqtt://h").unwrap().port, 1883);
        let e = ep("127.0.0.1:1883").unwrap();
        assert!(!e.tls && e.user.is_none() && e.port == 1883);
        assert_eq!(ep("mqtts://[::1]:9").unwrap().host, "::1");
        for bad in [
            "h",
            "mqtts://",
            "http://h:1",
            "mqtts://h:0",
            "mqtts://@h",
            "mqtts://h:x",
        ] {
            assert!(ep(bad).is_err(), "{bad} accepted");
        }
        let e = ep("mqtts://u:hunter22@h").unwrap_err();
        assert!(
            e.contains("password file") && !e.contains("hunter22"),
            "{e}"
        );
        let with = |f: &dyn Fn(&mut MqttSettings)| {
            let mut m = MqttSettings::plain("mqtt://u@h");
            f(&mut m);
            m.endpoint()
        };
        assert!(with(&|m| m.password = Some(Secret::new("p"))).is_ok());
        assert!(with(&|m| m.ca = Some("-----BEGIN CERTIFICATE-----".into())).is_err());
        let mut m = MqttSettings::plain("mqtts://h");
        m.password = Some(Secret::new("p"));
        assert!(m.endpoint().unwrap_err().contains("needs a user"));
        m = MqttSettings::plain("mqtts://u@h");
        m.client_cert = Some("-----BEGIN CERTIFICATE-----".into());
        assert!(m.endpoint().unwrap_err().contains("its key"));
        m.client_key = Some(Secret::new("-----BEGIN PRIVATE KEY-----"));
        assert!(m.endpoint().is_ok());
        assert!(!format!("{m:?}").contains("BEGIN PRIVATE"));
    }
}
