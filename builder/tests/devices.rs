//! Device discovery and the flash safety rules (issue #6) over fake sysfs trees built in a temp
//! dir: system disk, mounted /boot/firmware, NVMe, too large, too small, busy, partitions, a USB
//! reader with a mounted card, a Pi running from its SD card, loop devices, swap, read-only.
//! Plus `piforge devices --json` on this machine, and (root + losetup) a real loop device.
//!
//! The fake tree mirrors the kernel's layout: `sys/block/X` is a symlink into `sys/devices/...`
//! whose path names the bus, `X/device` points at the parent device (model, vendor), partitions
//! are subdirectories with a `partition` file. Device nodes are empty files in `dev/`.
// Linux discovery (sysfs, mountinfo, loop devices): macOS and Windows are tested on fixtures
// in the unit tests of devices::diskutil and devices::windows.
#![cfg(target_os = "linux")]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use piforge::devices::{
    self, Bus, Policy, SafetyError, SysRoot, Target, TargetKind, check_target_in, confirm_target,
    confirm_text,
};

const GIB: u64 = 1 << 30;

const USB: &str = "pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0";
const SATA: &str = "pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0";
const NVME: &str = "pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0";
const MMC: &str = "platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa";

struct Fake {
    _dir: tempfile::TempDir,
    base: PathBuf,
    root: SysRoot,
    mountinfo: String,
    swaps: String,
    next_mount: u32,
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().expect("temp dir");
        let base = dir.path().to_path_buf();
        let root = SysRoot::under(&base);
        for d in [
            "sys/block",
            "sys/devices/virtual/block",
            "sys/dev/block",
            "proc/self",
            "dev",
        ] {
            fs::create_dir_all(base.join(d)).expect("mkdir");
        }
        let f = Fake {
            _dir: dir,
            base,
            root,
            mountinfo: String::new(),
            swaps: "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n".into(),
            next_mount: 30,
        };
        f.flush();
        f
    }

    fn write(&self, p: &Path, s: &str) {
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, s).expect("write");
    }

    /// A whole disk under `sys/devices/PARENT/block/NAME`.
    fn disk(&self, name: &str, parent: &str, devnum: (u32, u32), bytes: u64, removable: bool) {
        let pdir = self.base.join("sys/devices").join(parent);
        let ddir = pdir.join("block").join(name);
        fs::create_dir_all(ddir.join("holders")).expect("mkdir");
        self.write(&ddir.join("size"), &format!("{}\n", bytes / 512));
        self.write(
            &ddir.join("removable"),
            if removable { "1\n" } else { "0\n" },
        );
        self.write(&ddir.join("ro"), "0\n");
        self.write(&ddir.join("dev"), &format!("{}:{}\n", devnum.0, devnum.1));
        if parent != "virtual" {
            symlink(&pdir, ddir.join("device")).expect("device link");
        }
        symlink(&ddir, self.base.join("sys/block").join(name)).expect("block link");
        self.node(name);
    }

    fn model(&self, parent: &str, vendor: &str, model: &str) {
        let pdir = self.base.join("sys/devices").join(parent);
        self.write(&pdir.join("vendor"), &format!("{vendor:<8}\n"));
        self.write(&pdir.join("model"), &format!("{model:<16}\n"));
    }

    fn set(&self, disk: &str, file: &str, value: &str) {
        self.write(&self.base.join("sys/block").join(disk).join(file), value);
    }

    fn part(&self, disk: &str, name: &str, n: u32, devnum: (u32, u32), bytes: u64) {
        let d = self.base.join("sys/block").join(disk).join(name);
        fs::create_dir_all(d.join("holders")).expect("mkdir");
        self.write(&d.join("partition"), &format!("{n}\n"));
        self.write(&d.join("size"), &format!("{}\n", bytes / 512));
        self.write(&d.join("dev"), &format!("{}:{}\n", devnum.0, devnum.1));
        self.node(name);
    }

    fn label(&self, part: &str, label: &str) {
        let d = self.base.join("dev/disk/by-label");
        fs::create_dir_all(&d).expect("mkdir");
        symlink(format!("../../{part}"), d.join(label)).expect("label link");
    }

    fn node(&self, name: &str) {
        fs::write(self.base.join("dev").join(name), b"").expect("node");
    }

    fn mount(&mut self, devnum: (u32, u32), source: &str, escaped_mp: &str, fstype: &str) {
        let id = self.next_mount;
        self.next_mount += 1;
        self.mountinfo.push_str(&format!(
            "{id} 1 {}:{} / {escaped_mp} rw,relatime shared:{id} - {fstype} {source} rw\n",
            devnum.0, devnum.1
        ));
        self.flush();
    }

    fn swap(&mut self, path: &str, kind: &str) {
        self.swaps
            .push_str(&format!("{path}\t{kind}\t1048572\t0\t-2\n"));
        self.flush();
    }

    fn flush(&self) {
        fs::write(&self.root.mountinfo, &self.mountinfo).expect("mountinfo");
        fs::write(&self.root.swaps, &self.swaps).expect("swaps");
    }

    fn dev(&self, name: &str) -> PathBuf {
        self.root.dev.join(name)
    }

    fn check(&self, name: &str, image: u64, force: bool) -> Result<Target, SafetyError> {
        check_target_in(
            &self.root,
            &self.dev(name),
            image,
            &Policy {
                force,
                ..Policy::default()
            },
        )
    }

    /// A typical laptop: SATA disk sda, / on sda2, /boot/efi on sda1.
    fn laptop(&mut self) {
        self.disk("sda", SATA, (8, 0), 500 * GIB, false);
        self.model(SATA, "ATA", "Samsung SSD 860");
        self.part("sda", "sda1", 1, (8, 1), GIB / 2);
        self.part("sda", "sda2", 2, (8, 2), 499 * GIB);
        self.mount((8, 2), "/dev/sda2", "/", "ext4");
        self.mount((8, 1), "/dev/sda1", "/boot/efi", "vfat");
    }

    /// A USB card reader (sdb) with a 32 GiB Raspberry Pi OS card, both partitions mounted.
    fn reader_with_card(&mut self) {
        self.disk("sdb", USB, (8, 16), 32 * GIB, true);
        self.model(USB, "Generic", "STORAGE DEVICE");
        self.part("sdb", "sdb1", 1, (8, 17), GIB / 2);
        self.part("sdb", "sdb2", 2, (8, 18), 31 * GIB);
        self.label("sdb1", "bootfs");
        self.label("sdb2", r"root\x20fs");
        self.mount((8, 17), "/dev/sdb1", "/media/me/bootfs", "vfat");
        self.mount((8, 18), "/dev/sdb2", r"/media/me/root\040fs", "ext4");
    }
}

