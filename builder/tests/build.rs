//! `piforge build`, `export` and `inspect` end to end: the real binary on miniature
//! Raspberry-Pi-OS-shaped images of bullseye, bookworm and trixie (real MBR, FAT32 with the real
//! cluster size, ext4 root), with a payload directory and a private key store and cache.
//!
//! After every build: `fsck.fat -n` clean, root partition bytes unchanged, partition table
//! unchanged, cmdline.txt one line with everything it had before, base image untouched.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{MiniImage, MiniOpts, Release};
use piforge::arch::Arch;
use piforge_config::Card;

/// A sandbox: temp dirs for config (key store), cache, payload and output.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        common::payload::write_payload(&dir.path().join("payload"), &Arch::ALL);
        Env { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn piforge(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_piforge"))
            .args(args)
            .env("PIFORGE_CONFIG_DIR", self.path("config"))
            .env("PIFORGE_CACHE_DIR", self.path("cache"))
            .env_remove("PIFORGE_PAYLOAD_DIR")
            .env_remove("RUST_LOG")
            .current_dir(self.dir.path())
            .output()
            .expect("running piforge")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.piforge(args);
        assert!(
            out.status.success(),
            "piforge {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command expected to fail; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.piforge(args);
        assert!(!out.status.success(), "piforge {args:?} should have failed");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("error"), "{err}");
        err
    }

    fn build(&self, base: &Path, extra: &[&str]) -> String {
        let payload = self.path("payload");
        let mut args = vec![
            "build",
            "--from",
            base.to_str().unwrap(),
            "--out",
            "out",
            "--payload",
            payload.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.ok(&args)
    }
}

fn fat_file(img: &Path, boot_start: u64, path: &str) -> Option<String> {
    common::mtools_read(img, boot_start, path).map(|b| String::from_utf8(b).unwrap())
}

/// The checks every build must pass.
fn assert_build_is_sound(base: &MiniImage, base_sha_before: &str, out: &Path) {
    let (bs, bl) = base.boot;
    let (rs, rl) = base.root;
    assert_eq!(
        common::sha256_range(base.path(), 0, base.disk_size),
        base_sha_before,
        "the base image was modified"
    );
    common::fsck_fat(out, bs, bl).expect("fsck.fat -n finds the FAT clean");
    assert_eq!(
        common::sha256_range(out, rs, rl),
        common::sha256_range(base.path(), rs, rl),
        "the root partition changed"
    );
    assert_eq!(
        common::read_range(out, 0, 512),
        common::read_range(base.path(), 0, 512),
        "the partition table changed"
    );
    let before = fat_file(base.path(), bs, "cmdline.txt").unwrap();
    let after = fat_file(out, bs, "cmdline.txt").unwrap();
    assert_eq!(after.lines().count(), 1, "{after:?}");
    assert!(
        after.starts_with(before.trim_end()),
        "{before:?} -> {after:?}"
    );
    assert_eq!(
        piforge_config::cmdline::remove(&after),
        before,
        "removal restores cmdline.txt"
    );
}

#[test]
fn build_all_releases_with_three_cards() {
    for release in Release::ALL {
        let env = Env::new();
        let base = common::mini_image(release, &MiniOpts::default());
        let sha = common::sha256_range(base.path(), 0, base.disk_size);
        let stdout = env.build(base.path(), &["--cards", "3", "--cluster", "lab"]);
        assert!(stdout.contains("card  3 pi-03"), "{stdout}");
        let img = env.path("out/lab.img");
        assert_build_is_sound(&base, &sha, &img);

        let bs = base.boot.0;
        let mount = if release == Release::Bullseye {
            "/boot"
        } else {
            "/boot/firmware"
        };
        let cmdline = fat_file(&img, bs, "cmdline.txt").unwrap();
        assert!(
            cmdline.contains(&format!("systemd.run={mount}/piforge/setup ")),
            "{release:?}: {cmdline}"
        );
        // The cloneable card: no fixed hostname, the cluster's key from the key store.
        let card = Card::parse(&fat_file(&img, bs, "piforge/card.toml").unwrap()).unwrap();
        assert_eq!(card.identity.hostname, None);
        assert_eq!(card.cluster.name, "lab");
        let stored = std::fs::read_to_string(env.path("config/clusters/lab.key")).unwrap();
        assert_eq!(card.cluster.key.to_hex(), stored.trim());
        // Binaries of the image's architecture.
        let node = common::mtools_read(&img, bs, "piforge/node").unwrap();
        let expected = std::fs::read(env.path("payload/arm64/piforge-node")).unwrap();
        assert_eq!(node, expected);
        // cloud-init agrees with us on trixie, and only there.
        let md = fat_file(&img, bs, "meta-data");
        if release == Release::Trixie {
            let md = md.unwrap();
            assert!(md.contains("instance-id: piforge-"), "{md}");
            // The seed is ours, not the image's: no user, no network from cloud-init.
            let ud = fat_file(&img, bs, "user-data").unwrap();
            assert_eq!(ud, piforge_config::cloudinit::USER_DATA);
            let nc = fat_file(&img, bs, "network-config").unwrap();
            assert_eq!(nc, piforge_config::cloudinit::NETWORK_CONFIG);
        } else {
            assert!(md.is_none());
            assert!(fat_file(&img, bs, "user-data").is_none());
        }
        // Three card identities, 0600, each naming itself.
        for k in 1..=3 {
            let p = env.path(&format!("out/cards/pi-{k:02}.toml"));
            let c = Card::parse(&std::fs::read_to_string(&p).unwrap()).unwrap();
            assert_eq!(
                c.identity.hostname.as_deref(),
                Some(format!("pi-{k:02}").as_str())
            );
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
            // Issue #20: its SSH host keys, made here; the public halves in the batch and
            // in known_hosts under the card's names.
            let keys = c.host_keys.as_ref().expect("a named card has host keys");
            let parsed = keys.parse().unwrap();
            let b = piforge::build::batch::Batch::load(&env.path("out")).unwrap();
            let bc = b.card(k).unwrap();
            let publics: Vec<String> = parsed.iter().map(|k| k.public.trim().to_string()).collect();
            assert_eq!(bc.host_keys, publics);
            assert!(publics[2].starts_with("ssh-rsa "));
            let kh = std::fs::read_to_string(env.path("out/known_hosts")).unwrap();
            let b64 = publics[0].split_whitespace().nth(1).unwrap();
            assert!(
                kh.contains(&format!("pi-{k:02},pi-{k:02}.local ssh-ed25519 {b64}\n")),
                "{kh}"
            );
        }
        // Every card has its own keys.
        let key_of = |k: u32| {
            piforge::build::batch::Batch::load(&env.path("out"))
                .unwrap()
                .card(k)
                .unwrap()
                .host_keys[0]
                .clone()
        };
        assert_ne!(key_of(1), key_of(2));
        // The cloneable image's card carries none (every Pi would share them).
        assert!(card.host_keys.is_none());
        assert!(stdout.contains("UserKnownHostsFile="), "{stdout}");
    }
}

#[test]
fn export_personalises_one_card_and_compresses() {
    let env = Env::new();
    let base = common::mini_image(Release::Trixie, &MiniOpts::default());
    let web = env.path("overlays/web");
    std::fs::create_dir_all(web.join("files/var/www/html")).unwrap();
    std::fs::write(web.join("overlay.toml"), "description = \"a web page\"\n").unwrap();
    std::fs::write(web.join("files/var/www/html/index.html"), "hello\n").unwrap();
    env.build(
        base.path(),
        &["--cards", "2", "--role", "2=web", "--overlays", "overlays"],
    );
    let bs = base.boot.0;

    let out = env.ok(&["export", "--out", "out", "--card", "2", "-o", "pi-02.img"]);
    let img = env.path("pi-02.img");
    let card = Card::parse(&fat_file(&img, bs, "piforge/card.toml").unwrap()).unwrap();
    assert_eq!(card.identity.hostname.as_deref(), Some("pi-02"));
    assert_eq!(card.node.tags.get("role").map(String::as_str), Some("web"));
    assert!(card.overlays.contains(&"web".to_string()));
    let page = fat_file(
        &img,
        bs,
        "piforge/overlays/web/files/var/www/html/index.html",
    );
    assert_eq!(page.as_deref(), Some("hello\n"));
    let md = fat_file(&img, bs, "meta-data").unwrap();
    assert!(md.contains("local-hostname: pi-02"), "{md}");
    common::fsck_fat(&img, bs, base.boot.1).unwrap();
    // The .sha256 beside it is right, and stdout says the same.
    let sha = common::sha256_range(&img, 0, base.disk_size);
    let side = std::fs::read_to_string(env.path("pi-02.img.sha256")).unwrap();
    assert_eq!(side, format!("{sha}  pi-02.img\n"));
    assert!(out.starts_with(&sha), "{out}");

    // .xz: decompresses (with the real xz) to the same bytes.
    env.ok(&[
        "export",
        "--out",
        "out",
        "--card",
        "2",
        "-o",
        "pi-02.img.xz",
    ]);
    let xz = Command::new("xz")
        .args(["-dc", env.path("pi-02.img.xz").to_str().unwrap()])
        .output()
        .expect("running xz (apt-get install xz-utils)");
    assert!(xz.status.success());
    assert_eq!(xz.stdout, std::fs::read(&img).unwrap());
    assert!(!env.path("pi-02.img.xz.part").exists());
}

#[test]
fn same_inputs_and_seed_give_identical_exports() {
    let env = Env::new();
    let base = common::mini_image(Release::Bookworm, &MiniOpts::default());
    std::fs::write(env.path("key"), "ab".repeat(32)).unwrap();
    // Secrets are the user's inputs here (a key file, a ready hash): the seed never makes them.
    let hash = "$6$fixedsaltfixeds$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghij./";
    let args = [
        "--cards",
        "1",
        "--seed",
        "42",
        "--key-file",
        "key",
        "--password-hash",
        hash,
    ];
    // The cloneable image: a personalised card carries its own SSH host keys, drawn from the
    // OS RNG whatever the seed (secrets never come from a seed), so it differs per build.
    env.build(base.path(), &args);
    env.ok(&["export", "--out", "out", "-o", "a.img.xz"]);
    // Rebuild from scratch: a fresh output dir.
    std::fs::remove_dir_all(env.path("out")).unwrap();
    env.build(base.path(), &args);
    env.ok(&["export", "--out", "out", "-o", "b.img.xz"]);
    assert_eq!(
        std::fs::read(env.path("a.img.xz")).unwrap(),
        std::fs::read(env.path("b.img.xz")).unwrap(),
        "two builds with the same inputs and seed differ"
    );
}

/// The `password-hash` of a card.toml.
fn password_hash(card: &str) -> String {
    let card = Card::parse(card).unwrap();
    card.access.password_hash.unwrap().expose().to_string()
}

#[test]
fn issue17_seed_never_fixes_the_cluster_key_or_the_password_salt() {
    // Two users, each with a fresh key store, both build with --seed 1 (as ci/release did).
    let base = common::mini_image(Release::Bookworm, &MiniOpts::default());
    let mut keys = vec![];
    let mut hashes = vec![];
    for _ in 0..2 {
        let env = Env::new();
        std::fs::write(env.path("pw"), "raspberry\n").unwrap();
        env.build(base.path(), &["--seed", "1", "--password-file", "pw"]);
        let key = std::fs::read_to_string(env.path("config/clusters/piforge.key")).unwrap();
        let card = fat_file(
            &env.path("out/piforge.img"),
            base.boot.0,
            "piforge/card.toml",
        )
        .expect("the cloneable image has a card");
        assert!(
            card.contains(key.trim()),
            "the card carries the store's key"
        );
        keys.push(key);
        hashes.push(password_hash(&card));
    }
    assert_ne!(keys[0], keys[1], "--seed 1 made the same cluster key twice");
    let salt = |h: &str| h.split('$').nth(2).unwrap().to_string();
    assert_ne!(
        salt(&hashes[0]),
        salt(&hashes[1]),
        "--seed 1 made the same password salt twice"
    );
}

#[test]
fn issue17_a_release_image_has_no_card_and_the_users_build_adds_it() {
    let env = Env::new();
    let base = common::mini_image(Release::Bookworm, &MiniOpts::default());
    let sha = common::sha256_range(base.path(), 0, base.disk_size);
    // What ci/release runs: --seed 1 --no-card.
    env.build(
        base.path(),
        &["--seed", "1", "--no-card", "--cluster", "release"],
    );
    let img = env.path("out/release.img");
    assert_build_is_sound(&base, &sha, &img);
    let bs = base.boot.0;
    assert_eq!(
        fat_file(&img, bs, "piforge/card.toml"),
        None,
        "a release image has a card"
    );
    assert!(
        common::mtools_read(&img, bs, "piforge/setup").is_some(),
        "no payload"
    );
    assert!(
        !env.path("config/clusters").exists(),
        "a release build touched the key store"
    );
    let inspect = env.ok(&["inspect", "out/release.img"]);
    assert!(!inspect.contains("key"), "{inspect}");
    env.ok(&["export", "--out", "out", "-o", "release-export.img"]);
    let exported = env.path("release-export.img");
    assert_eq!(fat_file(&exported, bs, "piforge/card.toml"), None);

    // Anything that would go into the card is refused, not silently dropped.
    std::fs::write(env.path("pw"), "raspberry\n").unwrap();
    let err = env.fails(&[
        "build",
        "--from",
        base.path().to_str().unwrap(),
        "--out",
        "out2",
        "--payload",
        env.path("payload").to_str().unwrap(),
        "--no-card",
        "--password-file",
        "pw",
        "--cards",
        "2",
    ]);
    assert!(err.contains("--cards, --password-file"), "{err}");
    assert!(!env.path("out2/release.img").exists());

    // The user's build starts from the release image and brings the key.
    let user = Env::new();
    std::fs::copy(&img, user.path("release.img")).unwrap();
    user.build(
        &user.path("release.img"),
        &["--cards", "1", "--cluster", "home"],
    );
    let key = std::fs::read_to_string(user.path("config/clusters/home.key")).unwrap();
    let card = fat_file(&user.path("out/home.img"), bs, "piforge/card.toml").unwrap();
    assert!(card.contains(key.trim()), "{card}");
}

#[test]
fn issue17_build_refuses_a_system_account_as_the_user() {
    let env = Env::new();
    let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                  daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                  systemd-network:x:998:998::/:/usr/sbin/nologin\n\
                  pi:x:1000:1000:,,,:/home/pi:/bin/bash\n";
    let opts = MiniOpts {
        extra_root: vec![("etc/passwd".into(), passwd.as_bytes().to_vec())],
        ..MiniOpts::default()
    };
    let base = common::mini_image(Release::Bookworm, &opts);
    let from = base.path().to_str().unwrap();
    let payload = env.path("payload");
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "--from", from, "--out", "out"];
        args.extend(["--payload", payload.to_str().unwrap()]);
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    for (user, why) in [
        ("daemon", "system account"),
        ("systemd-network", "system account"),
        ("root", "allow-root"),
    ] {
        let args = build(&["--user", user]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = env.fails(&args);
        assert!(err.contains(user) && err.contains(why), "{err}");
        assert!(
            !env.path("out/piforge.img").exists(),
            "{user}: an image was written"
        );
    }
    // root only when asked for explicitly, and the card says so (firstboot checks again).
    let args = build(&["--user", "root", "--allow-root"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.ok(&args);
    let card = fat_file(
        &env.path("out/piforge.img"),
        base.boot.0,
        "piforge/card.toml",
    )
    .unwrap();
    let card = Card::parse(&card).unwrap();
    assert_eq!(
        (card.access.user.as_str(), card.access.allow_root),
        ("root", true)
    );
}

#[test]
fn inspect_shows_the_card_with_secrets_redacted() {
    let env = Env::new();
    let base = common::mini_image(Release::Trixie, &MiniOpts::default());
    std::fs::write(env.path("pw"), "raspberry\n").unwrap();
    std::fs::write(env.path("psk"), "correct horse battery\n").unwrap();
    env.build(
        base.path(),
        &[
            "--password-file",
            "pw",
            "--wifi-ssid",
            "lab",
            "--wifi-psk-file",
            "psk",
            "--wifi-country",
            "de",
        ],
    );
    let text = env.ok(&["inspect", "out/piforge.img"]);
    for want in [
        "release     trixie",
        "boot mount  /boot/firmware",
        "arch        arm64",
        "first boot  initramfs resize + cloud-init",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(
        text.contains("piforge/setup") && text.contains("<redacted>"),
        "{text}"
    );
    let key = std::fs::read_to_string(env.path("config/clusters/piforge.key")).unwrap();
    assert!(!text.contains(key.trim()), "the cluster key leaked");
    assert!(
        !text.contains("correct horse") && !text.contains("$6$"),
        "a secret leaked"
    );
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["inspect", "--json", "out/piforge.img"])).unwrap();
    assert_eq!(json["card"]["network"]["wifi"]["psk"], "<redacted>");
    assert_eq!(json["card"]["network"]["wifi"]["country"], "DE");
    assert_eq!(json["partitions"][0]["label"], "bootfs");
}

#[test]
fn inspect_names_an_unknown_key_in_card_toml() {
    let env = Env::new();
    let base = common::mini_image(Release::Bookworm, &MiniOpts::default());
    env.build(base.path(), &[]);
    let img = env.path("out/piforge.img");
    let card = fat_file(&img, base.boot.0, "piforge/card.toml").unwrap();
    let broken = card.replace("[identity]", "[identity]\nfavourite-colour = \"red\"");
    let f = env.path("card.toml");
    std::fs::write(&f, broken).unwrap();
    let st = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-o", "-i", &format!("{}@@{}", img.display(), base.boot.0)])
        .arg(&f)
        .arg("::/piforge/card.toml")
        .status()
        .unwrap();
    assert!(st.success());
    let text = env.ok(&["inspect", img.to_str().unwrap()]);
    assert!(
        text.contains("INVALID") && text.contains("favourite-colour"),
        "{text}"
    );
}

// ---- bad input: one clear error, nothing half-written ----

fn assert_no_output(env: &Env) {
    let out = env.path("out");
    if out.exists() {
        let names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| n == "cards"), "left behind: {names:?}");
    }
}

