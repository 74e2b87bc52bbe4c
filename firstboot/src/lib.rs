//! piforge-firstboot: turns `piforge/card.toml` on the boot partition into a configured node on
//! the Pi's first boot, and re-identifies a card that was copied to another Pi on every later
//! boot.
//!
//! Everything works on a root prefix and a boot directory, so tests run it on fake roots
//! without root privileges. The shape is facts → plan (pure) → apply (idempotent actions):
//! - [`facts`]: serial, MACs, release, network stack, and the current text of the files;
//! - [`action`]: what a plan is made of (paths, owners, idempotent steps);
//! - [`plan`]: the ordered [`action::Action`]s, built from [`identity`], [`access`],
//!   [`locale`], [`network`], [`overlay`], [`units`] and [`finish`];
//! - [`apply`]: converging execution through the small [`apply::System`] trait.
//!
//! It deliberately does not reboot (systemd does, via `systemd.run_success_action=reboot`),
//! but before it exits it waits for the OS's own first boot ([`settle`]: machine-id committed,
//! first-boot units done). It only asks `systemctl list-jobs`, never changes units through
//! `systemctl`; it does not run `useradd` or `ssh-keygen`, and never logs a secret.
#![forbid(unsafe_code)]

pub mod access;
pub mod action;
pub mod apply;
pub mod facts;
pub mod finish;
pub mod identity;
pub mod locale;
pub mod network;
pub mod overlay;
pub mod plan;
pub mod report;
pub mod settle;
pub mod units;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use piforge_config::{CARD_PATH, Card, FIRSTBOOT_LOG_PATH};
use tracing::{error, info, warn};

use action::{Action, Base, Dirs, Loc, Owner};
use apply::System;
use plan::{Knobs, Plan};

/// Hooks for tests (a simulated power cut, fixed randomness, small RSA keys). Production
/// callers use `TestHooks::default()`.
#[derive(Debug, Clone, Default)]
pub struct TestHooks {
    /// Use these bytes instead of the OS RNG for a new identity seed.
    pub entropy: Option<[u8; 32]>,
    /// Stop after this many actions, as if the power was cut.
    pub step_limit: Option<usize>,
    /// RSA host key size instead of 3072.
    pub rsa_bits: Option<usize>,
}

/// A checked request to run first boot.
#[derive(Debug, Clone)]
pub struct FirstbootRequest {
    /// Root prefix (`/` on the Pi).
    pub root: PathBuf,
    /// Boot partition directory; `None`: from `<root>/etc/fstab`, else next to the executable.
    pub boot: Option<PathBuf>,
    /// Test hooks.
    pub hooks: TestHooks,
}

/// A checked request to run the clone check.
#[derive(Debug, Clone)]
pub struct ReidentifyRequest {
    /// Root prefix.
    pub root: PathBuf,
    /// Boot partition directory (for cloud-init's meta-data); resolved like first boot.
    pub boot: Option<PathBuf>,
    /// Test hooks.
    pub hooks: TestHooks,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The card was applied (or was already applied); `changed` lists what changed.
    Configured {
        /// The node's hostname.
        hostname: String,
        /// One line per changed item.
        changed: Vec<String>,
        /// A step limit stopped the run (tests only).
        stopped_early: bool,
    },
    /// There was no usable card: the Pi boots normally, the card stays for inspection.
    NoCard {
        /// Why (never a secret).
        reason: String,
        /// What changed (our `cmdline.txt` arguments removed, clean-up finished).
        changed: Vec<String>,
    },
    /// The background host key step ran.
    HostKeys {
        /// What changed.
        changed: Vec<String>,
    },
    /// The clone check ran.
    Reidentify {
        /// The hostname now.
        hostname: Option<String>,
        /// What changed (empty on the same hardware).
        changed: Vec<String>,
    },
}

