//! Issue #16: our first boot cooperates with the OS's own, on fake roots built from the real
//! boot files of bullseye, bookworm and trixie. systemd is played by a scripted [`System`]: its
//! clock advances only when firstboot sleeps, its job list empties and its transient
//! `/etc/machine-id` (a line in `<root>/proc/self/mountinfo`) is committed at a chosen time.
//! Then the boot after: what changed is repaired once and logged loudly.

mod common;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use piforge_firstboot::action::Owner;
use piforge_firstboot::apply::{RecordingSystem, System};
use piforge_firstboot::identity::{self, IdentityRecord};
use piforge_firstboot::{Outcome, run_firstboot, run_reidentify};

const TRANSIENT: &str = "\
22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/mmcblk0p2 rw
31 22 0:26 /machine-id /etc/machine-id ro shared:10 - tmpfs tmpfs rw,size=388180k,mode=755
35 22 179:1 / /boot/firmware rw,relatime shared:12 - vfat /dev/mmcblk0p1 rw
";
const COMMITTED: &str = "\
22 1 179:2 / / rw,noatime shared:1 - ext4 /dev/mmcblk0p2 rw
35 22 179:1 / /boot/firmware rw,relatime shared:12 - vfat /dev/mmcblk0p1 rw
";
/// What systemd's transient machine-id would be (and what a commit of its own id writes).
const SYSTEMD_ID: &str = "f00dfeedf00dfeedf00dfeedf00dfeed\n";

/// systemd on a first boot, scripted: first-boot jobs pending until `jobs_until`, the transient
/// machine-id committed at `commit_at` (`None`: never). The commit writes systemd's own id, the
/// worst case: firstboot must write ours again.
struct Systemd {
    rec: RecordingSystem,
    root: PathBuf,
    now: Duration,
    jobs_until: Duration,
    commit_at: Option<Duration>,
    /// (time, done marker exists, cmdline.txt still has our arguments, /etc/machine-id) at
    /// each sleep.
    seen: Vec<(Duration, bool, bool, String)>,
    boot: PathBuf,
}

impl Systemd {
    fn new(f: &Fake, jobs_until: u64, commit_at: Option<u64>) -> Systemd {
        fs::write(f.root.join("proc/self/mountinfo"), TRANSIENT).unwrap();
        Systemd {
            rec: RecordingSystem::default(),
            root: f.root.clone(),
            now: Duration::ZERO,
            jobs_until: Duration::from_secs(jobs_until),
            commit_at: commit_at.map(Duration::from_secs),
            seen: vec![],
            boot: f.boot.clone(),
        }
    }
}

impl System for Systemd {
    fn chown(&mut self, path: &Path, owner: Owner) -> io::Result<()> {
        self.rec.chown(path, owner)
    }
    fn owner(&self, path: &Path) -> io::Result<Owner> {
        self.rec.owner(path)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.rec.sync()
    }
    fn set_hostname(&mut self, name: &str) -> io::Result<()> {
        self.rec.set_hostname(name)
    }
    fn hostname(&self) -> Option<String> {
        self.rec.hostname()
    }
    fn sleep(&mut self, d: Duration) {
        let done = self.root.join("var/lib/piforge/firstboot.done").exists();
        let ours = fs::read_to_string(self.boot.join("cmdline.txt"))
            .unwrap()
            .contains("systemd.run=");
        let mid = fs::read_to_string(self.root.join("etc/machine-id")).unwrap();
        self.seen.push((self.now, done, ours, mid));
        self.now += d;
        if self.commit_at.is_some_and(|t| self.now >= t) {
            self.commit_at = None;
            fs::write(self.root.join("etc/machine-id"), SYSTEMD_ID).unwrap();
            fs::write(self.root.join("proc/self/mountinfo"), COMMITTED).unwrap();
        }
    }
    fn systemd_jobs(&self) -> Option<Vec<String>> {
        Some(if self.now < self.jobs_until {
            vec![
                "kernel-command-line.service".into(),
                "rpi-resize.service".into(),
                "first-boot-complete.target".into(),
                "systemd-machine-id-commit.service".into(),
            ]
        } else {
            vec!["kernel-command-line.service".into()]
        })
    }
    fn unmount(&mut self, path: &Path) -> io::Result<()> {
        // What umount does to the prefix's view: the mount table line goes.
        fs::write(self.root.join("proc/self/mountinfo"), COMMITTED)?;
        self.rec.unmount(path)
    }
}

