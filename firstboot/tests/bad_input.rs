//! Bad input: a missing or refused card boots normally (our cmdline.txt arguments removed, so
//! no reboot loop), leaves the card for inspection, changes nothing else on the root, and says
//! why in firstboot.log without echoing a secret.

mod common;

use std::fs;

use common::*;
use piforge_firstboot::apply::RecordingSystem;
use piforge_firstboot::{Outcome, run_firstboot};

fn refused(card_text: Option<&str>, want_in_log: &str) {
    let f = Fake::new(Rel::Bookworm, true, "10000000aaaaaa01");
    let card = f.boot.join("piforge/card.toml");
    match card_text {
        Some(t) => fs::write(&card, t).unwrap(),
        None => fs::remove_file(&card).unwrap(),
    }
    let before = snapshot(&f.root, None);
    let mut sys = RecordingSystem::default();
    let out = run_firstboot(&f.request(hooks(1)), &mut sys).unwrap();
    let Outcome::NoCard { reason, changed } = out else {
        panic!("{out:?}")
    };
    assert!(reason.contains(want_in_log), "{reason}");
    assert_eq!(changed.len(), 1, "only cmdline.txt: {changed:?}");
    assert_eq!(
        fs::read_to_string(f.boot.join("cmdline.txt")).unwrap(),
        f.stock_cmdline
    );
    assert_eq!(
        card.exists(),
        card_text.is_some(),
        "the card stays for inspection"
    );
    let after = snapshot(&f.root, None);
    let d: Vec<String> = diff(&before, &after)
        .into_iter()
        .filter(|l| !l.contains("cmdline.txt") && !l.contains("firstboot.log"))
        .collect();
    assert_eq!(d, Vec::<String>::new(), "nothing else changed");
    let log = fs::read_to_string(f.boot.join("piforge/firstboot.log")).unwrap();
    assert!(log.contains("card not applied; booting normally"), "{log}");
    assert!(log.contains(want_in_log), "{log}");
    for s in [PSK, HASH, &hex::encode(KEY), "short-psk"] {
        assert!(!log.contains(s), "log leaks {s}: {log}");
    }
    // Next boot: no arguments left, nothing happens again.
    let out = run_firstboot(&f.request(hooks(1)), &mut sys).unwrap();
    assert!(matches!(out, Outcome::NoCard { ref changed, .. } if changed.is_empty()));
}

#[test]
fn missing_card() {
    refused(None, "no card at");
}

#[test]
fn malformed_card() {
    refused(Some("this is [not toml"), "refused");
}

#[test]
fn unknown_schema_version() {
    let t = full_card()
        .render()
        .replace("schema-version = 1", "schema-version = 9");
    refused(Some(&t), "schema-version 9 is not supported");
}

#[test]
fn invalid_user_name() {
    let t = full_card()
        .render()
        .replace("user = \"alice\"", "user = \"Alice Smith\"");
    refused(Some(&t), "access.user");
}

#[test]
fn wifi_psk_of_wrong_length() {
    let t = full_card().render().replace(
        &format!("psk = \"{PSK}\""),
        "psk = \"short-psk-but-nope-\u{e9}\"",
    );
    refused(Some(&t), "network.wifi.psk");
    let t = full_card()
        .render()
        .replace(&format!("psk = \"{PSK}\""), "psk = \"short\"");
    refused(Some(&t), "network.wifi.psk");
}

#[test]
fn missing_overlay_is_an_error_before_anything_changes() {
    let f = Fake::new(Rel::Bookworm, true, "10000000aaaaaa01");
    fs::remove_dir_all(f.boot.join("piforge/overlays")).unwrap();
    let before = snapshot(&f.root, None);
    let mut sys = RecordingSystem::default();
    let e = run_firstboot(&f.request(hooks(1)), &mut sys).unwrap_err();
    assert!(format!("{e:#}").contains("overlay web"), "{e:#}");
    let d: Vec<String> = diff(&before, &snapshot(&f.root, None))
        .into_iter()
        .filter(|l| !l.contains("firstboot.log"))
        .collect();
    assert_eq!(d, Vec::<String>::new());
}

#[test]
fn broken_static_template_is_an_error_before_anything_changes() {
    let f = Fake::new(Rel::Bookworm, true, "10000000aaaaaa01");
    fs::write(
        f.boot.join("piforge/overlays/web/templates/motd.hbs"),
        "{{#each members}}unclosed",
    )
    .unwrap();
    let before = snapshot(&f.root, None);
    let mut sys = RecordingSystem::default();
    let e = run_firstboot(&f.request(hooks(1)), &mut sys).unwrap_err();
    assert!(format!("{e:#}").contains("rendering motd.hbs"), "{e:#}");
    let d: Vec<String> = diff(&before, &snapshot(&f.root, None))
        .into_iter()
        .filter(|l| !l.contains("firstboot.log"))
        .collect();
    assert_eq!(d, Vec::<String>::new());
    assert!(
        f.boot.join("piforge/card.toml").exists(),
        "kept for the next try"
    );
}