fn code(r: Result<Target, SafetyError>) -> &'static str {
    match r {
        Ok(t) => panic!("accepted {}", t.path.display()),
        Err(e) => e.code(),
    }
}

#[test]
fn the_system_disk_is_refused_even_with_force() {
    let mut f = Fake::new();
    f.laptop();
    let e = f.check("sda", GIB, false).expect_err("system disk");
    assert_eq!(e.code(), "system-disk");
    let msg = e.to_string();
    assert!(
        msg.contains("holds /") && msg.contains("--force does not"),
        "{msg}"
    );
    assert_eq!(code(f.check("sda", GIB, true)), "system-disk");
}

#[test]
fn a_disk_with_boot_firmware_mounted_is_refused_even_with_force() {
    let mut f = Fake::new();
    // Root on NVMe, but the Pi's boot partition comes from a USB disk.
    f.disk("nvme0n1", NVME, (259, 0), 128 * GIB, false);
    f.mount((259, 0), "/dev/nvme0n1", "/", "ext4");
    f.disk("sdb", USB, (8, 16), 32 * GIB, true);
    f.part("sdb", "sdb1", 1, (8, 17), GIB / 2);
    f.mount((8, 17), "/dev/sdb1", "/boot/firmware", "vfat");
    let e = f.check("sdb", GIB, true).expect_err("boot disk");
    assert_eq!(e.code(), "system-disk");
    assert!(e.to_string().contains("/boot/firmware"), "{e}");
}

