//! `overlays/<name>/overlay.toml`: the manifest of a role overlay, and the variables its
//! templates may use.
//!
//! An overlay directory holds `overlay.toml`, a `files/` tree copied onto the root file system,
//! and `templates/*.hbs` rendered with the card (and, for live templates, the membership).
//! The builder validates overlays and copies them onto the card; firstboot applies them. This
//! module only parses and checks the manifest text, and defines how templates escape the
//! values they interpolate ([`Escape`]); it reads no files and renders nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::card::CardError;
use crate::mqtt::MqttSettings;
use crate::node::{EventHandler, Webhook};

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
    #[serde(default, rename = "template", skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<Template>,
    /// Event handlers added to the node's `node.toml` (`[[handler]]`).
    #[serde(default, rename = "handler", skip_serializing_if = "Vec::is_empty")]
    pub handlers: Vec<EventHandler>,
    /// Webhooks added to the node's `node.toml` (`[[webhook]]`).
    #[serde(default, rename = "webhook", skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<Webhook>,
    /// MQTT broker for the node (`[mqtt]`); the first overlay that sets one wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<MqttSettings>,
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
    /// File mode of a static template's output, e.g. `mode = 0o600` for a file the user puts
    /// a token into (default 0o644; the node writes live outputs 0o644).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// The shape of a value a template can reach (see [`STATIC_VARS`], [`LIVE_VARS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarKind {
    /// A string.
    Text,
    /// A number (or `null`, like a member's `last_seen` for the node itself).
    Number,
    /// Tags: any key, string values (`tags.role`, `tags.[x-y]`, `#each tags`).
    Tags,
    /// An array of members; each element has the fields in [`MEMBER_FIELDS`].
    Members,
}

/// Variables of a static template, rendered once by firstboot. `members` and `alive` are empty
/// there (the node has not joined yet), so a template written for both renders in both places.
pub const STATIC_VARS: &[(&str, VarKind)] = &[
    ("hostname", VarKind::Text),
    ("cluster", VarKind::Text),
    ("tags", VarKind::Tags),
    ("members", VarKind::Members),
    ("alive", VarKind::Members),
];

/// Variables of a live template, rendered by `piforge-node render` on every membership
/// change: all members (sorted by name) and the alive ones.
pub const LIVE_VARS: &[(&str, VarKind)] =
    &[("members", VarKind::Members), ("alive", VarKind::Members)];

/// Fields of one member (`GET /api/members` of the node agent).
pub const MEMBER_FIELDS: &[(&str, VarKind)] = &[
    ("name", VarKind::Text),
    ("addr", VarKind::Text),
    ("ip", VarKind::Text),
    ("port", VarKind::Number),
    ("generation", VarKind::Number),
    ("state", VarKind::Text),
    ("phi", VarKind::Number),
    ("threshold", VarKind::Number),
    ("tags", VarKind::Tags),
    ("uptime", VarKind::Number),
    ("last_seen", VarKind::Number),
];

/// Handlebars helpers a template may call: the built-ins of the `handlebars` crate that both
/// firstboot and the node register (nothing else is registered).
pub const HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte",
    "and", "or", "not", "len",
];

/// How values are escaped where a template interpolates them with `{{x}}` (triple-stash
/// `{{{x}}}` is always raw, handlebars semantics: for trusted values only). Chosen from the
/// output file's name by [`Escape::for_output`], so the builder's sample render, firstboot and
/// `piforge-node render` escape a template identically.
///
/// Values reach templates from every member of the cluster (names and tags: up to 256 bytes of
/// any characters), so no mode passes them through unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// `.html`, `.htm`: markup characters become character references ([`escape_html`]).
    Html,
    /// `.yml`, `.yaml`, `.json`: escaped as the inside of a JSON string
    /// ([`escape_json_string`]), which is also a YAML double-quoted scalar. The template must
    /// put every `{{x}}` inside `"..."`.
    JsonString,
    /// Everything else (config files, shell environment files, `.cfg`, `.conf`, no
    /// extension): control characters and whitespace become `_` ([`escape_line_safe`]), so a
    /// value stays one token on its line. Values with spaces are not representable there.
    LineSafe,
}

impl Escape {
    /// The escape for a template whose output is `name` (a file name or path; a trailing
    /// `.hbs` is ignored, so the template's own name works too), by its extension, ignoring
    /// case: see the variants.
    pub fn for_output(name: &str) -> Escape {
        let file = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
        let file = file.strip_suffix(".hbs").unwrap_or(&file);
        let ext = file.rsplit_once('.').map_or("", |(_, e)| e);
        match ext {
            "html" | "htm" => Escape::Html,
            "yml" | "yaml" | "json" => Escape::JsonString,
            _ => Escape::LineSafe,
        }
    }

