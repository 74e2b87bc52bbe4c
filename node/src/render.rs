//! `render TEMPLATE --dest FILE [--command CMD]`: a handlebars template over the member list,
//! re-rendered on membership change (debounced), written atomically only when the output
//! changed, and followed by CMD only then (e.g. `systemctl reload haproxy`).
//!
//! Values are escaped for the output's format, chosen from the `--dest` file name
//! ([`piforge_config::overlay::Escape`]: HTML, JSON/YAML string, or line-safe), exactly as the
//! builder's check and firstboot do.
//!
//! [`render_template`] is pure. [`RenderRequest::run`] is the loop: it long-polls the agent's
//! `/api/events`, waits until events stop for the debounce time, renders, and compares. It
//! deliberately never runs CMD for an unchanged output, and never leaves a half-written file.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use handlebars::Handlebars;
use piforge_config::overlay::Escape;
use serde::Serialize;

use crate::api::ApiMember;
use crate::client;
use crate::membership::MemberState;

/// The template context.
#[derive(Debug, Serialize)]
struct RenderContext<'a> {
    /// Every listed member.
    members: &'a [ApiMember],
    /// Only alive members.
    alive: Vec<&'a ApiMember>,
}

/// Renders `template` over `members`. Variables: `members` and `alive` (arrays of API members:
/// `name`, `ip`, `port`, `addr`, `state`, `tags`, ...). Handlebars' `eq`, `and`, `or`, `not`
/// helpers are available, e.g. `{{#each alive}}{{#if (eq tags.role "web")}}...{{/if}}{{/each}}`.
/// `{{x}}` is escaped with `escape` (see [`Escape::for_output`]); `{{{x}}}` is raw.
///
/// A member whose tags break the rules of [`piforge_config::tags`] (a `*-port` tag that is not
/// a port number, a key that is not a tag name, too many or too long) is left out and logged:
/// one hostile or broken member must not make the whole output invalid (HAProxy refusing the
/// file would freeze the lb on an old membership).
pub fn render_template(template: &str, members: &[ApiMember], escape: Escape) -> Result<String> {
    let mut hb = Handlebars::new();
    hb.register_escape_fn(escape.function());
    let mut sorted: Vec<ApiMember> = renderable(members);
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let ctx = RenderContext {
        alive: sorted
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .collect(),
        members: &sorted,
    };
    hb.render_template(template, &ctx)
        .context("rendering the template")
}

/// The members whose tags may be rendered; the others are logged and left out.
fn renderable(members: &[ApiMember]) -> Vec<ApiMember> {
    members
        .iter()
        .filter(|m| match piforge_config::tags::check_tags(&m.tags) {
            Ok(()) => true,
            Err(e) => {
                let name = piforge_config::overlay::escape_line_safe(&m.name);
                tracing::warn!(member = %name, error = %e, "left out of the render: bad tags");
                false
            }
        })
        .cloned()
        .collect()
}

/// A checked `render` command.
#[derive(Debug, Clone)]
pub struct RenderRequest {
    /// Agent HTTP API.
    pub http: String,
    /// Template file.
    pub template: PathBuf,
    /// Output file.
    pub dest: PathBuf,
    /// Shell command run after the output changed.
    pub command: Option<String>,
    /// Quiet time after the last event before re-rendering.
    pub debounce: Duration,
    /// Render once and exit.
    pub once: bool,
}

impl RenderRequest {
    /// Renders once, writes if changed, runs the command if written. Whether it wrote.
    pub fn render_once(&self) -> Result<bool> {
        let template = std::fs::read_to_string(&self.template)
            .with_context(|| format!("reading {}", self.template.display()))?;
        let members = client::members(&self.http)?;
        let escape = Escape::for_output(&self.dest.to_string_lossy());
        let out = render_template(&template, &members, escape)
            .with_context(|| format!("rendering {}", self.template.display()))?;
        if std::fs::read_to_string(&self.dest).ok().as_deref() == Some(out.as_str()) {
            return Ok(false);
        }
        piforge_config::atomic::write_atomic(&self.dest, out.as_bytes(), None)
            .with_context(|| format!("writing {}", self.dest.display()))?;
        tracing::info!(dest = %self.dest.display(), "rendered");
        if let Some(cmd) = &self.command {
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .status()
                .with_context(|| format!("running {cmd:?}"))?;
            if !status.success() {
                tracing::warn!(command = %cmd, %status, "render command failed");
            }
        }
        Ok(true)
    }

