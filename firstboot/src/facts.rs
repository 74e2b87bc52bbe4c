//! Facts about the machine and the current state of its files, read under a root prefix and a
//! boot directory: hardware serial, MAC addresses, release, network stack, cloud-init, boot mount
//! and the text of the files the plan edits.
//!
//! Every parser here is a pure function of `&str`/`&[u8]` (fuzzable); the gatherers only read
//! files. Nothing here writes, and nothing here decides what to change: that is `plan`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::action::{Dirs, Loc};

use piforge_config::rootfs::{self, RootView};
pub use piforge_config::rootfs::{NetworkStack, Release};

/// What firstboot knows about the hardware and the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Hardware serial, lower-case hex, or `None` when the board has none (or it is all zeros).
    pub serial: Option<String>,
    /// MAC address of each interface (`aa:bb:cc:dd:ee:ff`).
    pub macs: BTreeMap<String, String>,
    /// MAC of the first wired interface (`eth0`, else the first `en*`).
    pub wired_mac: Option<String>,
    /// Release of the image.
    pub release: Release,
    /// Network stack in use (never [`NetworkStack::Unknown`]: resolved by the release).
    pub net: NetworkStack,
    /// cloud-init is installed.
    pub cloud_init: bool,
    /// Mount point of the FAT boot partition according to `/etc/fstab`.
    pub boot_mount: Option<String>,
}

/// The serial from `/sys/firmware/devicetree/base/serial-number` (NUL-terminated hex).
pub fn parse_dt_serial(raw: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(raw);
    normalize_serial(s.trim_matches(|c: char| c == '\0' || c.is_whitespace()))
}

/// The `Serial` line of `/proc/cpuinfo`.
pub fn parse_cpuinfo_serial(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "Serial")
            .then(|| normalize_serial(v.trim()))
            .flatten()
    })
}

fn normalize_serial(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|c| c.is_ascii_hexdigit())
        && s.bytes().any(|c| c != b'0');
    ok.then(|| s.to_ascii_lowercase())
}

/// A MAC as in `/sys/class/net/*/address`, normalised; `None` for all-zero or malformed.
pub fn parse_mac(text: &str) -> Option<String> {
    let s = text.trim().to_ascii_lowercase();
    let parts: Vec<&str> = s.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_hexdigit()))
        && parts.iter().any(|p| *p != "00");
    ok.then_some(s)
}

/// `eth0` if it has a MAC, else the first `en*` interface in name order.
pub fn first_wired(macs: &BTreeMap<String, String>) -> Option<String> {
    macs.get("eth0").cloned().or_else(|| {
        macs.iter()
            .find(|(k, _)| k.starts_with("en"))
            .map(|(_, v)| v.clone())
    })
}

/// The root under a prefix, for the rules of [`piforge_config::rootfs`]. A symlink is not
/// followed: under a prefix an absolute link would point out of the root; the link is
/// evidence enough. Unreadable means absent (firstboot configures what it can see).
struct DirRoot<'a>(&'a Path);

impl DirRoot<'_> {
    fn at(&self, path: &str) -> std::path::PathBuf {
        self.0.join(path.trim_start_matches('/'))
    }
}

impl RootView for DirRoot<'_> {
    type Error = std::convert::Infallible;
    fn exists(&self, path: &str) -> Result<bool, Self::Error> {
        Ok(fs::symlink_metadata(self.at(path)).is_ok())
    }
    fn is_dir(&self, path: &str) -> Result<bool, Self::Error> {
        Ok(fs::symlink_metadata(self.at(path)).is_ok_and(|m| m.is_dir()))
    }
    fn list(&self, path: &str) -> Result<Vec<String>, Self::Error> {
        Ok(fs::read_dir(self.at(path))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// Reads the facts under `root`.
pub fn gather_facts(root: &Path) -> Result<Facts> {
    let read = |p: &str| fs::read(root.join(p)).ok();
    let serial = read("sys/firmware/devicetree/base/serial-number")
        .and_then(|b| parse_dt_serial(&b))
        .or_else(|| {
            read("proc/cpuinfo").and_then(|b| parse_cpuinfo_serial(&String::from_utf8_lossy(&b)))
        });
    let mut macs = BTreeMap::new();
    if let Ok(rd) = fs::read_dir(root.join("sys/class/net")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(mac) = fs::read_to_string(e.path().join("address"))
                .ok()
                .and_then(|t| parse_mac(&t))
            {
                macs.insert(name, mac);
            }
        }
    }
    let os_release = fs::read_to_string(root.join("etc/os-release"))
        .or_else(|_| fs::read_to_string(root.join("usr/lib/os-release")))
        .with_context(|| format!("reading {}", root.join("etc/os-release").display()))?;
    let release = rootfs::parse_os_release(&os_release).release();
    let view = DirRoot(root);
    let Ok(net) = rootfs::network_stack(&view);
    let net = net.or_release_default(&release);
    let Ok(cloud_init) = rootfs::cloud_init(&view);
    let boot_mount = fs::read_to_string(root.join("etc/fstab"))
        .ok()
        .and_then(|t| rootfs::boot_mount_from_fstab(&t));
    Ok(Facts {
        serial,
        wired_mac: first_wired(&macs),
        macs,
        release,
        net,
        cloud_init,
        boot_mount,
    })
}

/// What the plan wants to know about the files, declared by the plan ([`crate::plan::inputs`]).
#[derive(Debug, Clone, Default)]
pub struct Wanted {
    /// Files whose bytes are read (missing ones are simply absent).
    pub files: Vec<Loc>,
    /// Directories listed recursively (files with their mode; directories end in `/`).
    pub trees: Vec<Loc>,
}

/// The current bytes and listings of the files the plan reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Contents of each wanted file that exists.
    pub files: BTreeMap<Loc, Vec<u8>>,
    /// Mode bits of each wanted file that exists.
    pub modes: BTreeMap<Loc, u32>,
    /// Listing of each wanted tree: relative paths (dirs end in `/`) and modes.
    pub trees: BTreeMap<Loc, Vec<(String, u32)>>,
}

