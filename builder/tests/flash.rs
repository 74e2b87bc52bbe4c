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
use piforge::batch::Batch;
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
    let parsed = piforge::bmap::parse(&std::fs::read_to_string(&bmap).unwrap()).unwrap();
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
