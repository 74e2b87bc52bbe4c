//! Checks of names that end up in system files (hostname, user name).

/// A valid hostname: one RFC 1123 label, 1 to 63 characters of `a-z`, `0-9` and `-`, not
/// starting or ending with `-`. Upper case is refused rather than folded, so what the user
/// typed is what the network sees.
pub fn valid_hostname(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// A valid user name, as Debian's `adduser` accepts by default: starts with a lower-case letter
/// or `_`, then up to 31 of `a-z`, `0-9`, `_` and `-`. `root` is refused: piforge never unlocks it.
pub fn valid_username(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
        && s != "root"
}

/// Lowest and highest UID of a regular account, as Debian allocates them (`adduser.conf`).
pub const REGULAR_UIDS: std::ops::RangeInclusive<u32> = 1000..=59999;

/// Whether `user` may be the card's login user on a root file system whose `/etc/passwd` is
/// `passwd`: a user that does not exist yet (it is created, or the image's first user, UID
/// 1000, is renamed to it), or an existing regular account (UID in [`REGULAR_UIDS`], home a
/// directory under `/home/`). `root` only with `allow_root`. Everything else is refused: a
/// system account (`daemon`, `systemd-network`, `nobody`) would get a password, SSH keys and
/// sudo, and its home (`/`, `/usr/sbin`) would be chmod'ed and chown'ed. The first user that
/// a rename would move must live under `/home/` too. Pure: the builder checks the image's
/// `/etc/passwd` at build time, firstboot the Pi's before it changes anything.
pub fn check_login_user(passwd: &str, user: &str, allow_root: bool) -> Result<(), String> {
    if user == "root" {
        return if allow_root {
            Ok(())
        } else {
            Err("root stays locked; pick another user name (or allow root explicitly)".into())
        };
    }
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let regular = |f: &[&str]| -> Result<(), String> {
        let uid: Option<u32> = f[2].parse().ok();
        if !uid.is_some_and(|u| REGULAR_UIDS.contains(&u)) {
            return Err(format!(
                "{:?} is a system account on this image (uid {}), not a regular user \
                 (uid {}-{}); pick another user name",
                f[0],
                f[2],
                REGULAR_UIDS.start(),
                REGULAR_UIDS.end()
            ));
        }
        if !home_under_home(f[5]) {
            return Err(format!(
                "{:?} has its home at {:?}, not under /home/; pick another user name",
                f[0], f[5]
            ));
        }
        Ok(())
    };
    match entries.iter().find(|f| f[0] == user) {
        Some(f) => regular(f),
        None => match entries.iter().find(|f| f[2] == "1000") {
            // The first user is renamed to `user` and its home moved to /home/<user>.
            Some(first) => regular(first)
                .map_err(|e| format!("the image's first user would be renamed, but {e}")),
            None => Ok(()),
        },
    }
}

/// `/home/<name>[/...]` with plain components only (no `.`, `..`, empty ones).
fn home_under_home(home: &str) -> bool {
    let Some(rest) = home.strip_prefix("/home/") else {
        return false;
    };
    let rest = rest.trim_end_matches('/');
    !rest.is_empty()
        && rest
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
        systemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        pi:x:1000:1000:,,,:/home/pi:/bin/bash\n\
        svc:x:1001:1001::/srv/svc:/bin/sh\n\
        sneaky:x:1002:1002::/home/../etc:/bin/sh\n\
        bob:x:1003:1003::/home/bob:/bin/bash\n";

    #[test]
    fn issue17_system_accounts_are_refused_as_the_login_user() {
        for (user, why) in [
            ("daemon", "system account"),
            ("systemd-network", "system account"),
            ("nobody", "system account"),
            ("svc", "not under /home/"),
            ("sneaky", "not under /home/"),
            ("root", "root stays locked"),
        ] {
            let e = check_login_user(PASSWD, user, false).expect_err(user);
            assert!(e.contains(why), "{user}: {e}");
        }
        for user in ["pi", "bob", "alice"] {
            check_login_user(PASSWD, user, false).unwrap_or_else(|e| panic!("{user}: {e}"));
        }
        check_login_user(PASSWD, "root", true).unwrap();
        // A new name renames the first user: its home must be a real /home one too.
        let odd_first = "root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000::/:/bin/bash\n";
        let e = check_login_user(odd_first, "alice", false).unwrap_err();
        assert!(e.contains("first user would be renamed"), "{e}");
        check_login_user("root:x:0:0:root:/root:/bin/bash\n", "alice", false).unwrap();
    }

    #[test]
    fn hostnames() {
        for ok in ["pi", "pi-01", "a", "node-3f9a2c", &"a".repeat(63)] {
            assert!(valid_hostname(ok), "{ok}");
        }
        for bad in [
            "",
            "-pi",
            "pi-",
            "Pi",
            "pi.local",
            "pi_1",
            &"a".repeat(64),
            "pi 1",
        ] {
            assert!(!valid_hostname(bad), "{bad}");
        }
    }

    #[test]
    fn usernames() {
        for ok in ["pi", "_svc", "alice-2", "a_b"] {
            assert!(valid_username(ok), "{ok}");
        }
        for bad in [
            "",
            "root",
            "1pi",
            "Pi",
            "a b",
            "pi:x",
            &"a".repeat(33),
            "-pi",
        ] {
            assert!(!valid_username(bad), "{bad}");
        }
    }
}
