//! `piforge flash` end to end (issue 6): the real binary writing miniature Raspberry-Pi-OS-shaped
//! batches and images to regular files (and, when this runs as root with `losetup`, to loop
//! devices). Cards are read back with mtools, an implementation independent of ours.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{MiniImage, MiniOpts, Release};
use piforge::arch::Arch;
use piforge::build::batch::Batch;
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

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_piforge"));
        c.args(args)
            .env("PIFORGE_CONFIG_DIR", self.path("config"))
            .env("PIFORGE_CACHE_DIR", self.path("cache"))
            .env_remove("PIFORGE_PAYLOAD_DIR")
            .env_remove("PIFORGE_TEST_THROTTLE_MS")
            .env_remove("RUST_LOG")
            .current_dir(self.dir.path());
        c
    }

    fn piforge(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running piforge")
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
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            !out.status.success(),
            "piforge {args:?} should have failed:\n{err}"
        );
        assert!(err.contains("error"), "{err}");
        err
    }

    /// `piforge build --cards N` of a trixie-shaped image into `out/`.
    fn batch(&self, cards: u32) -> MiniImage {
        let base = common::mini_image(Release::Trixie, &MiniOpts::default());
        let payload = self.path("payload");
        let n = cards.to_string();
        self.ok(&[
            "build",
            "--from",
            base.path().to_str().unwrap(),
            "--out",
            "out",
            "--payload",
            payload.to_str().unwrap(),
            "--cards",
            &n,
        ]);
        base
    }
}

fn hostname_on(img: &Path, base: &MiniImage) -> String {
    let text = common::mtools_read(img, base.boot.0, "piforge/card.toml")
        .unwrap_or_else(|| panic!("no piforge/card.toml on {}", img.display()));
    let card = Card::parse(&String::from_utf8(text).unwrap()).unwrap();
    card.identity.hostname.expect("a batch card has a hostname")
}

