//! Waiting for the OS's own first boot before ours ends in a reboot.
//!
//! On Raspberry Pi OS Trixie (and any systemd image shipped with an empty or `uninitialized`
//! `/etc/machine-id`) the first boot runs its own work at the same time as ours: systemd
//! overmounts a transient `/etc/machine-id` that `systemd-machine-id-commit.service` writes to
//! disk only after `first-boot-complete.target`, which waits for units such as
//! `rpi-resize.service` (growing the root file system). `systemd.run_success_action=reboot`
//! reboots the moment we exit: if that comes first, the machine-id we wrote into the transient
//! mount is lost, boot 2 is a first boot again (another machine-id, systemd's preset pass runs
//! again and may re-enable units we disabled) and the root may stay small.
//!
//! So before the reboot we wait, bounded by [`SETTLE_LIMIT`], until `/etc/machine-id` is no
//! longer a mount point and systemd has no job left for the first-boot units
//! ([`FIRST_BOOT_UNITS`]); then the machine-id is written again, which lands on disk. If the
//! limit passes first, we unmount the transient copy ourselves (what the commit would have done)
//! and write ours beneath it. Every step is logged with how long it took.
//!
//! Pure parsers ([`mount_points`], [`parse_jobs`]) plus one loop that asks the [`System`]
//! (injectable clock and systemd); nothing here decides what the machine-id is.

use std::path::Path;
use std::time::Duration;

use crate::apply::System;

/// Longest wait for the OS's first boot (a large, slow card can take minutes to grow).
pub const SETTLE_LIMIT: Duration = Duration::from_secs(600);
/// How often the state is looked at again.
pub const SETTLE_POLL: Duration = Duration::from_secs(1);

/// The machine-id, as a mount point seen from the root.
pub const MACHINE_ID: &str = "/etc/machine-id";
/// Mount table of the running system, under the root prefix.
pub const MOUNTINFO: &str = "proc/self/mountinfo";

/// Units of the OS's first boot we wait for while systemd still has a job for them.
/// `first-boot-complete.target` waits for every unit ordered before it (that is how systemd
/// defines "first boot done"); the others are named for the log.
pub const FIRST_BOOT_UNITS: [&str; 6] = [
    "first-boot-complete.target",
    "systemd-machine-id-commit.service",
    "systemd-growfs-root.service",
    "systemd-growfs@-.service",
    "rpi-resize.service",
    "systemd-firstboot.service",
];

/// The mount points of a `/proc/self/mountinfo` text (parsed by
/// [`piforge_config::mountinfo`], the one parser `piforge devices` uses too).
pub fn mount_points(mountinfo: &str) -> Vec<String> {
    piforge_config::mountinfo::parse_mountinfo(mountinfo)
        .into_iter()
        .map(|m| m.mount_point.to_string_lossy().into_owned())
        .collect()
}

/// Whether `/etc/machine-id` is a mount point (systemd's transient copy) per `mountinfo`.
pub fn machine_id_mounted(mountinfo: &str) -> bool {
    mount_points(mountinfo).iter().any(|m| m == MACHINE_ID)
}

pub use crate::apply::parse_jobs;

/// What the wait found; `lines` go to `firstboot.log`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Human-readable lines: what was waited for and how long.
    pub lines: Vec<String>,
    /// `/etc/machine-id` was still a transient mount when the wait ended.
    pub machine_id_still_mounted: bool,
    /// Total time waited.
    pub waited: Duration,
}

/// Whether `<root>/etc/machine-id` is a mount point now (per `<root>/proc/self/mountinfo`).
pub fn is_mounted(root: &Path) -> bool {
    std::fs::read_to_string(root.join(MOUNTINFO)).is_ok_and(|t| machine_id_mounted(&t))
}

fn pending(sys: &dyn System) -> Option<Vec<String>> {
    sys.systemd_jobs().map(|jobs| {
        let mut p: Vec<String> = jobs
            .into_iter()
            .filter(|u| FIRST_BOOT_UNITS.contains(&u.as_str()))
            .collect();
        p.sort();
        p.dedup();
        p
    })
}