#[test]
fn a_non_removable_nvme_needs_force() {
    let f = Fake::new();
    f.disk("nvme0n1", NVME, (259, 0), 128 * GIB, false);
    f.model(NVME, "", "WDC PC SN530");
    f.flush();
    let e = f.check("nvme0n1", GIB, false).expect_err("fixed disk");
    assert_eq!(e.code(), "not-removable");
    let msg = e.to_string();
    assert!(
        msg.contains("nvme") && msg.contains("WDC PC SN530") && msg.contains("--force"),
        "{msg}"
    );
    let t = f.check("nvme0n1", GIB, true).expect("--force accepts it");
    assert_eq!(t.device().map(|d| d.bus), Some(Bus::Nvme));
}

#[test]
fn a_512_gib_disk_is_too_large_without_force() {
    let f = Fake::new();
    f.disk("sdb", USB, (8, 16), 512 * GIB, true);
    let e = f.check("sdb", GIB, false).expect_err("too large");
    assert_eq!(e.code(), "too-large");
    assert!(e.to_string().contains("512.0 GiB"), "{e}");
    assert!(f.check("sdb", GIB, true).is_ok());
    // 256 GiB itself is fine.
    let g = Fake::new();
    g.disk("sdc", USB, (8, 32), 256 * GIB, true);
    g.flush();
    assert!(g.check("sdc", GIB, false).is_ok());
}

#[test]
fn a_card_smaller_than_the_image_is_refused_even_with_force() {
    let f = Fake::new();
    f.disk("sdb", USB, (8, 16), 2 * GIB, true);
    let e = f.check("sdb", 2 * GIB + 1, true).expect_err("too small");
    assert_eq!(e.code(), "too-small");
    assert!(
        f.check("sdb", 2 * GIB, false).is_ok(),
        "an image of exactly the card's size fits"
    );
    // A reader without a card reports size 0.
    f.disk("sdc", USB, (8, 32), 0, true);
    assert_eq!(code(f.check("sdc", 1, true)), "no-medium");
}

#[test]
fn a_disk_with_holders_is_busy_and_an_lvm_root_is_a_system_disk() {
    let mut f = Fake::new();
    f.disk("sdc", USB, (8, 32), 32 * GIB, true);
    f.part("sdc", "sdc1", 1, (8, 33), 32 * GIB);
    f.disk("dm-0", "virtual", (253, 0), 32 * GIB, false);
    fs::create_dir_all(f.base.join("sys/block/sdc/sdc1/holders/dm-0")).expect("holder");
    f.flush();
    let e = f.check("sdc", GIB, true).expect_err("busy");
    assert_eq!(e.code(), "busy");
    assert!(e.to_string().contains("dm-0"), "{e}");

    // The same stack holding / (LVM root): a system disk, found through the holder.
    f.mount((253, 0), "/dev/mapper/vg-root", "/", "ext4");
    assert_eq!(code(f.check("sdc", GIB, true)), "system-disk");
    // The dm device itself is not a card.
    assert_eq!(code(f.check("dm-0", GIB, true)), "virtual");
}

#[test]
fn a_partition_path_asks_for_the_whole_disk() {
    let mut f = Fake::new();
    f.reader_with_card();
    let e = f.check("sdb1", GIB, true).expect_err("partition");
    assert_eq!(e.code(), "partition");
    assert!(
        e.to_string()
            .contains(&format!("give the whole disk {}", f.dev("sdb").display())),
        "{e}"
    );
    f.disk("mmcblk0", MMC, (179, 0), 32 * GIB, false);
    f.part("mmcblk0", "mmcblk0p1", 1, (179, 1), GIB / 2);
    let e = f.check("mmcblk0p1", GIB, false).expect_err("partition");
    assert!(
        e.to_string()
            .ends_with(&format!("{}", f.dev("mmcblk0").display())),
        "{e}"
    );
    // A node sysfs does not know but named like a partition.
    f.node("sdq3");
    let e = f.check("sdq3", GIB, false).expect_err("partition by name");
    assert!(e.to_string().contains("give the whole disk"), "{e}");
}

