//! The real binary on fake roots: first boot (boot directory found through /etc/fstab, real
//! 3072-bit RSA host key), a second boot that changes nothing, the clone check, a read-only
//! root, and no secret in anything it prints.
//!
//! `PIFORGE_FIRSTBOOT_BIN` overrides the binary (e.g. an aarch64 or armv7 build run under
//! qemu-user through binfmt).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;
use piforge_test_support::is_root;

fn bin() -> PathBuf {
    std::env::var_os("PIFORGE_FIRSTBOOT_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_piforge-firstboot")))
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running piforge-firstboot")
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_no_secret(s: &str) {
    for secret in [PSK, HASH, &hex::encode(KEY), "SeCrEtHaSh"] {
        assert!(!s.contains(secret), "output leaks a secret: {s}");
    }
}

#[test]
fn version() {
    let o = run(&["--version".as_ref()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("piforge-firstboot {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn first_boot_second_boot_and_clone_check() {
    let f = Fake::new(Rel::Bookworm, true, "100000002a3f9a2c");
    let root = f.root.as_os_str();
    let started = std::time::Instant::now();
    let o = run(&["--root".as_ref(), root]);
    eprintln!(
        "timing: first boot {:?} ({})",
        started.elapsed(),
        bin().display()
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("configured pi-3f9a2c"), "{t}");
    assert_no_secret(&t);
    // The boot directory came from <root>/etc/fstab.
    assert_eq!(
        fs::read_to_string(f.boot.join("cmdline.txt")).unwrap(),
        f.stock_cmdline
    );
    assert!(!f.boot.join("piforge/card.toml").exists());
    assert_eq!(files_with_secrets(&f.boot), Vec::<String>::new());
    assert_eq!(f.read("etc/hostname"), "pi-3f9a2c\n");
    // First boot did not wait for RSA: the background step (next boot) makes it.
    assert!(!f.root.join("etc/ssh/ssh_host_rsa_key.pub").exists());
    let started = std::time::Instant::now();
    let o = run(&["hostkeys".as_ref(), "--root".as_ref(), root]);
    eprintln!("timing: background host keys {:?}", started.elapsed());
    assert!(o.status.success(), "{}", text(&o));
    let rsa =
        ssh_key::PublicKey::from_openssh(f.read("etc/ssh/ssh_host_rsa_key.pub").trim()).unwrap();
    let n = &rsa.key_data().rsa().unwrap().n;
    let bits = n.as_positive_bytes().unwrap().len() * 8;
    assert_eq!(bits, 3072);
    assert_eq!(f.mode("etc/ssh/ssh_host_rsa_key"), 0o600);
    let log = fs::read_to_string(f.boot.join("piforge/firstboot.log")).unwrap();
    assert_no_secret(&log);

    // Second boot (systemd.run= is gone, but run it anyway): nothing changes.
    let before = snapshot(&f.root, None);
    let o = run(&["--root".as_ref(), root]);
    assert!(o.status.success(), "{}", text(&o));
    let mut after = snapshot(&f.root, None);
    let log_key = "boot/firmware/piforge/firstboot.log".to_string();
    after.insert(log_key.clone(), before[&log_key].clone());
    assert_eq!(diff(&before, &after), Vec::<String>::new());

    // Clone check on the same board, the boot after the first: it verifies the identity once
    // (one change: the marker saying so), then is a no-op.
    let started = std::time::Instant::now();
    let o = run(&["reidentify".as_ref(), "--root".as_ref(), root]);
    eprintln!("timing: clone check, same board {:?}", started.elapsed());
    let t = text(&o);
    assert!(
        o.status.success() && t.contains("pi-3f9a2c: 1 changes") && t.contains("verified"),
        "{t}"
    );
    let o = run(&["reidentify".as_ref(), "--root".as_ref(), root]);
    let t = text(&o);
    assert!(
        o.status.success() && t.contains("pi-3f9a2c: 0 changes"),
        "{t}"
    );

    // The card in another Pi.
    let b = f.clone_to_new_dir();
    b.set_serial("10000000bbbbbb02");
    let started = std::time::Instant::now();
    let o = run(&["reidentify".as_ref(), "--root".as_ref(), b.root.as_os_str()]);
    eprintln!("timing: re-identification {:?}", started.elapsed());
    let t = text(&o);
    assert!(o.status.success() && t.contains("pi-bbbb02:"), "{t}");
    assert_no_secret(&t);
    assert_eq!(b.read("etc/hostname"), "pi-bbbb02\n");
    assert_ne!(b.read("etc/machine-id"), f.read("etc/machine-id"));
    assert!(!b.root.join("etc/ssh/ssh_host_rsa_key").exists());
    let o = run(&["hostkeys".as_ref(), "--root".as_ref(), b.root.as_os_str()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_ne!(
        b.read("etc/ssh/ssh_host_rsa_key"),
        f.read("etc/ssh/ssh_host_rsa_key")
    );
}

#[test]
fn bad_card_exits_zero_and_keeps_the_card() {
    let f = Fake::new(Rel::Trixie, false, "100000002a3f9a2c");
    fs::write(
        f.boot.join("piforge/card.toml"),
        "schema-version = 1\n[cluster]\n",
    )
    .unwrap();
    let o = run(&[
        "--root".as_ref(),
        f.root.as_os_str(),
        "--boot".as_ref(),
        f.boot.as_os_str(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("card not applied"), "{t}");
    assert!(f.boot.join("piforge/card.toml").exists());
    assert_eq!(
        fs::read_to_string(f.boot.join("cmdline.txt")).unwrap(),
        f.stock_cmdline
    );
}

#[test]
fn read_only_root_is_a_clear_error_and_changes_nothing() {
    let f = Fake::new(Rel::Bookworm, true, "100000002a3f9a2c");
    fs::set_permissions(f.root.join("etc"), fs::Permissions::from_mode(0o555)).unwrap();
    let before = snapshot(&f.root, None);
    // Root ignores directory modes; in a user namespace without a mapping it does not.
    let mut cmd = if is_root() {
        if !Command::new("unshare")
            .args(["-U", "true"])
            .status()
            .is_ok_and(|s| s.success())
        {
            eprintln!("skipped: running as root and no user namespaces to drop privileges");
            return;
        }
        let mut c = Command::new("unshare");
        c.arg("-U").arg(bin());
        c
    } else {
        Command::new(bin())
    };
    let o = cmd
        .arg("--root")
        .arg(&f.root)
        .arg("--boot")
        .arg(&f.boot)
        .output()
        .unwrap();
    fs::set_permissions(f.root.join("etc"), fs::Permissions::from_mode(0o755)).unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("root file system is not writable"), "{t}");
    assert!(t.contains("nothing was changed"), "{t}");
    let mut after = snapshot(&f.root, None);
    after.retain(|k, _| !k.ends_with("firstboot.log"));
    let mut before = before;
    before.insert(
        "etc".into(),
        after.get("etc").cloned().expect("etc is still there"),
    );
    assert_eq!(diff(&before, &after), Vec::<String>::new());
    assert!(
        f.boot.join("piforge/card.toml").exists(),
        "card kept for the next try"
    );
    let log = fs::read_to_string(f.boot.join("piforge/firstboot.log")).unwrap();
    assert!(log.contains("not writable"), "{log}");
}
