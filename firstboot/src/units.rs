//! systemd units piforge installs, as text, and how they are enabled: a symlink in the
//! `*.wants/` directory of their target, exactly what `systemctl enable` would create (there is
//! no running systemd to ask on a root prefix).
//!
//! - `piforge-node.service`: the cluster agent; restarts forever, SIGTERM = graceful leave,
//!   hardened (it needs no write access outside its state directory).
//! - `piforge-reidentify.service`: every boot, before the network, the clone check.
//! - `piforge-hostkeys.service`: the SSH host keys left for later (ECDSA, RSA), at idle
//!   priority after boot, only while some are pending.
//! - `piforge-packages.service`: overlay apt packages once the network is online, retrying
//!   with a growing delay until it succeeds once. A config file an overlay already put in
//!   place is kept (`--force-confold`), never a prompt that would hang the unit.

/// Where units are installed on the root.
pub const UNIT_DIR: &str = "etc/systemd/system";

/// Path of the node agent binary on the Pi.
pub const NODE_BIN: &str = "/usr/local/bin/piforge-node";
/// Path of the firstboot binary on the Pi (for the reidentify unit).
pub const FIRSTBOOT_BIN: &str = "/usr/local/sbin/piforge-firstboot";
/// Overlay packages to install, one a line.
pub const PACKAGES_LIST: &str = "/etc/piforge/packages.list";
/// Marker written once the packages are in.
pub const PACKAGES_DONE: &str = "/var/lib/piforge/packages.done";
/// SSH host key kinds left for `piforge-hostkeys.service` (relative to the root), one a line.
pub const HOST_KEYS_PENDING: &str = "var/lib/piforge/host-keys.pending";

/// The node agent.
pub fn node_service() -> String {
    format!(
        "# Written by piforge-firstboot.\n\
[Unit]\n\
Description=piforge cluster node agent\n\
Documentation=https://github.com/piforge/piforge\n\
Wants=network-online.target\n\
After=network-online.target piforge-reidentify.service\n\
\n\
[Service]\n\
Type=simple\n\
ExecStart={NODE_BIN} agent --config /etc/piforge/node.toml\n\
Restart=always\n\
RestartSec=2\n\
# SIGTERM makes the agent announce a graceful leave before it exits.\n\
KillSignal=SIGTERM\n\
TimeoutStopSec=15\n\
StateDirectory=piforge-node\n\
StateDirectoryMode=0700\n\
NoNewPrivileges=yes\n\
ProtectSystem=strict\n\
ProtectHome=yes\n\
PrivateTmp=yes\n\
PrivateDevices=yes\n\
ProtectKernelTunables=yes\n\
ProtectKernelModules=yes\n\
ProtectControlGroups=yes\n\
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK\n\
LockPersonality=yes\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n"
    )
}

/// The clone check, early on every boot, before the network and cloud-init.
pub fn reidentify_service() -> String {
    format!(
        "# Written by piforge-firstboot.\n\
[Unit]\n\
Description=piforge: re-identify this node if its card was copied to another Pi\n\
DefaultDependencies=no\n\
# After coldplug was asked for: on a board without a serial number the wired NIC's MAC is\n\
# the identity, and its driver is loaded by that (the check waits for it, 90 s at most).\n\
After=local-fs.target systemd-udev-trigger.service\n\
Before=network-pre.target cloud-init-local.service ssh.service piforge-node.service\n\
Wants=network-pre.target\n\
ConditionPathExists=/var/lib/piforge/identity\n\
\n\
[Service]\n\
Type=oneshot\n\
ExecStart={FIRSTBOOT_BIN} reidentify\n\
RemainAfterExit=yes\n\
\n\
[Install]\n\
WantedBy=sysinit.target\n"
    )
}

/// The SSH host keys first boot or the clone check left for later (ECDSA, RSA: seconds to
/// minutes of prime search on a small Pi), made after boot at idle priority so neither SSH
/// (ed25519 is there already) nor the node agent waits; sshd is reloaded to offer them.
/// Runs only while the marker of pending kinds exists.
pub fn hostkeys_service() -> String {
    format!(
        "# Written by piforge-firstboot.\n\
[Unit]\n\
Description=piforge: make the remaining SSH host keys in the background\n\
After=piforge-reidentify.service\n\
ConditionPathExists=/{pending}\n\
\n\
[Service]\n\
Type=oneshot\n\
ExecStart={FIRSTBOOT_BIN} hostkeys\n\
ExecStartPost=-/bin/systemctl try-reload-or-restart ssh.service\n\
Nice=19\n\
CPUSchedulingPolicy=idle\n\
IOSchedulingClass=idle\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n",
        pending = HOST_KEYS_PENDING
    )
}