fn trixie() -> Fake {
    let f = Fake::new(Rel::Trixie, false, "100000002a3f9a2c");
    fs::create_dir_all(f.root.join("proc/self")).unwrap();
    // Enabled in the image, as Raspberry Pi OS ships it; first boot disables it.
    let wants = f.root.join("etc/systemd/system/multi-user.target.wants");
    fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(
        "/lib/systemd/system/regenerate_ssh_host_keys.service",
        wants.join("regenerate_ssh_host_keys.service"),
    )
    .unwrap();
    f
}

fn record(f: &Fake) -> IdentityRecord {
    IdentityRecord::parse(&f.read("var/lib/piforge/identity")).unwrap()
}

fn log(f: &Fake) -> String {
    fs::read_to_string(f.boot.join("piforge/firstboot.log")).unwrap()
}

fn machine_id_is_recorded(f: &Fake) {
    let rec = record(f);
    let mid = f.read("etc/machine-id");
    assert!(identity::valid_machine_id(&mid), "{mid:?}");
    assert_eq!(identity::machine_id_hash(&mid), rec.machine_id_sha256);
}

#[test]
fn trixie_waits_for_the_machine_id_commit_before_the_reboot() {
    let f = trixie();
    let mut sys = Systemd::new(&f, 30, Some(40));
    let out = run_firstboot(&f.request(hooks(1)), &mut sys).unwrap();
    assert!(matches!(out, Outcome::Configured { .. }), "{out:?}");
    assert_eq!(
        sys.now,
        Duration::from_secs(40),
        "waited for the commit, not longer"
    );
    // The whole wait came before the run was marked complete and cmdline.txt restored: a power
    // cut during it runs first boot again.
    assert!(!sys.seen.is_empty());
    assert!(
        sys.seen.iter().all(|(_, done, ours, _)| !done && *ours),
        "{:?}",
        sys.seen
    );
    // systemd's transient copy is a read-only mount: never written into, ours comes after.
    assert!(
        sys.seen
            .iter()
            .all(|(_, _, _, mid)| mid == "uninitialized\n"),
        "{:?}",
        sys.seen
    );
    // systemd committed its own id; ours is on disk now, and it is the recorded one.
    machine_id_is_recorded(&f);
    assert_ne!(f.read("etc/machine-id"), SYSTEMD_ID);
    assert!(
        sys.rec.unmounted.is_empty(),
        "the commit came in time: no unmount"
    );
    let l = log(&f);
    for want in [
        "waited 40 s for the OS's own first boot before the reboot (limit 600 s)",
        "systemd-machine-id-commit committed /etc/machine-id to disk after 40 s",
        "first-boot units done after 30 s: first-boot-complete.target, rpi-resize.service, \
         systemd-machine-id-commit.service",
        "presets:",
        "machine-id written again, now on disk",
        "node configured",
    ] {
        assert!(l.contains(want), "{want:?} not in\n{l}");
    }
    assert_eq!(
        fs::read_to_string(f.boot.join("cmdline.txt")).unwrap(),
        f.stock_cmdline,
        "trixie's own ` resize` stays"
    );
    assert!(f.stock_cmdline.contains(" resize"));
    assert_eq!(
        record(&f).disabled,
        ["etc/systemd/system/multi-user.target.wants/regenerate_ssh_host_keys.service"]
    );
}

#[test]
fn a_commit_that_never_comes_is_done_by_us_after_the_limit() {
    let f = trixie();
    let mut sys = Systemd::new(&f, 10_000, None);
    run_firstboot(&f.request(hooks(2)), &mut sys).unwrap();
    assert_eq!(sys.now, Duration::from_secs(600), "bounded");
    assert_eq!(sys.rec.unmounted, [f.root.join("etc/machine-id")]);
    machine_id_is_recorded(&f);
    let l = log(&f);
    for want in [
        "waited 600 s",
        "still a transient mount after 600 s: committing ours to disk ourselves",
        "first-boot units still pending after 600 s, rebooting anyway: first-boot-complete.target",
    ] {
        assert!(l.contains(want), "{want:?} not in\n{l}");
    }
}

