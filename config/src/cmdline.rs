//! The kernel command line arguments piforge adds to `cmdline.txt`, and their removal.
//!
//! `cmdline.txt` is one line. The builder appends our arguments to it; firstboot removes exactly
//! what was appended, so the file returns to its previous bytes. Other programs (Bookworm's stock
//! first boot removes its own `init=`) may edit the line in between; removal therefore deletes
//! our arguments wherever they stand rather than cutting a suffix.

use crate::{FIRSTBOOT_BIN_PATH, OLD_FIRSTBOOT_BIN_PATH};

/// Words stock hooks look for on the command line (`grep` of `/proc/cmdline`): Raspberry Pi's
/// initramfs resizes the root when it finds `firstboot` anywhere (Bookworm's
/// `init=/usr/lib/raspberrypi-sys-mods/firstboot`), Trixie's when it finds ` resize`. Our
/// arguments contain none of them.
pub const STOCK_HOOK_WORDS: [&str; 2] = ["firstboot", " resize"];

/// The arguments that make systemd run firstboot once and reboot, for a boot partition mounted
/// at `boot_mount` (e.g. `/boot/firmware`).
pub fn piforge_args(boot_mount: &str) -> String {
    let mount = boot_mount.trim_end_matches('/');
    format!(
        "systemd.run={mount}/{FIRSTBOOT_BIN_PATH} systemd.run_success_action=reboot \
         systemd.unit=kernel-command-line.target"
    )
}

fn is_ours(arg: &str) -> bool {
    (arg.starts_with("systemd.run=")
        && (arg.ends_with(&format!("/{FIRSTBOOT_BIN_PATH}"))
            || arg.ends_with(&format!("/{OLD_FIRSTBOOT_BIN_PATH}"))))
        || arg == "systemd.run_success_action=reboot"
        || arg == "systemd.unit=kernel-command-line.target"
}

/// Appends our arguments to the line (after removing any earlier copy, so adding twice is the
/// same as adding once). Keeps whatever line ending the file had.
pub fn add(cmdline: &str, boot_mount: &str) -> String {
    let clean = remove(cmdline);
    let (line, ending) = split_ending(&clean);
    // Always one space of our own, even after a trailing space, so removal gives back every
    // byte of the line.
    let sep = if line.is_empty() { "" } else { " " };
    format!("{line}{sep}{}{ending}", piforge_args(boot_mount))
}

/// Removes our arguments and the single space before each, leaving every other byte as it was.
pub fn remove(cmdline: &str) -> String {
    let (line, ending) = split_ending(cmdline);
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while !rest.is_empty() {
        let start = rest.find(|c: char| c != ' ').unwrap_or(rest.len());
        let (spaces, tail) = rest.split_at(start);
        let end = tail.find(' ').unwrap_or(tail.len());
        let (arg, after) = tail.split_at(end);
        if arg.is_empty() {
            out.push_str(spaces);
        } else if is_ours(arg) {
            // Drop the argument with one separating space, so "a ours" becomes "a".
            if spaces.len() > 1 {
                out.push_str(&spaces[1..]);
            } else if out.is_empty() && spaces.is_empty() {
                // Leading argument: its trailing space goes instead.
                rest = after.strip_prefix(' ').unwrap_or(after);
                continue;
            }
        } else {
            out.push_str(spaces);
            out.push_str(arg);
        }
        rest = after;
    }
    format!("{out}{ending}")
}

/// True when the line carries our arguments (firstboot has not finished yet).
pub fn has_ours(cmdline: &str) -> bool {
    cmdline
        .trim_end_matches(['\n', '\r'])
        .split(' ')
        .any(is_ours)
}

fn split_ending(s: &str) -> (&str, &str) {
    let trimmed = s.trim_end_matches(['\n', '\r']);
    (trimmed, &s[trimmed.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BOOKWORM: &str = "console=serial0,115200 console=tty1 root=PARTUUID=0a1b2c3d-02 \
        rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n";

    #[test]
    fn add_then_remove_restores_bytes() {
        let added = add(BOOKWORM, "/boot/firmware");
        assert!(added.ends_with("systemd.unit=kernel-command-line.target\n"));
        assert_eq!(added.lines().count(), 1);
        assert!(added.starts_with(BOOKWORM.trim_end()));
        assert!(has_ours(&added));
        assert_eq!(remove(&added), BOOKWORM);
        assert_eq!(
            add(&added, "/boot/firmware"),
            added,
            "adding twice is adding once"
        );
    }

    #[test]
    fn remove_survives_stock_firstboot_removing_init() {
        let added = add(BOOKWORM, "/boot/firmware");
        let after_stock = added.replace(" init=/usr/lib/raspberrypi-sys-mods/firstboot", "");
        let expected = BOOKWORM.replace(" init=/usr/lib/raspberrypi-sys-mods/firstboot", "");
        assert_eq!(remove(&after_stock), expected);
    }

    #[test]
    fn no_trailing_newline_kept() {
        let s = "a b rootwait";
        assert_eq!(remove(&add(s, "/boot")), s);
        assert!(add(s, "/boot/").contains("systemd.run=/boot/piforge/setup "));
    }

    const TRIXIE: &str = "console=serial0,115200 console=tty1 root=PARTUUID=0a1b2c3d-02 \
        rootfstype=ext4 fsck.repair=yes rootwait resize\n";

    #[test]
    fn no_word_a_stock_hook_greps_for() {
        for mount in ["/boot/firmware", "/boot"] {
            let ours = format!(" {}", piforge_args(mount));
            for w in STOCK_HOOK_WORDS {
                assert!(!ours.contains(w), "{w:?} in {ours:?}");
            }
        }
        // What the hooks would see on our line: exactly what they saw on the stock line.
        for stock in [BOOKWORM, TRIXIE] {
            let added = add(stock, "/boot/firmware");
            for w in STOCK_HOOK_WORDS {
                assert_eq!(added.matches(w).count(), stock.matches(w).count(), "{w:?}");
            }
        }
    }

    #[test]
    fn trixie_resize_stays_the_os_own() {
        let added = add(TRIXIE, "/boot/firmware");
        assert!(added.contains("rootwait resize systemd.run="), "{added}");
        assert_eq!(remove(&added), TRIXIE);
        // The OS takes its word out while ours are there; ours still come out cleanly.
        let os_done = added.replace(" resize", "");
        assert_eq!(remove(&os_done), TRIXIE.replace(" resize", ""));
    }

    #[test]
    fn an_older_payload_path_is_still_ours() {
        let old = "a rootwait systemd.run=/boot/firmware/piforge/firstboot \
                   systemd.run_success_action=reboot systemd.unit=kernel-command-line.target\n";
        assert!(has_ours(old));
        assert_eq!(remove(old), "a rootwait\n");
    }

    proptest! {
        #[test]
        fn add_remove_is_identity(
            args in proptest::collection::vec("[a-z0-9=.,/_ -]{0,12}", 0..8),
            crlf in any::<bool>(),
        ) {
            let line = args.join(" ") + if crlf { "\r\n" } else { "\n" };
            prop_assert_eq!(remove(&add(&line, "/boot/firmware")), line);
        }
    }
}
