//! Loading and checking role overlays from `overlays/<name>/` on the host.
//!
//! An overlay is `overlay.toml` (see `piforge_config::overlay`), a `files/` tree copied onto
//! the Pi's root, and `templates/*.hbs`. Everything is checked at build time so a broken
//! overlay fails here, not at boot: unknown keys and bad values in the manifest, missing or
//! unreferenced template files, symlinks that leave the overlay, template syntax, and
//! variables a template reads that its renderer does not provide (statically, on every
//! branch: see [`vars`]); each template is also rendered once against sample contexts of the
//! right shape. Rendering for real is the Pi's job (firstboot for static templates, the node
//! for live ones).

pub mod vars;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use piforge_config::OverlayManifest;
use piforge_config::members::{ApiMember, MemberState};
use piforge_config::overlay::Escape;
use serde_json::json;

use self::vars::Context as TemplateContext;

/// An overlay read from disk: its manifest and every file under it, by relative path.
#[derive(Debug, Clone)]
pub struct LoadedOverlay {
    /// Directory name, which is the overlay's name.
    pub name: String,
    /// Parsed `overlay.toml`.
    pub manifest: OverlayManifest,
    /// `overlay.toml`, `files/...` and `templates/...`, relative path → bytes, sorted.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Where overlays are looked up: `--overlays DIR`, else `$PIFORGE_OVERLAYS_DIR`, else
/// `overlays/` in the current directory, else `overlays/` next to the executable.
pub fn overlays_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("PIFORGE_OVERLAYS_DIR") {
        return Some(PathBuf::from(p));
    }
    let cwd = PathBuf::from("overlays");
    if cwd.is_dir() {
        return Some(cwd);
    }
    let exe = std::env::current_exe().ok()?;
    let beside = exe.parent()?.join("overlays");
    beside.is_dir().then_some(beside)
}

/// Loads and checks the overlay `name` from `dir`.
pub fn load(dir: &Path, name: &str) -> anyhow::Result<LoadedOverlay> {
    if !piforge_config::valid_hostname(name) {
        bail!("{name:?} is not an overlay name: use a-z, 0-9 and '-'");
    }
    let root = dir.join(name);
    if !root.is_dir() {
        let known = list(dir).unwrap_or_default().join(", ");
        bail!("no overlay {name:?} in {} (known: {known})", dir.display());
    }
    let manifest_path = root.join("overlay.toml");
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let manifest = OverlayManifest::parse(&text)
        .with_context(|| format!("overlay {name}: checking {}", manifest_path.display()))?;
    let mut files = BTreeMap::new();
    files.insert("overlay.toml".to_string(), text.into_bytes());
    check_entries(&root, name)?;
    for sub in ["files", "templates"] {
        collect(&root, &root.join(sub), &format!("{sub}/"), &mut files)?;
    }
    for key in files.keys().filter(|k| k.starts_with("templates/")) {
        let source = &key["templates/".len()..];
        if !manifest.templates.iter().any(|t| t.source == source) {
            bail!(
                "overlay {name}: {key} is not named by any [[template]] in overlay.toml \
                 (add one, or delete the file; partials are not supported)"
            );
        }
    }
    for t in &manifest.templates {
        let key = format!("templates/{}", t.source);
        let Some(src) = files.get(&key) else {
            bail!(
                "overlay {name}: template {:?} named in overlay.toml is missing ({} does not exist)",
                t.source,
                root.join(&key).display()
            );
        };
        let src = std::str::from_utf8(src)
            .map_err(|_| anyhow::anyhow!("overlay {name}: {key} is not UTF-8 text"))?;
        check_template(src, t.live, &t.dest)
            .with_context(|| format!("overlay {name}: checking {key}"))?;
    }
    Ok(LoadedOverlay {
        name: name.to_string(),
        manifest,
        files,
    })
}

