//! The identity part of a plan: hostname, hosts, machine-id, SSH host keys, the identity record.

use super::*;

/// The identity actions (record first), shared by first boot and re-identification.
/// Returns the identity and its record (written here with `complete` as given; the caller
/// writes it again with `complete = true` once everything derived from it is in place).
pub(super) fn identity_actions(
    policy: &NamePolicy,
    facts: &Facts,
    state: &State,
    cur: &Current,
    knobs: &Knobs,
    complete: bool,
    out: &mut Vec<Action>,
) -> Result<(Identity, IdentityRecord), PlanError> {
    let mut id = identity::identity(policy, facts, cur.seed, cur.cloned);
    if let Some(h) = &cur.hostname {
        id.hostname = h.clone();
    }
    // Keep the keys on disk when they are the ones this identity wrote (a re-run); else take
    // the card's (made on the host); else make ed25519 now and leave ECDSA and RSA to
    // piforge-hostkeys.service after boot: neither first boot nor the clone check (which runs
    // before the network) waits for RSA primes, and SSH works at once with ed25519.
    let same_seed = cur.record.as_ref().and_then(|r| r.seed_bytes()) == Some(cur.seed);
    let existing: Vec<identity::HostKey> = HOST_KEY_KINDS
        .iter()
        .filter_map(|k| {
            let private = state.text(&r(&format!("etc/ssh/ssh_host_{k}_key")))?;
            let public = state.text(&r(&format!("etc/ssh/ssh_host_{k}_key.pub")))?;
            let fingerprint = identity::public_fingerprint(&public)?;
            identity::private_matches(&private, &fingerprint).then(|| identity::HostKey {
                kind: k,
                private: piforge_config::Secret::new(private),
                public,
                fingerprint,
            })
        })
        .collect();
    let keep = same_seed
        && !existing.is_empty()
        && cur.record.as_ref().is_some_and(|rec| {
            rec.ssh_host_keys
                == existing
                    .iter()
                    .map(|k| k.fingerprint.clone())
                    .collect::<Vec<_>>()
                && rec.hostname == id.hostname
        });
    // The kinds made later (empty: none; the marker goes).
    let deferred: Vec<&str>;
    let keys: Vec<identity::HostKey> = match &cur.card_keys {
        _ if keep => {
            // A resumed run: what is still missing stays (or becomes) pending.
            deferred = HOST_KEY_KINDS
                .iter()
                .copied()
                .filter(|k| !existing.iter().any(|e| e.kind == *k))
                .filter(|k| !(*k == "rsa" && knobs.rsa_bits == 0))
                .collect();
            existing
        }
        Some(ck) if !cur.cloned => {
            deferred = vec![];
            ck.parse()?
        }
        _ => {
            let later = HOST_KEY_KINDS[1..]
                .iter()
                .copied()
                .filter(|k| !(*k == "rsa" && knobs.rsa_bits == 0))
                .collect();
            deferred = later;
            vec![identity::host_key(
                &cur.seed,
                &id.hostname,
                "ed25519",
                knobs.rsa_bits,
            )?]
        }
    };
    let record = IdentityRecord {
        schema_version: 1,
        generation: cur.generation,
        serial: facts.serial.clone(),
        mac: facts.wired_mac.clone(),
        hostname: id.hostname.clone(),
        fixed_hostname: policy.fixed.clone(),
        hostname_prefix: policy.prefix.clone(),
        keep_hostname_on_clone: policy.keep_on_clone,
        node_id: id.node_id.clone(),
        machine_id_sha256: identity::machine_id_hash(&id.machine_id),
        ssh_host_keys: keys.iter().map(|k| k.fingerprint.clone()).collect(),
        disabled: cur
            .record
            .as_ref()
            .map(|r| r.disabled.clone())
            .unwrap_or_default(),
        seed: hex::encode(cur.seed),
        complete,
    };
    out.push(mkdir("var/lib/piforge", 0o755));
    out.push(write(r(IDENTITY_PATH), record.render(), 0o600));
    out.push(write(
        r("etc/machine-id"),
        format!("{}\n", id.machine_id),
        0o444,
    ));
    // D-Bus reads its own copy on old images: point it at ours, as Debian does.
    out.push(link("var/lib/dbus/machine-id", "/etc/machine-id"));
    out.push(write(
        r("etc/hostname"),
        format!("{}\n", id.hostname),
        0o644,
    ));
    let hosts = state.text(&r("etc/hosts")).unwrap_or_else(|| {
        "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n".into()
    });
    out.push(write(
        r("etc/hosts"),
        identity::hosts_with(&hosts, &id.hostname),
        0o644,
    ));
    out.push(mkdir("etc/ssh", 0o755));
    for k in &keys {
        let p = format!("etc/ssh/ssh_host_{}_key", k.kind);
        out.push(write(r(&p), k.private.expose(), 0o600));
        out.push(write(r(&format!("{p}.pub")), k.public.clone(), 0o644));
    }
    match deferred {
        later if later.is_empty() => out.push(Action::Remove {
            loc: r(HOST_KEYS_PENDING),
        }),
        later => {
            // Keys of another identity (the Pi this card was copied from) must not stay.
            for k in &later {
                let p = format!("etc/ssh/ssh_host_{k}_key");
                out.push(Action::Remove { loc: r(&p) });
                out.push(Action::Remove {
                    loc: r(&format!("{p}.pub")),
                });
            }
            let list: String = later.iter().map(|k| format!("{k}\n")).collect();
            out.push(write(r(HOST_KEYS_PENDING), list, 0o644));
        }
    }
    // Raspberry Pi OS's own one-shot would delete these keys on the next multi-user boot and
    // make others (the record would then lie); the keys are fresh, so it is not needed.
    out.push(Action::Remove {
        loc: r("etc/systemd/system/multi-user.target.wants/regenerate_ssh_host_keys.service"),
    });
    Ok((id, record))
}

pub(super) fn record_complete(mut rec: IdentityRecord) -> Action {
    rec.complete = true;
    write(r(IDENTITY_PATH), rec.render(), 0o600)
}
