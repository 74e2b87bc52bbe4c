//! The login user, as Raspberry Pi OS's own `userconf` makes it: the image's first user
//! (uid 1000, `pi` on older images) is renamed, or the user is created; the password hash goes
//! into `/etc/shadow`, SSH keys into `~/.ssh/authorized_keys`. Root is never touched, so it
//! stays locked.
//!
//! Pure text edits of `/etc/passwd`, `/etc/shadow`, `/etc/group` and `/etc/gshadow`: applying
//! an edit to its own output changes nothing (a re-run is a no-op). No `useradd`/`usermod`, so
//! it works on any root prefix. Lines we do not own keep their bytes.

use std::collections::BTreeSet;

/// Why the user could not be set up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessError {
    /// `/etc/passwd` has no room for another user (uids 1000..60000 all taken).
    #[error("no free uid between 1000 and 59999 in /etc/passwd")]
    NoFreeId,
    /// The card's user is not one we may set up on this root: a system account, a home
    /// outside `/home/`, or root without `allow-root`.
    #[error("access.user: {0}")]
    Refused(String),
    /// A line we must edit is malformed.
    #[error("{file} line for {name:?} is malformed")]
    Malformed {
        /// Which file.
        file: &'static str,
        /// The account.
        name: String,
    },
}

/// The four account databases as text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Accounts {
    /// `/etc/passwd`.
    pub passwd: String,
    /// `/etc/shadow` (secret: holds hashes).
    pub shadow: String,
    /// `/etc/group`.
    pub group: String,
    /// `/etc/gshadow`.
    pub gshadow: String,
}

/// The outcome: new databases and where the user lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPlan {
    /// Edited databases.
    pub accounts: Accounts,
    /// The user's uid.
    pub uid: u32,
    /// The user's primary gid.
    pub gid: u32,
    /// Home directory (absolute).
    pub home: String,
    /// Home of the renamed user, to move to `home`.
    pub old_home: Option<String>,
    /// The renamed user's old name.
    pub renamed_from: Option<String>,
}

/// Supplementary groups of Raspberry Pi OS's first user (those that exist are used).
pub const FIRST_USER_GROUPS: &[&str] = &[
    "adm", "dialout", "cdrom", "sudo", "audio", "video", "plugdev", "games", "users", "input",
    "render", "netdev", "gpio", "i2c", "spi", "lpadmin",
];

fn fields(line: &str) -> Vec<&str> {
    line.split(':').collect()
}

fn edit_lines(text: &str, mut f: impl FnMut(Vec<String>) -> Option<Vec<String>>) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for l in text.lines() {
        let parts: Vec<String> = l.split(':').map(String::from).collect();
        match f(parts) {
            Some(p) => out.push_str(&p.join(":")),
            None => out.push_str(l),
        }
        out.push('\n');
    }
    out
}

fn rename_member_list(list: &str, old: &str, new: &str) -> String {
    list.split(',')
        .map(|m| if m == old { new } else { m })
        .collect::<Vec<_>>()
        .join(",")
}

fn add_member(list: &str, user: &str) -> String {
    if list.split(',').any(|m| m == user) {
        list.to_string()
    } else if list.is_empty() {
        user.to_string()
    } else {
        format!("{list},{user}")
    }
}

/// Checks, on the Pi's own `/etc/passwd`, that `user` may be the login user
/// ([`piforge_config::check_login_user`]; the builder ran the same check on the image).
pub fn check_user(acc: &Accounts, user: &str, allow_root: bool) -> Result<(), AccessError> {
    piforge_config::check_login_user(&acc.passwd, user, allow_root).map_err(AccessError::Refused)
}

