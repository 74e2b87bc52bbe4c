//! First boot on fake bullseye, bookworm and trixie roots: every file, mode and owner; second
//! run is a no-op; no secret stays on the boot partition; cmdline.txt restored byte for byte.

mod common;

use std::fs;

use common::*;
use piforge_config::{NodeConfig, cmdline};
use piforge_firstboot::action::Owner;
use piforge_firstboot::apply::RecordingSystem;
use piforge_firstboot::identity::{IdentityRecord, valid_machine_id};
use piforge_firstboot::{Outcome, TestHooks, run_firstboot, run_host_keys, run_reidentify};

const ALICE: Option<Owner> = Some(Owner {
    uid: 1000,
    gid: 1000,
});

fn owner(sys: &RecordingSystem, f: &Fake, p: &str) -> Option<Owner> {
    sys.owners.get(&f.root.join(p)).copied()
}

#[test]
fn bookworm_first_boot_writes_every_file_with_mode_and_owner() {
    let f = Fake::new(Rel::Bookworm, true, "100000002a3f9a2c");
    let mut sys = RecordingSystem::default();
    let out = run_firstboot(&f.request(hooks(1)), &mut sys).unwrap();
    let Outcome::Configured { hostname, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(hostname, "pi-3f9a2c");
    // Identity.
    assert_eq!(f.read("etc/hostname"), "pi-3f9a2c\n");
    assert!(f.read("etc/hosts").ends_with("127.0.1.1\tpi-3f9a2c\n"));
    assert!(!f.read("etc/hosts").contains("raspberrypi"));
    let mid = f.read("etc/machine-id");
    assert!(valid_machine_id(&mid) && mid.ends_with('\n'), "{mid:?}");
    assert_eq!(f.mode("etc/machine-id"), 0o444);
    assert_eq!(f.link("var/lib/dbus/machine-id"), "/etc/machine-id");
    // A cloneable card carries no host keys: ed25519 now, the others after boot.
    assert!(!f.root.join("etc/ssh/ssh_host_ecdsa_key").exists());
    assert!(!f.root.join("etc/ssh/ssh_host_rsa_key.pub").exists());
    assert_eq!(f.read("var/lib/piforge/host-keys.pending"), "ecdsa\nrsa\n");
    assert!(
        f.read("etc/systemd/system/piforge-hostkeys.service")
            .contains("ConditionPathExists=/var/lib/piforge/host-keys.pending")
    );
    let rec = IdentityRecord::parse(&f.read("var/lib/piforge/identity")).unwrap();
    assert_eq!(rec.ssh_host_keys.len(), 1);
    let out = run_host_keys(&f.reidentify_request(hooks(1)), &mut sys).unwrap();
    assert!(
        matches!(&out, Outcome::HostKeys { changed } if changed.len() == 6),
        "{out:?}"
    );
    for k in ["ed25519", "ecdsa", "rsa"] {
        let p = format!("etc/ssh/ssh_host_{k}_key");
        assert_eq!(f.mode(&p), 0o600, "{p}");
        assert_eq!(f.mode(&format!("{p}.pub")), 0o644);
        assert!(
            f.read(&p)
                .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----\n")
        );
        assert!(f.read(&format!("{p}.pub")).ends_with(" root@pi-3f9a2c\n"));
        assert_eq!(owner(&sys, &f, &p), Some(Owner::ROOT));
    }
    assert!(!f.root.join("var/lib/piforge/host-keys.pending").exists());
    let again = run_host_keys(&f.reidentify_request(hooks(7)), &mut sys).unwrap();
    assert_eq!(again, Outcome::HostKeys { changed: vec![] });
    let rec = IdentityRecord::parse(&f.read("var/lib/piforge/identity")).unwrap();
    assert_eq!(f.mode("var/lib/piforge/identity"), 0o600);
    assert_eq!(rec.serial.as_deref(), Some("100000002a3f9a2c"));
    assert_eq!(rec.hostname, "pi-3f9a2c");
    assert_eq!(rec.generation, 1);
    assert_eq!(rec.ssh_host_keys.len(), 3);
    // The report piforge status reads through the node agent.
    let report: piforge_config::status::RunReport =
        serde_json::from_str(&f.read("var/lib/piforge/firstboot-report.json")).unwrap();
    assert_eq!(report.outcome, "configured");
    assert_eq!(report.hostname.as_deref(), Some("pi-3f9a2c"));
    assert_eq!(report.host_keys_pending, ["ecdsa", "rsa"]);
    let phases: Vec<&str> = report.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        phases,
        [
            "facts",
            "card",
            "plan",
            "identity",
            "access",
            "locale",
            "network",
            "overlays",
            "install",
            "os-first-boot",
            "complete",
            "clean-up"
        ]
    );
    assert_eq!(f.mode("var/lib/piforge/firstboot-report.json"), 0o644);
    // Access: pi renamed to alice, as userconf does.
    let passwd = f.read("etc/passwd");
    assert!(
        passwd.contains("alice:x:1000:1000:,,,:/home/alice:/bin/bash\n"),
        "{passwd}"
    );
    assert!(!passwd.contains("\npi:"));
    let shadow = f.read("etc/shadow");
    assert!(shadow.contains(&format!("alice:{HASH}:")));
    assert!(shadow.starts_with("root:*:"), "root stays locked");
    assert_eq!(f.mode("etc/shadow"), 0o640);
    assert_eq!(
        owner(&sys, &f, "etc/shadow"),
        Some(Owner { uid: 0, gid: 42 })
    );
    assert!(f.read("etc/group").contains("sudo:x:27:alice\n"));
    assert!(f.read("etc/gshadow").contains("alice:!::\n"));
    assert!(!f.root.join("home/pi").exists());
    assert_eq!(
        f.read("home/alice/.bashrc"),
        "# ~/.bashrc\n",
        "the old home moved"
    );
    assert_eq!(
        f.read("home/alice/.profile"),
        "# ~/.profile\n",
        "missing skel files added"
    );
    assert_eq!(owner(&sys, &f, "home/alice"), ALICE);
    assert_eq!(f.mode("home/alice/.ssh"), 0o700);
    assert_eq!(owner(&sys, &f, "home/alice/.ssh"), ALICE);
    assert_eq!(
        f.read("home/alice/.ssh/authorized_keys"),
        format!("{SSH_KEY}\n")
    );
    assert_eq!(f.mode("home/alice/.ssh/authorized_keys"), 0o600);
    assert_eq!(owner(&sys, &f, "home/alice/.ssh/authorized_keys"), ALICE);
    assert_eq!(
        f.read("etc/sudoers.d/010_alice-nopasswd"),
        "alice ALL=(ALL) NOPASSWD: ALL\n"
    );
    assert_eq!(f.mode("etc/sudoers.d/010_alice-nopasswd"), 0o440);
    assert!(!f.root.join("etc/sudoers.d/010_pi-nopasswd").exists());
    assert_eq!(
        f.link("etc/systemd/system/multi-user.target.wants/ssh.service"),
        "/lib/systemd/system/ssh.service"
    );
    assert!(
        f.root
            .join("etc/systemd/system/getty.target.wants/getty@tty1.service")
            .is_symlink()
    );
    assert!(
        !f.root
            .join("etc/systemd/system/multi-user.target.wants/regenerate_ssh_host_keys.service")
            .is_symlink(),
        "the stock key regeneration would replace our keys"
    );
    // Locale.
    assert_eq!(f.read("etc/timezone"), "Europe/Berlin\n");
    assert_eq!(f.link("etc/localtime"), "/usr/share/zoneinfo/Europe/Berlin");
    assert!(
        f.read("etc/default/keyboard")
            .contains("XKBLAYOUT=\"de\"\n")
    );
    assert_eq!(f.read("etc/default/locale"), "LANG=de_DE.UTF-8\n");
    assert!(f.read("etc/locale.gen").contains("\nde_DE.UTF-8 UTF-8\n"));
    // Network: NetworkManager keyfiles, 0600.
    let nm = "etc/NetworkManager/system-connections";
    let eth = f.read(&format!("{nm}/piforge-eth0.nmconnection"));
    assert!(eth.contains("dhcp-hostname=pi-3f9a2c\n") && eth.contains("dhcp-send-hostname=true\n"));
    let cid = piforge_firstboot::identity::dhcp_client_id(mid.trim(), "eth0");
    assert!(eth.contains(&format!("dhcp-client-id={cid}\n")));
    assert_eq!(f.mode(&format!("{nm}/piforge-eth0.nmconnection")), 0o600);
    assert_eq!(
        f.mode(&format!("{nm}/piforge-eth0-link-local.nmconnection")),
        0o600
    );
    let wifi = f.read(&format!("{nm}/piforge-wlan0.nmconnection"));
    assert!(wifi.contains("ssid=lab-net\n") && wifi.contains(&format!("psk={PSK}\n")));
    assert_eq!(f.mode(&format!("{nm}/piforge-wlan0.nmconnection")), 0o600);
    assert!(
        f.read("etc/modprobe.d/piforge-wifi-country.conf")
            .contains("ieee80211_regdom=DE")
    );
    assert_eq!(
        f.read("var/lib/systemd/rfkill/platform-3f300000.mmcnr:wlan"),
        "0\n"
    );
    // Install.
    let node = NodeConfig::parse(&f.read("etc/piforge/node.toml")).unwrap();
    assert_eq!(f.mode("etc/piforge/node.toml"), 0o600);
    assert_eq!(owner(&sys, &f, "etc/piforge/node.toml"), Some(Owner::ROOT));
    assert_eq!(node.name, "pi-3f9a2c");
    assert_eq!(
        node.state_dir, "/var/lib/piforge-node",
        "the unit's StateDirectory"
    );
    assert_eq!(node.cluster.key.as_bytes(), &KEY);
    assert_eq!(node.tags["role"], "web", "overlay tag merged");
    assert_eq!(node.tags["rack"], "a", "the card's tag wins");
    // The db overlay's passwords: for Patroni's unit only, 0600 root.
    let db = f.read("etc/piforge/db/secrets.env");
    assert!(db.contains(&format!("PATRONI_SUPERUSER_PASSWORD={}\n", DB_PASSWORDS[0])));
    assert!(db.contains(&format!(
        "PATRONI_REPLICATION_PASSWORD={}\n",
        DB_PASSWORDS[1]
    )));
    assert!(db.contains(&format!("PATRONI_RESTAPI_PASSWORD={}\n", DB_PASSWORDS[2])));
    assert_eq!(f.mode("etc/piforge/db/secrets.env"), 0o600);
    assert_eq!(
        owner(&sys, &f, "etc/piforge/db/secrets.env"),
        Some(Owner::ROOT)
    );
    // The broker from `piforge build --mqtt-url/--mqtt-password-file`: in the 0600 node.toml
    // only (the boot partition is checked for it below).
    let mqtt = node.mqtt.as_ref().expect("the card's [node.mqtt]");
    assert_eq!(mqtt.broker, "mqtts://alerts@mq.example.com:8883");
    assert_eq!(mqtt.password.as_ref().unwrap().expose(), MQTT_PASSWORD);
    assert_eq!(f.read("usr/local/bin/piforge-node"), "#!fake node binary\n");
    assert_eq!(f.mode("usr/local/bin/piforge-node"), 0o755);
    assert_eq!(f.mode("usr/local/sbin/piforge-firstboot"), 0o755);
    let wants = "etc/systemd/system/multi-user.target.wants";
    assert_eq!(
        f.link(&format!("{wants}/piforge-node.service")),
        "/etc/systemd/system/piforge-node.service"
    );
    assert!(
        f.read("etc/systemd/system/piforge-node.service")
            .contains("Restart=always")
    );
    assert_eq!(
        f.link("etc/systemd/system/sysinit.target.wants/piforge-reidentify.service"),
        "/etc/systemd/system/piforge-reidentify.service"
    );
    assert!(
        f.root
            .join(format!("{wants}/piforge-packages.service"))
            .is_symlink()
    );
    assert_eq!(f.read("etc/piforge/packages.list"), "lighttpd\n");
    // Overlay.
    assert_eq!(f.read("etc/web/web.conf"), "port = 80\n");
    assert_eq!(f.mode("usr/local/bin/hello"), 0o755);
    assert_eq!(f.mode("etc/web/web.conf"), 0o644);
    assert_eq!(
        f.link(&format!("{wants}/web.service")),
        "/etc/systemd/system/web.service"
    );
    assert!(
        f.root
            .join("etc/piforge/templates/web/backends.hbs")
            .is_file()
    );
    assert_eq!(
        f.read("etc/motd"),
        "pi-3f9a2c in lab, role web, rack a\n",
        "static template rendered with the merged tags"
    );
    assert_eq!(f.mode("etc/motd"), 0o644);
    let render = f.read("etc/systemd/system/piforge-render-web-0.service");
    assert!(
        render.contains(
            "ExecStart=/usr/local/bin/piforge-node render --dest /etc/web/backends \
             /etc/piforge/templates/web/backends.hbs --command \"systemctl reload web\"\n"
        ),
        "{render}"
    );
    assert!(
        f.root
            .join(format!("{wants}/piforge-render-web-0.service"))
            .is_symlink()
    );
    // Finish: boot partition clean, cmdline restored byte for byte, log written.
    assert_eq!(
        fs::read_to_string(f.boot.join("cmdline.txt")).unwrap(),
        f.stock_cmdline
    );
    for gone in [
        "piforge/card.toml",
        "piforge/node",
        "piforge/setup",
        "piforge/firstboot",
        "piforge/overlays",
    ] {
        assert!(
            !f.boot.join(gone).exists(),
            "{gone} left on the boot partition"
        );
    }
    let log = fs::read_to_string(f.boot.join("piforge/firstboot.log")).unwrap();
    assert!(
        log.contains("node configured") && log.contains("hostname pi-3f9a2c"),
        "{log}"
    );
    assert_eq!(files_with_secrets(&f.boot), Vec::<String>::new());
    assert!(sys.syncs >= 1);
    assert!(f.root.join("var/lib/piforge/firstboot.done").is_file());
}

