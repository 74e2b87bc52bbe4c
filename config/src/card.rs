//! `piforge/card.toml`: everything one card needs to become a node on its first boot.
//!
//! Written by the builder, read once by firstboot, then deleted from the FAT (it holds the
//! cluster key, the Wi-Fi PSK and the password hash). Parsing validates everything firstboot
//! would otherwise trip over half-way (names, PSK length, country code, schema version), so a bad
//! card is refused on the host at build time and on the Pi before anything changes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::host_keys::HostKeys;
use crate::secret::{ClusterKey, REDACTED, Secret};
use crate::validate::{valid_hostname, valid_username};
use crate::{DEFAULT_GOSSIP_PORT, DEFAULT_HTTP_PORT, SCHEMA_VERSION};

/// Why a card was refused.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// The text is not TOML, has an unknown key, or a value of the wrong type.
    #[error("{0}")]
    Syntax(String),
    /// The file was written by a piforge with another schema.
    #[error(
        "schema-version {found} is not supported (this piforge reads version {SCHEMA_VERSION}); \
         rebuild the card with a matching piforge"
    )]
    SchemaVersion {
        /// The version the file declares.
        found: u32,
    },
    /// A value parsed but makes no sense (invalid hostname, PSK of the wrong length, ...).
    #[error("{field}: {reason}")]
    Invalid {
        /// Dotted path of the offending key.
        field: &'static str,
        /// What is wrong and what would be right.
        reason: String,
    },
}

/// The whole card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Card {
    /// Must equal [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Which cluster this card joins.
    pub cluster: Cluster,
    /// How the node names itself.
    pub identity: Identity,
    /// Login user and SSH access.
    #[serde(default)]
    pub access: Access,
    /// Wired and wireless networking.
    #[serde(default)]
    pub network: Network,
    /// Time zone, keyboard and locale.
    #[serde(default)]
    pub locale: Locale,
    /// Names of the overlays (role file trees) shipped under `piforge/overlays/<name>/`.
    #[serde(default)]
    pub overlays: Vec<String>,
    /// Settings of the node agent.
    #[serde(default)]
    pub node: NodeSettings,
    /// Passwords of the `db` overlay, on the cards that apply it (firstboot writes them to
    /// [`DB_SECRETS_PATH`], 0600). Made per cluster at build time from the OS RNG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<DbSecrets>,
    /// SSH host keys made on the host (secret). Without them the Pi makes its own: ed25519
    /// at once, the others in the background after boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_keys: Option<HostKeys>,
}

/// Where firstboot writes [`DbSecrets`] on the Pi: a systemd environment file (0600, root)
/// that Patroni's unit reads before dropping to the postgres user.
pub const DB_SECRETS_PATH: &str = "/etc/piforge/db/secrets.env";

/// `[db]`: the passwords of the cluster's PostgreSQL (Patroni) cluster. Secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DbSecrets {
    /// Password of the PostgreSQL superuser `postgres`.
    pub superuser_password: Secret,
    /// Password of the replication user `replicator`.
    pub replication_password: Secret,
    /// Password of the user `piforge` of Patroni's REST API (its unsafe endpoints: switchover,
    /// restart, reload).
    pub rest_api_password: Secret,
}

impl DbSecrets {
    /// The systemd environment file Patroni reads (the variables Patroni takes its
    /// authentication from).
    pub fn env_file(&self) -> String {
        format!(
            "# piforge db overlay: written by piforge-firstboot from the card. Secret (0600).\n\
             PATRONI_SUPERUSER_USERNAME=postgres\n\
             PATRONI_SUPERUSER_PASSWORD={}\n\
             PATRONI_REPLICATION_USERNAME=replicator\n\
             PATRONI_REPLICATION_PASSWORD={}\n\
             PATRONI_RESTAPI_USERNAME=piforge\n\
             PATRONI_RESTAPI_PASSWORD={}\n",
            self.superuser_password.expose(),
            self.replication_password.expose(),
            self.rest_api_password.expose()
        )
    }

