//! The plan: what goes onto the FAT boot partition, computed from values only.
//!
//! `plan_image` gives every file of the cloneable image's card (card.toml without a fixed
//! hostname, the Pi binaries, overlays, cloud-init seed, the edited `cmdline.txt`);
//! `plan_card` gives the few KB that personalise one card of a batch. Neither touches a disk:
//! `assemble` and `export` apply the result through `image::fat`.

use std::collections::BTreeMap;

use piforge_config::{CARD_DIR, CARD_PATH, Card, FIRSTBOOT_BIN_PATH, cloudinit, cmdline};

use crate::build::overlay::LoadedOverlay;

/// What the plan needs to know about the base image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFacts {
    /// Where the boot partition is mounted on the Pi (`/boot/firmware` or `/boot`).
    pub boot_mount: String,
    /// The image runs cloud-init (NoCloud seed on the FAT).
    pub cloud_init: bool,
}

/// Files to write to the FAT, path (relative to its root) → bytes. Sorted, so the FAT is
/// written in the same order every time (reproducible images).
pub type FatFiles = BTreeMap<String, Vec<u8>>;

/// Executables carried on the card.
pub struct PiBinaries<'a> {
    /// `piforge-firstboot` for the image's architecture.
    pub firstboot: &'a [u8],
    /// `piforge-node` for the image's architecture.
    pub node: &'a [u8],
}

/// Path of the cloud-init NoCloud meta-data file on the FAT.
pub const META_DATA_PATH: &str = "meta-data";

/// Everything the cloneable image gets on its FAT. `cmdline` is the image's current
/// `cmdline.txt`.
pub fn plan_image(
    card: &Card,
    facts: &ImageFacts,
    bins: &PiBinaries<'_>,
    overlays: &[LoadedOverlay],
    cmdline_txt: &str,
    instance_id: &str,
) -> FatFiles {
    let mut files = plan_card(card, facts, instance_id);
    files.insert(FIRSTBOOT_BIN_PATH.into(), bins.firstboot.to_vec());
    files.insert(format!("{CARD_DIR}/node"), bins.node.to_vec());
    for o in overlays {
        for (rel, bytes) in &o.files {
            files.insert(
                format!("{CARD_DIR}/overlays/{}/{rel}", o.name),
                bytes.clone(),
            );
        }
    }
    files.insert(
        "cmdline.txt".into(),
        cmdline::add(cmdline_txt, &facts.boot_mount).into_bytes(),
    );
    files
}

/// The per-card files: `piforge/card.toml` and, on cloud-init images, the NoCloud seed (ours
/// replaces the image's own, if it shipped one): `meta-data` with the card's instance-id,
/// `user-data` and `network-config` that leave the node to piforge.
pub fn plan_card(card: &Card, facts: &ImageFacts, instance_id: &str) -> FatFiles {
    let mut files = FatFiles::new();
    files.insert(CARD_PATH.into(), card.render().into_bytes());
    if facts.cloud_init {
        files.insert(
            META_DATA_PATH.into(),
            meta_data(instance_id, card.identity.hostname.as_deref()).into_bytes(),
        );
        for (path, text) in cloudinit::SEED_FILES {
            files.insert(path.into(), text.as_bytes().to_vec());
        }
    }
    files
}

/// cloud-init NoCloud `meta-data`: a unique instance-id (so cloud-init treats every card as a
/// new instance) and our hostname, so cloud-init agrees with us instead of renaming the node.
/// Without a fixed hostname (cloneable image) firstboot writes the derived one on the Pi.
pub fn meta_data(instance_id: &str, hostname: Option<&str>) -> String {
    cloudinit::meta_data(instance_id, hostname)
}

/// Total bytes of a plan (for the free-space check before anything is written).
pub fn total_bytes(files: &FatFiles) -> u64 {
    files.values().map(|v| v.len() as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use piforge_config::ClusterKey;

    fn facts(cloud_init: bool) -> ImageFacts {
        ImageFacts {
            boot_mount: "/boot/firmware".into(),
            cloud_init,
        }
    }

    #[test]
    fn image_plan_has_card_binaries_overlays_and_cmdline() {
        let card = Card::new("lab", ClusterKey::from_bytes([1; 32]));
        let overlay = LoadedOverlay {
            name: "web".into(),
            manifest: Default::default(),
            files: [("files/etc/x".to_string(), b"x".to_vec())].into(),
        };
        let bins = PiBinaries {
            firstboot: b"\x7fELF-fb",
            node: b"\x7fELF-node",
        };
        let plan = plan_image(
            &card,
            &facts(false),
            &bins,
            &[overlay],
            "a rootwait\n",
            "i-1",
        );
        let keys: Vec<_> = plan.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "cmdline.txt",
                "piforge/card.toml",
                "piforge/node",
                "piforge/overlays/web/files/etc/x",
                "piforge/setup"
            ]
        );
        let cmd = String::from_utf8(plan["cmdline.txt"].clone()).unwrap();
        assert_eq!(
            cmd,
            "a rootwait systemd.run=/boot/firmware/piforge/setup \
             systemd.run_success_action=reboot systemd.unit=kernel-command-line.target\n"
        );
        assert_eq!(
            Card::parse(std::str::from_utf8(&plan[CARD_PATH]).unwrap()).unwrap(),
            card
        );
    }

    #[test]
    fn cloud_init_gets_meta_data_with_our_hostname() {
        let mut card = Card::new("lab", ClusterKey::from_bytes([1; 32]));
        card.identity.hostname = Some("pi-02".into());
        let plan = plan_card(&card, &facts(true), "piforge-abc-pi-02");
        let md = String::from_utf8(plan[META_DATA_PATH].clone()).unwrap();
        assert!(md.contains("instance-id: piforge-abc-pi-02\n"), "{md}");
        assert!(md.contains("local-hostname: pi-02\n"), "{md}");
        let ud = String::from_utf8(plan["user-data"].clone()).unwrap();
        assert!(
            ud.starts_with("#cloud-config\n") && ud.contains("users: []\n"),
            "{ud}"
        );
        let nc = String::from_utf8(plan["network-config"].clone()).unwrap();
        assert!(nc.contains("config: disabled"), "{nc}");
        let other = plan_card(&card, &facts(true), "piforge-abc-pi-03");
        assert_ne!(
            other[META_DATA_PATH], plan[META_DATA_PATH],
            "per-card instance-id"
        );
        let plain = plan_card(&card, &facts(false), "x");
        assert_eq!(
            plain.keys().collect::<Vec<_>>(),
            [CARD_PATH],
            "no seed without cloud-init"
        );
    }
}