#[test]
fn every_release_converges_and_a_second_run_changes_nothing() {
    for rel in Rel::ALL {
        for with_pi in [true, false] {
            let f = Fake::new(rel, with_pi, "10000000c0ffee42");
            let mut sys = RecordingSystem::default();
            run_firstboot(&f.request(hooks(2)), &mut sys).unwrap();
            let ctx = format!("{rel:?} with_pi={with_pi}");
            assert_eq!(f.read("etc/hostname"), "pi-ffee42\n", "{ctx}");
            assert!(f.read("etc/passwd").contains("alice:x:1000:1000:"), "{ctx}");
            assert_eq!(
                fs::read_to_string(f.boot.join("cmdline.txt")).unwrap(),
                f.stock_cmdline
            );
            assert_eq!(files_with_secrets(&f.boot), Vec::<String>::new(), "{ctx}");
            match rel {
                Rel::Bullseye => {
                    let d = f.read("etc/dhcpcd.conf");
                    assert!(
                        d.contains("# BEGIN piforge") && d.contains("clientid ff:"),
                        "{d}"
                    );
                    assert!(d.contains("#clientid # disabled by piforge"), "{d}");
                    let w = f.read("etc/wpa_supplicant/wpa_supplicant.conf");
                    assert!(w.contains("country=DE\n"));
                    assert_eq!(f.mode("etc/wpa_supplicant/wpa_supplicant.conf"), 0o600);
                }
                _ => assert!(
                    f.root
                        .join("etc/NetworkManager/system-connections/piforge-eth0.nmconnection")
                        .is_file()
                ),
            }
            if rel == Rel::Trixie {
                let md = fs::read_to_string(f.boot.join("meta-data")).unwrap();
                assert!(md.contains("local-hostname: pi-ffee42\n"), "{md}");
                assert!(md.contains("instance-id: piforge-") && !md.contains("rpios-image"));
                assert!(md.contains("dsmode: local\n"));
                let cc = f.read("etc/cloud/cloud.cfg.d/99_zz-piforge.cfg");
                assert!(cc.contains("preserve_hostname: true") && cc.contains("users: []"));
            }
            if !with_pi {
                assert_eq!(f.mode("home/alice"), 0o700, "{ctx}");
                assert_eq!(f.read("home/alice/.bashrc"), "# ~/.bashrc\n", "{ctx}: skel");
            }
            // Second run: the card is gone, the marker says done; nothing changes.
            let before = snapshot(&f.root, Some(&sys));
            let out = run_firstboot(&f.request(hooks(3)), &mut sys).unwrap();
            assert!(
                matches!(&out, Outcome::NoCard { changed, .. } if changed.is_empty()),
                "{ctx}: {out:?}"
            );
            let mut after = snapshot(&f.root, Some(&sys));
            let log = format!(
                "{}/piforge/firstboot.log",
                f.rel.mount().trim_start_matches('/')
            );
            after.insert(log.clone(), before[&log].clone());
            assert_eq!(diff(&before, &after), Vec::<String>::new(), "{ctx}");
            // Put the card and our arguments back (a re-flash of the same card): the root
            // converges without a single change; only the boot partition is cleaned again.
            f.put_payload(&full_card());
            fs::write(
                f.boot.join("cmdline.txt"),
                cmdline::add(&f.stock_cmdline, rel.mount()),
            )
            .unwrap();
            let out = run_firstboot(&f.request(hooks(4)), &mut sys).unwrap();
            let Outcome::Configured { changed, .. } = out else {
                panic!("{out:?}")
            };
            assert!(
                changed.iter().all(|c| c.contains("<boot>")),
                "{ctx}: root changed on a re-run: {changed:#?}"
            );
        }
    }
}

