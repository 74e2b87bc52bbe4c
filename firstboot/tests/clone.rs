//! Clone safety: a configured card copied to another Pi re-identifies on its next boot (new
//! hostname, machine-id, SSH host keys, node id, DHCP client ids, cloud-init instance-id);
//! on the Pi it was made on, the check is a no-op.

mod common;

use std::fs;

use common::*;
use piforge_config::NodeConfig;
use piforge_firstboot::apply::RecordingSystem;
use piforge_firstboot::identity::{IdentityRecord, dhcp_client_id};
use piforge_firstboot::{Outcome, run_firstboot, run_reidentify};

fn configured(rel: Rel, card: Option<piforge_config::Card>) -> (Fake, RecordingSystem) {
    let f = Fake::new(rel, true, "10000000aaaaaa01");
    if let Some(c) = card {
        f.put_payload(&c);
    }
    let mut sys = RecordingSystem::default();
    run_firstboot(&f.request(hooks(1)), &mut sys).unwrap();
    (f, sys)
}

#[test]
fn same_board_is_a_no_op() {
    let (f, mut sys) = configured(Rel::Bookworm, None);
    let before = snapshot(&f.root, Some(&sys));
    let out = run_reidentify(&f.reidentify_request(hooks(9)), &mut sys).unwrap();
    assert_eq!(
        out,
        Outcome::Reidentify {
            hostname: Some("pi-aaaa01".into()),
            changed: vec![]
        }
    );
    assert_eq!(
        diff(&before, &snapshot(&f.root, Some(&sys))),
        Vec::<String>::new()
    );
}

#[test]
fn copied_card_re_identifies_before_the_network() {
    for rel in [Rel::Bookworm, Rel::Bullseye, Rel::Trixie] {
        let (a, _) = configured(rel, None);
        // A dd copy of the configured card, booted in another Pi.
        let b = a.clone_to_new_dir();
        b.set_serial("10000000bbbbbb02");
        fs::create_dir_all(b.root.join("var/lib/piforge-node")).unwrap();
        fs::write(b.root.join("var/lib/piforge-node/generation"), "7").unwrap();
        fs::create_dir_all(b.root.join("var/lib/NetworkManager")).unwrap();
        fs::write(b.root.join("var/lib/NetworkManager/secret_key"), "twin").unwrap();
        let mut sys = RecordingSystem::default();
        let out = run_reidentify(&b.reidentify_request(hooks(2)), &mut sys).unwrap();
        let Outcome::Reidentify { hostname, changed } = out else {
            panic!()
        };
        assert_eq!(hostname.as_deref(), Some("pi-bbbb02"), "{rel:?}");
        assert!(!changed.is_empty());
        assert_eq!(sys.running_hostname.as_deref(), Some("pi-bbbb02"));
        assert_eq!(b.read("etc/hostname"), "pi-bbbb02\n");
        assert!(b.read("etc/hosts").contains("127.0.1.1\tpi-bbbb02\n"));
        for p in [
            "etc/machine-id",
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_ecdsa_key.pub",
            "etc/ssh/ssh_host_rsa_key",
        ] {
            assert_ne!(a.read(p), b.read(p), "{rel:?} {p} not renewed");
        }
        assert_eq!(b.mode("etc/ssh/ssh_host_ed25519_key"), 0o600);
        let ra = IdentityRecord::parse(&a.read("var/lib/piforge/identity")).unwrap();
        let rb = IdentityRecord::parse(&b.read("var/lib/piforge/identity")).unwrap();
        assert_ne!(ra.node_id, rb.node_id);
        assert_eq!(rb.generation, 2);
        assert_eq!(rb.serial.as_deref(), Some("10000000bbbbbb02"));
        let node = NodeConfig::parse(&b.read("etc/piforge/node.toml")).unwrap();
        assert_eq!(node.name, "pi-bbbb02");
        assert_eq!(b.mode("etc/piforge/node.toml"), 0o600);
        assert!(
            !b.root.join("var/lib/piforge-node").exists(),
            "node state of the twin"
        );
        assert!(!b.root.join("var/lib/NetworkManager/secret_key").exists());
        let mid = b.read("etc/machine-id");
        match rel {
            Rel::Bullseye => {
                let d = b.read("etc/dhcpcd.conf");
                assert!(d.contains(&format!(
                    "clientid {}\n",
                    dhcp_client_id(mid.trim(), "eth0")
                )));
            }
            _ => {
                let k = b.read("etc/NetworkManager/system-connections/piforge-eth0.nmconnection");
                assert!(k.contains("dhcp-hostname=pi-bbbb02\n"), "{k}");
                let cid = dhcp_client_id(mid.trim(), "eth0");
                assert!(k.contains(&format!("dhcp-client-id={cid}\n")));
                let w = b.read("etc/NetworkManager/system-connections/piforge-wlan0.nmconnection");
                assert!(w.contains(&format!(
                    "dhcp-client-id={}\n",
                    dhcp_client_id(mid.trim(), "wlan0")
                )));
            }
        }
        if rel == Rel::Trixie {
            let ma = fs::read_to_string(a.boot.join("meta-data")).unwrap();
            let mb = fs::read_to_string(b.boot.join("meta-data")).unwrap();
            assert_ne!(ma, mb);
            assert!(mb.contains("local-hostname: pi-bbbb02\n"));
        }
        // The next boot of the copy: same board now, nothing to do.
        let before = snapshot(&b.root, Some(&sys));
        let out = run_reidentify(&b.reidentify_request(hooks(3)), &mut sys).unwrap();
        assert!(matches!(out, Outcome::Reidentify { ref changed, .. } if changed.is_empty()));
        assert_eq!(
            diff(&before, &snapshot(&b.root, Some(&sys))),
            Vec::<String>::new()
        );
    }
}

#[test]
fn fixed_name_is_kept_on_clone_only_when_asked() {
    for keep in [false, true] {
        let mut card = full_card();
        card.identity.hostname = Some("web-1".into());
        card.identity.keep_hostname_on_clone = keep;
        let (a, _) = configured(Rel::Bookworm, Some(card));
        assert_eq!(a.read("etc/hostname"), "web-1\n");
        let b = a.clone_to_new_dir();
        b.set_serial("10000000bbbbbb02");
        let mut sys = RecordingSystem::default();
        run_reidentify(&b.reidentify_request(hooks(2)), &mut sys).unwrap();
        let want = if keep { "web-1\n" } else { "pi-bbbb02\n" };
        assert_eq!(b.read("etc/hostname"), want);
        assert_ne!(
            a.read("etc/machine-id"),
            b.read("etc/machine-id"),
            "keep={keep}"
        );
        assert_ne!(
            a.read("etc/ssh/ssh_host_ed25519_key"),
            b.read("etc/ssh/ssh_host_ed25519_key")
        );
    }
}

#[test]
fn no_record_means_nothing_to_do() {
    let f = Fake::new(Rel::Bookworm, true, "10000000aaaaaa01");
    let before = snapshot(&f.root, None);
    let mut sys = RecordingSystem::default();
    let out = run_reidentify(&f.reidentify_request(hooks(2)), &mut sys).unwrap();
    assert_eq!(
        out,
        Outcome::Reidentify {
            hostname: None,
            changed: vec![]
        }
    );
    assert_eq!(
        diff(&before, &snapshot(&f.root, None)),
        Vec::<String>::new()
    );
}