fn flashed(env: &Env) -> Vec<bool> {
    Batch::load(&env.path("out"))
        .unwrap()
        .cards
        .iter()
        .map(|c| c.flashed)
        .collect()
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

#[test]
fn cards_1_2_3_flashed_in_sequence_get_three_names_and_match_export() {
    let env = Env::new();
    let base = env.batch(3);
    assert_eq!(flashed(&env), [false, false, false]);
    for (i, t) in ["a.img", "b.img", "c.img"].iter().enumerate() {
        let out = env.ok(&["flash", t, "--out", "out"]);
        let host = format!("pi-{:02}", i + 1);
        assert!(out.contains(&format!("card {} {host}", i + 1)), "{out}");
        assert!(out.contains("verified"), "{out}");
        let img = env.path(t);
        assert_eq!(hostname_on(&img, &base), host);
        common::fsck_fat(&img, base.boot.0, base.boot.1).unwrap();
        assert_eq!(std::fs::metadata(&img).unwrap().len(), base.disk_size);
    }
    assert_eq!(flashed(&env), [true, true, true]);
    // Card 2 flashed equals card 2 exported, byte for byte (the base has no junk in free
    // space, so unmapped blocks are zeros in both).
    env.ok(&["export", "--out", "out", "--card", "2", "-o", "e2.img"]);
    assert!(common::same_bytes(&env.path("b.img"), &env.path("e2.img")));
    // The batch image itself is untouched by flashing.
    let err = env.fails(&["flash", "d.img", "--out", "out"]);
    assert!(err.contains("0 card(s) left"), "{err}");
    assert!(!env.path("d.img").exists());
    // --card K re-flashes one.
    env.ok(&["flash", "d.img", "--out", "out", "--card", "3"]);
    assert_eq!(hostname_on(&env.path("d.img"), &base), "pi-03");
}

#[test]
fn parallel_flash_of_three_files_gives_three_distinct_cards() {
    let env = Env::new();
    let base = env.batch(4);
    let out = env.ok(&["flash", "x.img", "y.img", "z.img", "--out", "out"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    let mut names: Vec<String> = ["x.img", "y.img", "z.img"]
        .iter()
        .map(|t| hostname_on(&env.path(t), &base))
        .collect();
    names.sort();
    assert_eq!(names, ["pi-01", "pi-02", "pi-03"]);
    assert_eq!(flashed(&env), [true, true, true, false]);
    for t in ["x.img", "y.img", "z.img"] {
        common::fsck_fat(&env.path(t), base.boot.0, base.boot.1).unwrap();
    }
}

#[test]
fn a_card_another_process_is_flashing_is_skipped_and_never_doubled() {
    let env = Env::new();
    let base = env.batch(3);
    let out = env.path("out");
    // Another piforge is writing card 1 (its lock is held here, as that process would).
    let held = piforge::flash::claim_card(&out, 1)
        .unwrap()
        .expect("card 1 is free");
    assert!(piforge::flash::claim_card(&out, 1).unwrap().is_none());
    env.ok(&["flash", "a.img", "--out", "out"]);
    assert_eq!(hostname_on(&env.path("a.img"), &base), "pi-02");
    let err = env.fails(&["flash", "b.img", "--out", "out", "--card", "1"]);
    assert!(
        err.contains("card 1 (pi-01) is being flashed by another"),
        "{err}"
    );
    assert!(!env.path("b.img").exists());
    env.ok(&["flash", "b.img", "--out", "out"]);
    assert_eq!(hostname_on(&env.path("b.img"), &base), "pi-03");
    let err = env.fails(&["flash", "c.img", "--out", "out"]);
    assert!(
        err.contains("card(s) 1 are being flashed by another"),
        "{err}"
    );
    // That process is done (or died): card 1 is free again.
    drop(held);
    env.ok(&["flash", "c.img", "--out", "out"]);
    assert_eq!(hostname_on(&env.path("c.img"), &base), "pi-01");
    assert_eq!(flashed(&env), [true, true, true]);

    // Two processes started together, one target each: two different cards, both recorded.
    let env = Env::new();
    let base = env.batch(2);
    let children: Vec<_> = ["x.img", "y.img"]
        .iter()
        .map(|t| {
            env.cmd(&["flash", t, "--out", "out"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let mut names = [
        hostname_on(&env.path("x.img"), &base),
        hostname_on(&env.path("y.img"), &base),
    ];
    names.sort();
    assert_eq!(names, ["pi-01", "pi-02"]);
    assert_eq!(flashed(&env), [true, true]);
}

#[test]
fn verify_only_catches_a_flipped_byte_and_names_its_range() {
    let env = Env::new();
    let base = env.batch(1);
    env.ok(&["flash", "t.img", "--out", "out"]);
    let ok = env.ok(&[
        "flash",
        "--verify-only",
        "--card",
        "1",
        "t.img",
        "--out",
        "out",
    ]);
    assert!(ok.contains("matches the image"), "{ok}");
    // A byte of the FAT's boot sector: mapped.
    let at = base.boot.0 + 100;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(env.path("t.img"))
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], at).unwrap();
    drop(f);
    let err = env.fails(&[
        "flash",
        "--verify-only",
        "--card",
        "1",
        "t.img",
        "--out",
        "out",
    ]);
    let range = err
        .split("bytes ")
        .nth(1)
        .and_then(|s| s.split([',', ' ', '\n']).next())
        .unwrap_or_else(|| panic!("no byte range in {err}"));
    let (a, e) = range.split_once("..").unwrap();
    let (a, e): (u64, u64) = (a.parse().unwrap(), e.parse().unwrap());
    assert!(a <= at && at < e, "{at} not in {a}..{e}: {err}");
}

#[test]
fn an_xz_image_is_streamed_with_and_without_its_bmap() {
    let env = Env::new();
    let base = env.batch(0);
    env.ok(&["export", "--out", "out", "-o", "rel.img"]);
    env.ok(&["export", "--out", "out", "-o", "rel.img.xz"]);
    let bmap = env.path("rel.img.xz.bmap");
    let parsed = piforge::image::bmap::parse(&std::fs::read_to_string(&bmap).unwrap()).unwrap();
    assert_eq!(parsed.image_size, base.disk_size);
    assert!(
        parsed.mapped_bytes() < base.disk_size / 4,
        "{}",
        parsed.mapped_bytes()
    );

    // With the bmap beside it (found automatically): only mapped blocks, checked.
    env.ok(&["flash", "--image", "rel.img.xz", "s1.img"]);
    assert!(common::same_bytes(
        &env.path("s1.img"),
        &env.path("rel.img")
    ));
    // Without: every byte decoded, zeros left as holes.
    std::fs::rename(&bmap, env.path("kept.bmap")).unwrap();
    env.ok(&["flash", "--image", "rel.img.xz", "s2.img"]);
    assert!(common::same_bytes(
        &env.path("s2.img"),
        &env.path("rel.img")
    ));
    // A bmap that is not this image's is refused before writing.
    let mut text = std::fs::read_to_string(env.path("kept.bmap")).unwrap();
    text = text.replace(
        &format!("<ImageSize> {} </ImageSize>", base.disk_size),
        "<ImageSize> 4096 </ImageSize>",
    );
    std::fs::write(env.path("bad.bmap"), text).unwrap();
    let err = env.fails(&[
        "flash", "--image", "rel.img", "--bmap", "bad.bmap", "s3.img",
    ]);
    assert!(err.contains("bad.bmap"), "{err}");
    assert!(!env.path("s3.img").exists());
}

#[test]
fn an_interrupted_flash_leaves_the_first_mib_zero() {
    let env = Env::new();
    let base = env.batch(1);
    // The target held a complete card before (a valid partition table at its start).
    env.ok(&["export", "--out", "out", "--card", "1", "-o", "t.img"]);
    let target = env.path("t.img");
    assert!(!is_zero(&common::read_range(&target, 0, 512)));
    let mut child = env
        .cmd(&["flash", "t.img", "--out", "out"])
        .env("PIFORGE_TEST_THROTTLE_MS", "400")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until data past the first MiB has landed (the FAT's boot sector), then kill.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the flash never wrote the FAT");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the flash ended before the kill"
        );
        let mut f = File::open(&target).unwrap();
        let mut bs = [0u8; 512];
        if f.seek(SeekFrom::Start(base.boot.0)).is_ok()
            && f.read_exact(&mut bs).is_ok()
            && bs[510..] == [0x55, 0xAA]
            && is_zero(&common::read_range(&target, 0, 512))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(is_zero(&common::read_range(&target, 0, 1 << 20)));
    assert_eq!(
        flashed(&env),
        [false],
        "an interrupted card is not recorded"
    );
    // The next flash completes it.
    env.ok(&["flash", "t.img", "--out", "out"]);
    assert_eq!(hostname_on(&target, &base), "pi-01");
}

/// Loop devices need root and `losetup`; without them the test says it is skipped (set
/// PIFORGE_TEST_LOOP=1 to make that a failure, as .ci/run does).
fn loop_device(backing: &Path) -> Option<LoopDev> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n");
    let losetup = Path::new("/usr/sbin/losetup").exists() || Path::new("/sbin/losetup").exists();
    if !(root && losetup) {
        assert!(
            std::env::var_os("PIFORGE_TEST_LOOP").is_none_or(|v| v != "1"),
            "loop device tests required but not root or no losetup"
        );
        eprintln!("SKIPPED: loop device test needs root and losetup");
        return None;
    }
    let out = Command::new("losetup")
        .args(["-f", "--show", "-P"])
        .arg(backing)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "SKIPPED: losetup failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    Some(LoopDev(PathBuf::from(
        String::from_utf8(out.stdout).unwrap().trim(),
    )))
}

struct LoopDev(PathBuf);

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

#[test]
fn loop_device_too_small_is_refused_before_a_byte_is_written() {
    let env = Env::new();
    let base = common::mini_image(Release::Trixie, &MiniOpts::default());
    let backing = env.path("small.bin");
    std::fs::write(&backing, vec![0x5Au8; 64 << 20]).unwrap();
    let Some(dev) = loop_device(&backing) else {
        return;
    };
    let err = env.fails(&[
        "flash",
        "--yes",
        "--image",
        base.path().to_str().unwrap(),
        dev.0.to_str().unwrap(),
    ]);
    assert!(err.contains("too small"), "{err}");
    drop(dev);
    let after = std::fs::read(&backing).unwrap();
    assert!(after.iter().all(|&b| b == 0x5A), "bytes were written");
}

#[test]
fn loop_device_is_flashed_verified_and_old_data_does_not_leak() {
    let env = Env::new();
    let base = env.batch(1);
    let backing = env.path("card.bin");
    // An old card: junk everywhere.
    let size = base.disk_size + (32 << 20);
    File::create(&backing).unwrap().set_len(size).unwrap();
    common::fill_junk(&backing, 0, base.boot.0 + (8 << 20));
    common::fill_junk(&backing, base.root.0, base.root.1);
    common::fill_junk(&backing, size - (40 << 20), 40 << 20);
    let Some(dev) = loop_device(&backing) else {
        return;
    };
    let d = dev.0.to_str().unwrap();
    let out = env.ok(&["flash", "--yes", d, "--out", "out"]);
    assert!(out.contains("verified"), "{out}");
    env.ok(&["flash", "--verify-only", "--card", "1", d, "--out", "out"]);
    drop(dev);
    assert_eq!(hostname_on(&backing, &base), "pi-01");
    common::fsck_fat(&backing, base.boot.0, base.boot.1).unwrap();
    // Where correctness needs zeros, there are zeros: the device's last MiB (old GPT backup)
    // and the gap between the first MiB and the boot partition.
    assert!(is_zero(&common::read_range(
        &backing,
        size - (1 << 20),
        1 << 20
    )));
    assert!(is_zero(&common::read_range(
        &backing,
        1 << 20,
        base.boot.0 - (1 << 20)
    )));
    let batch = Batch::load(&env.path("out")).unwrap();
    let image = batch.image_path(&env.path("out"));
    assert_eq!(
        common::read_range(&backing, 0, 1 << 20),
        common::read_range(&image, 0, 1 << 20)
    );
}

/// The whole file's sha256.
fn sha_of(p: &Path) -> String {
    common::sha256_range(p, 0, std::fs::metadata(p).unwrap().len())
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// `piforge ARGS` run under `umask 000` (through sh: no `unsafe` pre_exec here).
fn with_umask_0(env: &Env, args: &[&str]) -> Output {
    let probe = env.cmd(args);
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(probe.get_program())
        .args(args)
        .current_dir(env.dir.path());
    for (k, v) in probe.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.output().unwrap()
}

/// SECURITY finding 6: an exported image and a file-target card hold the card's secrets; they
/// are created 0600 even under `umask 000`, an existing 0666 target file is narrowed, and the
/// output says so.
#[test]
fn exports_and_file_targets_are_0600_whatever_the_umask() {
    let env = Env::new();
    env.batch(1);
    for o in ["e.img", "e.img.xz"] {
        let out = with_umask_0(&env, &["export", "--out", "out", "--card", "1", "-o", o]);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("0600"), "export does not say so: {text}");
        assert_eq!(mode_of(&env.path(o)), 0o600, "{o}");
    }
    let old = env.path("old.img");
    std::fs::write(&old, b"x").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = with_umask_0(&env, &["flash", "new.img", "old.img", "--out", "out"]);
    // One card for two targets: the batch has one; flash them one at a time instead.
    assert!(!out.status.success());
    for t in ["new.img", "old.img"] {
        let out = with_umask_0(&env, &["flash", t, "--out", "out", "--card", "1"]);
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("0600"),
            "{out:?}"
        );
        assert_eq!(mode_of(&env.path(t)), 0o600, "{t}");
    }
}