    /// The escape function, e.g. for handlebars' `register_escape_fn`.
    pub fn function(self) -> fn(&str) -> String {
        match self {
            Escape::Html => escape_html,
            Escape::JsonString => escape_json_string,
            Escape::LineSafe => escape_line_safe,
        }
    }
}

/// HTML escaping for text and quoted attribute values: `&`, `<`, `>`, `"`, `'`, `` ` `` and
/// `=` become character references; everything else is kept.
pub fn escape_html(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            '`' => out.push_str("&#x60;"),
            '=' => out.push_str("&#x3D;"),
            c => out.push(c),
        }
    }
    out
}

/// The inside of a JSON string (without the quotes), valid unchanged inside a YAML
/// double-quoted scalar (YAML 1.1 and 1.2) too: `"` and `\` are backslash-escaped, tab, newline
/// and carriage return as `\t \n \r`, and every other character YAML does not allow raw
/// (C0 and C1 controls, DEL, U+2028, U+2029, U+FEFF, U+FFFE, U+FFFF) as `\uXXXX`.
pub fn escape_json_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0}'..='\u{1f}'
            | '\u{7f}'..='\u{9f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{feff}'
            | '\u{fffe}'
            | '\u{ffff}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Characters that are syntax in common line-based formats and become `_` in
/// [`escape_line_safe`]: comments (`#` in HAProxy, shell and most configs; `;` in INI-style
/// files and shell), quotes and escapes (`"`, `'`, `\`), and shell expansion (`$`, `` ` ``).
pub const LINE_SYNTAX: &[char] = &['#', ';', '"', '\'', '\\', '$', '`'];

/// Line-safe escaping for line-based config files: every control character, every whitespace
/// character (Unicode `White_Space`, which includes the line and paragraph separators) and
/// every [`LINE_SYNTAX`] character becomes `_`. The result never contains a line break, a
/// field separator, a comment start, a quote or an expansion, so a value cannot start a new
/// directive, add arguments, cut the rest of its line off or leave a quoted string; other
/// characters are kept.
pub fn escape_line_safe(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_control() || c.is_whitespace() || LINE_SYNTAX.contains(&c) {
                '_'
            } else {
                c
            }
        })
        .collect()
}

fn invalid(field: &'static str, reason: String) -> Result<(), CardError> {
    Err(CardError::Invalid { field, reason })
}

fn unit_name_ok(u: &str) -> bool {
    let units = [
        ".service", ".socket", ".timer", ".path", ".target", ".mount",
    ];
    units.iter().any(|s| u.ends_with(s) && u.len() > s.len())
        && u.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.@:\\".contains(&c))
}

fn tag_key_ok(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
}

impl OverlayManifest {
    /// Parses and validates overlay.toml text.
    pub fn parse(text: &str) -> Result<OverlayManifest, CardError> {
        let m: OverlayManifest =
            toml::from_str(text).map_err(|e| CardError::Syntax(e.message().to_string()))?;
        m.check()?;
        Ok(m)
    }