/// Waits (at most `limit`, polling every [`SETTLE_POLL`] through `sys.sleep`) until the OS's
/// own first boot is done: `/etc/machine-id` committed and no job left for
/// [`FIRST_BOOT_UNITS`]. Never fails: a wait that runs out says so and the caller commits the
/// machine-id itself.
pub fn wait_for_os_first_boot(root: &Path, sys: &mut dyn System, limit: Duration) -> Settled {
    let mut waited = Duration::ZERO;
    let mounted_at_start = is_mounted(root);
    let jobs_at_start = pending(sys);
    let mut mounted = mounted_at_start;
    let mut jobs = jobs_at_start.clone();
    let mut committed_after = None;
    let mut jobs_done_after = None;
    loop {
        if !mounted && committed_after.is_none() {
            committed_after = Some(waited);
        }
        if jobs.as_ref().is_none_or(|j| j.is_empty()) && jobs_done_after.is_none() {
            jobs_done_after = Some(waited);
        }
        if (committed_after.is_some() && jobs_done_after.is_some()) || waited >= limit {
            break;
        }
        sys.sleep(SETTLE_POLL);
        waited += SETTLE_POLL;
        mounted = is_mounted(root);
        jobs = pending(sys);
    }
    let secs = |d: Duration| d.as_secs();
    let mut lines = vec![];
    lines.push(format!(
        "waited {} s for the OS's own first boot before the reboot (limit {} s)",
        secs(waited),
        secs(limit)
    ));
    match (mounted_at_start, committed_after) {
        (false, _) => lines.push(format!(
            "machine-id: {MACHINE_ID} was no transient mount (already on disk)"
        )),
        (true, Some(t)) => lines.push(format!(
            "machine-id: systemd-machine-id-commit committed {MACHINE_ID} to disk after {} s",
            secs(t)
        )),
        (true, None) => lines.push(format!(
            "machine-id: {MACHINE_ID} still a transient mount after {} s: committing ours to disk \
             ourselves",
            secs(waited)
        )),
    }
    match (&jobs_at_start, jobs_done_after) {
        (None, _) => lines.push(
            "first-boot units: systemd cannot be asked (not a live system): not waited for".into(),
        ),
        (Some(start), _) if start.is_empty() => {
            lines.push("first-boot units: no job left (root grown, first boot complete)".into())
        }
        (Some(start), Some(t)) => lines.push(format!(
            "first-boot units done after {} s: {}",
            secs(t),
            start.join(", ")
        )),
        (Some(_), None) => lines.push(format!(
            "first-boot units still pending after {} s, rebooting anyway: {}",
            secs(waited),
            jobs.unwrap_or_default().join(", ")
        )),
    }
    lines.push(
        "presets: systemd's first-boot preset pass ran before any unit; the units we disabled \
         are checked again after the reboot"
            .into(),
    );
    Settled {
        lines,
        machine_id_still_mounted: mounted,
        waited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_FIRST_BOOT: &str = "\
22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/mmcblk0p2 rw
24 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=1867776k,mode=755
31 22 0:26 /machine-id /etc/machine-id ro shared:10 - tmpfs tmpfs rw,size=388180k,mode=755
35 22 179:1 / /boot/firmware rw,relatime shared:12 - vfat /dev/mmcblk0p1 rw,fmask=0022
40 22 0:30 / /mnt/with\\040space rw shared:13 - tmpfs tmpfs rw
";

    #[test]
    fn transient_machine_id_is_seen_in_mountinfo() {
        assert!(machine_id_mounted(MOUNTINFO_FIRST_BOOT));
        let committed: String = MOUNTINFO_FIRST_BOOT
            .lines()
            .filter(|l| !l.contains("machine-id"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(!machine_id_mounted(&committed));
        assert!(mount_points(MOUNTINFO_FIRST_BOOT).contains(&"/mnt/with space".to_string()));
        assert!(!machine_id_mounted(""));
        assert!(!machine_id_mounted("garbage\n\\\\\\"));
    }

    #[test]
    fn jobs_are_parsed_from_list_jobs() {
        let t = "  7 rpi-resize.service          start running\n\
                 12 first-boot-complete.target start waiting\n\
                 No jobs running.\n";
        assert_eq!(
            parse_jobs(t),
            ["rpi-resize.service", "first-boot-complete.target"]
        );
        assert!(parse_jobs("").is_empty());
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(t in "\\PC{0,200}") {
            let _ = mount_points(&t);
            let _ = parse_jobs(&t);
        }
    }
}
