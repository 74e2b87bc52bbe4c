//! The install part of a plan: the node agent's config and units, and cloud-init's seed and
//! drop-in on images that run it.

use super::*;

pub(super) fn install_actions(
    card: &Card,
    state: &State,
    id: &Identity,
    ov: crate::overlay::OverlayPlan,
    out: &mut Vec<Action>,
    notes: &mut Vec<String>,
) {
    let payload = state.tree(&b("piforge"));
    let shipped = |f: &str| payload.iter().any(|(p, _)| p == f);
    if shipped("node") {
        out.push(Action::Copy {
            from: b("piforge/node"),
            to: r(units::NODE_BIN),
            mode: 0o755,
            owner: Owner::ROOT,
            create_only: false,
        });
    } else {
        notes.push("no piforge/node binary on the card; the node agent is not installed".into());
    }
    let bin = piforge_config::FIRSTBOOT_BIN_PATH;
    if shipped(bin.trim_start_matches("piforge/")) {
        out.push(Action::Copy {
            from: b(bin),
            to: r(units::FIRSTBOOT_BIN),
            mode: 0o755,
            owner: Owner::ROOT,
            create_only: false,
        });
    }
    out.push(mkdir("etc/piforge", 0o755));
    let mut node = NodeConfig::from_card(card, &id.hostname);
    node.state_dir = NODE_STATE_DIR.to_string();
    // The card's own tags win over an overlay's; overlay handlers are added.
    ov.merge_into(&mut node);
    out.push(write(
        r(piforge_config::NODE_CONFIG_PATH),
        node.render(),
        0o600,
    ));
    if let Some(db) = &card.db {
        // The db overlay's passwords, for Patroni's unit (systemd reads the file as root).
        let path = piforge_config::card::DB_SECRETS_PATH;
        if let Some((dir, _)) = path.rsplit_once('/') {
            out.push(mkdir(dir, 0o755));
        }
        out.push(write(r(path), db.env_file(), 0o600));
    }
    let unit = |name: &str, text: String, out: &mut Vec<Action>| {
        let path = format!("/{}/{name}", units::UNIT_DIR);
        out.push(write(r(&path), text.clone(), 0o644));
        for t in units::wanted_by(&text) {
            let (l, target) = units::enable_link(name, &path, &t);
            out.push(link(&l, &target));
        }
    };
    unit(
        "piforge-reidentify.service",
        units::reidentify_service(),
        out,
    );
    unit("piforge-node.service", units::node_service(), out);
    unit("piforge-hostkeys.service", units::hostkeys_service(), out);
    if !ov.packages.is_empty() {
        let list: String = ov.packages.iter().map(|p| format!("{p}\n")).collect();
        out.push(write(r(units::PACKAGES_LIST), list, 0o644));
        unit("piforge-packages.service", units::packages_service(), out);
    }
}

pub(super) fn cloud_init_actions(
    facts: &Facts,
    state: &State,
    id: &Identity,
    out: &mut Vec<Action>,
) {
    if !facts.cloud_init {
        return;
    }
    out.push(mkdir(CLOUD_CFG_D, 0o755));
    let shipped: Vec<String> = state
        .tree(&r(CLOUD_CFG_D))
        .iter()
        .map(|(name, _)| name.clone())
        .filter(|n| !n.contains('/') && n != OLD_CLOUD_CFG)
        .collect();
    let name = finish::cloud_cfg_name(&shipped);
    if name != OLD_CLOUD_CFG {
        out.push(Action::Remove {
            loc: r(&format!("{CLOUD_CFG_D}/{OLD_CLOUD_CFG}")),
        });
    }
    out.push(write(
        r(&format!("{CLOUD_CFG_D}/{name}")),
        finish::cloud_init_cfg(),
        0o644,
    ));
    // The seed on the boot partition is ours (the builder wrote it); on an image built before
    // that, the stock user-data and network-config are replaced here too.
    for (file, text) in finish::seed_files() {
        out.push(write(b(file), text, 0o644));
    }
    let stock = state.text(&b("meta-data")).unwrap_or_default();
    out.push(write(
        b("meta-data"),
        finish::meta_data_with(&stock, &finish::instance_id(&id.machine_id), &id.hostname),
        0o644,
    ));
}