/// Names of the overlays in `dir`, sorted.
pub fn list(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = vec![];
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        if e.path().join("overlay.toml").is_file() {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Renders `source` the way the Pi does (default helpers, values escaped for the format of
/// `dest` by [`Escape::for_output`]) after the static variable check, against sample contexts:
/// for a static template the one firstboot builds (empty member lists), for a live one the
/// node's with no members and with a few members of every state and of the roles `web` and
/// `lb`. Returns the last rendering.
pub fn check_template(source: &str, live: bool, dest: &str) -> anyhow::Result<String> {
    let ctx = if live {
        TemplateContext::Live
    } else {
        TemplateContext::Static
    };
    vars::check(source, ctx).map_err(anyhow::Error::msg)?;
    let mut hb = handlebars::Handlebars::new();
    hb.register_escape_fn(Escape::for_output(dest).function());
    let mut last = String::new();
    for sample in sample_contexts(live) {
        last = hb
            .render_template(source, &sample)
            .map_err(|e| anyhow::anyhow!("rendering a sample: {e}"))?;
    }
    Ok(last)
}

/// A member as `/api/members` lists it, with every optional field set so templates' branches
/// on them are exercised.
fn sample_member(name: &str, ip: &str, state: MemberState, role: &str) -> serde_json::Value {
    json!(ApiMember {
        phi: 0.5,
        uptime: 60,
        last_seen: Some(0.25),
        ..ApiMember::listed(name, ip, state, &[("role", role)])
    })
}

fn sample_contexts(live: bool) -> Vec<serde_json::Value> {
    if !live {
        return vec![json!({
            "hostname": "pi-01", "cluster": "piforge", "tags": { "role": "web" },
            "members": [], "alive": [],
        })];
    }
    let members = vec![
        sample_member("pi-01", "192.0.2.1", MemberState::Alive, "lb"),
        sample_member("pi-02", "192.0.2.2", MemberState::Alive, "web"),
        sample_member("pi-03", "192.0.2.3", MemberState::Suspect, "web"),
        sample_member("pi-04", "192.0.2.4", MemberState::Failed, "web"),
        sample_member("pi-05", "192.0.2.5", MemberState::Left, "monitor"),
    ];
    let alive: Vec<_> = members
        .iter()
        .filter(|m| m["state"] == "alive")
        .cloned()
        .collect();
    vec![
        json!({ "members": [], "alive": [] }),
        json!({ "members": members, "alive": alive }),
    ]
}

/// Top-level entries an overlay directory may hold.
const OVERLAY_ENTRIES: &[&str] = &["overlay.toml", "files", "templates", "README.md"];

fn check_entries(root: &Path, name: &str) -> anyhow::Result<()> {
    for e in std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))? {
        let e = e.with_context(|| format!("reading {}", root.display()))?;
        let n = e.file_name().to_string_lossy().into_owned();
        if !OVERLAY_ENTRIES.contains(&n.as_str()) {
            bail!(
                "overlay {name}: unexpected {} (an overlay holds {})",
                e.path().display(),
                OVERLAY_ENTRIES.join(", ")
            );
        }
    }
    for sub in ["files", "templates"] {
        let p = root.join(sub);
        if p.exists() && !p.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            bail!("overlay {name}: {} must be a directory", p.display());
        }
    }
    Ok(())
}