/// Creates or renames `user`, sets its password hash (or `*`: no password, SSH keys only) and
/// its first-user groups. `today` is days since 1970 (shadow's last change field), used only
/// when the hash changes.
pub fn plan_user(
    acc: &Accounts,
    user: &str,
    password_hash: Option<&str>,
    today: u64,
) -> Result<UserPlan, AccessError> {
    let users: Vec<Vec<&str>> = acc
        .passwd
        .lines()
        .map(fields)
        .filter(|f| f.len() >= 7)
        .collect();
    let existing = users.iter().find(|f| f[0] == user);
    let first = users
        .iter()
        .find(|f| f[2] == "1000" && f[0] != user && existing.is_none());
    let mut a = acc.clone();
    let (uid, gid, home, old_home, renamed_from): (
        u32,
        u32,
        String,
        Option<String>,
        Option<String>,
    );
    if let Some(f) = existing {
        uid = f[2].parse().map_err(|_| malformed("passwd", user))?;
        gid = f[3].parse().map_err(|_| malformed("passwd", user))?;
        home = f[5].to_string();
        old_home = None;
        renamed_from = None;
    } else if let Some(f) = first {
        // Rename, as userconf-pi does: usermod -l, usermod -m -d, groupmod -n.
        let old = f[0].to_string();
        uid = 1000;
        gid = f[3].parse().map_err(|_| malformed("passwd", &old))?;
        home = format!("/home/{user}");
        old_home = Some(f[5].to_string());
        a.passwd = edit_lines(&a.passwd, |mut p| {
            (p.len() >= 7 && p[0] == old).then(|| {
                p[0] = user.to_string();
                p[5] = format!("/home/{user}");
                p
            })
        });
        a.shadow = edit_lines(&a.shadow, |mut p| {
            (p.len() >= 2 && p[0] == old).then(|| {
                p[0] = user.to_string();
                p
            })
        });
        a.group = edit_lines(&a.group, |mut p| {
            (p.len() >= 4).then(|| {
                if p[0] == old && p[2] == gid.to_string() {
                    p[0] = user.to_string();
                }
                p[3] = rename_member_list(&p[3], &old, user);
                p
            })
        });
        a.gshadow = edit_lines(&a.gshadow, |mut p| {
            (p.len() >= 4).then(|| {
                if p[0] == old {
                    p[0] = user.to_string();
                }
                p[2] = rename_member_list(&p[2], &old, user);
                p[3] = rename_member_list(&p[3], &old, user);
                p
            })
        });
        renamed_from = Some(old);
    } else {
        let used_uids: BTreeSet<u32> = users.iter().filter_map(|f| f[2].parse().ok()).collect();
        let used_gids: BTreeSet<u32> = acc
            .group
            .lines()
            .filter_map(|l| fields(l).get(2).and_then(|g| g.parse().ok()))
            .collect();
        let free = |used: &BTreeSet<u32>| (1000..60000).find(|i| !used.contains(i));
        uid = free(&used_uids).ok_or(AccessError::NoFreeId)?;
        // A group of the user's name may exist already (a run resumed after a power cut
        // wrote /etc/group but not yet /etc/passwd): reuse it.
        let own_group = acc.group.lines().find_map(|l| {
            let f = fields(l);
            (f.len() >= 3 && f[0] == user).then(|| f[2].parse::<u32>().ok())?
        });
        gid = match own_group {
            Some(g) => g,
            None if used_gids.contains(&uid) => free(&used_gids).ok_or(AccessError::NoFreeId)?,
            None => uid,
        };
        home = format!("/home/{user}");
        old_home = None;
        renamed_from = None;
        push_line(
            &mut a.passwd,
            &format!("{user}:x:{uid}:{gid}:,,,:{home}:/bin/bash"),
        );
        if !a.group.lines().any(|l| fields(l)[0] == user) {
            push_line(&mut a.group, &format!("{user}:x:{gid}:"));
        }
        if !a.gshadow.lines().any(|l| fields(l)[0] == user) {
            push_line(&mut a.gshadow, &format!("{user}:!::"));
        }
    }
    // Shadow entry: the hash, or `*` (no password; key-only logins still work).
    let want = password_hash.unwrap_or("*");
    let mut found = false;
    a.shadow = edit_lines(&a.shadow, |mut p| {
        if p.first().map(String::as_str) != Some(user) {
            return None;
        }
        found = true;
        while p.len() < 9 {
            p.push(String::new());
        }
        if p[1] != want {
            p[1] = want.to_string();
            p[2] = today.to_string();
        }
        Some(p)
    });
    if !found {
        push_line(
            &mut a.shadow,
            &format!("{user}:{want}:{today}:0:99999:7:::"),
        );
    }
    // First-user groups (those the image has).
    a.group = edit_lines(&a.group, |mut p| {
        (p.len() >= 4 && FIRST_USER_GROUPS.contains(&p[0].as_str())).then(|| {
            p[3] = add_member(&p[3], user);
            p
        })
    });
    a.gshadow = edit_lines(&a.gshadow, |mut p| {
        (p.len() >= 4 && FIRST_USER_GROUPS.contains(&p[0].as_str())).then(|| {
            p[3] = add_member(&p[3], user);
            p
        })
    });
    Ok(UserPlan {
        accounts: a,
        uid,
        gid,
        home,
        old_home,
        renamed_from,
    })
}

fn malformed(file: &'static str, name: &str) -> AccessError {
    AccessError::Malformed {
        file,
        name: name.to_string(),
    }
}

fn push_line(text: &mut String, line: &str) {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
}

/// `authorized_keys` contents: one key a line, in card order.
pub fn authorized_keys(keys: &[String]) -> String {
    keys.iter().map(|k| format!("{}\n", k.trim())).collect()
}