/// SECURITY finding 2: the image being written, a hard link to it, the batch's own image, and
/// files in the batch or cache directory are refused as targets, before a byte changes.
#[test]
fn flash_refuses_its_own_source_the_cache_and_the_output_dir_as_target() {
    let env = Env::new();
    env.batch(1);
    env.ok(&["export", "--out", "out", "-o", "rel.img"]);
    let rel = env.path("rel.img");
    std::fs::hard_link(&rel, env.path("link.img")).unwrap();
    let before = sha_of(&rel);
    for t in ["rel.img", "link.img", "./rel.img"] {
        let err = env.fails(&["flash", "--image", "rel.img", t]);
        assert!(err.contains("is the image being written"), "{t}: {err}");
    }
    assert_eq!(sha_of(&rel), before, "the source was changed");
    let batch = Batch::load(&env.path("out")).unwrap();
    let image = batch.image_path(&env.path("out"));
    let image_before = sha_of(&image);
    let err = env.fails(&["flash", image.to_str().unwrap(), "--out", "out"]);
    assert!(err.contains("is the image being written"), "{err}");
    assert_eq!(sha_of(&image), image_before, "the batch image was changed");
    for (t, what) in [
        ("out/new.img", "batch directory"),
        ("cache/new.img", "cache"),
    ] {
        let err = env.fails(&["flash", "--image", "rel.img", "--out", "out", t]);
        assert!(err.contains(what), "{t}: {err}");
        assert!(!env.path(t).exists(), "{t} was created");
    }
    assert_eq!(flashed(&env), [false]);
}

