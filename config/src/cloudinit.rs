//! The cloud-init NoCloud seed piforge puts on the boot partition of images that run
//! cloud-init (Raspberry Pi OS Trixie from 2025-10-02 ships one: `user-data`, `meta-data`,
//! `network-config`; the 2025-10-01 image has cloud-init but no seed).
//!
//! piforge owns the node: hostname, user, password, SSH host keys, locale and network are
//! set by piforge-firstboot. The seed therefore asks cloud-init for nothing: `user-data`
//! creates no user, sets no password and leaves hostname, keys and locale alone;
//! `network-config` disables cloud-init's networking (NetworkManager profiles from firstboot
//! carry the hostname and DHCP client id). `meta-data` carries a per-card instance-id, so every
//! card is a new instance to cloud-init. This module only renders text.

/// `user-data`: a `#cloud-config` that changes nothing piforge owns.
pub const USER_DATA: &str = "#cloud-config\n\
# Written by piforge: piforge-firstboot sets up the user and its login, the hostname, the\n\
# SSH host keys, the locale and the network; cloud-init must not.\n\
users: []\n\
ssh_pwauth: false\n\
preserve_hostname: true\n\
manage_etc_hosts: false\n\
ssh_deletekeys: false\n\
ssh_genkeytypes: []\n";

/// `network-config`: cloud-init's networking off (network config version 2 has no other way to
/// say it; `config: disabled` is what cloud-init reads).
pub const NETWORK_CONFIG: &str = "# Written by piforge: the network is configured by piforge-firstboot.\n\
network:\n  config: disabled\n";

/// The seed files on the FAT that are the same on every card: (path, text).
pub const SEED_FILES: [(&str, &str); 2] =
    [("user-data", USER_DATA), ("network-config", NETWORK_CONFIG)];

/// `meta-data` as the builder writes it: a unique instance-id and, when known, our hostname.
pub fn meta_data(instance_id: &str, hostname: Option<&str>) -> String {
    let mut s = format!("# written by piforge\ndsmode: local\ninstance-id: {instance_id}\n");
    if let Some(h) = hostname {
        s.push_str(&format!("local-hostname: {h}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_creates_nothing_piforge_owns() {
        assert!(USER_DATA.starts_with("#cloud-config\n"));
        for k in [
            "users: []\n",
            "preserve_hostname: true\n",
            "ssh_genkeytypes: []\n",
        ] {
            assert!(USER_DATA.contains(k), "{k}");
        }
        let keys: Vec<&str> = USER_DATA
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(':').next())
            .collect();
        for k in [
            "password",
            "chpasswd",
            "locale",
            "hostname",
            "fqdn",
            "ssh_authorized_keys",
            "ssh_keys",
            "user",
        ] {
            assert!(!keys.contains(&k), "{k}");
        }
        assert!(!USER_DATA.contains("passwd:"));
        assert!(NETWORK_CONFIG.contains("network:\n  config: disabled\n"));
        let m = meta_data("piforge-x-lab-01", Some("lab-01"));
        assert!(
            m.contains("instance-id: piforge-x-lab-01\n") && m.contains("local-hostname: lab-01\n")
        );
        assert!(!meta_data("i", None).contains("local-hostname"));
    }
}