#[test]
fn no_wait_where_nothing_is_pending() {
    for rel in Rel::ALL {
        // Bookworm and bullseye: machine-id on disk from the start; a prefix: no systemd.
        let f = Fake::new(rel, true, "100000002a3f9a2c");
        let mut sys = RecordingSystem::default();
        run_firstboot(&f.request(hooks(3)), &mut sys).unwrap();
        assert_eq!(sys.slept, Duration::ZERO, "{rel:?}");
        let l = log(&f);
        assert!(l.contains("waited 0 s"), "{l}");
        assert!(l.contains("not a live system"), "{l}");
        machine_id_is_recorded(&f);
    }
}

/// First boot as it went wrong before #16: the reboot came before the commit, so boot 2 is a
/// first boot again: systemd's transient id, preset pass re-enabled what we disabled, and (say)
/// the stock key regeneration ran; the hostname was edited too.
fn lose_the_race(f: &Fake) {
    fs::write(f.root.join("etc/machine-id"), SYSTEMD_ID).unwrap();
    fs::write(f.root.join("proc/self/mountinfo"), TRANSIENT).unwrap();
    fs::write(f.root.join("etc/hostname"), "raspberrypi\n").unwrap();
    let other = identity::host_keys(&[9; 32], "raspberrypi", 0).unwrap();
    fs::write(
        f.root.join("etc/ssh/ssh_host_ed25519_key.pub"),
        &other[0].public,
    )
    .unwrap();
    fs::write(
        f.root.join("etc/ssh/ssh_host_ed25519_key"),
        other[0].private.expose(),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "/lib/systemd/system/regenerate_ssh_host_keys.service",
        f.root
            .join("etc/systemd/system/multi-user.target.wants/regenerate_ssh_host_keys.service"),
    )
    .unwrap();
}

#[test]
fn boot_two_repairs_what_changed_once_and_says_so() {
    let f = trixie();
    let mut sys = Systemd::new(&f, 0, Some(1));
    run_firstboot(&f.request(hooks(4)), &mut sys).unwrap();
    let rec = record(&f);
    let good = [
        f.read("etc/machine-id"),
        f.read("etc/hostname"),
        f.read("etc/ssh/ssh_host_ed25519_key"),
        f.read("etc/ssh/ssh_host_ed25519_key.pub"),
    ];
    lose_the_race(&f);
    let mut sys = Systemd::new(&f, 0, None);
    fs::write(f.root.join("proc/self/mountinfo"), TRANSIENT).unwrap();
    let out = run_reidentify(&f.reidentify_request(hooks(5)), &mut sys).unwrap();
    assert!(matches!(&out, Outcome::Reidentify { changed, .. } if !changed.is_empty()));
    assert_eq!(
        sys.rec.unmounted,
        [f.root.join("etc/machine-id")],
        "ours goes on disk"
    );
    let now = [
        f.read("etc/machine-id"),
        f.read("etc/hostname"),
        f.read("etc/ssh/ssh_host_ed25519_key"),
        f.read("etc/ssh/ssh_host_ed25519_key.pub"),
    ];
    assert_eq!(now, good, "repaired from the record's seed");
    assert!(
        !f.root
            .join("etc/systemd/system/multi-user.target.wants/regenerate_ssh_host_keys.service")
            .is_symlink()
    );
    assert_eq!(
        sys.rec.running_hostname.as_deref(),
        Some(rec.hostname.as_str())
    );
    assert_eq!(record(&f), rec, "the record itself is unchanged");
    let report = || f.read("var/lib/piforge/reidentify-report.json");
    assert!(
        report().contains("\"outcome\": \"repaired\""),
        "a repair is reported as such, not as a re-identification: {}",
        report()
    );
    let l = log(&f);
    for want in [
        "REPAIRED after the reboot",
        "CHANGED since first boot: machine-id is not the recorded one",
        "CHANGED since first boot: hostname is \"raspberrypi\"",
        "CHANGED since first boot: SSH host keys are",
        "regenerate_ssh_host_keys.service is back",
    ] {
        assert!(l.contains(want), "{want:?} not in\n{l}");
    }

    // Boot 3: as recorded now: verified once, and from then on not checked.
    let mut sys = RecordingSystem::default();
    fs::write(f.root.join("proc/self/mountinfo"), COMMITTED).unwrap();
    run_reidentify(&f.reidentify_request(hooks(6)), &mut sys).unwrap();
    assert!(log(&f).contains("verified after the reboot"), "{}", log(&f));
    assert!(f.root.join("var/lib/piforge/verified").is_file());
    assert!(
        report().contains("\"outcome\": \"repaired\""),
        "a verification leaves the last report alone: {}",
        report()
    );
    fs::write(f.root.join("etc/hostname"), "renamed-by-admin\n").unwrap();
    let out = run_reidentify(&f.reidentify_request(hooks(7)), &mut sys).unwrap();
    assert!(matches!(&out, Outcome::Reidentify { changed, .. } if changed.is_empty()));
    assert_eq!(
        f.read("etc/hostname"),
        "renamed-by-admin\n",
        "an admin's change stays"
    );
}

