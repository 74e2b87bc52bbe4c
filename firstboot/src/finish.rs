//! The last steps and the traces left for humans: cloud-init agreement (NoCloud `meta-data` on
//! the boot partition, a `cloud.cfg.d` drop-in that keeps cloud-init off the user and the
//! hostname), and `piforge/firstboot.log` on the boot partition, readable from a laptop.
//!
//! The clean-up actions themselves (card, payload, `cmdline.txt`) are planned in
//! `plan::cleanup_actions`; this module holds the texts. Nothing here may ever contain a
//! secret: the log is built from action descriptions and notes, never from file contents.

use sha2::{Digest, Sha256};

/// The name of our `cloud.cfg.d` drop-in when nothing the image ships sorts after it.
pub const CLOUD_CFG: &str = "99_zz-piforge.cfg";

/// The name of our drop-in among the `shipped` ones (file names in `cloud.cfg.d`): cloud-init
/// merges them in name order and the last one wins, so ours must sort after every one the
/// image ships (Trixie ships `99_raspberry-pi.cfg`, which sorts after `99_piforge.cfg`).
pub fn cloud_cfg_name(shipped: &[String]) -> String {
    let last = shipped
        .iter()
        .filter(|n| n.ends_with(".cfg") && !n.ends_with("piforge.cfg"))
        .max();
    match last {
        // `_` sorts after `.`, so "<last>_zpiforge.cfg" comes right after "<last>.cfg".
        Some(l) if l.as_str() >= CLOUD_CFG => {
            format!("{}_zpiforge.cfg", l.trim_end_matches(".cfg"))
        }
        _ => CLOUD_CFG.to_string(),
    }
}

/// The seed files on the boot partition that are the same on every card (the builder writes
/// them; first boot writes them again on an image built before it did).
pub fn seed_files() -> Vec<(&'static str, String)> {
    piforge_config::cloudinit::SEED_FILES
        .iter()
        .map(|(p, t)| (*p, t.to_string()))
        .collect()
}

/// cloud-init drop-in: piforge owns the hostname and the user; cloud-init must not fight it.
pub fn cloud_init_cfg() -> String {
    "# Written by piforge-firstboot: piforge sets the hostname, the user and the SSH host keys.\n\
     preserve_hostname: true\n\
     manage_etc_hosts: false\n\
     users: []\n\
     ssh_deletekeys: false\n\
     ssh_genkeytypes: []\n\
     # Our NetworkManager/networkd profiles carry the hostname and client id; a second profile\n\
     # from the seed's network-config would compete with them.\n\
     network:\n  config: disabled\n"
        .to_string()
}

/// A unique cloud-init instance-id derived from the machine-id (not revealing it).
pub fn instance_id(machine_id: &str) -> String {
    let h = Sha256::digest(format!("piforge-instance-id:{}", machine_id.trim()).as_bytes());
    format!("piforge-{}", hex::encode(&h[..8]))
}

/// NoCloud `meta-data` with our `instance-id` and `local-hostname`; other lines (such as
/// `dsmode: local`) are kept, stale ids of either spelling replaced.
pub fn meta_data_with(stock: &str, instance_id: &str, hostname: &str) -> String {
    let mut out = String::new();
    for l in stock.lines() {
        let key = l.split(':').next().unwrap_or("").trim();
        if matches!(
            key,
            "instance-id" | "instance_id" | "local-hostname" | "local_hostname"
        ) {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(&format!(
        "instance-id: {instance_id}\nlocal-hostname: {hostname}\n"
    ));
    out
}

/// One run's section of `firstboot.log`.
pub fn log_section(headline: &str, lines: &[String]) -> String {
    let mut s = format!(
        "== piforge-firstboot {}: {headline}\n",
        env!("CARGO_PKG_VERSION")
    );
    for l in lines {
        s.push_str("  ");
        s.push_str(&l.replace('\n', " "));
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_data_replaces_ids_keeps_the_rest() {
        let stock = "# cloud-init NoCloud meta-data as shipped on the boot partition\ndsmode: local\ninstance_id: rpios-image\n";
        let m = meta_data_with(stock, "piforge-1", "pi-3f9a2c");
        assert!(m.contains("dsmode: local\n"));
        assert!(!m.contains("rpios-image"));
        assert!(m.ends_with("instance-id: piforge-1\nlocal-hostname: pi-3f9a2c\n"));
        assert_eq!(meta_data_with(&m, "piforge-1", "pi-3f9a2c"), m);
    }

    #[test]
    fn instance_id_is_unique_and_hides_machine_id() {
        let a = instance_id("0123456789abcdef0123456789abcdef");
        assert_ne!(a, instance_id("1123456789abcdef0123456789abcdef"));
        assert!(!a.contains("0123456789abcdef"));
    }

    #[test]
    fn drop_in_sorts_after_every_shipped_one() {
        let fix = format!(
            "{}/trixie/rootfs/etc/cloud/cloud.cfg.d",
            piforge_test_support::RASPIOS_FIXTURES
        );
        let mut shipped: Vec<String> = std::fs::read_dir(fix)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(shipped.contains(&"99_raspberry-pi.cfg".to_string()));
        assert!(
            "99_piforge.cfg" < "99_raspberry-pi.cfg",
            "the old name lost to the image's"
        );
        for extra in [
            vec![],
            vec!["zzz-local.cfg".to_string()],
            vec!["~x.cfg".into()],
        ] {
            shipped.extend(extra);
            let ours = cloud_cfg_name(&shipped);
            assert!(ours.ends_with(".cfg"), "{ours}");
            for s in &shipped {
                assert!(ours.as_str() > s.as_str(), "{ours} must sort after {s}");
            }
            let mut again = shipped.clone();
            again.push(ours.clone());
            assert_eq!(cloud_cfg_name(&again), ours, "a re-run keeps the name");
        }
    }

    #[test]
    fn cloud_cfg_disables_user_and_hostname() {
        let c = cloud_init_cfg();
        assert!(c.contains("preserve_hostname: true\n") && c.contains("users: []\n"));
        assert!(c.contains("network:\n  config: disabled\n"));
    }
}