    fn check(&self) -> Result<(), CardError> {
        for p in &self.packages {
            let ok = !p.is_empty()
                && p.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"+-.".contains(&c));
            if !ok {
                return invalid(
                    "packages",
                    format!("{p:?} is not a Debian package name (a-z, 0-9, '+', '-', '.')"),
                );
            }
        }
        for u in &self.enable {
            if !unit_name_ok(u) {
                return invalid(
                    "enable",
                    format!("{u:?} is not a systemd unit name like haproxy.service"),
                );
            }
        }
        for k in self.tags.keys() {
            if !tag_key_ok(k) {
                return invalid(
                    "tags",
                    format!("{k:?} is not a tag name (a-z, A-Z, 0-9, '-', '_', '.')"),
                );
            }
        }
        let mut dests = vec![];
        for t in &self.templates {
            if !t.dest.starts_with('/')
                || t.dest.ends_with('/')
                || t.dest.split('/').any(|s| s == "..")
            {
                return invalid(
                    "template.dest",
                    format!("{:?} must be an absolute file path without '..'", t.dest),
                );
            }
            if dests.contains(&&t.dest) {
                return invalid("template.dest", format!("two templates write {:?}", t.dest));
            }
            dests.push(&t.dest);
            if t.source.is_empty()
                || t.source.starts_with('/')
                || t.source.split('/').any(|s| s == ".." || s.is_empty())
            {
                return invalid(
                    "template.source",
                    format!("{:?} must be a file name under templates/", t.source),
                );
            }
            if let Some(mode) = t.mode
                && (t.live || mode > 0o777)
            {
                return invalid(
                    "template.mode",
                    format!(
                        "{}: mode applies to static templates and is at most 0o777",
                        t.source
                    ),
                );
            }
            if t.command.is_some() && !t.live {
                return invalid(
                    "template.command",
                    format!(
                        "{}: a command runs when a live template's output changes; \
                         set live = true or drop the command",
                        t.source
                    ),
                );
            }
        }
        for h in &self.handlers {
            if !h.command.starts_with('/') || h.command.split('/').any(|s| s == "..") {
                return invalid(
                    "handler.command",
                    format!(
                        "{:?} must be the absolute path of an executable (handlers run \
                         without a shell)",
                        h.command
                    ),
                );
            }
        }
        for w in &self.webhooks {
            if let Err(reason) = w.validate() {
                return invalid("webhook.url", reason);
            }
            if w.bearer_token.is_some() {
                return invalid(
                    "webhook.bearer-token",
                    format!(
                        "{}: an overlay is shared data, not a place for a secret; put the \
                         token in the node's /etc/piforge/node.toml (0600)",
                        w.url
                    ),
                );
            }
        }
        if let Some(m) = &self.mqtt {
            if let Err(reason) = m.endpoint() {
                return invalid("mqtt.broker", reason);
            }
            if m.password.is_some() || m.client_key.is_some() {
                return invalid(
                    "mqtt.password",
                    "an overlay is shared data, not a place for a secret; use piforge build \
                     --mqtt-url URL --mqtt-password-file F"
                        .to_string(),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        OverlayManifest::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_and_refuses_shell_in_packages() {
        let ok = "description = \"web\"\npackages = [\"lighttpd\"]\n[[template]]\nsource = \"a.hbs\"\ndest = \"/etc/a\"\n";
        let m = OverlayManifest::parse(ok).unwrap();
        assert_eq!(m.templates[0].dest, "/etc/a");
        for bad in ["curl; rm -rf /", "a$(id)", "a b", "`x`", "A", ""] {
            let e = err(&format!("packages = [{bad:?}]\n"));
            assert!(e.starts_with("packages: "), "{bad}: {e}");
        }
        assert!(err("colour = 1").contains("colour"));
    }

    #[test]
    fn handlers_webhooks_and_mqtt_round_trip() {
        let text = "[[handler]]\ncommand = \"/usr/local/bin/x\"\nevents = [\"member-failed\"]\n\
                    [[webhook]]\nurl = \"http://127.0.0.1:9/h\"\n[mqtt]\nbroker = \"127.0.0.1:1883\"\n";
        let m = OverlayManifest::parse(text).unwrap();
        assert_eq!(m.handlers[0].events, ["member-failed"]);
        assert_eq!(m.handlers[0].timeout_secs, 30);
        assert_eq!(m.mqtt.as_ref().unwrap().topic_prefix, "piforge");
        let again = OverlayManifest::parse(&toml::to_string(&m).unwrap()).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn refuses_what_cannot_work_on_the_pi() {
        let t = |s: &str| format!("[[template]]\n{s}\n");
        assert!(err(&t("source = \"a\"\ndest = \"etc/a\"")).contains("absolute"));
        assert!(err(&t("source = \"a\"\ndest = \"/etc/../a\"")).contains("'..'"));
        assert!(err(&t("source = \"../a\"\ndest = \"/a\"")).contains("under templates/"));
        assert!(err(&t("source = \"a\"\ndest = \"/a\"\ncommand = \"x\"")).contains("live"));
        assert!(err(&t("source = \"a\"\ndest = \"/a\"\nmode = 0o1777")).contains("0o777"));
        assert!(
            err(&t(
                "source = \"a\"\ndest = \"/a\"\nlive = true\nmode = 0o600"
            ))
            .contains("mode")
        );
        let m = OverlayManifest::parse(&t("source = \"a\"\ndest = \"/a\"\nmode = 0o600")).unwrap();
        assert_eq!(m.templates[0].mode, Some(0o600));
        assert!(err("enable = [\"../x.service\"]").starts_with("enable"));
        assert!(err("enable = [\"haproxy\"]").starts_with("enable"));
        assert!(err("tags = { \"a=b\" = \"c\" }").starts_with("tags"));
        assert!(err("[[handler]]\ncommand = \"led.sh\"").contains("absolute"));
        assert!(err("[[webhook]]\nurl = \"ftp://x/\"").contains("https://"));
        OverlayManifest::parse("[[webhook]]\nurl = \"https://x/\"").unwrap();
        assert!(
            err("[[webhook]]\nurl = \"https://x/\"\nbearer-token = \"t0ken\"").contains("secret")
        );
        assert!(err("[mqtt]\nbroker = \"mqtts://u@h\"\npassword = \"pw\"").contains("secret"));
        assert!(err("[mqtt]\nbroker = \"nohost\"").starts_with("mqtt"));
        assert!(
            err("[[template]]\nsource = \"a\"\ndest = \"/a\"\n[[template]]\nsource = \"b\"\ndest = \"/a\"")
                .contains("two templates")
        );
        OverlayManifest::parse("enable = [\"x.timer\", \"getty@tty2.service\"]").unwrap();
    }

    #[test]
    fn the_escape_follows_the_output_name() {
        for (name, want) in [
            ("/var/www/html/index.html", Escape::Html),
            ("cluster.html.hbs", Escape::Html),
            ("x.HTM", Escape::Html),
            ("/etc/prometheus/piforge-targets.yml", Escape::JsonString),
            ("node-exporter-targets.yml.hbs", Escape::JsonString),
            ("a.yaml", Escape::JsonString),
            ("/srv/a.json.hbs", Escape::JsonString),
            ("/etc/haproxy/piforge/50-backend.cfg", Escape::LineSafe),
            ("alert.env.hbs", Escape::LineSafe),
            ("/etc/x.conf", Escape::LineSafe),
            ("/etc/hosts", Escape::LineSafe),
            ("/etc/html/x", Escape::LineSafe),
            ("x.hbs", Escape::LineSafe),
            ("", Escape::LineSafe),
        ] {
            assert_eq!(Escape::for_output(name), want, "{name}");
        }
    }

    #[test]
    fn escapes_hostile_values_per_format() {
        let evil = "<script>a(\"x\")</script>\n    server evil 1.2.3.4:80\t'`=&";
        let html = escape_html(evil);
        assert_eq!(
            html,
            "&lt;script&gt;a(&quot;x&quot;)&lt;/script&gt;\n    server evil 1.2.3.4:80\t\
             &#x27;&#x60;&#x3D;&amp;"
        );
        let json = escape_json_string(evil);
        assert!(!json.contains('\n') && !json.contains('\t'), "{json}");
        let back: String = serde_json::from_str(&format!("\"{json}\"")).unwrap();
        assert_eq!(back, evil);
        assert_eq!(
            escape_json_string("\u{0}\u{7f}\u{85}\u{2028}\u{feff}é🦀"),
            "\\u0000\\u007f\\u0085\\u2028\\ufeffé🦀"
        );
        assert_eq!(
            escape_line_safe(evil),
            "<script>a(_x_)</script>_____server_evil_1.2.3.4:80___=&"
        );
        // HAProxy comments and quotes, shell expansion: none survives (issue 17, finding 11).
        assert_eq!(
            escape_line_safe("80#check \"x\" 'y' $(id) `id` a\\b;c"),
            "80_check__x___y___(id)__id__a_b_c"
        );
        assert_eq!(escape_line_safe("a\r\u{85}\u{2028}\u{a0}b"), "a____b");
        assert_eq!(Escape::for_output("a.yml").function()("\""), "\\\"");
    }

    proptest::proptest! {
        #[test]
        fn escaped_values_stay_inside_their_field(v in "\\PC*|[\\x00-\\x7f\\u{80}-\\u{a0}\\u{2028}\\u{2029}\\u{feff}\\u{fffe}\\u{ffff}]*") {
            let line = escape_line_safe(&v);
            proptest::prop_assert!(!line.chars().any(|c| c.is_whitespace() || c.is_control() || LINE_SYNTAX.contains(&c)));
            proptest::prop_assert_eq!(line.chars().count(), v.chars().count());
            let json = escape_json_string(&v);
            let back: String = serde_json::from_str(&format!("\"{json}\"")).unwrap();
            proptest::prop_assert_eq!(back, v.clone());
            proptest::prop_assert!(!json.chars().any(|c| c.is_control()));
            let html = escape_html(&v);
            proptest::prop_assert!(!html.contains(['<', '>', '"', '\'']));
        }
    }

    #[test]
    fn member_fields_are_the_api_members_fields() {
        let m = crate::members::ApiMember {
            uptime: 1,
            ..crate::members::ApiMember::listed(
                "pi-01",
                "10.0.0.1",
                crate::members::MemberState::Alive,
                &[],
            )
        };
        let json = serde_json::to_value(&m).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut want: Vec<&str> = MEMBER_FIELDS.iter().map(|(n, _)| *n).collect();
        keys.sort();
        want.sort();
        assert_eq!(
            keys, want,
            "the builder checks live templates against MEMBER_FIELDS"
        );
    }
}