#[test]
fn a_usb_reader_with_a_mounted_card_is_accepted_and_lists_what_to_unmount() {
    let mut f = Fake::new();
    f.laptop();
    f.reader_with_card();
    let t = f
        .check("sdb", 4 * GIB, false)
        .expect("a card in a reader is a target");
    let d = t.device().expect("a device");
    assert_eq!(d.bus, Bus::Usb);
    assert_eq!(d.description(), "Generic STORAGE DEVICE");
    assert_eq!(d.size, 32 * GIB);
    assert_eq!(
        t.mount_points_to_unmount(),
        vec![
            PathBuf::from("/media/me/root fs"),
            PathBuf::from("/media/me/bootfs")
        ]
    );
    let labels: Vec<_> = d.partitions.iter().map(|p| p.label.clone()).collect();
    assert_eq!(labels, vec![Some("bootfs".into()), Some("root fs".into())]);
    let text = confirm_text(&t);
    for want in [
        "Generic STORAGE DEVICE",
        "32.0 GiB",
        "usb",
        "sdb1",
        "bootfs",
        "root fs",
        "mounted at /media/me/bootfs (will be unmounted)",
        "EVERYTHING",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    // The listing says the same: sda refused as the system disk, sdb flashable.
    let mut out = Vec::new();
    devices::cmd_devices_in(&f.root, true, &mut out).expect("devices --json");
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 2, "{v:#}");
    assert_eq!(rows[0]["name"], "sda");
    assert_eq!(rows[0]["flashable"], false);
    assert_eq!(rows[0]["refusal"], "system-disk");
    assert_eq!(rows[1]["name"], "sdb");
    assert_eq!(rows[1]["flashable"], true);
    assert_eq!(rows[1]["bus"], "usb");
    assert_eq!(
        rows[1]["partitions"][1]["mount-points"][0],
        "/media/me/root fs"
    );
    let mut table = Vec::new();
    devices::cmd_devices_in(&f.root, false, &mut table).expect("devices");
    let table = String::from_utf8(table).expect("utf-8");
    let sdb = table
        .lines()
        .find(|l| l.contains("/sdb "))
        .expect("sdb row");
    assert!(sdb.contains("32.0 GiB") && sdb.ends_with("yes"), "{table}");
    let sda = table
        .lines()
        .find(|l| l.contains("/sda "))
        .expect("sda row");
    assert!(sda.ends_with("no: system-disk"), "{table}");
}

#[test]
fn a_pi_running_from_its_sd_card_refuses_the_card() {
    let mut f = Fake::new();
    f.disk("mmcblk0", MMC, (179, 0), 32 * GIB, false);
    f.set("mmcblk0", "device/type", "SD\n");
    f.part("mmcblk0", "mmcblk0p1", 1, (179, 1), GIB / 2);
    f.part("mmcblk0", "mmcblk0p2", 2, (179, 2), 31 * GIB);
    f.mount((179, 2), "/dev/mmcblk0p2", "/", "ext4");
    f.mount((179, 1), "/dev/mmcblk0p1", "/boot/firmware", "vfat");
    assert_eq!(code(f.check("mmcblk0", GIB, true)), "system-disk");

    // The same slot on a laptop, not in use: an SD card is a target although the kernel does
    // not call mmc media removable.
    let mut g = Fake::new();
    g.laptop();
    g.disk("mmcblk0", MMC, (179, 0), 32 * GIB, false);
    g.set("mmcblk0", "device/type", "SD\n");
    assert!(g.check("mmcblk0", GIB, false).is_ok());
    // Soldered eMMC is not.
    g.disk(
        "mmcblk1",
        "platform/soc/mmc_host/mmc1/mmc1:0001",
        (179, 8),
        32 * GIB,
        false,
    );
    g.set("mmcblk1", "device/type", "MMC\n");
    let e = g.check("mmcblk1", GIB, false).expect_err("emmc");
    assert_eq!(e.code(), "not-removable");
    assert!(e.to_string().contains("eMMC"), "{e}");
}