    fn check(&self) -> Result<(), CardError> {
        for (field, s) in [
            ("db.superuser-password", &self.superuser_password),
            ("db.replication-password", &self.replication_password),
            ("db.rest-api-password", &self.rest_api_password),
        ] {
            let v = s.expose();
            // Written unquoted into a systemd environment file: nothing to escape.
            if !(16..=128).contains(&v.len())
                || !v
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            {
                return Err(CardError::Invalid {
                    field,
                    reason: format!(
                        "a database password is 16 to 128 of a-z, A-Z, 0-9, '-' and '_' \
                         (this one is {} bytes); piforge build makes them",
                        v.len()
                    ),
                });
            }
        }
        Ok(())
    }
}

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Cluster {
    /// Cluster name; also the associated data of every sealed datagram and the mDNS TXT value.
    pub name: String,
    /// The 256-bit cluster key (secret).
    pub key: ClusterKey,
    /// Static seeds, `host:port`.
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Advertise and browse `_piforge._udp.local` over mDNS.
    #[serde(default = "yes")]
    pub mdns: bool,
}

/// `[identity]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Identity {
    /// A fixed hostname (a personalised card). Without it the card is cloneable and the name is
    /// `<hostname-prefix>-<last 6 hex digits of the hardware serial>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Prefix for names derived from the hardware serial.
    #[serde(default = "default_prefix")]
    pub hostname_prefix: String,
    /// When this card is copied to another Pi after its first boot, keep the fixed hostname
    /// (machine-id, SSH keys and node id are renewed all the same). Default: derive a new name.
    #[serde(default)]
    pub keep_hostname_on_clone: bool,
}

/// `[access]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Access {
    /// The login user (created, or the image's first user renamed).
    #[serde(default = "default_user")]
    pub user: String,
    /// crypt(3) hash of the password (`$y$...` yescrypt or `$6$...` sha512-crypt). Without it
    /// the account has no password and only SSH keys log in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<Secret>,
    /// Lines for `~/.ssh/authorized_keys`.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// Enable the SSH server.
    #[serde(default = "yes")]
    pub ssh: bool,
    /// Allow `user = "root"` (its password hash and SSH keys are set). Off by default: root
    /// stays locked and the user must be a regular account (see [`check_login_user`]).
    ///
    /// [`check_login_user`]: crate::check_login_user
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_root: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `[network]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Network {
    /// Fall back to an IPv4 link-local address (169.254/16) when no DHCP server answers, so a
    /// cluster on a bare switch still forms.
    #[serde(default)]
    pub link_local_fallback: bool,
    /// Wi-Fi on wlan0 (DHCP as on eth0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wifi: Option<Wifi>,
    /// A static IPv4 address instead of DHCP on one interface.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "static")]
    pub static_ip: Option<StaticIp>,
}

/// `[network.wifi]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Wifi {
    /// Network name, 1 to 32 bytes.
    pub ssid: String,
    /// WPA2 passphrase (8 to 63 ASCII characters) or raw PSK (64 hex digits). Secret.
    pub psk: Secret,
    /// ISO 3166 regulatory country, two upper-case letters (e.g. `DE`).
    pub country: String,
    /// The network does not broadcast its SSID.
    #[serde(default)]
    pub hidden: bool,
}

/// `[network.static]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StaticIp {
    /// Interface, default `eth0`.
    #[serde(default = "default_iface")]
    pub interface: String,
    /// Address with prefix length, e.g. `192.168.1.50/24`.
    pub address: String,
    /// Default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// DNS servers.
    #[serde(default)]
    pub dns: Vec<String>,
}

/// `[locale]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Locale {
    /// tz database name, e.g. `Europe/Berlin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Console keymap / XKB layout, e.g. `de`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keymap: Option<String>,
    /// Locale, e.g. `en_GB.UTF-8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

/// `[node]`: what the node agent is told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct NodeSettings {
    /// UDP port of the gossip protocol.
    #[serde(default = "default_gossip_port")]
    pub gossip_port: u16,
    /// TCP port of the HTTP API and dashboard.
    #[serde(default = "default_http_port")]
    pub http_port: u16,
    /// Tags the node advertises (e.g. `role = "web"`).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// MQTT broker of the node (`piforge build --mqtt-url`); wins over an overlay's `[mqtt]`.
    /// Its password and client key are secrets: they leave the FAT with the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<crate::mqtt::MqttSettings>,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            gossip_port: DEFAULT_GOSSIP_PORT,
            http_port: DEFAULT_HTTP_PORT,
            tags: BTreeMap::new(),
            mqtt: None,
        }
    }
}

