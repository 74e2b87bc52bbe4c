//! The kernel command line arguments piforge adds to `cmdline.txt`, and their removal.
//!
//! `cmdline.txt` is one line. The builder appends our arguments to it; firstboot removes exactly
//! what was appended, so the file returns to its previous bytes. Other programs (Bookworm's stock
//! first boot removes its own `init=`) may edit the line in between; removal therefore deletes
//! our arguments wherever they stand rather than cutting a suffix.

/// The arguments that make systemd run firstboot once and reboot, for a boot partition mounted
/// at `boot_mount` (e.g. `/boot/firmware`).
pub fn piforge_args(boot_mount: &str) -> String {
    let mount = boot_mount.trim_end_matches('/');
    format!(
        "systemd.run={mount}/piforge/firstboot systemd.run_success_action=reboot \
         systemd.unit=kernel-command-line.target"
    )
}

fn is_ours(arg: &str) -> bool {
    (arg.starts_with("systemd.run=") && arg.ends_with("/piforge/firstboot"))
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
        assert!(add(s, "/boot/").contains("systemd.run=/boot/piforge/firstboot "));
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