#[test]
fn loop_devices_with_a_file_are_candidates_and_empty_ones_are_hidden() {
    let f = Fake::new();
    f.disk("loop0", "virtual", (7, 0), 4 * GIB, false);
    f.set("loop0", "loop/backing_file", "/var/tmp/card.img\n");
    f.disk("loop1", "virtual", (7, 1), 0, false);
    f.disk("zram0", "virtual", (252, 0), 8 * GIB, false);
    f.flush();
    let list = devices::list(&f.root).expect("list");
    let names: Vec<_> = list.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, vec!["loop0"]);
    assert_eq!(list[0].bus, Bus::Loop);
    assert_eq!(
        list[0].backing_file,
        Some(PathBuf::from("/var/tmp/card.img"))
    );
    let t = f
        .check("loop0", GIB, false)
        .expect("a loop device is a target");
    assert!(
        confirm_text(&t).contains("backed by /var/tmp/card.img"),
        "{}",
        confirm_text(&t)
    );
    assert_eq!(code(f.check("loop1", GIB, true)), "no-medium");
    assert_eq!(code(f.check("zram0", GIB, true)), "virtual");
}

#[test]
fn swap_in_use_is_refused_even_with_force() {
    let mut f = Fake::new();
    f.disk("sdd", USB, (8, 48), 32 * GIB, true);
    f.part("sdd", "sdd1", 1, (8, 49), 16 * GIB);
    f.part("sdd", "sdd2", 2, (8, 50), 16 * GIB);
    f.swap("/dev/sdd2", "partition");
    let e = f.check("sdd", GIB, true).expect_err("swap partition");
    assert_eq!(e.code(), "swap-in-use");
    assert!(e.to_string().contains("swapoff"), "{e}");
    // A swap file on a filesystem of the disk counts too.
    f.disk("sde", USB, (8, 64), 32 * GIB, true);
    f.part("sde", "sde1", 1, (8, 65), 32 * GIB);
    f.mount((8, 65), "/dev/sde1", r"/mnt/big\040disk", "ext4");
    f.swap(r"/mnt/big\040disk/swapfile", "file");
    let e = f.check("sde", GIB, true).expect_err("swap file");
    assert!(e.to_string().contains("/mnt/big disk/swapfile"), "{e}");
}

#[test]
fn a_write_protected_card_is_refused() {
    let f = Fake::new();
    f.disk("sdb", USB, (8, 16), 32 * GIB, true);
    f.set("sdb", "ro", "1\n");
    f.flush();
    let e = f.check("sdb", GIB, true).expect_err("read-only");
    assert_eq!(e.code(), "read-only");
    assert!(e.to_string().contains("lock switch"), "{e}");
}

#[test]
fn files_are_targets_and_missing_devices_are_not() {
    let f = Fake::new();
    let p = Policy::default();
    let img = f.base.join("card.img");
    let t = check_target_in(&f.root, &img, 10 * GIB, &p).expect("new file");
    assert_eq!(t.kind, TargetKind::File { existing_len: None });
    assert!(confirm_text(&t).contains("will be created"));
    fs::write(&img, b"old").expect("write");
    let t = check_target_in(&f.root, &img, 10 * GIB, &p).expect("existing file, size unchecked");
    assert_eq!(
        t.kind,
        TargetKind::File {
            existing_len: Some(3)
        }
    );
    let e = check_target_in(&f.root, &f.base.join("nodir/card.img"), 1, &p).expect_err("no dir");
    assert_eq!(e.code(), "no-parent");
    let e = check_target_in(&f.root, &f.dev("sdz"), 1, &p).expect_err("no device");
    assert_eq!(e.code(), "no-such-device");
    let e = check_target_in(&f.root, Path::new("/dev/sdzz-piforge-none"), 1, &p)
        .expect_err("never a file under /dev");
    assert_eq!(e.code(), "no-such-device");
    let e = check_target_in(&f.root, &f.base, 1, &p).expect_err("a directory");
    assert_eq!(e.code(), "not-a-target");
}