impl Default for Access {
    fn default() -> Self {
        Access {
            user: default_user(),
            password_hash: None,
            ssh_authorized_keys: vec![],
            ssh: true,
            allow_root: false,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_prefix() -> String {
    "pi".into()
}
fn default_user() -> String {
    "pi".into()
}
fn default_iface() -> String {
    "eth0".into()
}
fn default_gossip_port() -> u16 {
    DEFAULT_GOSSIP_PORT
}
fn default_http_port() -> u16 {
    DEFAULT_HTTP_PORT
}

impl Card {
    /// A minimal valid card for `cluster` with `key`; everything else at its default.
    pub fn new(cluster: impl Into<String>, key: ClusterKey) -> Card {
        Card {
            schema_version: SCHEMA_VERSION,
            cluster: Cluster {
                name: cluster.into(),
                key,
                seeds: vec![],
                mdns: true,
            },
            identity: Identity {
                hostname: None,
                hostname_prefix: default_prefix(),
                keep_hostname_on_clone: false,
            },
            access: Access::default(),
            network: Network::default(),
            locale: Locale::default(),
            overlays: vec![],
            node: NodeSettings::default(),
            db: None,
            host_keys: None,
        }
    }

    /// Parses and validates `card.toml` text.
    pub fn parse(text: &str) -> Result<Card, CardError> {
        // Look at the version first, so a future card with new keys gets the version error
        // rather than a confusing "unknown field".
        #[derive(Deserialize)]
        #[serde(rename_all = "kebab-case")]
        struct Version {
            schema_version: Option<u32>,
        }
        let v: Version = toml::from_str(text).map_err(|e| CardError::Syntax(one_line(&e)))?;
        match v.schema_version {
            None => return Err(CardError::Syntax("missing key `schema-version`".into())),
            Some(SCHEMA_VERSION) => {}
            Some(found) => return Err(CardError::SchemaVersion { found }),
        }
        let card: Card = toml::from_str(text).map_err(|e| CardError::Syntax(one_line(&e)))?;
        card.validate()?;
        Ok(card)
    }

    /// Renders the card as TOML (with its secrets: this is what goes onto the FAT).
    pub fn render(&self) -> String {
        let body =
            toml::to_string(self).expect("a card always serializes: no maps with non-string keys");
        format!(
            "# piforge card: read once by piforge-firstboot on first boot, then deleted.\n\
             # It holds secrets; do not share this file.\n{body}"
        )
    }

    /// A copy with every secret replaced by `<redacted>`, for `piforge inspect` and logs.
    pub fn redacted(&self) -> RedactedCard {
        let mut t = toml::Value::try_from(self).expect("a card always converts to a TOML value");
        let set = |t: &mut toml::Value, path: &[&str]| {
            let mut cur = t;
            for p in &path[..path.len() - 1] {
                match cur.get_mut(*p) {
                    Some(next) => cur = next,
                    None => return,
                }
            }
            if let Some(tbl) = cur.as_table_mut()
                && tbl.contains_key(path[path.len() - 1])
            {
                tbl.insert(
                    path[path.len() - 1].into(),
                    toml::Value::String(REDACTED.into()),
                );
            }
        };
        set(&mut t, &["cluster", "key"]);
        set(&mut t, &["access", "password-hash"]);
        set(&mut t, &["network", "wifi", "psk"]);
        for k in [
            "superuser-password",
            "replication-password",
            "rest-api-password",
        ] {
            set(&mut t, &["db", k]);
        }
        set(&mut t, &["node", "mqtt", "password"]);
        set(&mut t, &["node", "mqtt", "client-key"]);
        for kind in crate::host_keys::KINDS {
            set(&mut t, &["host-keys", kind]);
        }
        RedactedCard(t)
    }

    /// Checks the values that TOML types alone cannot.
    pub fn validate(&self) -> Result<(), CardError> {
        let invalid = |field, reason: String| Err(CardError::Invalid { field, reason });
        if self.schema_version != SCHEMA_VERSION {
            return Err(CardError::SchemaVersion {
                found: self.schema_version,
            });
        }
        if self.cluster.name.is_empty()
            || self.cluster.name.len() > 63
            || !self
                .cluster
                .name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return invalid(
                "cluster.name",
                format!(
                    "{:?} is not a cluster name: use 1 to 63 letters, digits, '-' or '_'",
                    self.cluster.name
                ),
            );
        }
        for s in &self.cluster.seeds {
            if !seed_looks_valid(s) {
                return invalid("cluster.seeds", format!("{s:?} is not host:port"));
            }
        }
        if let Some(h) = &self.identity.hostname
            && !valid_hostname(h)
        {
            return invalid(
                "identity.hostname",
                format!("{h:?} is not a hostname: 1 to 63 of a-z, 0-9 and '-'"),
            );
        }
        // The derived name is `<prefix>-xxxxxx`: 7 more characters must fit into 63.
        let p = &self.identity.hostname_prefix;
        if !valid_hostname(p) || p.len() > 56 {
            return invalid(
                "identity.hostname-prefix",
                format!("{p:?} is not a hostname prefix: 1 to 56 of a-z, 0-9 and '-'"),
            );
        }
        let root_allowed = self.access.user == "root" && self.access.allow_root;
        if !valid_username(&self.access.user) && !root_allowed {
            return invalid(
                "access.user",
                format!(
                    "{:?} is not a valid user name: start with a-z or '_', then up to 31 of \
                     a-z, 0-9, '_' and '-' (and not root, unless allow-root is set)",
                    self.access.user
                ),
            );
        }
        if let Some(h) = &self.access.password_hash
            && !looks_like_crypt_hash(h.expose())
        {
            return invalid(
                "access.password-hash",
                "not a crypt(3) hash ($y$ yescrypt, $6$ sha512-crypt or $5$ sha256-crypt); \
                     piforge never stores a password in clear"
                    .into(),
            );
        }
        for k in &self.access.ssh_authorized_keys {
            if k.contains('\n') || k.trim().is_empty() {
                return invalid(
                    "access.ssh-authorized-keys",
                    "each entry is one non-empty line".into(),
                );
            }
        }
        if let Some(w) = &self.network.wifi {
            if w.ssid.is_empty() || w.ssid.len() > 32 {
                return invalid("network.wifi.ssid", "an SSID is 1 to 32 bytes".into());
            }
            if let Err(reason) = check_psk(w.psk.expose()) {
                return invalid("network.wifi.psk", reason);
            }
            if w.country.len() != 2 || !w.country.bytes().all(|c| c.is_ascii_uppercase()) {
                return invalid(
                    "network.wifi.country",
                    format!(
                        "{:?} is not a two-letter ISO 3166 country code like DE",
                        w.country
                    ),
                );
            }
        }
        if let Some(s) = &self.network.static_ip
            && !address_with_prefix(&s.address)
        {
            return invalid(
                "network.static.address",
                format!(
                    "{:?} is not an IPv4 address with prefix like 192.168.1.50/24",
                    s.address
                ),
            );
        }
        for o in &self.overlays {
            if !valid_hostname(o) {
                return invalid(
                    "overlays",
                    format!("{o:?} is not an overlay name: a-z, 0-9 and '-'"),
                );
            }
        }
        if let Some(h) = &self.host_keys {
            if self.identity.hostname.is_none() {
                return invalid(
                    "host-keys",
                    "only a card with a fixed identity.hostname carries host keys (a cloneable \
                     card would give every Pi the same keys)"
                        .into(),
                );
            }
            h.check_shape().map_err(|reason| CardError::Invalid {
                field: "host-keys",
                reason,
            })?;
        }
        if let Err(e) = crate::tags::check_tags(&self.node.tags) {
            return invalid("node.tags", e.to_string());
        }
        if let Some(db) = &self.db {
            db.check()?;
        }
        if let Some(m) = &self.node.mqtt
            && let Err(reason) = m.endpoint()
        {
            return invalid("node.mqtt", reason);
        }
        Ok(())
    }
}

/// A card with its secrets replaced by `<redacted>`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedactedCard(pub toml::Value);

impl RedactedCard {
    /// As TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.0).expect("a TOML value always serializes")
    }
}

impl Serialize for RedactedCard {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Checks a WPA passphrase or raw PSK; the error says what a valid one is.
pub fn check_psk(psk: &str) -> Result<(), String> {
    let n = psk.len();
    if n == 64 && psk.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Ok(());
    }
    if (8..=63).contains(&n) && psk.bytes().all(|c| (0x20..0x7f).contains(&c)) {
        return Ok(());
    }
    Err(format!(
        "a WPA passphrase is 8 to 63 printable ASCII characters (or a raw PSK of 64 hex digits); \
         this one is {n} bytes"
    ))
}

fn looks_like_crypt_hash(h: &str) -> bool {
    let ok_prefix = ["$y$", "$6$", "$5$", "$gy$", "$7$"]
        .iter()
        .any(|p| h.starts_with(p));
    ok_prefix && h.len() > 10 && h.bytes().all(|c| c.is_ascii_graphic()) && !h.contains(':')
}

fn seed_looks_valid(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) && !host.contains(' ')
        }
        None => false,
    }
}

