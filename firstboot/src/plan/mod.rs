//! The pure core: (card or none, facts, current state, entropy) → the ordered list of
//! [`Action`]s that turns the image into this node. It reads nothing and writes nothing; what it
//! needs to know about the files it declares in [`wanted`], and the shell gathers it.
//!
//! Order matters for power-cut safety: the identity record (which holds the seed everything
//! random derives from) comes first, the marker `firstboot.done` after every root change, then
//! the boot partition is cleaned: card (secrets) first, our `cmdline.txt` arguments next, and
//! the running program's own binary last. Each action converges, so a resumed run finishes the
//! job and a completed one changes nothing.

use piforge_config::card::Card;
use piforge_config::host_keys::HostKeys;
use piforge_config::{NodeConfig, cmdline};

use crate::access::{self, Accounts};
use crate::action::{Action, Loc, Owner, b, link, mkdir, r, write};
use crate::facts::{Facts, NetworkStack, State, Wanted};
use crate::finish;
use crate::identity::{self, IDENTITY_PATH, Identity, IdentityRecord, NamePolicy};
use crate::network;
use crate::units;

mod access_part;
mod identity_part;
mod install_part;
mod network_part;

use access_part::access_actions;
use identity_part::{identity_actions, record_complete};
use install_part::{cloud_init_actions, install_actions};
use network_part::{network_actions, nm_path};

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The root lacks a file every Raspberry Pi OS has.
    #[error("{0} is missing on the root file system")]
    Missing(&'static str),
    /// An overlay named by the card is missing or invalid.
    #[error("overlay {name}: {reason}")]
    Overlay {
        /// Overlay name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// User setup failed.
    #[error(transparent)]
    Access(#[from] access::AccessError),
    /// Identity derivation failed.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// The card's SSH host keys are unusable.
    #[error(transparent)]
    HostKeys(#[from] piforge_config::host_keys::HostKeyError),
}

impl From<crate::overlay::OverlayError> for PlanError {
    fn from(e: crate::overlay::OverlayError) -> PlanError {
        PlanError::Overlay {
            name: e.name,
            reason: e.reason,
        }
    }
}

/// A plan and what it decided, for the log.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Ordered actions.
    pub actions: Vec<Action>,
    /// The node's hostname (when the plan touches identity).
    pub hostname: Option<String>,
    /// Human-readable notes for the log (never secrets).
    pub notes: Vec<String>,
    /// Named phases: `(name, index of its first action)`, in order (first boot's report
    /// times each); empty when the plan is not split.
    pub phases: Vec<(&'static str, usize)>,
    /// First boot: before `actions[i]` the run waits for the OS's own first boot and puts the
    /// machine-id on disk ([`crate::settle`]); the actions from `i` on mark the run complete and
    /// clean the boot partition.
    pub settle_at: Option<usize>,
    /// A headline for `firstboot.log` even when there is nothing to do (a loud finding).
    pub headline: Option<String>,
    /// The clone check: the outcome its report ([`piforge_config::status::REIDENTIFY_REPORT_PATH`])
    /// records ([`piforge_config::status::OUTCOME_REIDENTIFIED`] or `OUTCOME_REPAIRED`); `None`
    /// for a plain verification, which is no re-identification and leaves the last report.
    pub report: Option<&'static str>,
}

/// Inputs of a plan besides card, facts and state.
#[derive(Clone, Copy)]
pub struct Knobs {
    /// 32 random bytes, used only when a new identity seed is needed.
    pub entropy: [u8; 32],
    /// Days since 1970 (shadow's last-change field).
    pub today: u64,
    /// RSA host key size (3072; tests may use less).
    pub rsa_bits: usize,
}

/// The node agent's state directory: the unit's `StateDirectory=piforge-node` (the only place
/// `ProtectSystem=strict` lets it write), and never firstboot's own `/var/lib/piforge`.
pub const NODE_STATE_DIR: &str = "/var/lib/piforge-node";

impl std::fmt::Debug for Knobs {
    // The entropy becomes the identity seed: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Knobs")
            .field("today", &self.today)
            .field("rsa_bits", &self.rsa_bits)
            .finish_non_exhaustive()
    }
}

pub use crate::units::HOST_KEYS_PENDING;

/// Marker written once every root change is done.
pub const DONE_MARKER: &str = "var/lib/piforge/firstboot.done";
/// Written by the first boot after the first one that found machine-id, hostname, SSH host
/// keys and disabled units as recorded; from then on they are not checked again (an admin may
/// change them).
pub const VERIFIED_MARKER: &str = "var/lib/piforge/verified";
/// Written when a boot after the first repaired what it found changed; a second finding is
/// only logged (never a repair loop).
pub const REPAIRED_MARKER: &str = "var/lib/piforge/repaired";
/// Where `*.wants/` links of the units we disable live.
const MULTI_USER_WANTS: &str = "etc/systemd/system/multi-user.target.wants";
/// cloud-init's drop-in directory.
pub const CLOUD_CFG_D: &str = "etc/cloud/cloud.cfg.d";
/// The name of our drop-in before it had to sort after the image's own (`99_raspberry-pi.cfg`
/// sorts after it); removed.
const OLD_CLOUD_CFG: &str = "99_piforge.cfg";

const HOST_KEY_KINDS: [&str; 3] = ["ed25519", "ecdsa", "rsa"];
const NM_FILES: [&str; 3] = ["eth0", "eth0-link-local", "wlan0"];
const SSH_UNIT: &str = "/lib/systemd/system/ssh.service";

/// The files and trees the plans read, for a card naming `overlays`.
pub fn wanted(overlays: &[String]) -> Wanted {
    let mut files: Vec<Loc> = [
        "etc/passwd",
        "etc/shadow",
        "etc/group",
        "etc/gshadow",
        "etc/hosts",
        "etc/hostname",
        "etc/machine-id",
        IDENTITY_PATH,
        DONE_MARKER,
        HOST_KEYS_PENDING,
        VERIFIED_MARKER,
        REPAIRED_MARKER,
        crate::settle::MOUNTINFO,
        "etc/dhcpcd.conf",
        "etc/piforge/node.toml",
        "etc/default/keyboard",
        "etc/locale.gen",
        "lib/systemd/system/userconfig.service",
        "usr/lib/systemd/system/userconfig.service",
    ]
    .iter()
    .map(|p| r(p))
    .collect();
    for k in HOST_KEY_KINDS {
        files.push(r(&format!("etc/ssh/ssh_host_{k}_key")));
        files.push(r(&format!("etc/ssh/ssh_host_{k}_key.pub")));
    }
    for n in NM_FILES {
        files.push(r(&nm_path(n)));
    }
    files.push(b(piforge_config::CARD_PATH));
    files.push(b("cmdline.txt"));
    files.push(b("meta-data"));
    for o in overlays {
        files.push(b(&format!("piforge/overlays/{o}/overlay.toml")));
    }
    let trees = vec![
        r(MULTI_USER_WANTS),
        r(CLOUD_CFG_D),
        r("etc/skel"),
        r("var/lib/systemd/rfkill"),
        r("var/lib/NetworkManager"),
        r("var/lib/dhcpcd"),
        b("piforge"),
    ];
    Wanted { files, trees }
}

/// Where the identity stands before planning.
struct Current {
    record: Option<IdentityRecord>,
    seed: [u8; 32],
    generation: u32,
    cloned: bool,
    /// Keep this hostname (resuming an interrupted re-identification).
    hostname: Option<String>,
    /// SSH host keys the card brought (made on the host), used unless this is a clone.
    card_keys: Option<HostKeys>,
}

fn current(facts: &Facts, state: &State, knobs: &Knobs, notes: &mut Vec<String>) -> Current {
    let record = state
        .text(&r(IDENTITY_PATH))
        .and_then(|t| match IdentityRecord::parse(&t) {
            Ok(rec) => Some(rec),
            Err(e) => {
                notes.push(format!("ignoring the identity record: {e}"));
                None
            }
        });
    match &record {
        Some(rec) if rec.matches_hardware(facts) => Current {
            seed: rec.seed_bytes().expect("parse checked the seed"),
            generation: rec.generation,
            cloned: false,
            hostname: None,
            card_keys: None,
            record,
        },
        Some(rec) => Current {
            seed: knobs.entropy,
            generation: rec.generation + 1,
            cloned: true,
            hostname: None,
            card_keys: None,
            record,
        },
        None => Current {
            seed: knobs.entropy,
            generation: 1,
            cloned: false,
            hostname: None,
            card_keys: None,
            record: None,
        },
    }
}

/// Boot partition clean-up. With `remove_card`, the card and the payload go (secrets first);
/// our `cmdline.txt` arguments always go, so the Pi never loops through firstboot.
pub fn cleanup_actions(state: &State, remove_card: bool) -> Vec<Action> {
    let mut out = vec![];
    if remove_card {
        out.push(Action::Remove {
            loc: b(piforge_config::CARD_PATH),
        });
        out.push(Action::Remove {
            loc: b("piforge/overlays"),
        });
        out.push(Action::Remove {
            loc: b("piforge/node"),
        });
    }
    if let Some(c) = state.text(&b("cmdline.txt")) {
        let restored = cmdline::remove(&c);
        out.push(write(b("cmdline.txt"), restored, 0o644));
    }
    if remove_card {
        // Last: the program that is running right now (Linux keeps it until we exit).
        out.push(Action::Remove {
            loc: b(piforge_config::OLD_FIRSTBOOT_BIN_PATH),
        });
        out.push(Action::Remove {
            loc: b(piforge_config::FIRSTBOOT_BIN_PATH),
        });
    }
    out
}

/// The first-boot plan for a valid card.
pub fn plan_firstboot(
    card: &Card,
    facts: &Facts,
    state: &State,
    knobs: &Knobs,
) -> Result<Plan, PlanError> {
    let mut notes = vec![];
    let mut out = vec![];
    let mut cur = current(facts, state, knobs, &mut notes);
    if cur.cloned {
        notes.push("identity record belongs to other hardware: new identity".into());
    }
    cur.card_keys = card.host_keys.clone();
    let policy = NamePolicy {
        fixed: card.identity.hostname.clone(),
        prefix: card.identity.hostname_prefix.clone(),
        keep_on_clone: card.identity.keep_hostname_on_clone,
    };
    // A complete record of this very identity stays complete (a re-run changes nothing).
    let already = !cur.cloned && cur.record.as_ref().is_some_and(|r| r.complete);
    let mut phases = vec![("identity", 0)];
    let (id, record) = identity_actions(&policy, facts, state, &cur, knobs, already, &mut out)?;
    notes.push(format!("hostname {}", id.hostname));
    phases.push(("access", out.len()));
    access_actions(card, state, knobs, &mut out)?;
    phases.push(("locale", out.len()));
    crate::locale::locale_actions(card, state, &mut out);
    phases.push(("network", out.len()));
    network_actions(card, facts, state, &id, &mut out);
    phases.push(("overlays", out.len()));
    let done = state.has(&r(DONE_MARKER));
    let ov =
        crate::overlay::overlay_actions(card, state, done, &id.hostname, &mut out, &mut notes)?;
    phases.push(("install", out.len()));
    install_actions(card, state, &id, ov, &mut out, &mut notes);
    cloud_init_actions(facts, state, &id, &mut out);
    let mut record = record;
    record.disabled = disabled_links(&out);
    // The reboot comes when we exit: before the run is marked complete, wait for the OS's own
    // first boot and put the machine-id on disk.
    let settle_at = Some(out.len());
    phases.push(("complete", out.len()));
    out.push(record_complete(record));
    out.push(write(
        r(DONE_MARKER),
        "piforge-firstboot completed\n",
        0o644,
    ));
    phases.push(("clean-up", out.len()));
    out.extend(cleanup_actions(state, true));
    Ok(Plan {
        actions: out,
        hostname: Some(id.hostname),
        notes,
        phases,
        settle_at,
        headline: None,
        report: None,
    })
}

/// The `*.wants/` links the actions remove: the units first boot disables.
fn disabled_links(actions: &[Action]) -> Vec<String> {
    let mut out: Vec<String> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Remove { loc }
                if loc.base == crate::action::Base::Root
                    && loc.rel.starts_with(units::UNIT_DIR)
                    && loc.rel.contains(".wants/") =>
            {
                Some(loc.rel.clone())
            }
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The plan when the card is missing or refused: if a previous run already finished every root
/// change (the marker exists), finish the clean-up; otherwise leave the card for inspection and
/// only take our arguments out of `cmdline.txt`, so the Pi boots normally instead of looping.
pub fn plan_without_card(state: &State) -> Plan {
    let done = state.has(&r(DONE_MARKER));
    Plan {
        actions: cleanup_actions(state, done),
        ..Plan::default()
    }
}

/// Re-identification on every boot: a no-op while the record is complete and names this
/// hardware; on other hardware a new identity (hostname per the recorded policy, machine-id, SSH
/// host keys, node id) and everything that carries it: node.toml's name, DHCP client ids,
/// cloud-init's instance-id, and the per-machine state of DHCP clients and the node agent.
/// The record is written first (incomplete) and last (complete), so a boot cut short resumes
/// the same identity on the next boot.
pub fn plan_reidentify(facts: &Facts, state: &State, knobs: &Knobs) -> Result<Plan, PlanError> {
    let mut notes = vec![];
    let mut cur = current(facts, state, knobs, &mut notes);
    let Some(rec) = cur.record.clone() else {
        notes.push("no identity record: first boot has not run; nothing to do".into());
        return Ok(Plan {
            notes,
            ..Plan::default()
        });
    };
    if !cur.cloned && rec.complete {
        return plan_verify(rec, facts, state, &cur, knobs, notes);
    }
    let mut out = vec![];
    let mut node_state = NODE_STATE_DIR.trim_start_matches('/').to_string();
    let node = state
        .text(&r(piforge_config::NODE_CONFIG_PATH))
        .map(|t| NodeConfig::parse(&t));
    if let Some(Ok(n)) = &node {
        let dir = n.state_dir.trim_matches('/');
        // Never our own identity directory, whatever node.toml says.
        if !dir.is_empty() && !dir.contains("..") && dir != "var/lib/piforge" {
            node_state = dir.to_string();
        }
    }
    cur.hostname = if cur.cloned {
        notes.push(format!(
            "hardware changed (recorded serial {:?}, this board {:?}): re-identifying",
            rec.serial, facts.serial
        ));
        // Per-machine state a clone must not share: NetworkManager's secret key (stable IPv6
        // addresses), DHCP leases and DUIDs, the node agent's state (its generation counter).
        // Before the record, so a cut here is redone.
        for dir in ["var/lib/NetworkManager", "var/lib/dhcpcd"] {
            for (rel, _) in state.tree(&r(dir)) {
                if rel == "secret_key"
                    || rel == "duid"
                    || rel == "secret"
                    || rel.ends_with(".lease")
                {
                    out.push(Action::Remove {
                        loc: r(&format!("{dir}/{rel}")),
                    });
                }
            }
        }
        out.push(Action::Remove {
            loc: r(&node_state),
        });
        // The new identity is verified (and if need be repaired) after its own next boot.
        for m in [VERIFIED_MARKER, REPAIRED_MARKER] {
            out.push(Action::Remove { loc: r(m) });
        }
        None
    } else {
        notes.push("resuming an interrupted re-identification".into());
        Some(rec.hostname.clone())
    };
    let policy = NamePolicy {
        fixed: rec.fixed_hostname.clone(),
        prefix: rec.hostname_prefix.clone(),
        keep_on_clone: rec.keep_hostname_on_clone,
    };
    let (id, record) = identity_actions(&policy, facts, state, &cur, knobs, false, &mut out)?;
    notes.push(format!("hostname {}", id.hostname));
    match node {
        Some(Ok(mut n)) => {
            n.name = id.hostname.clone();
            out.push(write(
                r(piforge_config::NODE_CONFIG_PATH),
                n.render(),
                0o600,
            ));
        }
        Some(Err(e)) => notes.push(format!("node.toml not updated: {e}")),
        None => {}
    }
    for n in NM_FILES {
        if let Some(t) = state.text(&r(&nm_path(n))) {
            let iface = if n == "wlan0" { "wlan0" } else { "eth0" };
            let cid = identity::dhcp_client_id(&id.machine_id, iface);
            out.push(write(
                r(&nm_path(n)),
                network::nm_retarget(&t, &id.hostname, &cid),
                0o600,
            ));
        }
    }
    if let Some(t) = state.text(&r("etc/dhcpcd.conf")) {
        let text =
            network::dhcpcd_retarget(&t, |iface| identity::dhcp_client_id(&id.machine_id, iface));
        out.push(write(r("etc/dhcpcd.conf"), text, 0o644));
    }
    if state.has(&b("meta-data")) {
        let stock = state.text(&b("meta-data")).unwrap_or_default();
        out.push(write(
            b("meta-data"),
            finish::meta_data_with(&stock, &finish::instance_id(&id.machine_id), &id.hostname),
            0o644,
        ));
    }
    out.push(record_complete(record));
    out.push(Action::SetHostname(id.hostname.clone()));
    Ok(Plan {
        actions: out,
        hostname: Some(id.hostname),
        notes,
        report: Some(piforge_config::status::OUTCOME_REIDENTIFIED),
        ..Plan::default()
    })
}

/// What differs from the record on the hardware it belongs to: machine-id (on disk, not a
/// transient mount), hostname, SSH host keys, and the units first boot disabled.
pub fn drift(rec: &IdentityRecord, state: &State) -> Vec<String> {
    let mut out = vec![];
    let mid = state.text(&r("etc/machine-id")).unwrap_or_default();
    let mounted = state
        .text(&r(crate::settle::MOUNTINFO))
        .is_some_and(|t| crate::settle::machine_id_mounted(&t));
    if identity::machine_id_hash(&mid) != rec.machine_id_sha256 {
        out.push(if identity::valid_machine_id(&mid) {
            "machine-id is not the recorded one".to_string()
        } else {
            format!("machine-id is {:?}, not the recorded one", mid.trim())
        });
    } else if mounted {
        out.push("machine-id is only a transient mount, not on disk".into());
    }
    let host = state.text(&r("etc/hostname")).unwrap_or_default();
    if host.trim() != rec.hostname {
        out.push(format!(
            "hostname is {:?}, recorded {:?}",
            host.trim(),
            rec.hostname
        ));
    }
    let fps: Vec<String> = HOST_KEY_KINDS
        .iter()
        .filter_map(|k| {
            let public = state.text(&r(&format!("etc/ssh/ssh_host_{k}_key.pub")))?;
            let private = state.text(&r(&format!("etc/ssh/ssh_host_{k}_key")))?;
            let fp = identity::public_fingerprint(&public)?;
            Some(if identity::private_matches(&private, &fp) {
                fp
            } else {
                format!("{fp} (private key does not match)")
            })
        })
        .collect();
    if fps != rec.ssh_host_keys {
        out.push(format!(
            "SSH host keys are [{}], recorded [{}]",
            fps.join(", "),
            rec.ssh_host_keys.join(", ")
        ));
    }
    for l in &rec.disabled {
        if state.has(&r(l)) {
            out.push(format!(
                "/{l} is back (a unit we disabled is enabled again)"
            ));
        }
    }
    out
}

/// The boots after the first, on the recorded hardware, until one finds everything as
/// recorded: compare ([`drift`]); repair once (the same seed derives the same machine-id, keys
/// and hostname) and say so loudly; a second finding after a repair is only reported.
fn plan_verify(
    rec: IdentityRecord,
    facts: &Facts,
    state: &State,
    cur: &Current,
    knobs: &Knobs,
    mut notes: Vec<String>,
) -> Result<Plan, PlanError> {
    if state.has(&r(VERIFIED_MARKER)) {
        return Ok(Plan {
            hostname: Some(rec.hostname),
            notes,
            ..Plan::default()
        });
    }
    let found = drift(&rec, state);
    if found.is_empty() {
        notes.push(
            "verified after the reboot: machine-id (on disk), hostname, SSH host keys and \
             disabled units are as recorded"
                .into(),
        );
        return Ok(Plan {
            actions: vec![write(r(VERIFIED_MARKER), "verified\n", 0o644)],
            hostname: Some(rec.hostname),
            notes,
            headline: Some("verified after the reboot".into()),
            ..Plan::default()
        });
    }
    if state.has(&r(REPAIRED_MARKER)) {
        notes.extend(found.iter().map(|f| format!("CHANGED AGAIN: {f}")));
        notes.push(
            "already repaired once: not repairing again; something on this system keeps \
             changing them"
                .into(),
        );
        return Ok(Plan {
            hostname: Some(rec.hostname),
            notes,
            headline: Some("CHANGED AGAIN after the repair; not repaired twice".into()),
            ..Plan::default()
        });
    }
    notes.extend(
        found
            .iter()
            .map(|f| format!("CHANGED since first boot: {f}")),
    );
    let policy = NamePolicy {
        fixed: rec.fixed_hostname.clone(),
        prefix: rec.hostname_prefix.clone(),
        keep_on_clone: rec.keep_hostname_on_clone,
    };
    let resume = Current {
        record: Some(rec.clone()),
        seed: cur.seed,
        generation: cur.generation,
        cloned: false,
        hostname: Some(rec.hostname.clone()),
        // The card (and host keys it carried) left the FAT at first boot.
        card_keys: None,
    };
    let mut out = vec![];
    let (id, mut record) =
        identity_actions(&policy, facts, state, &resume, knobs, false, &mut out)?;
    for l in &rec.disabled {
        out.push(Action::Remove { loc: r(l) });
    }
    record.disabled = rec.disabled.clone();
    out.push(write(
        r(REPAIRED_MARKER),
        format!("{}\n", found.join("\n")),
        0o644,
    ));
    out.push(record_complete(record));
    out.push(Action::SetHostname(id.hostname.clone()));
    notes.push("REPAIRED from the record (same seed: same machine-id, keys and hostname)".into());
    Ok(Plan {
        actions: out,
        hostname: Some(id.hostname),
        notes,
        headline: Some("REPAIRED after the reboot: identity had changed".into()),
        report: Some(piforge_config::status::OUTCOME_REPAIRED),
        ..Plan::default()
    })
}

/// The host keys left for later (`piforge-firstboot hostkeys`, after boot, niced): each kind
/// in [`HOST_KEYS_PENDING`], derived from the identity seed (so a run cut short makes the same
/// keys again), then the record lists every key in place, then the marker goes. Nothing to do
/// without the marker, or before the identity is complete (the clone check finishes it).
pub fn plan_host_keys(state: &State, knobs: &Knobs) -> Result<Plan, PlanError> {
    let mut plan = Plan::default();
    let Some(marker) = state.text(&r(HOST_KEYS_PENDING)) else {
        return Ok(plan);
    };
    let rec = state
        .text(&r(IDENTITY_PATH))
        .and_then(|t| IdentityRecord::parse(&t).ok());
    let Some(rec) = rec.filter(|r| r.complete) else {
        plan.notes
            .push("no complete identity record yet: host keys are made after it".into());
        return Ok(plan);
    };
    let seed = rec.seed_bytes().expect("parse checked the seed");
    let wanted: Vec<&str> = HOST_KEY_KINDS
        .iter()
        .copied()
        .filter(|k| marker.split_whitespace().any(|m| m == *k))
        .filter(|k| !(*k == "rsa" && knobs.rsa_bits == 0))
        .collect();
    let mut fingerprints = vec![];
    for k in HOST_KEY_KINDS {
        if wanted.contains(&k) {
            let key = identity::host_key(&seed, &rec.hostname, k, knobs.rsa_bits)?;
            let p = format!("etc/ssh/ssh_host_{k}_key");
            plan.actions.push(write(r(&p), key.private.expose(), 0o600));
            plan.actions
                .push(write(r(&format!("{p}.pub")), key.public.clone(), 0o644));
            plan.notes.push(format!("made the {k} host key"));
            fingerprints.push(key.fingerprint);
        } else if let Some(fp) = state
            .text(&r(&format!("etc/ssh/ssh_host_{k}_key.pub")))
            .and_then(|t| identity::public_fingerprint(&t))
            .filter(|fp| rec.ssh_host_keys.contains(fp))
        {
            fingerprints.push(fp);
        }
    }
    let mut rec = rec;
    rec.ssh_host_keys = fingerprints;
    plan.actions
        .push(write(r(IDENTITY_PATH), rec.render(), 0o600));
    plan.actions.push(Action::Remove {
        loc: r(HOST_KEYS_PENDING),
    });
    plan.hostname = Some(rec.hostname.clone());
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_card_only_cmdline_changes_until_done() {
        let mut st = State::default();
        let line = cmdline::add("console=tty1 rootwait\n", "/boot/firmware");
        st.files.insert(b("cmdline.txt"), line.into_bytes());
        let p = plan_without_card(&st);
        assert_eq!(p.actions.len(), 1);
        assert!(
            matches!(&p.actions[0], Action::Write { contents, .. } if contents == b"console=tty1 rootwait\n")
        );
        st.files.insert(r(DONE_MARKER), b"x".to_vec());
        let p = plan_without_card(&st);
        assert!(
            p.actions
                .iter()
                .any(|a| matches!(a, Action::Remove { loc } if loc.rel == "piforge/card.toml"))
        );
    }
}
