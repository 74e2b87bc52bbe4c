//! Overlays come from directories a user may have downloaded: the manifest parser, the static
//! template check and the sample render must refuse anything with an error, never panic or
//! hang the build. Member names and tag values come from any cluster member: rendered by the
//! node's renderer through each escape mode (chosen by output name, as on the Pi), a value
//! must stay inside its field: line-safe output gains no line break or space from a value,
//! JSON-string and HTML output decode back to the exact value.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use piforge::build::overlay::{check_template, vars};
use piforge_config::OverlayManifest;
use piforge_config::members::{ApiMember, MemberState};
use piforge_config::overlay::Escape;
use piforge_node::render::render_template;

const DESTS: [&str; 3] = [
    "/etc/haproxy/x.cfg",
    "/var/www/x.html",
    "/etc/prometheus/x.yml",
];

fn member(value: &str) -> ApiMember {
    ApiMember {
        uptime: 1,
        ..ApiMember::listed(value, "10.0.0.1", MemberState::Alive, &[("port", value)])
    }
}

fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x60;", "`")
        .replace("&#x3D;", "=")
        .replace("&amp;", "&")
}

fn render_value(value: &str) {
    let ms = [member(value)];
    // Line-safe (HAProxy-like): one line, four fields, whatever the value holds.
    let tpl = "{{#each alive}}server {{name}} {{ip}}:{{tags.port}} check\n{{/each}}";
    let escape = Escape::for_output(DESTS[0]);
    assert_eq!(escape, Escape::LineSafe);
    let out = render_template(tpl, &ms, escape).expect("rendering line-safe");
    assert_eq!(
        out.matches('\n').count(),
        1,
        "a value added a line: {out:?}"
    );
    // The template's three spaces and its newline are the only separators.
    let separators = out.chars().filter(|c| c.is_whitespace() || c.is_control());
    assert_eq!(separators.count(), 4, "a value added a separator: {out:?}");
    // Nor a comment start, a quote or a shell expansion (the template has none).
    assert!(
        !out.contains(piforge_config::overlay::LINE_SYNTAX),
        "a value added line syntax: {out:?}"
    );
    // JSON string (YAML double quotes too): decodes back to the value.
    let tpl = "{\"n\": \"{{alive.0.name}}\", \"t\": \"{{alive.0.tags.port}}\"}";
    let escape = Escape::for_output(DESTS[2]);
    assert_eq!(escape, Escape::JsonString);
    let out = render_template(tpl, &ms, escape).expect("rendering json");
    let back: BTreeMap<String, String> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(back["n"], value);
    assert_eq!(back["t"], value);
    // HTML: no markup from the value, and it decodes back.
    let tpl = "<p title=\"{{alive.0.name}}\">{{alive.0.tags.port}}</p>";
    let escape = Escape::for_output(DESTS[1]);
    assert_eq!(escape, Escape::Html);
    let out = render_template(tpl, &ms, escape).expect("rendering html");
    assert_eq!(out.matches(['<', '>', '"', '\'']).count(), 6, "{out:?}");
    let title = &out["<p title=\"".len()..out.find("\">").expect("the title's end")];
    assert_eq!(html_unescape(title), value);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match mode % 4 {
        0 => {
            let _ = OverlayManifest::parse(text);
        }
        1 => {
            let _ = vars::check(text, vars::Context::Static);
            let _ = vars::check(text, vars::Context::Live);
        }
        2 => {
            let dest = DESTS[usize::from(mode >> 3) % DESTS.len()];
            let _ = check_template(text, mode & 4 != 0, dest);
        }
        _ => {
            // Values are at most 256 bytes on the wire (node/src/wire.rs MAX_STR).
            if text.len() <= 256 {
                render_value(text);
            }
        }
    }
});
