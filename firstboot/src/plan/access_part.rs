//! The access part of a plan: the login user, its password and keys, SSH on.

use super::*;

fn accounts(state: &State) -> Option<Accounts> {
    Some(Accounts {
        passwd: state.text(&r("etc/passwd"))?,
        shadow: state.text(&r("etc/shadow")).unwrap_or_default(),
        group: state.text(&r("etc/group")).unwrap_or_default(),
        gshadow: state.text(&r("etc/gshadow")).unwrap_or_default(),
    })
}

pub(super) fn access_actions(
    card: &Card,
    state: &State,
    knobs: &Knobs,
    out: &mut Vec<Action>,
) -> Result<(), PlanError> {
    let acc = accounts(state).ok_or(PlanError::Missing("/etc/passwd"))?;
    let hash = card.access.password_hash.as_ref().map(|h| h.expose());
    access::check_user(&acc, &card.access.user, card.access.allow_root)?;
    let u = access::plan_user(&acc, &card.access.user, hash, knobs.today)?;
    let shadow_gid = crate::facts::parse_group(&u.accounts.group)
        .get("shadow")
        .copied()
        .unwrap_or(0);
    let shadow_owner = Owner {
        uid: 0,
        gid: shadow_gid,
    };
    // Home first (a rename must not be undone by a later mkdir), then the databases.
    let home = u.home.trim_start_matches('/').to_string();
    if let Some(old) = &u.old_home {
        out.push(Action::Rename {
            from: r(old),
            to: r(&home),
        });
    }
    let owner = Owner {
        uid: u.uid,
        gid: u.gid,
    };
    // /etc/passwd last: until it names the user, a resumed run redoes the rename or creation,
    // and the edits of the other three converge on what is already there.
    out.push(Action::Write {
        loc: r("etc/shadow"),
        contents: u.accounts.shadow.into_bytes(),
        mode: 0o640,
        owner: shadow_owner,
        create_only: false,
    });
    out.push(Action::Write {
        loc: r("etc/gshadow"),
        contents: u.accounts.gshadow.into_bytes(),
        mode: 0o640,
        owner: shadow_owner,
        create_only: false,
    });
    out.push(write(r("etc/group"), u.accounts.group.clone(), 0o644));
    out.push(write(r("etc/passwd"), u.accounts.passwd.clone(), 0o644));
    out.push(Action::Mkdir {
        loc: r(&home),
        // Private, as Debian 12's adduser makes homes; the same on a re-run, where a rename
        // is no longer visible.
        mode: 0o700,
        owner,
    });
    for (rel, mode) in state.tree(&r("etc/skel")) {
        if let Some(dir) = rel.strip_suffix('/') {
            out.push(Action::Mkdir {
                loc: r(&format!("{home}/{dir}")),
                mode: *mode,
                owner,
            });
        } else {
            out.push(Action::Copy {
                from: r(&format!("etc/skel/{rel}")),
                to: r(&format!("{home}/{rel}")),
                mode: *mode,
                owner,
                create_only: true,
            });
        }
    }
    if !card.access.ssh_authorized_keys.is_empty() {
        out.push(Action::Mkdir {
            loc: r(&format!("{home}/.ssh")),
            mode: 0o700,
            owner,
        });
        out.push(Action::Write {
            loc: r(&format!("{home}/.ssh/authorized_keys")),
            contents: access::authorized_keys(&card.access.ssh_authorized_keys).into_bytes(),
            mode: 0o600,
            owner,
            create_only: false,
        });
    }
    out.push(mkdir("etc/sudoers.d", 0o755));
    let user = &card.access.user;
    out.push(write(
        r(&format!("etc/sudoers.d/010_{user}-nopasswd")),
        access::sudoers(user),
        0o440,
    ));
    for old in ["pi"].iter().map(|s| s.to_string()).chain(u.renamed_from) {
        if &old != user {
            out.push(Action::Remove {
                loc: r(&format!("etc/sudoers.d/010_{old}-nopasswd")),
            });
        }
    }
    if card.access.ssh {
        out.push(link(
            "etc/systemd/system/multi-user.target.wants/ssh.service",
            SSH_UNIT,
        ));
        out.push(link("etc/systemd/system/sshd.service", SSH_UNIT));
    }
    // Raspberry Pi OS's console wizard would ask for a user again: do what userconf does
    // after a rename (disable the wizard, give tty1 its getty back).
    if state.has(&r("lib/systemd/system/userconfig.service"))
        || state.has(&r("usr/lib/systemd/system/userconfig.service"))
    {
        out.push(Action::Remove {
            loc: r("etc/systemd/system/multi-user.target.wants/userconfig.service"),
        });
        out.push(link(
            "etc/systemd/system/getty.target.wants/getty@tty1.service",
            "/lib/systemd/system/getty@.service",
        ));
    }
    Ok(())
}
