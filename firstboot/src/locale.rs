//! Time zone, keyboard layout and locale: `/etc/timezone` + the `/etc/localtime` link,
//! `XKBLAYOUT` in `/etc/default/keyboard`, `/etc/default/locale` and the matching line of
//! `/etc/locale.gen`. Pure edits that keep every other line; it does not run `locale-gen`
//! (there is no root to run it in on a prefix), so a locale not built into the image needs
//! `locale-gen` once on the Pi.

use piforge_config::card::Card;

use crate::action::{Action, link, r, write};
use crate::facts::State;

/// `/etc/default/keyboard` with `XKBLAYOUT` set (other lines kept).
pub fn keyboard_with(text: Option<&str>, layout: &str) -> String {
    let base = text.unwrap_or(
        "XKBMODEL=\"pc105\"\nXKBLAYOUT=\"us\"\nXKBVARIANT=\"\"\nXKBOPTIONS=\"\"\n\nBACKSPACE=\"guess\"\n",
    );
    let mut found = false;
    let mut out: String = base
        .lines()
        .map(|l| {
            if l.starts_with("XKBLAYOUT=") {
                found = true;
                format!("XKBLAYOUT=\"{layout}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    if !found {
        out.push_str(&format!("XKBLAYOUT=\"{layout}\"\n"));
    }
    out
}

/// `/etc/locale.gen` with `locale` uncommented (added if absent).
pub fn locale_gen_with(text: &str, locale: &str) -> String {
    let charset = locale.split('.').nth(1).unwrap_or("UTF-8");
    let want = format!("{locale} {charset}");
    let mut found = false;
    let mut out: String = text
        .lines()
        .map(|l| {
            let bare = l.trim_start_matches('#').trim();
            if bare == want {
                found = true;
                format!("{want}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    if !found {
        out.push_str(&format!("{want}\n"));
    }
    out
}

pub(crate) fn locale_actions(card: &Card, state: &State, out: &mut Vec<Action>) {
    let l = &card.locale;
    if let Some(tz) = &l.timezone {
        out.push(write(r("etc/timezone"), format!("{tz}\n"), 0o644));
        out.push(link("etc/localtime", &format!("/usr/share/zoneinfo/{tz}")));
    }
    if let Some(k) = &l.keymap {
        let cur = state.text(&r("etc/default/keyboard"));
        out.push(write(
            r("etc/default/keyboard"),
            keyboard_with(cur.as_deref(), k),
            0o644,
        ));
    }
    if let Some(loc) = &l.locale {
        out.push(write(
            r("etc/default/locale"),
            format!("LANG={loc}\n"),
            0o644,
        ));
        if let Some(g) = state.text(&r("etc/locale.gen")) {
            out.push(write(r("etc/locale.gen"), locale_gen_with(&g, loc), 0o644));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyboard_and_locale_edits_converge() {
        let k = keyboard_with(None, "de");
        assert!(k.contains("XKBLAYOUT=\"de\"\n") && !k.contains("\"us\""));
        assert_eq!(keyboard_with(Some(&k), "de"), k);
        let g = locale_gen_with("# en_GB.UTF-8 UTF-8\n# de_DE.UTF-8 UTF-8\n", "de_DE.UTF-8");
        assert_eq!(g, "# en_GB.UTF-8 UTF-8\nde_DE.UTF-8 UTF-8\n");
        assert_eq!(locale_gen_with(&g, "de_DE.UTF-8"), g);
    }
}