/// Reads the tree under `dir` into `out` (keys `prefix` + relative path). Symlinks are
/// followed only when they stay inside `root` (the overlay) and end at a plain file, which is
/// then copied as a file (the FAT has no symlinks); anything else is refused.
fn collect(
    root: &Path,
    dir: &Path,
    prefix: &str,
    out: &mut BTreeMap<String, Vec<u8>>,
) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Some(name) = e.file_name().to_str().map(String::from) else {
            bail!("{}: file names must be UTF-8", e.path().display());
        };
        let path = e.path();
        let ty = e
            .file_type()
            .with_context(|| format!("reading {}", path.display()))?;
        if ty.is_symlink() {
            let target =
                std::fs::read_link(&path).with_context(|| format!("reading {}", path.display()))?;
            let real = std::fs::canonicalize(&path).ok();
            let inside = match (&real, std::fs::canonicalize(root)) {
                (Some(r), Ok(top)) => r.starts_with(&top),
                _ => false,
            };
            if target.is_absolute() || !inside {
                bail!(
                    "{} is a symlink to {} outside the overlay: the card carries copies, so \
                     put the file itself in the overlay",
                    path.display(),
                    target.display()
                );
            }
            if !real.as_deref().is_some_and(Path::is_file) {
                bail!(
                    "{} is a symlink to {}, which is not a file",
                    path.display(),
                    target.display()
                );
            }
        }
        if ty.is_dir() {
            collect(root, &path, &format!("{prefix}{name}/"), out)?;
        } else if ty.is_file() || ty.is_symlink() {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            out.insert(format!("{prefix}{name}"), bytes);
        } else {
            bail!(
                "{}: overlays hold plain files and directories only",
                path.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(dir: &Path, name: &str, manifest: &str, files: &[(&str, &str)]) {
        let root = dir.join(name);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("overlay.toml"), manifest).unwrap();
        for (p, c) in files {
            let p = root.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
    }

    #[test]
    fn loads_files_and_templates_in_order() {
        let d = tempfile::tempdir().unwrap();
        overlay(
            d.path(),
            "web",
            "description = \"web\"\n[[template]]\nsource = \"index.hbs\"\ndest = \"/var/www/index.html\"\n",
            &[
                ("files/etc/b", "b"),
                ("files/etc/a", "a"),
                ("templates/index.hbs", "{{hostname}}"),
            ],
        );
        let o = load(d.path(), "web").unwrap();
        let keys: Vec<_> = o.files.keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "files/etc/a",
                "files/etc/b",
                "overlay.toml",
                "templates/index.hbs"
            ]
        );
        assert_eq!(list(d.path()).unwrap(), ["web"]);
    }

    #[test]
    fn broken_overlays_are_refused_with_the_reason() {
        let d = tempfile::tempdir().unwrap();
        overlay(
            d.path(),
            "a",
            "[[template]]\nsource = \"x.hbs\"\ndest = \"/x\"\n",
            &[],
        );
        overlay(
            d.path(),
            "b",
            "[[template]]\nsource = \"x.hbs\"\ndest = \"/x\"\n",
            &[("templates/x.hbs", "{{#if}}")],
        );
        overlay(d.path(), "c", "packages = [\"a;b\"]\n", &[]);
        let e = format!("{:#}", load(d.path(), "a").unwrap_err());
        assert!(e.contains("is missing"), "{e}");
        let e = format!("{:#}", load(d.path(), "b").unwrap_err());
        assert!(e.contains("overlay b: checking templates/x.hbs"), "{e}");
        let e = format!("{:#}", load(d.path(), "c").unwrap_err());
        assert!(e.contains("packages"), "{e}");
        let e = format!("{:#}", load(d.path(), "nope").unwrap_err());
        assert!(e.contains("known: a, b, c"), "{e}");
    }

    #[test]
    fn unknown_variables_stray_templates_and_escaping_symlinks_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let live = "[[template]]\nsource = \"b.hbs\"\ndest = \"/b\"\nlive = true\n";
        overlay(
            d.path(),
            "var",
            live,
            &[("templates/b.hbs", "{{#each alive}}{{hostname}}{{/each}}")],
        );
        let e = format!("{:#}", load(d.path(), "var").unwrap_err());
        assert!(
            e.contains("overlay var: checking templates/b.hbs")
                && e.contains("unknown variable `hostname`"),
            "{e}"
        );
        overlay(d.path(), "stray", "", &[("templates/extra.hbs", "x")]);
        let e = format!("{:#}", load(d.path(), "stray").unwrap_err());
        assert!(e.contains("templates/extra.hbs is not named"), "{e}");
        overlay(d.path(), "typo", "", &[("file/etc/x", "x")]);
        let e = format!("{:#}", load(d.path(), "typo").unwrap_err());
        assert!(e.contains("unexpected") && e.contains("typo/file"), "{e}");

        // Symlinks: Unix only (Windows needs a privilege to make them).
        #[cfg(unix)]
        {
            std::fs::write(d.path().join("secret"), "outside").unwrap();
            overlay(d.path(), "link", "", &[("files/etc/inside", "in")]);
            let etc = d.path().join("link/files/etc");
            std::os::unix::fs::symlink("inside", etc.join("ok")).unwrap();
            let o = load(d.path(), "link").unwrap();
            assert_eq!(
                o.files["files/etc/ok"], b"in",
                "an inner link is copied as a file"
            );
            std::os::unix::fs::symlink("../../../secret", etc.join("escape")).unwrap();
            let e = format!("{:#}", load(d.path(), "link").unwrap_err());
            assert!(
                e.contains("escape is a symlink") && e.contains("outside"),
                "{e}"
            );
            std::fs::remove_file(etc.join("escape")).unwrap();
            std::os::unix::fs::symlink(d.path().join("link/files/etc/inside"), etc.join("abs"))
                .unwrap();
            let e = format!("{:#}", load(d.path(), "link").unwrap_err());
            assert!(e.contains("abs is a symlink"), "{e}");
        }
    }

    #[test]
    fn sample_renders_use_the_pi_settings() {
        let out = check_template("<{{hostname}}>", false, "/etc/x").unwrap();
        assert_eq!(out, "<pi-01>", "firstboot's context");
        let out = check_template("<{{cluster}}\"", false, "/var/www/a.html").unwrap();
        assert_eq!(
            out, "<piforge\"",
            "the template's own text is never escaped"
        );
        let out = check_template(
            "{{#each alive}}{{#if (eq tags.role \"web\")}}{{name}} {{/if}}{{/each}}",
            true,
            "/etc/x",
        )
        .unwrap();
        assert_eq!(out, "pi-02 ", "only alive members are in alive");
        let e = format!(
            "{:#}",
            check_template("{{#if}}{{/if}}", false, "/etc/x").unwrap_err()
        );
        assert!(e.contains("#if needs an argument"), "{e}");
    }

    #[test]
    fn every_shipped_overlay_passes_the_checks() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlays");
        let names = list(&dir).unwrap();
        assert_eq!(names, ["alert", "db", "lb", "metrics", "monitor", "web"]);
        for n in &names {
            let o = load(&dir, n).unwrap_or_else(|e| panic!("{n}: {e:#}"));
            assert!(!o.manifest.description.is_empty(), "{n}");
        }
    }
}
