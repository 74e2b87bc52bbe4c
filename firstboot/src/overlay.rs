//! Role overlays shipped on the card under `piforge/overlays/<name>/`: `files/` copied onto the
//! root, units enabled, static templates rendered with handlebars (values escaped for the
//! output's format: `piforge_config::overlay::Escape`), live templates installed with
//! a `piforge-node render` unit, tags, event handlers, webhooks and MQTT merged into node.toml
//! and packages handed to `piforge-packages.service`.
//!
//! Pure planning like the rest of `plan`; the FAT has no modes, so executables are recognised by
//! where they live. It does not validate overlays beyond `OverlayManifest::parse` (the builder
//! checks them at build time).

use std::collections::BTreeMap;

use piforge_config::card::Card;
use piforge_config::node::{EventHandler, MqttSettings, Webhook};
use piforge_config::overlay::Escape;
use piforge_config::{NodeConfig, OverlayManifest};

use crate::action::{Action, Loc, Owner, b, link, mkdir, r, write};
use crate::facts::State;
use crate::units;

/// Why an overlay named by the card cannot be planned (`plan` reports it as
/// `PlanError::Overlay`).
#[derive(Debug)]
pub(crate) struct OverlayError {
    /// Overlay name.
    pub(crate) name: String,
    /// What is wrong.
    pub(crate) reason: String,
}

/// What the overlays add to the node.
pub(crate) struct OverlayPlan {
    /// Tags of all overlays (the first overlay naming a tag wins).
    pub(crate) tags: BTreeMap<String, String>,
    /// Debian packages, deduplicated, in overlay order.
    pub(crate) packages: Vec<String>,
    /// Event handlers of all overlays, in overlay order.
    pub(crate) handlers: Vec<EventHandler>,
    /// Webhooks of all overlays, in overlay order.
    pub(crate) webhooks: Vec<Webhook>,
    /// The first overlay's MQTT broker.
    pub(crate) mqtt: Option<MqttSettings>,
}

impl OverlayPlan {
    /// Adds what the overlays contribute to the node's config. The card's own tags and MQTT
    /// settings win over an overlay's; handlers and webhooks are added after the card's.
    pub(crate) fn merge_into(&self, node: &mut NodeConfig) {
        for (k, v) in &self.tags {
            node.tags.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for h in &self.handlers {
            if !node.handlers.contains(h) {
                node.handlers.push(h.clone());
            }
        }
        for w in &self.webhooks {
            if !node.webhooks.contains(w) {
                node.webhooks.push(w.clone());
            }
        }
        if node.mqtt.is_none() {
            node.mqtt = self.mqtt.clone();
        }
    }
}

/// What a static (non-live) overlay template sees. `members`/`alive` are empty at first boot,
/// so a template written for the live renderer still renders.
#[derive(serde::Serialize)]
struct TemplateContext<'a> {
    hostname: &'a str,
    cluster: &'a str,
    tags: &'a BTreeMap<String, String>,
    members: Vec<()>,
    alive: Vec<()>,
}

/// The node's tags: the card's, then each overlay's where the card has none.
fn merged_tags(card: &Card, state: &State) -> BTreeMap<String, String> {
    let mut tags = card.node.tags.clone();
    for name in &card.overlays {
        let text = state.text(&b(&format!("piforge/overlays/{name}/overlay.toml")));
        if let Some(m) = text.and_then(|t| OverlayManifest::parse(&t).ok()) {
            for (k, v) in m.tags {
                tags.entry(k).or_insert(v);
            }
        }
    }
    tags
}

/// Template files the plan reads besides [`wanted`]: the sources of static templates named by
/// the overlay manifests in `state`.
pub fn template_sources(overlays: &[String], state: &State) -> Vec<Loc> {
    let mut out = vec![];
    for name in overlays {
        let dir = format!("piforge/overlays/{name}");
        let text = state.text(&b(&format!("{dir}/overlay.toml")));
        if let Some(m) = text.and_then(|t| OverlayManifest::parse(&t).ok()) {
            for t in m.templates.iter().filter(|t| !t.live) {
                out.push(b(&format!("{dir}/templates/{}", t.source)));
            }
        }
    }
    out
}