#[test]
fn confirmation_wants_yes_or_the_device_name_and_a_terminal() {
    let mut f = Fake::new();
    f.reader_with_card();
    let t = f.check("sdb", GIB, false).expect("target");
    let ask = |answer: &str, interactive: bool| {
        let mut out = Vec::new();
        let r = confirm_target(&t, false, interactive, &mut answer.as_bytes(), &mut out);
        (
            r.map_err(|e| e.code()),
            String::from_utf8(out).expect("utf-8"),
        )
    };
    let (r, shown) = ask("yes\n", true);
    assert_eq!(r, Ok(()));
    assert!(
        shown.contains("bootfs") && shown.contains("Type yes (or sdb)"),
        "{shown}"
    );
    assert_eq!(ask("sdb\n", true).0, Ok(()));
    assert_eq!(
        ask(&format!("{}\n", f.dev("sdb").display()), true).0,
        Ok(())
    );
    assert_eq!(ask("y\n", true).0, Err("declined"));
    assert_eq!(ask("", true).0, Err("declined"));
    let (r, shown) = ask("yes\n", false);
    assert_eq!(r, Err("not-interactive"));
    assert!(shown.is_empty(), "nothing asked without a terminal");
    let mut out = Vec::new();
    assert!(
        confirm_target(&t, true, false, &mut "".as_bytes(), &mut out).is_ok(),
        "--yes"
    );
    let e = confirm_target(&t, false, false, &mut "".as_bytes(), &mut out).expect_err("no tty");
    assert!(e.to_string().contains("--yes"), "{e}");
}

/// `piforge devices --json` on this machine: valid JSON of the documented shape, and the disk
/// holding `/` (when `/` comes from a disk sysfs lists) is refused as the system disk.
#[test]
fn devices_json_on_this_machine_refuses_the_system_disk() {
    let out = Command::new(env!("CARGO_BIN_EXE_piforge"))
        .args(["devices", "--json"])
        .output()
        .expect("running piforge devices --json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json array");
    let rows = v.as_array().expect("array");
    for r in rows {
        for k in [
            "name",
            "path",
            "size",
            "model",
            "bus",
            "removable",
            "partitions",
            "mounts",
        ] {
            assert!(r.get(k).is_some(), "{k} missing in {r}");
        }
        assert_eq!(
            r["flashable"].as_bool(),
            Some(r["refusal"].is_null()),
            "{r}"
        );
    }
    // Which disk holds `/`? Ask the kernel directly: the device number of `/` (or, for btrfs
    // and friends, the mount source) mapped to a disk in /sys/block.
    let Some(root_disk) = disk_holding_root() else {
        eprintln!("/ is not on a block device sysfs lists (container overlay?): no system disk");
        return;
    };
    let row = rows
        .iter()
        .find(|r| r["name"] == root_disk.as_str())
        .unwrap_or_else(|| panic!("{root_disk} (holds /) not listed: {v:#}"));
    assert_eq!(row["flashable"], false, "{row}");
    assert_eq!(row["refusal"], "system-disk", "{row}");
}

/// The whole disk under `/`, found independently of the code under test: `/`'s `st_dev` →
/// `/sys/dev/block/MAJ:MIN` → the disk directory (a partition's parent), following dm slaves.
fn disk_holding_root() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let dev = fs::metadata("/").ok()?.dev();
    let (ma, mi) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let mut p = fs::canonicalize(format!("/sys/dev/block/{ma}:{mi}")).ok()?;
    loop {
        if p.join("partition").exists() {
            p = p.parent()?.to_path_buf();
        }
        let slaves: Vec<_> = fs::read_dir(p.join("slaves")).ok()?.flatten().collect();
        match slaves.first() {
            Some(s) => p = fs::canonicalize(s.path()).ok()?,
            None => return Some(p.file_name()?.to_string_lossy().into_owned()),
        }
    }
}