#[test]
fn a_file_that_is_not_a_disk_image_is_refused() {
    let env = Env::new();
    let junk = env.path("holiday.jpg");
    std::fs::write(&junk, vec![0x42u8; 3 << 20]).unwrap();
    let err = env.fails(&["build", "--from", junk.to_str().unwrap(), "--out", "out"]);
    assert!(
        err.contains("holiday.jpg") && err.contains("not a disk image"),
        "{err}"
    );
    assert_no_output(&env);
}

#[test]
fn an_image_without_a_fat_partition_is_refused() {
    let env = Env::new();
    // A real image whose boot partition entry is removed from the MBR.
    let base = common::mini_image(Release::Bookworm, &MiniOpts::default());
    let mut mbr = common::read_range(base.path(), 0, 512);
    mbr[446..462].fill(0);
    let p = env.path("nofat.img");
    std::fs::copy(base.path(), &p).unwrap();
    use std::io::{Seek, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.seek(std::io::SeekFrom::Start(0)).unwrap();
    f.write_all(&mbr).unwrap();
    drop(f);
    let err = env.fails(&["build", "--from", p.to_str().unwrap(), "--out", "out"]);
    assert!(
        err.contains("nofat.img") && err.to_lowercase().contains("fat"),
        "{err}"
    );
    assert_no_output(&env);
}

#[test]
fn a_fat_too_full_for_the_payload_is_refused_before_writing() {
    let env = Env::new();
    // Trixie's 512-byte clusters allow the smallest FAT32: 66000 clusters, about 32 MiB,
    // nearly all taken by one file.
    let opts = MiniOpts {
        boot_sectors: Some(66_000 + 2_048),
        extra_boot: vec![("big.bin".into(), vec![7u8; 66_000 * 512 - 200_000])],
        ..MiniOpts::default()
    };
    let base = common::mini_image(Release::Trixie, &opts);
    let big = "x".repeat(600_000);
    let payload = env.path("payload");
    let mut manifest = String::from("schema-version = 1\nversion = \"0.1.0\"\n");
    for name in ["piforge-firstboot", "piforge-node"] {
        let bytes = common::payload::static_elf(Arch::Arm64, &big);
        std::fs::create_dir_all(payload.join("arm64")).unwrap();
        std::fs::write(payload.join("arm64").join(name), &bytes).unwrap();
        use sha2::Digest;
        manifest.push_str(&format!(
            "[[binary]]\narch = \"arm64\"\ntriple = \"aarch64-unknown-linux-musl\"\n\
             name = \"{name}\"\nfile = \"arm64/{name}\"\nsize = {}\nsha256 = \"{}\"\n\
             version = \"0.1.0\"\n",
            bytes.len(),
            hex::encode(sha2::Sha256::digest(&bytes))
        ));
    }
    std::fs::write(payload.join("manifest.toml"), manifest).unwrap();
    let err = env.fails(&[
        "build",
        "--from",
        base.path().to_str().unwrap(),
        "--out",
        "out",
        "--payload",
        payload.to_str().unwrap(),
    ]);
    assert!(err.contains("full") || err.contains("free"), "{err}");
    assert_no_output(&env);
}

#[test]
fn a_password_in_clear_is_refused() {
    let env = Env::new();
    let err = env.fails(&["build", "--password", "hunter2"]);
    assert!(err.contains("--password-file"), "{err}");
    assert!(!err.contains("hunter2"), "the password was echoed: {err}");
}

#[test]
fn a_truncated_xz_is_refused_and_leaves_no_output() {
    let env = Env::new();
    let base = common::mini_image(Release::Bookworm, &MiniOpts::default());
    let xz = Command::new("xz")
        .args(["-T1", "-1", "-c", base.path().to_str().unwrap()])
        .output()
        .expect("running xz");
    let cut = env.path("cut.img.xz");
    std::fs::write(&cut, &xz.stdout[..xz.stdout.len() / 2]).unwrap();
    let err = env.fails(&["build", "--from", cut.to_str().unwrap(), "--out", "out"]);
    assert!(err.contains("cut.img.xz"), "{err}");
    assert!(
        err.contains("truncated") || err.contains("corrupt"),
        "{err}"
    );
    assert_no_output(&env);
    // Nothing half-extracted stays in the cache.
    let leftovers: Vec<_> = walk(&env.path("cache"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "img" || e == "part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn arch_mismatch_and_missing_payload_are_refused() {
    let env = Env::new();
    let base = common::mini_image(Release::Bookworm, &MiniOpts::default());
    let b = base.path().to_str().unwrap();
    let err = env.fails(&["build", "--from", b, "--out", "out", "--arch", "armhf"]);
    assert!(err.contains("does not match"), "{err}");
    let empty = env.path("nopayload");
    std::fs::create_dir_all(&empty).unwrap();
    let err = env.fails(&[
        "build",
        "--from",
        b,
        "--out",
        "out",
        "--payload",
        empty.to_str().unwrap(),
    ]);
    assert!(err.contains("payload"), "{err}");
    assert_no_output(&env);
}

#[test]
fn an_interrupted_build_leaves_no_output_and_the_next_one_works() {
    let env = Env::new();
    let base = common::mini_image(Release::Bookworm, &MiniOpts::default());
    let sha = common::sha256_range(base.path(), 0, base.disk_size);
    let payload = env.path("payload");
    let mut child = Command::new(env!("CARGO_BIN_EXE_piforge"))
        .args([
            "build",
            "--from",
            base.path().to_str().unwrap(),
            "--out",
            "out",
        ])
        .args(["--payload", payload.to_str().unwrap(), "--cards", "2"])
        .env("PIFORGE_CONFIG_DIR", env.path("config"))
        .env("PIFORGE_CACHE_DIR", env.path("cache"))
        .current_dir(env.path(""))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as the temp image appears (or whenever it is, if it is already done).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let part = std::fs::read_dir(env.path("out")).ok().and_then(|d| {
            d.flatten()
                .find(|e| e.file_name().to_string_lossy().ends_with(".img.part"))
        });
        if part.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    if !env.path("out/batch.toml").exists() {
        assert!(
            !env.path("out/piforge.img").exists(),
            "an image appeared without its batch"
        );
    }
    assert_eq!(
        common::sha256_range(base.path(), 0, base.disk_size),
        sha,
        "base modified"
    );
    // The next build succeeds and clears the leftovers.
    env.build(base.path(), &["--cards", "2"]);
    let names: Vec<_> = std::fs::read_dir(env.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".part")), "{names:?}");
    assert_build_is_sound(&base, &sha, &env.path("out/piforge.img"));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Issue #18 item 3: `--mqtt-url` and `--mqtt-password-file` put the broker on the card (the
/// card leaves the FAT at first boot, firstboot installs it in the 0600 node.toml); `inspect`
/// redacts the password; a password in the URL fails the build without echoing it.
#[test]
fn mqtt_broker_from_the_command_line_reaches_the_card_redacted() {
    let env = Env::new();
    let base = common::mini_image(Release::Trixie, &MiniOpts::default());
    std::fs::write(env.path("mqpw"), "mq-s3cret-91\n").unwrap();
    let ca = "-----BEGIN CERTIFICATE-----\nMIIBcA==\n-----END CERTIFICATE-----\n";
    std::fs::write(env.path("ca.pem"), ca).unwrap();
    let url = "mqtts://alerts@mq.example.com:8883";
    env.build(
        base.path(),
        &[
            "--mqtt-url",
            url,
            "--mqtt-password-file",
            "mqpw",
            "--mqtt-ca-file",
            "ca.pem",
        ],
    );
    let img = env.path("out/piforge.img");
    let card = fat_file(&img, base.boot.0, "piforge/card.toml").unwrap();
    let card = Card::parse(&card).unwrap();
    let m = card.node.mqtt.expect("no [node.mqtt] on the card");
    assert_eq!(m.broker, url);
    assert_eq!(m.password.unwrap().expose(), "mq-s3cret-91");
    assert_eq!(m.ca.as_deref(), Some(ca));
    let text = env.ok(&["inspect", "out/piforge.img"]);
    assert!(
        !text.contains("mq-s3cret-91"),
        "the MQTT password leaked:\n{text}"
    );

    let env = Env::new();
    let err = env.fails(&[
        "build",
        "--from",
        base.path().to_str().unwrap(),
        "--out",
        "out",
        "--payload",
        env.path("payload").to_str().unwrap(),
        "--mqtt-url",
        "mqtts://alerts:hunter22@mq.example.com",
    ]);
    assert!(
        err.contains("no password in the URL") && !err.contains("hunter22"),
        "{err}"
    );
    assert_no_output(&env);
}