/// The actions of the card's overlays, appended to `out`. `done`: an earlier run finished every
/// root change (`plan::DONE_MARKER` exists), so overlay files already cleaned off the card are
/// skipped rather than missing.
pub(crate) fn overlay_actions(
    card: &Card,
    state: &State,
    done: bool,
    hostname: &str,
    out: &mut Vec<Action>,
    notes: &mut Vec<String>,
) -> Result<OverlayPlan, OverlayError> {
    let all_tags = &merged_tags(card, state);
    let mut tags = BTreeMap::new();
    let mut packages: Vec<String> = vec![];
    let (mut handlers, mut webhooks, mut mqtt) = (vec![], vec![], None);
    let payload = state.tree(&b("piforge"));
    for name in &card.overlays {
        let dir = format!("piforge/overlays/{name}");
        let err = |reason: String| OverlayError {
            name: name.clone(),
            reason,
        };
        let Some(text) = state.text(&b(&format!("{dir}/overlay.toml"))) else {
            // Already applied and cleaned up by an interrupted earlier run? Then the files
            // are in place; otherwise the card is inconsistent.
            if done {
                notes.push(format!(
                    "overlay {name}: no overlay.toml on the card, skipped"
                ));
                continue;
            }
            return Err(err("overlay.toml is missing on the card".into()));
        };
        let m = OverlayManifest::parse(&text).map_err(|e| err(e.to_string()))?;
        let files_prefix = "overlays/".to_string() + name + "/files/";
        let tmpl_prefix = "overlays/".to_string() + name + "/templates/";
        let mut shipped_units = vec![];
        for (rel, _) in payload {
            if rel == &files_prefix || rel == &tmpl_prefix {
                continue;
            }
            if let Some(f) = rel.strip_prefix(&files_prefix) {
                if let Some(d) = f.strip_suffix('/') {
                    out.push(mkdir(d, 0o755));
                } else {
                    // The FAT has no modes: executables are recognised by where they live.
                    let exec = ["usr/local/bin/", "usr/local/sbin/", "usr/bin/", "usr/sbin/"]
                        .iter()
                        .any(|p| f.starts_with(p))
                        || f.ends_with(".sh");
                    if f.starts_with("etc/systemd/system/") {
                        shipped_units.push(f.rsplit('/').next().unwrap_or(f).to_string());
                    }
                    out.push(Action::Copy {
                        from: b(&format!("piforge/{rel}")),
                        to: r(f),
                        mode: if exec { 0o755 } else { 0o644 },
                        owner: Owner::ROOT,
                        create_only: false,
                    });
                }
            } else if let Some(t) = rel.strip_prefix(&tmpl_prefix) {
                // Installed for `piforge-node render` (live ones); static ones are also
                // rendered below.
                let dest = format!("etc/piforge/templates/{name}/{t}");
                if let Some(d) = dest.strip_suffix('/') {
                    out.push(mkdir(d, 0o755));
                } else {
                    out.push(Action::Copy {
                        from: b(&format!("piforge/{rel}")),
                        to: r(&dest),
                        mode: 0o644,
                        owner: Owner::ROOT,
                        create_only: false,
                    });
                }
            }
        }
        if !m.templates.is_empty() {
            out.push(write(
                r(&format!("etc/piforge/templates/{name}/overlay.toml")),
                text.clone(),
                0o644,
            ));
        }
        for unit in &m.enable {
            let target = if shipped_units.contains(unit) {
                format!("/etc/systemd/system/{unit}")
            } else {
                format!("/lib/systemd/system/{unit}")
            };
            out.push(link(
                &format!("etc/systemd/system/multi-user.target.wants/{unit}"),
                &target,
            ));
        }
        for (i, t) in m.templates.iter().enumerate() {
            let installed = format!("/etc/piforge/templates/{name}/{}", t.source);
            if t.live {
                // Kept rendered by the node agent, which knows the membership.
                let unit = format!("piforge-render-{name}-{i}.service");
                let path = format!("/{}/{unit}", units::UNIT_DIR);
                let text = units::render_service(&installed, &t.dest, t.command.as_deref());
                out.push(write(r(&path), text, 0o644));
                let (l, target) = units::enable_link(&unit, &path, "multi-user.target");
                out.push(link(&l, &target));
                continue;
            }
            let src = b(&format!("{dir}/templates/{}", t.source));
            let Some(tmpl) = state.text(&src) else {
                if done {
                    continue;
                }
                return Err(err(format!("template {} is missing on the card", t.source)));
            };
            let ctx = TemplateContext {
                hostname,
                cluster: &card.cluster.name,
                tags: all_tags,
                members: vec![],
                alive: vec![],
            };
            let mut hb = handlebars::Handlebars::new();
            // Escaped for the output's format, as the builder's check and the node do.
            hb.register_escape_fn(Escape::for_output(&t.dest).function());
            let rendered = hb
                .render_template(&tmpl, &ctx)
                .map_err(|e| err(format!("rendering {}: {e}", t.source)))?;
            out.push(write(r(&t.dest), rendered, t.mode.unwrap_or(0o644)));
        }
        for (k, v) in m.tags {
            tags.entry(k).or_insert(v);
        }
        for p in m.packages {
            if !packages.contains(&p) {
                packages.push(p);
            }
        }
        handlers.extend(m.handlers);
        webhooks.extend(m.webhooks);
        if mqtt.is_none() {
            mqtt = m.mqtt;
        }
        notes.push(format!("overlay {name} applied"));
    }
    Ok(OverlayPlan {
        tags,
        packages,
        handlers,
        webhooks,
        mqtt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_context_has_exactly_the_documented_variables() {
        let tags = BTreeMap::new();
        let ctx = TemplateContext {
            hostname: "pi-01",
            cluster: "lab",
            tags: &tags,
            members: vec![],
            alive: vec![],
        };
        // The top-level keys, as handlebars sees them.
        let hb = handlebars::Handlebars::new();
        let listed = hb
            .render_template("{{#each this}}{{@key}} {{/each}}", &ctx)
            .unwrap();
        let mut keys: Vec<&str> = listed.split_whitespace().collect();
        let mut want: Vec<&str> = piforge_config::overlay::STATIC_VARS
            .iter()
            .map(|(n, _)| *n)
            .collect();
        keys.sort();
        want.sort();
        assert_eq!(
            keys, want,
            "the builder checks templates against STATIC_VARS"
        );
    }

    #[test]
    fn card_settings_win_and_overlay_handlers_are_added() {
        let key = piforge_config::ClusterKey::from_bytes([1; 32]);
        let mut card = Card::new("lab", key);
        card.node.tags.insert("role".into(), "lb".into());
        let mut node = NodeConfig::from_card(&card, "pi-01");
        let h = EventHandler {
            command: "/usr/local/bin/alert".into(),
            events: vec!["member-failed".into()],
            timeout_secs: 10,
            scope: piforge_config::node::Scope::Cluster,
        };
        let plan = OverlayPlan {
            tags: [
                ("role".to_string(), "alert".to_string()),
                ("x".to_string(), "1".to_string()),
            ]
            .into(),
            packages: vec![],
            handlers: vec![h.clone(), h.clone()],
            webhooks: vec![],
            mqtt: Some(MqttSettings::plain("127.0.0.1:1883")),
        };
        plan.merge_into(&mut node);
        assert_eq!(node.tags["role"], "lb");
        assert_eq!(node.tags["x"], "1");
        assert_eq!(node.handlers, [h]);
        assert_eq!(node.mqtt.unwrap().broker, "127.0.0.1:1883");
        // A broker given at build time (card) wins over the overlay's local one.
        card.node.mqtt = Some(MqttSettings::plain("mqtts://alerts@mq.example.com"));
        let mut node = NodeConfig::from_card(&card, "pi-01");
        plan.merge_into(&mut node);
        assert_eq!(node.mqtt.unwrap().broker, "mqtts://alerts@mq.example.com");
    }
}
