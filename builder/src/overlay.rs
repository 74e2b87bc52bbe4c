//! Loading and checking role overlays from `overlays/<name>/` on the host.
//!
//! An overlay is `overlay.toml` (see `piforge_config::overlay`), a `files/` tree copied onto
//! the Pi's root, and `templates/*.hbs`. Everything is checked at build time — unknown keys,
//! missing template files, template syntax — so a broken overlay fails here, not at boot.
//! Rendering templates is the Pi's job (firstboot for static ones, the node for live ones).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use piforge_config::OverlayManifest;

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
        .with_context(|| format!("checking {}", manifest_path.display()))?;
    let mut files = BTreeMap::new();
    files.insert("overlay.toml".to_string(), text.into_bytes());
    for sub in ["files", "templates"] {
        collect(&root.join(sub), &format!("{sub}/"), &mut files)?;
    }
    let mut hb = handlebars::Handlebars::new();
    hb.set_strict_mode(true);
    for t in &manifest.templates {
        let key = format!("templates/{}", t.source);
        let Some(src) = files.get(&key) else {
            bail!(
                "overlay {name}: template {:?} named in overlay.toml is missing ({} does not exist)",
                t.source,
                root.join(&key).display()
            );
        };
        let src = String::from_utf8_lossy(src);
        hb.register_template_string(&t.source, src.as_ref())
            .map_err(|e| anyhow::anyhow!("overlay {name}: template {}: {e}", t.source))?;
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

fn collect(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let ty = e
            .file_type()
            .with_context(|| format!("reading {}", path.display()))?;
        if ty.is_dir() {
            collect(&path, &format!("{prefix}{name}/"), out)?;
        } else if ty.is_file() {
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
        assert!(e.contains("template x.hbs"), "{e}");
        let e = format!("{:#}", load(d.path(), "c").unwrap_err());
        assert!(e.contains("packages"), "{e}");
        let e = format!("{:#}", load(d.path(), "nope").unwrap_err());
        assert!(e.contains("known: a, b, c"), "{e}");
    }
}