#[test]
fn same_card_on_two_boards_gives_two_identities() {
    let a = Fake::new(Rel::Trixie, true, "10000000aaaaaa01");
    let b = Fake::new(Rel::Trixie, true, "10000000bbbbbb02");
    let mut sys = RecordingSystem::default();
    run_firstboot(&a.request(hooks(5)), &mut sys).unwrap();
    run_firstboot(&b.request(hooks(6)), &mut sys).unwrap();
    assert_eq!(a.read("etc/hostname"), "pi-aaaa01\n");
    assert_eq!(b.read("etc/hostname"), "pi-bbbb02\n");
    for p in [
        "etc/machine-id",
        "etc/ssh/ssh_host_ed25519_key",
        "etc/ssh/ssh_host_ed25519_key.pub",
    ] {
        assert_ne!(a.read(p), b.read(p), "{p}");
    }
    let md = |f: &Fake| fs::read_to_string(f.boot.join("meta-data")).unwrap();
    assert_ne!(md(&a), md(&b), "cloud-init instance-ids differ");
}

#[test]
fn static_address_and_networkd() {
    let f = Fake::new(Rel::Bookworm, true, "10000000c0ffee42");
    f.put_payload(&static_card());
    // An image that uses systemd-networkd instead of NetworkManager.
    fs::remove_file(
        f.root
            .join("etc/systemd/system/multi-user.target.wants/NetworkManager.service"),
    )
    .unwrap();
    fs::remove_dir_all(f.root.join("etc/NetworkManager")).unwrap();
    // networkd enabled, as such an image has it (an empty /etc/systemd/network is no evidence:
    // every systemd install has one; the rule is piforge_config::rootfs::network_stack).
    std::os::unix::fs::symlink(
        "/lib/systemd/system/systemd-networkd.service",
        f.root
            .join("etc/systemd/system/multi-user.target.wants/systemd-networkd.service"),
    )
    .unwrap();
    let mut sys = RecordingSystem::default();
    run_firstboot(&f.request(hooks(7)), &mut sys).unwrap();
    let n = f.read("etc/systemd/network/10-piforge-eth0.network");
    assert!(
        n.contains("Address=192.168.1.50/24\nGateway=192.168.1.1\n"),
        "{n}"
    );
    assert!(n.contains("LinkLocalAddressing=ipv4"));
    assert_eq!(
        f.mode("etc/wpa_supplicant/wpa_supplicant-wlan0.conf"),
        0o600
    );
    assert!(
        f.root
            .join("etc/systemd/system/multi-user.target.wants/wpa_supplicant@wlan0.service")
            .is_symlink()
    );
}