impl State {
    /// The bytes of `loc`, if it was read and exists.
    pub fn bytes(&self, loc: &Loc) -> Option<&[u8]> {
        self.files.get(loc).map(|v| v.as_slice())
    }

    /// The text of `loc` (lossy UTF-8), if it was read and exists.
    pub fn text(&self, loc: &Loc) -> Option<String> {
        self.bytes(loc)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// Whether a listed tree contains `rel` (or `loc` itself was read).
    pub fn has(&self, loc: &Loc) -> bool {
        self.files.contains_key(loc)
            || self.trees.iter().any(|(dir, items)| {
                dir.base == loc.base
                    && loc
                        .rel
                        .strip_prefix(&dir.rel)
                        .and_then(|r| r.strip_prefix('/'))
                        .is_some_and(|r| {
                            items
                                .iter()
                                .any(|(p, _)| p == r || p.strip_suffix('/') == Some(r))
                        })
            })
    }

    /// The listing of a tree (empty when it does not exist).
    pub fn tree(&self, loc: &Loc) -> &[(String, u32)] {
        self.trees.get(loc).map(|v| v.as_slice()).unwrap_or(&[])
    }
}

/// Reads what `wanted` asks for under `dirs`.
pub fn gather_state(dirs: &Dirs, wanted: &Wanted) -> Result<State> {
    let mut st = State::default();
    for loc in &wanted.files {
        let p = loc.under(dirs);
        match fs::metadata(&p) {
            Ok(m) if m.is_file() => {
                let b = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                st.modes
                    .insert(loc.clone(), m.permissions().mode() & 0o7777);
                st.files.insert(loc.clone(), b);
            }
            _ => {}
        }
    }
    for loc in &wanted.trees {
        let mut items = vec![];
        list_tree(&loc.under(dirs), "", &mut items, 0);
        if !items.is_empty() || loc.under(dirs).is_dir() {
            st.trees.insert(loc.clone(), items);
        }
    }
    Ok(st)
}

fn list_tree(dir: &Path, prefix: &str, out: &mut Vec<(String, u32)>, depth: usize) {
    if depth > 16 {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(m) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        let mode = m.permissions().mode() & 0o7777;
        let rel = format!("{prefix}{name}");
        if m.is_dir() {
            out.push((format!("{rel}/"), mode));
            list_tree(&e.path(), &format!("{rel}/"), out, depth + 1);
        } else {
            out.push((rel, mode));
        }
    }
}

/// Users of `/etc/passwd`: (name, uid, gid, home).
pub fn parse_passwd(text: &str) -> Vec<(String, u32, u32, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some((
                f[0].to_string(),
                f[2].parse().ok()?,
                f[3].parse().ok()?,
                f[5].to_string(),
            ))
        })
        .collect()
}

