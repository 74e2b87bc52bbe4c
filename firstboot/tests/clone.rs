//! Clone safety: a configured card copied to another Pi re-identifies on its next boot (new
//! hostname, machine-id, SSH host keys, node id, DHCP client ids, cloud-init instance-id);
//! on the Pi it was made on, the check is a no-op.

mod common;

use std::fs;

use common::*;
use piforge_config::NodeConfig;
use piforge_firstboot::apply::RecordingSystem;
use piforge_firstboot::identity::{IdentityRecord, dhcp_client_id};
use piforge_firstboot::{Outcome, run_firstboot, run_host_keys, run_reidentify};

fn configured(rel: Rel, card: Option<piforge_config::Card>) -> (Fake, RecordingSystem) {
    let f = Fake::new(rel, true, "10000000aaaaaa01");
    if let Some(c) = card {
        f.put_payload(&c);
    }
    let mut sys = RecordingSystem::default();
    run_firstboot(&f.request(hooks(1)), &mut sys).unwrap();
    // And the next boot's background step: every host key in place.
    run_host_keys(&f.reidentify_request(hooks(1)), &mut sys).unwrap();
    (f, sys)
}

/// Nothing changed but, on the first boot after the first, the marker that the identity was
/// verified as recorded (tests/os_first_boot.rs).
fn only_verified(changed: &[String]) -> bool {
    changed
        .iter()
        .all(|c| c == "write /var/lib/piforge/verified mode 0644 owner 0:0")
}

#[test]
fn same_board_is_a_no_op() {
    let (f, mut sys) = configured(Rel::Bookworm, None);
    // The boot after the first verifies the identity once.
    let out = run_reidentify(&f.reidentify_request(hooks(8)), &mut sys).unwrap();
    assert!(
        matches!(out, Outcome::Reidentify { ref changed, .. } if changed.len() == 1 && only_verified(changed))
    );
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
        // ed25519 at once (SSH works); the original's ECDSA and RSA keys are gone at once,
        // and their successors come from the background step, not before the network.
        for p in ["etc/machine-id", "etc/ssh/ssh_host_ed25519_key"] {
            assert_ne!(a.read(p), b.read(p), "{rel:?} {p} not renewed");
        }
        for p in ["etc/ssh/ssh_host_ecdsa_key.pub", "etc/ssh/ssh_host_rsa_key"] {
            assert!(
                !b.root.join(p).exists(),
                "{rel:?}: {p} of the original kept"
            );
        }
        assert_eq!(b.read("var/lib/piforge/host-keys.pending"), "ecdsa\nrsa\n");
        run_host_keys(&b.reidentify_request(hooks(3)), &mut sys).unwrap();
        for p in [
            "etc/ssh/ssh_host_ecdsa_key.pub",
            "etc/ssh/ssh_host_rsa_key",
            "etc/ssh/ssh_host_rsa_key.pub",
        ] {
            assert_ne!(a.read(p), b.read(p), "{rel:?} {p} not renewed");
        }
        assert_eq!(b.mode("etc/ssh/ssh_host_rsa_key"), 0o600);
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
        // The next boot of the copy: same board now, nothing to do but verify the new identity.
        let out = run_reidentify(&b.reidentify_request(hooks(3)), &mut sys).unwrap();
        assert!(
            matches!(out, Outcome::Reidentify { ref changed, .. } if changed.len() == 1 && only_verified(changed))
        );
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

/// A board without a serial number whose NIC driver is still loading: `sleep` is the only
/// time that passes, and the NIC with `mac` appears once `after` of it has.
struct LateNic {
    inner: RecordingSystem,
    root: std::path::PathBuf,
    mac: &'static str,
    after: std::time::Duration,
}

impl piforge_firstboot::apply::System for LateNic {
    fn chown(
        &mut self,
        path: &std::path::Path,
        owner: piforge_firstboot::action::Owner,
    ) -> std::io::Result<()> {
        self.inner.chown(path, owner)
    }
    fn owner(&self, path: &std::path::Path) -> std::io::Result<piforge_firstboot::action::Owner> {
        self.inner.owner(path)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.inner.sync()
    }
    fn set_hostname(&mut self, name: &str) -> std::io::Result<()> {
        self.inner.set_hostname(name)
    }
    fn hostname(&self) -> Option<String> {
        self.inner.hostname()
    }
    fn sleep(&mut self, d: std::time::Duration) {
        self.inner.sleep(d);
        if self.inner.slept >= self.after {
            let dir = self.root.join("sys/class/net/eth0");
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("address"), format!("{}\n", self.mac)).unwrap();
        }
    }
}