#[test]
fn coexists_with_bookworm_stock_firstboot_that_edited_cmdline_txt() {
    // Bookworm's init=/usr/lib/raspberrypi-sys-mods/firstboot runs on the very first boot,
    // before systemd: it removes its init= and may rewrite the PARTUUIDs. Then we run.
    let f = Fake::new(Rel::Bookworm, true, "10000000c0ffee42");
    let with_ours = fs::read_to_string(f.boot.join("cmdline.txt")).unwrap();
    let after_stock = with_ours
        .replace(" init=/usr/lib/raspberrypi-sys-mods/firstboot", "")
        .replace(DISKID, "deadbeef");
    fs::write(f.boot.join("cmdline.txt"), &after_stock).unwrap();
    let mut sys = RecordingSystem::default();
    run_firstboot(&f.request(hooks(8)), &mut sys).unwrap();
    let want = f
        .stock_cmdline
        .replace(" init=/usr/lib/raspberrypi-sys-mods/firstboot", "")
        .replace(DISKID, "deadbeef");
    assert_eq!(
        fs::read_to_string(f.boot.join("cmdline.txt")).unwrap(),
        want
    );
    // Trixie keeps its `resize` argument untouched.
    let t = Fake::new(Rel::Trixie, true, "10000000c0ffee42");
    run_firstboot(&t.request(hooks(8)), &mut sys).unwrap();
    let line = fs::read_to_string(t.boot.join("cmdline.txt")).unwrap();
    assert!(line.ends_with(" rootwait resize\n"), "{line}");
    assert_eq!(line, t.stock_cmdline);
}