/// Names of the groups in `/etc/group` with their gid.
pub fn parse_group(text: &str) -> BTreeMap<String, u32> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 3).then(|| Some((f[0].to_string(), f[2].parse().ok()?)))?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIX: &str = piforge_test_support::RASPIOS_FIXTURES;

    #[test]
    fn serials() {
        assert_eq!(
            parse_dt_serial(b"10000000ABCDEF12\0"),
            Some("10000000abcdef12".into())
        );
        assert_eq!(parse_dt_serial(b"0000000000000000\0"), None);
        let cpuinfo = "processor\t: 0\nHardware\t: BCM2835\nRevision\t: c03111\n\
                       Serial\t\t: 100000002a3f9a2c\nModel\t\t: Raspberry Pi 4\n";
        assert_eq!(
            parse_cpuinfo_serial(cpuinfo),
            Some("100000002a3f9a2c".into())
        );
        assert_eq!(parse_cpuinfo_serial("Serial : zz\n"), None);
    }

    #[test]
    fn macs_and_wired() {
        assert_eq!(
            parse_mac("DC:A6:32:01:02:03\n"),
            Some("dc:a6:32:01:02:03".into())
        );
        assert_eq!(parse_mac("00:00:00:00:00:00"), None);
        let mut m = BTreeMap::new();
        m.insert("wlan0".to_string(), "b".to_string());
        m.insert("enx1".to_string(), "a".to_string());
        assert_eq!(first_wired(&m), Some("a".into()));
        m.insert("eth0".to_string(), "c".to_string());
        assert_eq!(first_wired(&m), Some("c".into()));
    }

    #[test]
    fn releases_and_boot_mounts_of_the_fixtures() {
        for (rel, want, mount) in [
            ("bullseye", Release::Bullseye, "/boot"),
            ("bookworm", Release::Bookworm, "/boot/firmware"),
            ("trixie", Release::Trixie, "/boot/firmware"),
        ] {
            let os = fs::read_to_string(format!("{FIX}/{rel}/rootfs/etc/os-release")).unwrap();
            assert_eq!(rootfs::parse_os_release(&os).release(), want);
            let fstab = fs::read_to_string(format!("{FIX}/{rel}/rootfs/etc/fstab")).unwrap();
            assert_eq!(
                rootfs::boot_mount_from_fstab(&fstab).as_deref(),
                Some(mount)
            );
        }
    }

    #[test]
    fn facts_of_the_three_release_fixtures() {
        // The fixtures carry no network evidence: the release decides, as on a stock card
        // whose units firstboot cannot see yet.
        for (rel, release, net, cloud_init) in [
            ("bullseye", Release::Bullseye, NetworkStack::Dhcpcd, false),
            (
                "bookworm",
                Release::Bookworm,
                NetworkStack::NetworkManager,
                false,
            ),
            (
                "trixie",
                Release::Trixie,
                NetworkStack::NetworkManager,
                true,
            ),
        ] {
            let f = gather_facts(Path::new(&format!("{FIX}/{rel}/rootfs"))).unwrap();
            assert_eq!(
                (f.release, f.net, f.cloud_init),
                (release, net, cloud_init),
                "{rel}"
            );
        }
    }

    #[test]
    fn the_network_stack_follows_the_builders_rule() {
        // dhcpcd enabled (a link to a unit outside the prefix: it dangles here) and
        // NetworkManager's directory present. firstboot's own rule used to say NetworkManager
        // (the directory, no dhcpcd.conf) where the builder said dhcpcd; both now say dhcpcd.
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join("etc/systemd/system/multi-user.target.wants")).unwrap();
        fs::create_dir_all(r.join("etc/NetworkManager/system-connections")).unwrap();
        fs::write(r.join("etc/os-release"), "VERSION_CODENAME=bookworm\n").unwrap();
        std::os::unix::fs::symlink(
            "/lib/systemd/system/dhcpcd.service",
            r.join("etc/systemd/system/multi-user.target.wants/dhcpcd.service"),
        )
        .unwrap();
        assert_eq!(gather_facts(r).unwrap().net, NetworkStack::Dhcpcd);
        fs::remove_file(r.join("etc/systemd/system/multi-user.target.wants/dhcpcd.service"))
            .unwrap();
        // No evidence left but an empty directory: Bookworm's default.
        assert_eq!(gather_facts(r).unwrap().net, NetworkStack::NetworkManager);
        fs::create_dir_all(r.join("etc/systemd/network")).unwrap();
        fs::write(r.join("etc/systemd/network/eth.network"), "[Match]\n").unwrap();
        assert_eq!(gather_facts(r).unwrap().net, NetworkStack::Networkd);
    }

    #[test]
    fn passwd_and_group() {
        let p = parse_passwd(
            "root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000:,,,:/home/pi:/bin/bash\nbad\n",
        );
        assert_eq!(p[1], ("pi".into(), 1000, 1000, "/home/pi".into()));
        assert_eq!(p.len(), 2);
        assert_eq!(parse_group("shadow:x:42:\nsudo:x:27:pi\n")["shadow"], 42);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,200}", b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_dt_serial(&b);
            let _ = parse_cpuinfo_serial(&s);
            let _ = parse_mac(&s);
            let _ = rootfs::boot_mount_from_fstab(&s);
            let _ = parse_passwd(&s);
            let _ = parse_group(&s);
        }
    }
}
