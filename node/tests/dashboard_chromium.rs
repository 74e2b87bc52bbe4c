//! The dashboard in a real headless Chromium (Debian `chromium`): the page's script runs,
//! fetches `/api/members` and draws one row per member with state, phi/threshold and tags.
//! Takes a screenshot (kept at `$CARGO_TARGET_TMPDIR/dashboard.png`). Skipped, loudly, when
//! Chromium is not installed.

mod common;

use std::process::Command;

use common::*;
use piforge_node::membership::MemberState;

fn chromium() -> Option<&'static str> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
}

fn chromium_cmd(bin: &str, profile: &std::path::Path) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

#[test]
fn dashboard_renders_members_in_chromium() {
    let Some(bin) = chromium() else {
        eprintln!("SKIPPED dashboard test: chromium is not installed (apt-get install chromium)");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let a = Agent::new(root.path(), "alpha", &[], KEY, "");
    let b = Agent::new(root.path(), "beta", &[&a], KEY, "");
    all_see(&[&a, &b], "beta", MemberState::Alive, 10);
    all_see(&[&b], "alpha", MemberState::Alive, 10);
    let url = format!("http://{}/", a.http);

    let out = chromium_cmd(bin, &root.path().join("profile-dom"))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "data-name=\"alpha\"",
        "data-name=\"beta\"",
        "class=\"alive\"",
        "role=r-beta",
        " / 8</td>",
        "2 members, 2 alive",
    ] {
        assert!(
            dom.contains(needle),
            "{needle:?} missing from the rendered page:\n{dom}"
        );
    }

    let shot = root.path().join("dashboard.png");
    let out = chromium_cmd(bin, &root.path().join("profile-shot"))
        .arg("--window-size=1200,400")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "screenshot of {} bytes",
        png.len()
    );
    let keep = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&keep, &png).unwrap();
    eprintln!("screenshot: {}", keep.display());
}