fn address_with_prefix(s: &str) -> bool {
    match s.split_once('/') {
        Some((a, p)) => {
            a.parse::<std::net::Ipv4Addr>().is_ok() && p.parse::<u8>().is_ok_and(|p| p <= 32)
        }
        None => false,
    }
}

fn one_line(e: &toml::de::Error) -> String {
    // toml's Display spans several lines with a source excerpt; keep the message and location.
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => format!("{msg} (at byte {})", span.start),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> ClusterKey {
        ClusterKey::from_bytes([7; 32])
    }

    fn full() -> Card {
        let mut c = Card::new("home-lab", key());
        c.cluster.seeds = vec!["10.0.0.2:7946".into()];
        c.identity.hostname = Some("pi-01".into());
        c.access.password_hash = Some(Secret::new("$6$salt$abcdefghijklmnop"));
        c.access.ssh_authorized_keys = vec!["ssh-ed25519 AAAAC3Nza me@laptop".into()];
        c.network.wifi = Some(Wifi {
            ssid: "lab".into(),
            psk: Secret::new("correct horse"),
            country: "DE".into(),
            hidden: false,
        });
        c.locale.timezone = Some("Europe/Berlin".into());
        c.overlays = vec!["web".into()];
        c.node.tags.insert("role".into(), "web".into());
        c.node.mqtt = Some(crate::mqtt::MqttSettings {
            password: Some(Secret::new("mqtt-hunter")),
            client_cert: Some("-----BEGIN CERTIFICATE-----\nX\n".into()),
            client_key: Some(Secret::new("-----BEGIN PRIVATE KEY-----\nKEYDATA\n")),
            ..crate::mqtt::MqttSettings::plain("mqtts://alerts@broker.example.com")
        });
        c
    }

    fn pem(tag: &str) -> Secret {
        Secret::new(format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{tag}\n-----END OPENSSH PRIVATE KEY-----\n"
        ))
    }

    #[test]
    fn host_keys_round_trip_are_redacted_and_checked() {
        let mut c = full();
        c.identity.hostname = None;
        c.host_keys = Some(HostKeys {
            ed25519: pem("edkeybytes"),
            ecdsa: pem("ecdsakeybytes"),
            rsa: pem("rsakeybytes"),
        });
        let e = Card::parse(&c.render()).unwrap_err().to_string();
        assert!(e.contains("fixed identity.hostname"), "{e}");
        c.identity.hostname = Some("pi-01".into());
        c.host_keys = Some(HostKeys {
            ed25519: pem("edkeybytes"),
            ecdsa: pem("ecdsakeybytes"),
            rsa: pem("rsakeybytes"),
        });
        assert_eq!(Card::parse(&c.render()).unwrap(), c);
        let r = c.redacted().to_toml();
        for secret in ["edkeybytes", "ecdsakeybytes", "rsakeybytes"] {
            assert!(!r.contains(secret), "{secret} leaked: {r}");
            assert!(!format!("{c:?}").contains(secret));
        }
        assert_eq!(r.matches(REDACTED).count(), 8, "{r}");
        c.host_keys.as_mut().unwrap().rsa = Secret::new("ssh-rsa AAAA public");
        let e = Card::parse(&c.render()).unwrap_err().to_string();
        assert!(
            e.contains("host-keys") && e.contains("rsa") && !e.contains("AAAA"),
            "{e}"
        );
    }

    #[test]
    fn round_trip() {
        let c = full();
        assert_eq!(Card::parse(&c.render()).unwrap(), c);
        let m = Card::new("x", key());
        assert_eq!(Card::parse(&m.render()).unwrap(), m);
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let text = full()
            .render()
            .replace("[locale]", "[locale]\nfavourite-colour = \"red\"");
        let e = Card::parse(&text).unwrap_err().to_string();
        assert!(e.contains("favourite-colour"), "{e}");
    }

    #[test]
    fn other_schema_version_is_refused_before_unknown_keys() {
        let text = full()
            .render()
            .replace("schema-version = 1", "schema-version = 9")
            + "\n[future]\nx = 1\n";
        assert!(matches!(
            Card::parse(&text),
            Err(CardError::SchemaVersion { found: 9 })
        ));
    }

    #[test]
    fn invalid_values_name_their_field() {
        type Mutation = Box<dyn Fn(&mut Card)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|c| c.identity.hostname = Some("Pi_01".into())),
                "identity.hostname",
            ),
            (Box::new(|c| c.access.user = "root".into()), "access.user"),
            (
                Box::new(|c| c.access.password_hash = Some(Secret::new("hunter2"))),
                "password-hash",
            ),
            (
                Box::new(|c| c.network.wifi.as_mut().unwrap().psk = Secret::new("short")),
                "network.wifi.psk",
            ),
            (
                Box::new(|c| c.network.wifi.as_mut().unwrap().country = "de".into()),
                "country",
            ),
            (
                Box::new(|c| c.cluster.seeds = vec!["nohost".into()]),
                "cluster.seeds",
            ),
            (Box::new(|c| c.cluster.name = "a b".into()), "cluster.name"),
            // Tags the other nodes would refuse on the wire (issue 17, finding 8).
            (
                Box::new(|c| {
                    c.node.tags = (0..=crate::tags::MAX_TAGS)
                        .map(|i| (format!("t{i}"), String::new()))
                        .collect()
                }),
                "node.tags",
            ),
            (
                Box::new(|c| {
                    c.node
                        .tags
                        .insert("role".into(), "w".repeat(crate::tags::MAX_STR + 1));
                }),
                "node.tags",
            ),
            (
                Box::new(|c| {
                    c.node.tags.insert("a b".into(), "x".into());
                }),
                "node.tags",
            ),
        ];
        for (mutate, field) in cases {
            let mut c = full();
            mutate(&mut c);
            let e = Card::parse(&c.render()).unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
            // Errors never echo a secret.
            assert!(!e.contains("hunter2") && !e.contains("short\""), "{e}");
        }
    }

    #[test]
    fn redaction_hides_every_secret() {
        let c = full();
        let r = c.redacted().to_toml();
        for secret in [
            c.cluster.key.to_hex().as_str(),
            "$6$salt",
            "correct horse",
            "mqtt-hunter",
            "KEYDATA",
        ] {
            assert!(!r.contains(secret), "{secret} leaked: {r}");
        }
        assert_eq!(r.matches(REDACTED).count(), 5, "{r}");
        assert!(r.contains("mqtts://alerts@broker.example.com"), "{r}");
        let debug = format!("{c:?}");
        assert!(!debug.contains("correct horse") && !debug.contains("mqtt-hunter"));
        // The broker settings (secrets included) reach node.toml, which firstboot installs
        // 0600; the card itself leaves the FAT after the first boot.
        let n = crate::node::NodeConfig::from_card(&c, "pi-01");
        assert_eq!(n.mqtt, c.node.mqtt);
    }

    fn db() -> DbSecrets {
        DbSecrets {
            superuser_password: Secret::new("s".repeat(64)),
            replication_password: Secret::new("r".repeat(64)),
            rest_api_password: Secret::new("a".repeat(64)),
        }
    }

    #[test]
    fn db_secrets_round_trip_are_redacted_and_checked() {
        let mut c = full();
        c.db = Some(db());
        assert_eq!(Card::parse(&c.render()).unwrap(), c);
        let r = c.redacted().to_toml();
        for secret in ["sss", "rrr", "aaa"] {
            assert!(!r.contains(secret), "{secret} leaked: {r}");
        }
        assert_eq!(r.matches(REDACTED).count(), 8, "{r}");
        let env = db().env_file();
        assert!(env.contains(&format!(
            "PATRONI_REPLICATION_PASSWORD={}\n",
            "r".repeat(64)
        )));
        assert!(
            env.contains("PATRONI_SUPERUSER_USERNAME=postgres\n"),
            "{env}"
        );
        for bad in [
            "short",
            "with space and more than sixteen",
            "quote\"quote\"quote\"quote",
        ] {
            c.db.as_mut().unwrap().replication_password = Secret::new(bad);
            let e = Card::parse(&c.render()).unwrap_err().to_string();
            assert!(e.starts_with("db.replication-password: "), "{e}");
            assert!(!e.contains(bad), "the error echoes the secret: {e}");
        }
    }

    #[test]
    fn psk_lengths() {
        assert!(check_psk("12345678").is_ok());
        assert!(check_psk(&"a".repeat(63)).is_ok());
        assert!(check_psk(&"f".repeat(64)).is_ok());
        assert!(check_psk("1234567").is_err());
        assert!(check_psk(&"g".repeat(64)).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,400}") {
            let _ = Card::parse(&s);
        }

        #[test]
        fn valid_hostnames_round_trip(h in "[a-z][a-z0-9-]{0,20}[a-z0-9]", prefix in "[a-z]{1,10}") {
            let mut c = Card::new("c", key());
            c.identity.hostname = Some(h);
            c.identity.hostname_prefix = prefix;
            prop_assert_eq!(Card::parse(&c.render()).unwrap(), c);
        }
    }
}