/// A real loop device from the real /sys: discovered as a loop candidate with its backing file,
/// and accepted as a target. Needs root and losetup; skipped (with a message) otherwise.
#[test]
fn a_real_loop_device_is_discovered_and_accepted() {
    use std::os::unix::fs::MetadataExt;
    let root = fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if !root || Command::new("losetup").arg("--version").output().is_err() {
        skip("needs root and losetup");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let img = dir.path().join("card.img");
    fs::File::create(&img)
        .and_then(|f| f.set_len(64 << 20))
        .expect("image");
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output()
        .expect("losetup");
    if !out.status.success() {
        skip(&format!(
            "losetup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
        return;
    }
    let node = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
    let detach = Detach(node.clone());
    let name = node
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let list = devices::list(&SysRoot::host()).expect("list");
    let d = list
        .iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("{name} not listed"));
    assert_eq!(d.bus, Bus::Loop);
    assert_eq!(d.size, 64 << 20);
    let backing = fs::canonicalize(&img).expect("canonical");
    assert_eq!(d.backing_file.as_deref(), Some(backing.as_path()));
    let t = devices::check_target(&node, 1 << 20, &Policy::default()).expect("loop target");
    assert!(t.device().is_some());
    let e = devices::check_target(&node, 65 << 20, &Policy::default()).expect_err("too small");
    assert_eq!(e.code(), "too-small");
    drop(detach);
}

/// A real mounted filesystem on a real loop device: listed to unmount, the exclusive open fails
/// while it is mounted, [`devices::unmount`] unmounts it, and an exclusive opener elsewhere makes
/// the check refuse the disk as in use. Needs root, losetup, mkfs.ext4 and mount.
#[test]
fn a_mounted_loop_device_is_unmounted_and_an_exclusive_holder_makes_it_busy() {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let root = fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if !root || Command::new("losetup").arg("--version").output().is_err() {
        skip("needs root and losetup");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let img = dir.path().join("card.img");
    fs::File::create(&img)
        .and_then(|f| f.set_len(64 << 20))
        .expect("image");
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output()
        .expect("losetup");
    if !out.status.success() {
        skip(&format!(
            "losetup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
        return;
    }
    let node = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
    let _detach = Detach(node.clone());
    let mnt = dir.path().join("mnt point");
    fs::create_dir(&mnt).expect("mkdir");
    let mkfs = Command::new("mkfs.ext4")
        .arg("-q")
        .arg(&node)
        .status()
        .expect("mkfs.ext4");
    assert!(mkfs.success(), "mkfs.ext4 {}", node.display());
    let mount = Command::new("mount")
        .arg(&node)
        .arg(&mnt)
        .output()
        .expect("mount");
    if !mount.status.success() {
        skip(&format!(
            "mount failed: {}",
            String::from_utf8_lossy(&mount.stderr)
        ));
        return;
    }
    let _umount = Umount(mnt.clone());

    let t = devices::check_target(&node, 1 << 20, &Policy::default()).expect("a loop target");
    assert_eq!(
        t.mount_points_to_unmount(),
        vec![mnt.clone()],
        "the escaped space decoded"
    );
    let e = devices::probe_exclusive(&node).expect_err("mounted: the exclusive open fails");
    assert_eq!(e.code(), "in-use");
    devices::unmount(&t).expect("unmounting");
    let table = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!table.contains("mnt\\040point"), "still mounted:\n{table}");

    // Someone else holds the disk exclusively: refused before any byte is written.
    let holder = fs::OpenOptions::new()
        .read(true)
        .custom_flags(devices::exclusive_flag())
        .open(&node)
        .expect("exclusive open");
    let e = devices::check_target(&node, 1 << 20, &Policy::default()).expect_err("held");
    assert_eq!(e.code(), "in-use");
    assert!(e.to_string().contains("in use by another program"), "{e}");
    drop(holder);
    assert!(devices::check_target(&node, 1 << 20, &Policy::default()).is_ok());
}

struct Umount(PathBuf);

impl Drop for Umount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg(&self.0)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Skips with a message, or fails when `PIFORGE_TEST_LOOP=1` says loop devices must work here.
fn skip(why: &str) {
    assert!(
        std::env::var_os("PIFORGE_TEST_LOOP").is_none_or(|v| v != "1"),
        "{why}"
    );
    eprintln!("skipped: {why}");
}

struct Detach(PathBuf);

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}