/// Finds the boot directory: explicit, else the vfat mount in `<root>/etc/fstab` (if it
/// exists under the root), else the directory holding the executable's `piforge/`.
pub fn resolve_boot(root: &Path, explicit: Option<&Path>, exe: Option<&Path>) -> Result<PathBuf> {
    if let Some(b) = explicit {
        return Ok(b.to_path_buf());
    }
    if let Some(m) = fs::read_to_string(root.join("etc/fstab"))
        .ok()
        .and_then(|t| piforge_config::rootfs::boot_mount_from_fstab(&t))
    {
        let p = root.join(m.trim_start_matches('/'));
        if p.is_dir() {
            return Ok(p);
        }
    }
    if let Some(dir) = exe.and_then(Path::parent)
        && dir.file_name().is_some_and(|n| n == "piforge")
        && let Some(boot) = dir.parent()
    {
        return Ok(boot.to_path_buf());
    }
    anyhow::bail!(
        "cannot find the boot partition: no vfat /boot mount in {} and the program is not in a \
         piforge/ directory; pass --boot",
        root.join("etc/fstab").display()
    )
}

fn knobs(hooks: &TestHooks) -> Result<Knobs> {
    let entropy = match hooks.entropy {
        Some(e) => e,
        None => {
            use rand_chacha::rand_core::{OsRng, RngCore};
            let mut e = [0u8; 32];
            OsRng
                .try_fill_bytes(&mut e)
                .map_err(|e| anyhow::anyhow!("reading the OS random number generator: {e}"))?;
            e
        }
    };
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0);
    Ok(Knobs {
        entropy,
        today,
        rsa_bits: hooks.rsa_bits.unwrap_or(identity::RSA_BITS),
    })
}

/// Appends a section to `piforge/firstboot.log` on the boot partition. Best effort: a failure
/// is logged to the journal and otherwise ignored (the journal has it all).
fn append_log(dirs: &Dirs, sys: &mut dyn System, headline: &str, lines: &[String]) {
    let p = dirs.boot.join(FIRSTBOOT_LOG_PATH);
    let mut text = fs::read_to_string(&p).unwrap_or_default();
    text.push_str(&finish::log_section(headline, lines));
    if let Err(e) = apply::write_atomic(&p, text.as_bytes(), 0o644, Owner::ROOT, Base::Boot, sys) {
        warn!(error = %format!("{e:#}"), "cannot write firstboot.log on the boot partition");
    }
}

/// Top-level root directories the plans write into.
const WRITTEN_TOP_DIRS: [&str; 4] = ["etc", "var", "usr", "home"];

/// Fails early, before any change, when the root cannot be written (mounted read-only).
fn check_writable(root: &Path, top_dirs: &[&str]) -> Result<()> {
    for d in top_dirs {
        let dir = root.join(d);
        if !dir.is_dir() {
            continue;
        }
        let probe = dir.join(".piforge-write-probe");
        match fs::File::create(&probe) {
            Ok(_) => {
                let _ = fs::remove_file(&probe);
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "the root file system is not writable (creating {}); nothing was changed",
                        probe.display()
                    )
                });
            }
        }
    }
    Ok(())
}