    /// Renders now, then again after every burst of membership events. Runs until an error
    /// (or forever); with `once`, returns after the first render.
    pub fn run(&self) -> Result<()> {
        let mut after = client::events(&self.http, None, 0)?.next;
        self.render_once()?;
        if self.once {
            return Ok(());
        }
        loop {
            let page = client::events(&self.http, Some(after), 25)?;
            after = page.next;
            if page.events.is_empty() {
                continue;
            }
            // Debounce: keep absorbing events until the cluster is quiet.
            let mut quiet_since = Instant::now();
            while quiet_since.elapsed() < self.debounce {
                let left = self.debounce.saturating_sub(quiet_since.elapsed());
                let p = client::events(&self.http, Some(after), left.as_secs().max(1))?;
                after = p.next;
                if !p.events.is_empty() {
                    quiet_since = Instant::now();
                }
            }
            self.render_once()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, ip: &str, state: MemberState, role: &str) -> ApiMember {
        ApiMember::listed(name, ip, state, &[("role", role)])
    }

    #[test]
    fn haproxy_backend_from_alive_web_members() {
        let tpl = "backend web\n{{#each alive}}{{#if (eq tags.role \"web\")}}  server {{name}} {{ip}}:80 check\n{{/if}}{{/each}}";
        let ms = vec![
            m("pi-2", "10.0.0.2", MemberState::Alive, "web"),
            m("pi-1", "10.0.0.1", MemberState::Alive, "web"),
            m("pi-3", "10.0.0.3", MemberState::Failed, "web"),
            m("pi-4", "10.0.0.4", MemberState::Alive, "db"),
        ];
        let out = render_template(tpl, &ms, Escape::LineSafe).unwrap();
        assert_eq!(
            out,
            "backend web\n  server pi-1 10.0.0.1:80 check\n  server pi-2 10.0.0.2:80 check\n"
        );
        assert!(render_template("{{#each}", &ms, Escape::LineSafe).is_err());
    }

    #[test]
    fn a_member_with_bad_tags_is_left_out_not_rendered() {
        let tpl = "{{#each alive}}server {{name}} {{ip}}:{{#if tags.http-port}}{{tags.http-port}}{{else}}80{{/if}} check\n{{/each}}";
        let port =
            |name, ip, p| ApiMember::listed(name, ip, MemberState::Alive, &[("http-port", p)]);
        let ms = vec![
            port("pi-1", "10.0.0.1", "8080"),
            port("pi-2", "10.0.0.2", "abc"),
            port("pi-3", "10.0.0.3", "80 backup"),
            port("pi-4", "10.0.0.4", "80#"),
            m("pi-5", "10.0.0.5", MemberState::Alive, "web"),
        ];
        let out = render_template(tpl, &ms, Escape::LineSafe).unwrap();
        assert_eq!(
            out,
            "server pi-1 10.0.0.1:8080 check\nserver pi-5 10.0.0.5:80 check\n"
        );
    }

    #[test]
    fn member_values_are_escaped_for_the_output_format() {
        let evil = "web\n  server evil 1.2.3.4:80 check\n";
        let ms = vec![m(evil, "10.0.0.1", MemberState::Alive, "<script>\"")];
        let tpl = "{{#each alive}}server {{name}} {{ip}}:80 {{tags.role}}\n{{/each}}";
        let cfg = render_template(tpl, &ms, Escape::for_output("/etc/haproxy/50-backend.cfg"));
        assert_eq!(
            cfg.unwrap(),
            "server web___server_evil_1.2.3.4:80_check_ 10.0.0.1:80 <script>_\n"
        );
        let tpl = "{{#each alive}}- {name: \"{{name}}\", role: \"{{tags.role}}\"}\n{{/each}}";
        let yml = render_template(tpl, &ms, Escape::for_output("/etc/prometheus/t.yml"));
        assert_eq!(
            yml.unwrap(),
            "- {name: \"web\\n  server evil 1.2.3.4:80 check\\n\", role: \"<script>\\\"\"}\n"
        );
        let html = render_template("{{alive.0.tags.role}}", &ms, Escape::for_output("a.html"));
        assert_eq!(html.unwrap(), "&lt;script&gt;&quot;");
        let raw = render_template("{{{alive.0.tags.role}}}", &ms, Escape::Html);
        assert_eq!(raw.unwrap(), "<script>\"", "triple-stash stays raw");
    }
}