/// Issue #20: a card built with `--cards` brings its SSH host keys (made on the host), so
/// first boot generates none; a copy of it in another Pi makes only ed25519 before the
/// network, and RSA only in the background step.
#[test]
fn a_named_card_brings_its_host_keys_and_first_boot_makes_none() {
    let f = Fake::new(Rel::Trixie, true, "10000000aaaaaa01");
    let card = named_card();
    f.put_payload(&card);
    // An RSA key of 1 bit cannot be made: any RSA generation in a run makes it fail.
    let no_rsa = TestHooks {
        entropy: Some([3; 32]),
        step_limit: None,
        rsa_bits: Some(1),
    };
    let mut sys = RecordingSystem::default();
    let out = run_firstboot(&f.request(no_rsa.clone()), &mut sys).unwrap();
    assert!(
        matches!(&out, Outcome::Configured { hostname, .. } if hostname == "lab-01"),
        "{out:?}"
    );
    let keys = card.host_keys.as_ref().unwrap().parse().unwrap();
    for k in &keys {
        let p = format!("etc/ssh/ssh_host_{}_key", k.kind);
        assert_eq!(f.read(&p), k.private.expose(), "{p} is the card's");
        assert_eq!(f.read(&format!("{p}.pub")), k.public);
        assert_eq!(f.mode(&p), 0o600);
        assert_eq!(owner(&sys, &f, &p), Some(Owner::ROOT));
    }
    let rec = IdentityRecord::parse(&f.read("var/lib/piforge/identity")).unwrap();
    let fps: Vec<String> = keys.iter().map(|k| k.fingerprint.clone()).collect();
    assert_eq!(rec.ssh_host_keys, fps);
    assert!(!f.root.join("var/lib/piforge/host-keys.pending").exists());
    assert!(
        !f.boot.join("piforge/card.toml").exists(),
        "secrets off the FAT"
    );
    assert_eq!(
        run_host_keys(&f.reidentify_request(no_rsa.clone()), &mut sys).unwrap(),
        Outcome::HostKeys { changed: vec![] },
        "nothing left for later"
    );
    let again = run_firstboot(&f.request(no_rsa.clone()), &mut sys).unwrap();
    assert!(matches!(
        again,
        Outcome::NoCard { .. } | Outcome::Configured { .. }
    ));
    assert_eq!(f.read("etc/ssh/ssh_host_rsa_key"), keys[2].private.expose());

    // The card copied to another Pi: a new ed25519 key before the network, the card's other
    // keys gone, RSA left to the background step (which is where it fails with 1 bit).
    let b = f.clone_to_new_dir();
    b.set_serial("10000000bbbbbb02");
    run_reidentify(&b.reidentify_request(no_rsa.clone()), &mut sys).unwrap();
    assert_ne!(b.read("etc/ssh/ssh_host_ed25519_key.pub"), keys[0].public);
    assert!(!b.root.join("etc/ssh/ssh_host_rsa_key").exists());
    assert!(!b.root.join("etc/ssh/ssh_host_ecdsa_key.pub").exists());
    let report: piforge_config::status::RunReport =
        serde_json::from_str(&b.read("var/lib/piforge/reidentify-report.json")).unwrap();
    assert_eq!(report.outcome, "re-identified");
    assert_eq!(report.host_keys_pending, ["ecdsa", "rsa"]);
    let e = run_host_keys(&b.reidentify_request(no_rsa), &mut sys).unwrap_err();
    assert!(format!("{e:#}").contains("rsa"), "{e:#}");
}