/// No serial (a board or VM without one): only the NIC tells boards apart. It starts absent.
fn without_serial_or_nic(f: &Fake) {
    let _ = fs::remove_file(f.root.join("sys/firmware/devicetree/base/serial-number"));
    fs::write(f.root.join("proc/cpuinfo"), "processor\t: 0\n").unwrap();
    fs::remove_dir_all(f.root.join("sys/class/net/eth0")).unwrap();
}

fn late_nic(f: &Fake, mac: &'static str, after_ms: u64) -> LateNic {
    LateNic {
        inner: RecordingSystem::default(),
        root: f.root.clone(),
        mac,
        after: std::time::Duration::from_millis(after_ms),
    }
}

#[test]
fn without_a_serial_both_checks_wait_for_the_wired_nic() {
    // First boot: the name comes from the MAC once the NIC is there, not from the seed.
    let a = Fake::new(Rel::Bookworm, true, "10000000aaaaaa01");
    without_serial_or_nic(&a);
    let mut sys = late_nic(&a, "52:54:00:5f:00:02", 3000);
    run_firstboot(&a.request(hooks(1)), &mut sys).unwrap();
    assert_eq!(a.read("etc/hostname"), "pi-5f0002\n");
    assert!(sys.inner.slept >= sys.after && sys.inner.slept < piforge_firstboot::WIRED_WAIT);
    let rec = IdentityRecord::parse(&a.read("var/lib/piforge/identity")).unwrap();
    assert_eq!(rec.mac.as_deref(), Some("52:54:00:5f:00:02"));

    // The same card on the same board, NIC late again: waits, then nothing to do.
    fs::remove_dir_all(a.root.join("sys/class/net/eth0")).unwrap();
    let mut sys = late_nic(&a, "52:54:00:5f:00:02", 1000);
    let out = run_reidentify(&a.reidentify_request(hooks(5)), &mut sys).unwrap();
    assert!(matches!(out, Outcome::Reidentify { ref changed, .. } if only_verified(changed)));
    assert!(sys.inner.slept >= sys.after);

    // A copy in another board whose NIC shows up 20 s into boot: re-identified from its MAC
    // (it used to be taken for the same board because no MAC was visible yet).
    let b = a.clone_to_new_dir();
    fs::remove_dir_all(b.root.join("sys/class/net/eth0")).unwrap();
    let mut sys = late_nic(&b, "52:54:00:5f:00:44", 20_000);
    let out = run_reidentify(&b.reidentify_request(hooks(2)), &mut sys).unwrap();
    let Outcome::Reidentify { hostname, changed } = out else {
        panic!()
    };
    assert_eq!(hostname.as_deref(), Some("pi-5f0044"));
    assert!(!changed.is_empty());
    assert_ne!(a.read("etc/machine-id"), b.read("etc/machine-id"));
    assert_ne!(
        a.read("etc/ssh/ssh_host_ed25519_key.pub"),
        b.read("etc/ssh/ssh_host_ed25519_key.pub")
    );

    // A board whose NIC never comes: the wait ends and boot goes on unchanged.
    let c = a.clone_to_new_dir();
    fs::remove_dir_all(c.root.join("sys/class/net/eth0")).unwrap();
    let mut sys = late_nic(&c, "52:54:00:5f:00:66", u64::MAX / 2);
    let out = run_reidentify(&c.reidentify_request(hooks(3)), &mut sys).unwrap();
    assert!(matches!(out, Outcome::Reidentify { ref changed, .. } if changed.is_empty()));
    assert_eq!(sys.inner.slept, piforge_firstboot::WIRED_WAIT);
}

#[test]
fn a_board_with_a_serial_never_waits_for_its_nic() {
    let (a, _) = configured(Rel::Bookworm, None);
    let b = a.clone_to_new_dir();
    b.set_serial("10000000bbbbbb02");
    fs::remove_dir_all(b.root.join("sys/class/net/eth0")).unwrap();
    let mut sys = RecordingSystem::default();
    let out = run_reidentify(&b.reidentify_request(hooks(2)), &mut sys).unwrap();
    assert!(matches!(out, Outcome::Reidentify { hostname: Some(ref h), .. } if h == "pi-bbbb02"));
    assert_eq!(sys.slept, std::time::Duration::ZERO);
}