/// SECURITY finding 2, devices: a loop device backed by the image, and the disk whose mounted
/// filesystem holds the image, are refused; the disk stays mounted and unchanged.
#[test]
fn a_loop_device_backed_by_the_image_or_holding_it_is_refused() {
    let env = Env::new();
    env.batch(0);
    env.ok(&["export", "--out", "out", "-o", "rel.img"]);
    let rel = env.path("rel.img");
    let before = sha_of(&rel);
    let Some(dev) = loop_device(&rel) else {
        return;
    };
    let err = env.fails(&[
        "flash",
        "--yes",
        "--image",
        "rel.img",
        dev.0.to_str().unwrap(),
    ]);
    assert!(err.contains("is the image being written"), "{err}");
    drop(dev);
    assert_eq!(sha_of(&rel), before);

    // A disk (loop device) with an ext4 filesystem, mounted, holding the image.
    let backing = env.path("disk.bin");
    File::create(&backing)
        .unwrap()
        .set_len(std::fs::metadata(&rel).unwrap().len() + (64 << 20))
        .unwrap();
    let Some(disk) = loop_device(&backing) else {
        return;
    };
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&disk.0)
        .status()
        .unwrap();
    assert!(mkfs.success());
    let mnt = env.path("mnt");
    std::fs::create_dir(&mnt).unwrap();
    assert!(
        Command::new("mount")
            .arg(&disk.0)
            .arg(&mnt)
            .status()
            .unwrap()
            .success()
    );
    let _unmount = Unmount(mnt.clone());
    std::fs::copy(&rel, mnt.join("rel.img")).unwrap();
    let inside = mnt.join("rel.img");
    let err = env.fails(&[
        "flash",
        "--yes",
        "--image",
        inside.to_str().unwrap(),
        disk.0.to_str().unwrap(),
    ]);
    assert!(err.contains("holds the image being written"), "{err}");
    assert!(
        inside.exists(),
        "the filesystem holding the image was unmounted"
    );
    assert_eq!(sha_of(&inside), before);
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Starts `piforge ARGS` with the test pause before writing; returns once it is paused (its
/// checks and confirmation done), with the child.
fn paused(env: &Env, args: &[&str]) -> std::process::Child {
    use std::io::BufRead;
    let mut child = env
        .cmd(args)
        .env("PIFORGE_TEST_PAUSE_MS", "1500")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "piforge ended without pausing"
        );
        if line.contains("test pause") {
            break;
        }
    }
    // Keep draining stderr so the child never blocks on it.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    child
}