#[test]
fn a_second_change_after_the_repair_is_reported_not_repaired() {
    let f = trixie();
    let mut sys = Systemd::new(&f, 0, Some(1));
    run_firstboot(&f.request(hooks(8)), &mut sys).unwrap();
    lose_the_race(&f);
    let mut sys = Systemd::new(&f, 0, None);
    run_reidentify(&f.reidentify_request(hooks(9)), &mut sys).unwrap();
    fs::write(f.root.join("etc/hostname"), "raspberrypi\n").unwrap();
    let mut sys = RecordingSystem::default();
    fs::write(f.root.join("proc/self/mountinfo"), COMMITTED).unwrap();
    let out = run_reidentify(&f.reidentify_request(hooks(10)), &mut sys).unwrap();
    assert!(matches!(&out, Outcome::Reidentify { changed, .. } if changed.is_empty()));
    assert_eq!(
        f.read("etc/hostname"),
        "raspberrypi\n",
        "not repaired twice"
    );
    let l = log(&f);
    assert!(
        l.contains("CHANGED AGAIN after the repair") && l.contains("CHANGED AGAIN: hostname"),
        "{l}"
    );
}

#[test]
fn cloud_init_seed_and_drop_in_are_ours_with_and_without_a_stock_seed() {
    for stock_seed in [true, false] {
        let f = trixie();
        if !stock_seed {
            // 2025-10-01: cloud-init installed, no seed on the boot partition.
            for s in ["user-data", "meta-data", "network-config"] {
                fs::remove_file(f.boot.join(s)).unwrap();
            }
        }
        let mut sys = RecordingSystem::default();
        run_firstboot(&f.request(hooks(11)), &mut sys).unwrap();
        let ud = fs::read_to_string(f.boot.join("user-data")).unwrap();
        assert_eq!(ud, piforge_config::cloudinit::USER_DATA);
        let nc = fs::read_to_string(f.boot.join("network-config")).unwrap();
        assert_eq!(nc, piforge_config::cloudinit::NETWORK_CONFIG);
        let md = fs::read_to_string(f.boot.join("meta-data")).unwrap();
        assert!(md.contains("instance-id: piforge-") && md.contains("local-hostname: pi-3f9a2c"));
        assert!(!md.contains("rpios-image"), "{md}");
        let d = f.root.join("etc/cloud/cloud.cfg.d");
        let mut names: Vec<String> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["99_raspberry-pi.cfg", "99_zz-piforge.cfg"],
            "ours sorts last"
        );
        let ours = fs::read_to_string(d.join("99_zz-piforge.cfg")).unwrap();
        assert!(ours.contains("users: []") && ours.contains("ssh_genkeytypes: []"));
    }
}