/// The sudoers drop-in Raspberry Pi OS gives its first user.
pub fn sudoers(user: &str) -> String {
    format!("{user} ALL=(ALL) NOPASSWD: ALL\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stock() -> Accounts {
        Accounts {
            passwd: "root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000:,,,:/home/pi:/bin/bash\n"
                .into(),
            shadow: "root:*:19000:0:99999:7:::\npi:*:19000:0:99999:7:::\n".into(),
            group: "root:x:0:\nsudo:x:27:pi\nvideo:x:44:pi\nshadow:x:42:\npi:x:1000:\n".into(),
            gshadow: "root:*::\nsudo:*::pi\nvideo:*::pi\nshadow:*::\npi:!::\n".into(),
        }
    }

    #[test]
    fn issue17_a_system_account_is_refused_before_any_edit() {
        let mut acc = stock();
        acc.passwd
            .push_str("systemd-network:x:998:998::/:/usr/sbin/nologin\n");
        acc.passwd
            .push_str("daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n");
        for user in ["daemon", "systemd-network", "root"] {
            let e = check_user(&acc, user, false).unwrap_err().to_string();
            assert!(e.starts_with("access.user: "), "{e}");
        }
        check_user(&acc, "pi", false).unwrap();
        check_user(&acc, "alice", false).unwrap();
        check_user(&acc, "root", true).unwrap();
    }

    #[test]
    fn renames_first_user_like_userconf() {
        let p = plan_user(&stock(), "alice", Some("$y$j9T$salt$hash"), 20000).unwrap();
        assert_eq!(p.renamed_from.as_deref(), Some("pi"));
        assert_eq!(p.old_home.as_deref(), Some("/home/pi"));
        assert_eq!((p.uid, p.gid, p.home.as_str()), (1000, 1000, "/home/alice"));
        let a = &p.accounts;
        assert!(
            a.passwd
                .contains("alice:x:1000:1000:,,,:/home/alice:/bin/bash\n")
        );
        assert!(!a.passwd.contains("pi:"));
        assert!(
            a.shadow
                .contains("alice:$y$j9T$salt$hash:20000:0:99999:7:::\n")
        );
        assert!(a.shadow.starts_with("root:*:19000:"), "root stays locked");
        assert!(a.group.contains("sudo:x:27:alice\n") && a.group.contains("alice:x:1000:\n"));
        assert!(a.gshadow.contains("sudo:*::alice\n") && a.gshadow.contains("alice:!::\n"));
        // Converges: the same edit on its own output changes nothing.
        let again = plan_user(a, "alice", Some("$y$j9T$salt$hash"), 20001).unwrap();
        assert_eq!(&again.accounts, a);
        assert_eq!(again.old_home, None);
    }

    #[test]
    fn creates_user_when_there_is_no_first_user() {
        let mut acc = stock();
        acc.passwd = "root:x:0:0:root:/root:/bin/bash\n".into();
        acc.shadow = "root:*:19000:0:99999:7:::\n".into();
        acc.group = "root:x:0:\nsudo:x:27:\n".into();
        acc.gshadow = "root:*::\nsudo:*::\n".into();
        let p = plan_user(&acc, "bob", None, 20000).unwrap();
        assert_eq!((p.uid, p.gid), (1000, 1000));
        assert!(
            p.accounts
                .passwd
                .ends_with("bob:x:1000:1000:,,,:/home/bob:/bin/bash\n")
        );
        assert!(p.accounts.shadow.ends_with("bob:*:20000:0:99999:7:::\n"));
        assert!(p.accounts.group.contains("sudo:x:27:bob\n"));
        assert_eq!(
            plan_user(&p.accounts, "bob", None, 1).unwrap().accounts,
            p.accounts
        );
    }

    #[test]
    fn keeps_the_existing_pi_user() {
        let p = plan_user(&stock(), "pi", None, 20000).unwrap();
        assert_eq!(p.renamed_from, None);
        assert_eq!(p.accounts.passwd, stock().passwd);
        assert_eq!(
            p.accounts.shadow,
            stock().shadow,
            "same hash keeps the date"
        );
    }

    #[test]
    fn resumes_after_any_prefix_of_the_write_order() {
        let mut none = stock();
        none.passwd = "root:x:0:0:root:/root:/bin/bash\n".into();
        none.group = "root:x:0:\nsudo:x:27:\n".into();
        for start in [stock(), none] {
            let done = plan_user(&start, "alice", Some("$6$a$b"), 7)
                .unwrap()
                .accounts;
            // The plan writes shadow, gshadow, group, then passwd.
            for k in 0..4 {
                let mut mid = start.clone();
                if k > 0 {
                    mid.shadow = done.shadow.clone();
                }
                if k > 1 {
                    mid.gshadow = done.gshadow.clone();
                }
                if k > 2 {
                    mid.group = done.group.clone();
                }
                let again = plan_user(&mid, "alice", Some("$6$a$b"), 7).unwrap();
                assert_eq!(again.accounts, done, "cut after {k} files");
            }
        }
    }

    proptest! {
        #[test]
        fn never_panics_and_converges(passwd in "\\PC{0,200}", shadow in "\\PC{0,100}") {
            let acc = Accounts { passwd, shadow, group: String::new(), gshadow: String::new() };
            if let Ok(p) = plan_user(&acc, "alice", Some("$6$a$b"), 5) {
                let q = plan_user(&p.accounts, "alice", Some("$6$a$b"), 6).unwrap();
                prop_assert_eq!(q.accounts, p.accounts);
            }
        }
    }
}