/// Reads the card; `Err(reason)` when there is none or it is refused (reason has no secret).
fn read_card(dirs: &Dirs) -> std::result::Result<Card, String> {
    let p = dirs.boot.join(CARD_PATH);
    match fs::read_to_string(&p) {
        Ok(t) => Card::parse(&t).map_err(|e| format!("{} refused: {e}", p.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(format!("no card at {}", p.display())),
        Err(e) => Err(format!("reading {}: {e}", p.display())),
    }
}

/// First boot: apply the card, clean the boot partition, log. A missing or refused card is not
/// an error: the Pi boots normally and the reason is logged.
pub fn run_firstboot(req: &FirstbootRequest, sys: &mut dyn System) -> Result<Outcome> {
    let exe = std::env::current_exe().ok();
    let boot = resolve_boot(&req.root, req.boot.as_deref(), exe.as_deref())?;
    let dirs = Dirs {
        root: req.root.clone(),
        boot,
    };
    info!(root = %dirs.root.display(), boot = %dirs.boot.display(), "first boot");
    let mut timer = report::Timer::start(&dirs.root);
    // Without a serial number the wired MAC names the board (and a cloneable card's hostname).
    let facts = facts_with_hardware(&dirs.root, sys, |f| {
        f.serial.is_none() && f.wired_mac.is_none()
    })?;
    timer.phase("facts");
    info!(serial = ?facts.serial, release = ?facts.release, net = ?facts.net,
          cloud_init = facts.cloud_init, "facts");
    let card = match read_card(&dirs) {
        Ok(c) => c,
        Err(reason) => {
            let state = facts::gather_state(&dirs, &plan::wanted(&[]))?;
            let p = plan::plan_without_card(&state);
            let done = state.has(&Loc::root(plan::DONE_MARKER));
            if done {
                info!("{reason}; an earlier run finished the root: completing the clean-up");
            } else {
                error!("{reason}; booting normally, the card stays for inspection");
            }
            let applied = apply::apply(&p.actions, &dirs, sys, req.hooks.step_limit)?;
            let mut lines = vec![reason.clone()];
            lines.extend(applied.changed.iter().cloned());
            let headline = if done {
                "completed the clean-up of an earlier run"
            } else {
                "card not applied; booting normally"
            };
            append_log(&dirs, sys, headline, &lines);
            sys.sync().context("syncing file systems")?;
            return Ok(Outcome::NoCard {
                reason,
                changed: applied.changed,
            });
        }
    };
    // Before planning (which generates keys for seconds): a read-only root fails at once.
    if let Err(e) = check_writable(&dirs.root, &WRITTEN_TOP_DIRS) {
        error!("{e:#}");
        append_log(&dirs, sys, "failed", &[format!("{e:#}")]);
        return Err(e);
    }
    timer.phase("card");
    let mut state = facts::gather_state(&dirs, &plan::wanted(&card.overlays))?;
    // Second pass: the static templates the manifests name.
    let extra = facts::Wanted {
        files: overlay::template_sources(&card.overlays, &state),
        trees: vec![],
    };
    let more = facts::gather_state(&dirs, &extra)?;
    state.files.extend(more.files);
    state.modes.extend(more.modes);
    let k = knobs(&req.hooks)?;
    let p: Plan = match plan::plan_firstboot(&card, &facts, &state, &k) {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("planning first boot: {e}");
            error!("{msg}");
            append_log(&dirs, sys, "failed", std::slice::from_ref(&msg));
            anyhow::bail!(msg);
        }
    };
    timer.phase("plan");
    for n in &p.notes {
        info!("{n}");
    }
    let (applied, settled) = match apply_settled(&p, &dirs, sys, req.hooks.step_limit, &mut timer) {
        Ok(a) => a,
        Err(e) => {
            // Log first, so a failing log write cannot hide the real error.
            error!("{e:#}");
            append_log(
                &dirs,
                sys,
                "failed; will retry on next boot",
                &[format!("{e:#}")],
            );
            return Err(e);
        }
    };
    let mut lines = p.notes.clone();
    lines.extend(applied.changed.iter().cloned());
    lines.extend(settled);
    lines.push(format!("{} steps already done", applied.unchanged));
    let headline = if applied.stopped_early {
        "stopped early (test hook)"
    } else {
        "node configured"
    };
    append_log(&dirs, sys, headline, &lines);
    // Only a configured node has an agent to serve the report; a failed or refused run
    // changes nothing on the root and says why in firstboot.log on the boot partition.
    if !applied.stopped_early {
        let pending = pending_host_keys(&dirs.root);
        timer.save(
            &dirs,
            sys,
            "configured",
            None,
            p.hostname.as_deref(),
            pending,
        );
    }
    sys.sync().context("syncing file systems")?;
    Ok(Outcome::Configured {
        hostname: p.hostname.unwrap_or_default(),
        changed: applied.changed,
        stopped_early: applied.stopped_early,
    })
}

/// Applies a first-boot plan phase by phase, timing each (the step limit counts across phases
/// as for one call). With a settle point ([`Plan::settle_at`]): the actions before it (without
/// the machine-id write while /etc/machine-id is systemd's transient mount), then the wait for
/// the OS's own first boot and the machine-id put on disk (phase `os-first-boot`), then the
/// rest (completion marker, boot partition clean-up). Returns what was applied and the wait's
/// lines for `firstboot.log`.
fn apply_settled(
    p: &Plan,
    dirs: &Dirs,
    sys: &mut dyn System,
    step_limit: Option<usize>,
    timer: &mut report::Timer,
) -> Result<(apply::Applied, Vec<String>)> {
    let n = p.actions.len();
    let at = p.settle_at.map(|a| a.min(n));
    let mut bounds: Vec<(&str, usize, usize)> = vec![];
    for (i, (name, start)) in p.phases.iter().enumerate() {
        let end = p.phases.get(i + 1).map_or(n, |x| x.1);
        match at {
            // A phase the settle point cuts in two: both halves keep its name.
            Some(at) if *start < at && at < end => {
                bounds.push((name, *start, at));
                bounds.push((name, at, end));
            }
            _ => bounds.push((name, *start, end)),
        }
    }
    if bounds.is_empty() {
        match at {
            Some(at) => bounds.extend([("apply", 0, at), ("complete", at, n)]),
            None => bounds.push(("apply", 0, n)),
        }
    }
    // systemd's transient /etc/machine-id is a read-only bind mount: ours is written once it
    // is committed (or unmounted), after the wait.
    let mid_mounted = at.is_some() && settle::is_mounted(&dirs.root);
    if mid_mounted {
        info!("/etc/machine-id is systemd's transient mount: ours is written after the wait");
    }
    let mut total = apply::Applied::default();
    let mut settled = vec![];
    let mut waited = at.is_none();
    for (name, start, end) in bounds {
        if !waited && at.is_some_and(|at| start >= at) {
            let (lines, rewritten) = settle_machine_id(p, dirs, sys)?;
            settled = lines;
            total.changed.extend(rewritten);
            timer.phase("os-first-boot");
            waited = true;
        }
        let before_wait = !waited;
        let actions: Vec<Action> = p.actions[start..end]
            .iter()
            .filter(|a| !(before_wait && mid_mounted && writes_machine_id(a)))
            .cloned()
            .collect();
        let limit = step_limit.map(|n| n.saturating_sub(start));
        let a = apply::apply(&actions, dirs, sys, limit)?;
        total.changed.extend(a.changed);
        total.unchanged += a.unchanged;
        timer.phase(name);
        if a.stopped_early {
            total.stopped_early = true;
            return Ok((total, settled));
        }
    }
    if !waited {
        let (lines, rewritten) = settle_machine_id(p, dirs, sys)?;
        settled = lines;
        total.changed.extend(rewritten);
        timer.phase("os-first-boot");
    }
    Ok((total, settled))
}

/// Host key kinds still pending (the marker's lines).
fn pending_host_keys(root: &Path) -> Vec<String> {
    fs::read_to_string(root.join(plan::HOST_KEYS_PENDING))
        .map(|t| t.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// The background host key step (`piforge-hostkeys.service`): makes the kinds first boot or
/// the clone check left pending. A no-op without the marker.
pub fn run_host_keys(req: &ReidentifyRequest, sys: &mut dyn System) -> Result<Outcome> {
    let dirs = Dirs {
        root: req.root.clone(),
        boot: req.root.join("boot/firmware"),
    };
    let state = facts::gather_state(&dirs, &plan::wanted(&[]))?;
    let k = knobs(&req.hooks)?;
    let p = plan::plan_host_keys(&state, &k).context("planning the host keys")?;
    for n in &p.notes {
        info!("{n}");
    }
    if p.actions.is_empty() {
        return Ok(Outcome::HostKeys { changed: vec![] });
    }
    check_writable(&dirs.root, &["etc", "var"])?;
    let applied = apply::apply(&p.actions, &dirs, sys, req.hooks.step_limit)?;
    sys.sync().context("syncing file systems")?;
    Ok(Outcome::HostKeys {
        changed: applied.changed,
    })
}

/// Waits for the OS's first boot, then writes the plan's machine-id again so it lands on disk:
/// after systemd committed its transient copy (which may hold its own id, not ours), or, when
/// the wait ran out, beneath the transient copy we unmount ourselves. A build with the
/// `skip-os-wait` feature (the system test's proof that the race is real) does neither.
/// Returns the log lines and the changes (the machine-id written again).
fn settle_machine_id(
    p: &Plan,
    dirs: &Dirs,
    sys: &mut dyn System,
) -> Result<(Vec<String>, Vec<String>)> {
    if cfg!(feature = "skip-os-wait") {
        warn!("built with skip-os-wait: not waiting for the OS's first boot");
        return Ok((
            vec![
                "NOT waiting for the OS's first boot (built with the skip-os-wait feature)".into(),
            ],
            vec![],
        ));
    }
    let settled = settle::wait_for_os_first_boot(&dirs.root, sys, settle::SETTLE_LIMIT);
    for l in &settled.lines {
        info!("{l}");
    }
    let mut lines = settled.lines;
    let mid = dirs.root.join(settle::MACHINE_ID.trim_start_matches('/'));
    if settled.machine_id_still_mounted {
        warn!("the transient /etc/machine-id was not committed in time: unmounting it");
        sys.unmount(&mid)
            .with_context(|| format!("unmounting the transient {}", mid.display()))?;
    }
    let write_mid: Vec<Action> = p
        .actions
        .iter()
        .filter(|a| writes_machine_id(a))
        .cloned()
        .collect();
    let again = apply::apply(&write_mid, dirs, sys, None)?;
    if again.changed.is_empty() {
        lines.push("machine-id on disk is ours".into());
    } else {
        lines.push("machine-id written again, now on disk (the commit had put another one)".into());
    }
    Ok((lines, again.changed))
}

fn writes_machine_id(a: &Action) -> bool {
    matches!(a, Action::Write { loc, .. } if *loc == Loc::root("etc/machine-id"))
}

/// Longest first boot and the clone check wait for a wired network interface when its MAC is
/// needed as the hardware identity (a board without a serial number). Its driver is loaded by
/// udev in parallel with early boot; USB adapters come later still.
pub const WIRED_WAIT: std::time::Duration = std::time::Duration::from_secs(90);
const WIRED_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// The facts, gathered again every [`WIRED_POLL`] while `missing` says the hardware identity
/// is not visible yet, for [`WIRED_WAIT`] at most. Only on a live system (`<root>/sys/class/net`
/// exists): a prefix without it can never grow a NIC. Gives up with a warning, and the caller
/// goes on with what it has (as before the wait existed).
fn facts_with_hardware(
    root: &Path,
    sys: &mut dyn System,
    missing: impl Fn(&facts::Facts) -> bool,
) -> Result<facts::Facts> {
    let mut facts = facts::gather_facts(root)?;
    if !missing(&facts) || !root.join("sys/class/net").is_dir() {
        return Ok(facts);
    }
    info!(
        "no serial number and no wired network interface yet: waiting up to {} s for one \
         (its MAC identifies this board)",
        WIRED_WAIT.as_secs()
    );
    let mut waited = std::time::Duration::ZERO;
    while missing(&facts) && waited < WIRED_WAIT {
        sys.sleep(WIRED_POLL);
        waited += WIRED_POLL;
        facts = facts::gather_facts(root)?;
    }
    if missing(&facts) {
        warn!(
            "no wired network interface after {} s: going on without a hardware identity \
             (a copy of this card will not be told apart)",
            waited.as_secs()
        );
    } else {
        info!(mac = ?facts.wired_mac, waited_ms = waited.as_millis() as u64, "wired interface found");
    }
    Ok(facts)
}

/// The clone check (every boot, before the network): no-op on the recorded hardware, a new
/// identity on any other.
pub fn run_reidentify(req: &ReidentifyRequest, sys: &mut dyn System) -> Result<Outcome> {
    let exe = std::env::current_exe().ok();
    // Without a boot partition there is simply no meta-data to update.
    let boot = resolve_boot(&req.root, req.boot.as_deref(), exe.as_deref())
        .unwrap_or_else(|_| req.root.join("boot/firmware"));
    let dirs = Dirs {
        root: req.root.clone(),
        boot,
    };
    let mut timer = report::Timer::start(&dirs.root);
    // A record made from the MAC of a board without a serial can only be checked once that
    // NIC is there; the check runs early in boot, often before udev has loaded its driver.
    let record = fs::read_to_string(dirs.root.join(identity::IDENTITY_PATH))
        .ok()
        .and_then(|t| identity::IdentityRecord::parse(&t).ok());
    let facts = facts_with_hardware(&dirs.root, sys, |f| {
        record.as_ref().is_some_and(|rec| {
            rec.mac.is_some()
                && f.wired_mac.is_none()
                && !(rec.serial.is_some() && f.serial.is_some())
        })
    })?;
    let state = facts::gather_state(&dirs, &plan::wanted(&[]))?;
    let k = knobs(&req.hooks)?;
    let p = plan::plan_reidentify(&facts, &state, &k).context("planning re-identification")?;
    for n in &p.notes {
        if p.headline
            .as_deref()
            .is_some_and(|h| h.contains("CHANGED") || h.contains("REPAIRED"))
        {
            error!("{n}");
        } else {
            info!("{n}");
        }
    }
    if p.actions.is_empty() {
        if let Some(h) = &p.headline {
            append_log(&dirs, sys, h, &p.notes);
        } else {
            info!(hostname = ?p.hostname, "same hardware as recorded; nothing to do");
        }
        return Ok(Outcome::Reidentify {
            hostname: p.hostname,
            changed: vec![],
        });
    }
    check_writable(&dirs.root, &WRITTEN_TOP_DIRS)?;
    timer.phase("plan");
    // A machine-id written into systemd's transient copy would be lost again: write it on disk.
    let writes_mid = p.actions.iter().any(writes_machine_id);
    if writes_mid
        && state
            .text(&Loc::root(settle::MOUNTINFO))
            .is_some_and(|t| settle::machine_id_mounted(&t))
    {
        let mid = dirs.root.join(settle::MACHINE_ID.trim_start_matches('/'));
        warn!("/etc/machine-id is a transient mount: unmounting it to write ours on disk");
        sys.unmount(&mid)
            .with_context(|| format!("unmounting the transient {}", mid.display()))?;
    }
    let applied = apply::apply(&p.actions, &dirs, sys, req.hooks.step_limit)?;
    timer.phase("apply");
    if let (false, Some(outcome)) = (applied.stopped_early, p.report) {
        let pending = pending_host_keys(&dirs.root);
        timer.save_as(
            &dirs,
            sys,
            piforge_config::status::REIDENTIFY_REPORT_PATH,
            outcome,
            None,
            p.hostname.as_deref(),
            pending,
        );
    }
    let mut lines = p.notes.clone();
    lines.extend(applied.changed.iter().cloned());
    if dirs.boot.join("piforge").is_dir() {
        let headline = p
            .headline
            .as_deref()
            .unwrap_or("re-identified (card copied to another Pi)");
        append_log(&dirs, sys, headline, &lines);
    }
    sys.sync().context("syncing file systems")?;
    Ok(Outcome::Reidentify {
        hostname: p.hostname,
        changed: applied.changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_dir_from_flag_fstab_or_executable() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        let exe = t.path().join("card/piforge/firstboot");
        assert_eq!(
            resolve_boot(&root, Some(Path::new("/x")), None).unwrap(),
            Path::new("/x")
        );
        assert_eq!(
            resolve_boot(&root, None, Some(&exe)).unwrap(),
            t.path().join("card"),
            "no fstab: next to the executable's piforge/"
        );
        fs::write(
            root.join("etc/fstab"),
            "PARTUUID=0a1b2c3d-01  /boot/firmware  vfat    defaults          0       2\n",
        )
        .unwrap();
        fs::create_dir_all(root.join("boot/firmware")).unwrap();
        assert_eq!(
            resolve_boot(&root, None, Some(&exe)).unwrap(),
            root.join("boot/firmware")
        );
        let e = resolve_boot(&root, None, Some(Path::new("/usr/bin/x")));
        assert!(e.is_ok(), "fstab wins over the executable");
        fs::remove_dir_all(root.join("boot")).unwrap();
        let e = resolve_boot(&root, None, Some(Path::new("/usr/bin/x"))).unwrap_err();
        assert!(e.to_string().contains("--boot"), "{e}");
    }
}