fn swap_symlink(link: &Path, to: &Path) {
    let tmp = link.with_extension("new-link");
    std::os::unix::fs::symlink(to, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

/// SECURITY finding 4 (TOCTOU): the target is opened once; what the checks looked at is what
/// gets written, even when its path is repointed between the check and the write.
#[test]
fn a_target_repointed_after_the_check_is_not_written() {
    let env = Env::new();
    env.batch(0);
    env.ok(&["export", "--out", "out", "-o", "rel.img"]);
    let (a, b) = (env.path("a.img"), env.path("b.img"));
    std::fs::write(&a, b"checked").unwrap();
    std::fs::write(&b, vec![0x5Au8; 1 << 20]).unwrap();
    let link = env.path("card.img");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let child = paused(&env, &["flash", "--image", "rel.img", "card.img"]);
    swap_symlink(&link, &b);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        std::fs::read(&b).unwrap() == vec![0x5Au8; 1 << 20],
        "the file swapped in was written"
    );
    assert!(common::same_bytes(&a, &env.path("rel.img")));
}

/// SECURITY finding 4 on devices: a symlink to a checked loop device repointed to another loop
/// device during the pause: the checked device is written, the other one is untouched.
#[test]
fn a_device_repointed_after_the_check_is_not_written() {
    let env = Env::new();
    let base = env.batch(0);
    env.ok(&["export", "--out", "out", "-o", "rel.img"]);
    let size = base.disk_size + (8 << 20);
    let (ba, bb) = (env.path("a.bin"), env.path("b.bin"));
    for p in [&ba, &bb] {
        std::fs::write(p, vec![0x5Au8; size as usize]).unwrap();
    }
    let Some(da) = loop_device(&ba) else {
        return;
    };
    let Some(db) = loop_device(&bb) else {
        return;
    };
    let link = env.path("card");
    std::os::unix::fs::symlink(&da.0, &link).unwrap();
    let child = paused(
        &env,
        &["flash", "--yes", "--no-eject", "--image", "rel.img", "card"],
    );
    swap_symlink(&link, &db.0);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    drop((da, db));
    assert!(
        std::fs::read(&bb).unwrap().iter().all(|&x| x == 0x5A),
        "the device swapped in was written"
    );
    assert_eq!(
        common::read_range(&ba, 0, 1 << 20),
        common::read_range(&env.path("rel.img"), 0, 1 << 20)
    );
}

/// A device-mapper device (`dmsetup create`), removed when dropped.
struct DmDev(String);

impl Drop for DmDev {
    fn drop(&mut self) {
        let _ = Command::new("dmsetup").args(["remove", &self.0]).status();
    }
}

/// Runs the capacity check on `path`, a device claiming `2 * real` bytes that wraps at
/// `real`: it must be refused naming `real`, having changed nothing on the medium (read with
/// `medium`) but sentinel blocks.
fn assert_refused_as_wrapping(path: &Path, real: u64, medium: &dyn Fn() -> Vec<u8>) {
    use piforge::flash::capacity::{check_capacity, sentinel_offsets};
    use piforge::flash::engine::FlashError;
    use piforge::flash::target::{DeviceTarget, TargetIo};
    let before = medium();
    let fake = DeviceTarget::open(path, true).unwrap();
    assert_eq!(fake.capacity(), 2 * real);
    let e = check_capacity(&fake).unwrap_err();
    assert!(
        matches!(e, FlashError::FakeCapacity { real: r, claimed, .. }
            if r == real && claimed == 2 * real),
        "{e}"
    );
    let text = e.to_string();
    assert!(text.contains("holds only about 32.0 MiB"), "{text}");
    drop(fake);
    let after = medium();
    let sentinels: Vec<u64> = sentinel_offsets(2 * real)
        .iter()
        .map(|o| o % real)
        .collect();
    for (i, (a, b)) in before.iter().zip(&after).enumerate() {
        let i = i as u64;
        assert!(
            a == b || sentinels.iter().any(|&o| (o..o + 4096).contains(&i)),
            "byte {i} changed outside a sentinel block"
        );
    }
}

/// Issue 20 item 4 on a real block device that wraps: a loop device over a FUSE file that
/// claims 64 MiB and stores 32 MiB, every address taken modulo 32 MiB (tests/tools/
/// wrapping_card.py; this kernel kind has FUSE but no device-mapper). Refused naming 32 MiB,
/// nothing but sentinels written; an honest loop device passes and keeps no sentinel.
#[test]
fn a_wrapping_card_is_refused_naming_its_real_capacity() {
    use piforge::flash::capacity::{check_capacity, sentinel_offsets};
    use piforge::flash::target::DeviceTarget;
    let env = Env::new();
    let real: u64 = 32 << 20;
    let fusepy = Path::new("/usr/lib/python3/dist-packages/fusepy.py").exists();
    if !fusepy || !Path::new("/dev/fuse").exists() {
        assert!(
            std::env::var_os("PIFORGE_TEST_LOOP").is_none_or(|v| v != "1"),
            "the wrapping card needs FUSE and python3-fusepy (ci/setup)"
        );
        eprintln!("SKIPPED: no FUSE or python3-fusepy");
        return;
    }
    let mnt = env.path("fuse");
    std::fs::create_dir(&mnt).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/wrapping_card.py");
    let mut server = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(&mnt)
        .arg(real.to_string())
        .arg((2 * real).to_string())
        .spawn()
        .unwrap();
    let card = mnt.join("card");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !card.exists() {
        assert!(Instant::now() < deadline, "the FUSE card never appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _unmount = Unmount(mnt.clone());
    let junk: Vec<u8> = (0..real).map(|i| (i % 251) as u8 | 1).collect();
    std::fs::write(&card, &junk).unwrap();
    let medium = || common::read_range(&card, 0, real);
    assert_eq!(medium(), junk);
    if let Some(dev) = loop_device(&card) {
        assert_refused_as_wrapping(&dev.0, real, &medium);
    }
    drop(_unmount);
    let _ = server.wait();

    // An honest device of the same real size passes, its sentinel blocks zeroed again.
    let backing = env.path("honest.bin");
    std::fs::write(&backing, &junk).unwrap();
    let Some(dev) = loop_device(&backing) else {
        return;
    };
    let honest = DeviceTarget::open(&dev.0, true).unwrap();
    assert_eq!(
        check_capacity(&honest).unwrap(),
        sentinel_offsets(real).len()
    );
    drop(honest);
    drop(dev);
    let after = std::fs::read(&backing).unwrap();
    for o in sentinel_offsets(real) {
        let o = o as usize;
        assert!(
            after[o..o + 4096].iter().all(|&b| b == 0),
            "sentinel left at {o}"
        );
    }
    assert!(!after.windows(16).any(|w| w == b"PIFORGE-CAPACITY"));
}

/// The same with device-mapper (`linear` segments mapping the same 32 MiB of a loop device
/// twice), where the kernel has it; kernels without device-mapper skip with a message.
#[test]
fn a_wrapping_device_mapper_card_is_refused_naming_its_real_capacity() {
    let env = Env::new();
    let backing = env.path("real.bin");
    let real: u64 = 32 << 20;
    let junk: Vec<u8> = (0..real).map(|i| (i % 251) as u8 | 1).collect();
    std::fs::write(&backing, &junk).unwrap();
    let dm_ok = Command::new("dmsetup")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !dm_ok {
        eprintln!("SKIPPED: no device-mapper in this kernel (or no dmsetup)");
        return;
    }
    let Some(dev) = loop_device(&backing) else {
        return;
    };
    let name = format!("piforge-fake-{}", std::process::id());
    let sectors = real / 512;
    let table = format!(
        "0 {sectors} linear {d} 0\n{sectors} {sectors} linear {d} 0\n",
        d = dev.0.display()
    );
    let mut c = Command::new("dmsetup")
        .args(["create", &name])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut c.stdin.take().unwrap(), table.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success(), "dmsetup create failed");
    let _dm = DmDev(name.clone());
    let medium = || std::fs::read(&backing).unwrap();
    assert_refused_as_wrapping(Path::new(&format!("/dev/mapper/{name}")), real, &medium);
}