/// Installs overlay packages once, after the network is up; retries with backoff (10 s, 30 s,
/// 1, 2, 5, 10 min), and systemd restarts the whole round after 15 min if all fail.
pub fn packages_service() -> String {
    format!(
        "# Written by piforge-firstboot.\n\
[Unit]\n\
Description=piforge: install overlay packages\n\
Wants=network-online.target\n\
After=network-online.target\n\
ConditionPathExists={PACKAGES_LIST}\n\
ConditionPathExists=!{PACKAGES_DONE}\n\
StartLimitIntervalSec=0\n\
\n\
[Service]\n\
Type=oneshot\n\
Environment=DEBIAN_FRONTEND=noninteractive\n\
ExecStart=/bin/sh -c 'for delay in 10 30 60 120 300 600; do \
apt-get update && xargs -r -a {PACKAGES_LIST} apt-get install -y --no-install-recommends \
-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
&& touch {PACKAGES_DONE} && exit 0; echo \"retrying in $delay s\"; sleep $delay; done; exit 1'\n\
TimeoutStartSec=infinity\n\
Restart=on-failure\n\
RestartSec=15min\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n"
    )
}

/// Quotes one argument for a systemd `ExecStart=` line: `%` and `$` are escaped so systemd
/// expands nothing, and the argument is double-quoted when it holds spaces or quotes.
pub fn systemd_quote(arg: &str) -> String {
    let escaped = arg
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$")
        .replace('\n', " ");
    if escaped.is_empty() || escaped.contains([' ', '\t', '"', '\'', '\\', ';']) {
        format!("\"{escaped}\"")
    } else {
        escaped
    }
}

/// Unit that keeps `dest` rendered from a live template whenever the membership changes
/// (`piforge-node render`). Not sandboxed like the agent: it writes `dest` and runs `command`.
pub fn render_service(template: &str, dest: &str, command: Option<&str>) -> String {
    let mut exec = format!(
        "{NODE_BIN} render --dest {} {}",
        systemd_quote(dest),
        systemd_quote(template)
    );
    if let Some(c) = command {
        exec.push_str(&format!(" --command {}", systemd_quote(c)));
    }
    format!(
        "# Written by piforge-firstboot.\n\
[Unit]\n\
Description=piforge: keep {dest} rendered from the cluster membership\n\
Wants=piforge-node.service\n\
After=piforge-node.service\n\
\n\
[Service]\n\
ExecStart={exec}\n\
Restart=always\n\
RestartSec=5\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n"
    )
}

/// The `[Install] WantedBy=` targets of a unit text (`multi-user.target` when none).
pub fn wanted_by(unit_text: &str) -> Vec<String> {
    let mut in_install = false;
    let mut out = vec![];
    for l in unit_text.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            in_install = t == "[Install]";
            continue;
        }
        if in_install && let Some(v) = t.strip_prefix("WantedBy=") {
            out.extend(v.split_whitespace().map(String::from));
        }
    }
    if out.is_empty() {
        out.push("multi-user.target".into());
    }
    out
}

/// The enable symlink for `unit` (installed at `unit_path`) wanted by `target`:
/// (link path relative to the root, link target).
pub fn enable_link(unit: &str, unit_path: &str, target: &str) -> (String, String) {
    (
        format!("{UNIT_DIR}/{target}.wants/{unit}"),
        unit_path.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_unit_is_hardened_and_restarts() {
        let u = node_service();
        for k in [
            "Restart=always\n",
            "KillSignal=SIGTERM\n",
            "NoNewPrivileges=yes\n",
            "ProtectSystem=strict\n",
            "ProtectHome=yes\n",
            "PrivateTmp=yes\n",
            "StateDirectory=piforge-node\n",
        ] {
            assert!(u.contains(k), "{k}");
        }
        assert_eq!(wanted_by(&u), ["multi-user.target"]);
    }

    #[test]
    fn reidentify_runs_before_the_network() {
        let u = reidentify_service();
        assert!(u.contains("Before=network-pre.target"));
        assert!(u.contains("Wants=network-pre.target\n"));
        assert!(u.contains("After=local-fs.target systemd-udev-trigger.service\n"));
        assert!(u.contains("ExecStart=/usr/local/sbin/piforge-firstboot reidentify\n"));
        assert_eq!(wanted_by(&u), ["sysinit.target"]);
    }

    #[test]
    fn packages_wait_for_network_and_retry() {
        let u = packages_service();
        assert!(u.contains("After=network-online.target\n"));
        assert!(u.contains("Restart=on-failure\n"));
        assert!(u.contains("for delay in"));
        assert!(
            u.contains("--force-confold"),
            "an overlay's config must survive the install"
        );
    }

    #[test]
    fn render_unit_quotes_its_arguments() {
        let u = render_service(
            "/etc/piforge/templates/lb/backends.hbs",
            "/etc/haproxy/backends.cfg",
            Some("systemctl reload haproxy; echo 100% $HOME"),
        );
        assert!(
            u.contains(
                "ExecStart=/usr/local/bin/piforge-node render --dest /etc/haproxy/backends.cfg \
             /etc/piforge/templates/lb/backends.hbs \
             --command \"systemctl reload haproxy; echo 100%% $$HOME\"\n"
            ),
            "{u}"
        );
        assert_eq!(systemd_quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(wanted_by(&u), ["multi-user.target"]);
    }

    #[test]
    fn wanted_by_parses_install_section() {
        let u = "[Unit]\nWantedBy=nope\n[Install]\nWantedBy=a.target b.target\n";
        assert_eq!(wanted_by(u), ["a.target", "b.target"]);
        assert_eq!(
            enable_link(
                "x.service",
                "/etc/systemd/system/x.service",
                "multi-user.target"
            )
            .0,
            "etc/systemd/system/multi-user.target.wants/x.service"
        );
    }
}
