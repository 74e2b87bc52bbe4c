//! What a root file system says about itself — its release (`os-release`), where it mounts
//! the FAT boot partition (`fstab`), which program configures its network, whether it runs
//! cloud-init — decided by one set of rules for the builder (reading an image's ext4) and for
//! firstboot (reading the live root on the Pi), so the two never disagree about a card.
//!
//! The text parsers are pure functions of `&str` and never panic (fuzzed by `image_text` and
//! `firstboot_text`). The rules that look at files go through [`RootView`], which each side
//! implements over its own reader; this module does no I/O.

use serde::Serialize;

/// The fields of `/etc/os-release` piforge uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID`.
    pub id: String,
    /// `ID_LIKE`.
    pub id_like: String,
    /// `VERSION_ID`.
    pub version_id: String,
    /// `VERSION_CODENAME`, or the word in parentheses in `VERSION`.
    pub version_codename: String,
    /// `PRETTY_NAME`.
    pub pretty_name: String,
}

/// Raspberry Pi OS (Debian) releases piforge knows by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Debian 11; dhcpcd, boot at `/boot`.
    Bullseye,
    /// Debian 12; NetworkManager, boot at `/boot/firmware`.
    Bookworm,
    /// Debian 13; NetworkManager, cloud-init on later images.
    Trixie,
    /// Anything else (the codename, possibly empty).
    Other(String),
}

impl OsRelease {
    /// The release named by the codename.
    pub fn release(&self) -> Release {
        match self.version_codename.as_str() {
            "bullseye" => Release::Bullseye,
            "bookworm" => Release::Bookworm,
            "trixie" => Release::Trixie,
            other => Release::Other(other.to_owned()),
        }
    }

    /// Where a release of this age mounts its boot partition when fstab does not say:
    /// `/boot` up to Bullseye, `/boot/firmware` since Bookworm (and for anything unknown,
    /// which is newer more likely than older).
    pub fn default_boot_mount(&self) -> &'static str {
        match self.version_codename.as_str() {
            "bullseye" | "buster" | "stretch" | "jessie" => "/boot",
            _ => "/boot/firmware",
        }
    }
}

/// Parses os-release(5) text: `KEY=value` lines, values optionally in single or double quotes
/// with backslash escapes; comments and malformed lines are skipped; a key given twice takes
/// its last value (as a shell sourcing the file would). Pure; never panics.
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut r = OsRelease::default();
    let mut version = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let value = unquote(raw.trim());
        match key.trim() {
            "ID" => r.id = value,
            "ID_LIKE" => r.id_like = value,
            "VERSION_ID" => r.version_id = value,
            "VERSION_CODENAME" => r.version_codename = value,
            "PRETTY_NAME" => r.pretty_name = value,
            "VERSION" => version = value,
            _ => {}
        }
    }
    if r.version_codename.is_empty()
        && let Some((_, rest)) = version.split_once('(')
        && let Some((word, _)) = rest.split_once(')')
    {
        r.version_codename = word.trim().to_lowercase();
    }
    r
}

fn unquote(v: &str) -> String {
    let mut chars = v.chars();
    let quote = match v.chars().next() {
        Some(q @ ('"' | '\'')) => {
            chars.next();
            Some(q)
        }
        _ => None,
    };
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            c if Some(c) == quote => break,
            '\\' if quote != Some('\'') => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// The mount point of the FAT boot partition in fstab(5) text: the first `vfat`/`msdos`/`fat`
/// line mounted at `/boot` or under it, else the first such line at all. Octal escapes
/// (`\040`) are decoded. Pure; never panics.
pub fn boot_mount_from_fstab(text: &str) -> Option<String> {
    let fat_mounts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, mount, fs) = (f.next()?, f.next()?, f.next()?);
            matches!(fs, "vfat" | "msdos" | "fat").then(|| decode_octal(mount))
        })
        .collect();
    fat_mounts
        .iter()
        .find(|m| *m == "/boot" || m.starts_with("/boot/"))
        .or(fat_mounts.first())
        .cloned()
}

fn decode_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match oct.map(|d| d.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'))) {
            Some(v) if v <= 255 => {
                out.push(v as u8);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The program that configures the network of a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkStack {
    /// NetworkManager keyfiles in `/etc/NetworkManager/system-connections` (Raspberry Pi OS
    /// Bookworm and later).
    NetworkManager,
    /// `/etc/dhcpcd.conf` and wpa_supplicant (Raspberry Pi OS Bullseye and earlier).
    Dhcpcd,
    /// systemd-networkd `.network` files.
    Networkd,
    /// None of the above found.
    Unknown,
}

impl NetworkStack {
    /// [`NetworkStack::Unknown`] resolved by the release: what that release ships (firstboot
    /// has to configure something; the builder reports `Unknown` as it is).
    pub fn or_release_default(self, release: &Release) -> NetworkStack {
        match (self, release) {
            (NetworkStack::Unknown, Release::Bullseye) => NetworkStack::Dhcpcd,
            (NetworkStack::Unknown, Release::Bookworm | Release::Trixie) => {
                NetworkStack::NetworkManager
            }
            (NetworkStack::Unknown, Release::Other(_)) => NetworkStack::Networkd,
            (known, _) => known,
        }
    }
}

/// Read-only access to a root file system, for the rules below. Paths are absolute within
/// the root (`/etc/fstab`). A path that does not exist is `Ok(false)` / an empty list, never an
/// error; errors are for a root that cannot be read.
pub trait RootView {
    /// Why the root could not be read.
    type Error;
    /// Whether `path` exists (a view may follow symlinks inside the root; an enabled unit's
    /// link and its target both exist, so that makes no difference to the rules).
    fn exists(&self, path: &str) -> Result<bool, Self::Error>;
    /// Whether `path` is a directory.
    fn is_dir(&self, path: &str) -> Result<bool, Self::Error>;
    /// The names in directory `path`; empty when it does not exist.
    fn list(&self, path: &str) -> Result<Vec<String>, Self::Error>;
}

/// The network stack in charge of a root, in order of evidence:
/// 1. a stack's service enabled in any `/etc/systemd/system/*.wants` (NetworkManager, then
///    dhcpcd, then systemd-networkd);
/// 2. a stack's program installed (NetworkManager, then dhcpcd);
/// 3. a stack's configuration present (`NetworkManager.conf`, `dhcpcd.conf`, `.network` files);
/// 4. else [`NetworkStack::Unknown`].
pub fn network_stack<V: RootView>(root: &V) -> Result<NetworkStack, V::Error> {
    const UNITS: [(NetworkStack, &str); 3] = [
        (NetworkStack::NetworkManager, "NetworkManager.service"),
        (NetworkStack::Dhcpcd, "dhcpcd.service"),
        (NetworkStack::Networkd, "systemd-networkd.service"),
    ];
    let mut wants: Vec<String> = root
        .list("/etc/systemd/system")?
        .into_iter()
        .filter(|d| d.ends_with(".wants"))
        .collect();
    wants.sort();
    for (stack, unit) in UNITS {
        for w in &wants {
            if root.exists(&format!("/etc/systemd/system/{w}/{unit}"))? {
                return Ok(stack);
            }
        }
    }
    let tiers: [(NetworkStack, &[&str]); 4] = [
        (
            NetworkStack::NetworkManager,
            &["/usr/sbin/NetworkManager", "/sbin/NetworkManager"],
        ),
        (NetworkStack::Dhcpcd, &["/usr/sbin/dhcpcd", "/sbin/dhcpcd"]),
        (
            NetworkStack::NetworkManager,
            &["/etc/NetworkManager/NetworkManager.conf"],
        ),
        (NetworkStack::Dhcpcd, &["/etc/dhcpcd.conf"]),
    ];
    for (stack, paths) in tiers {
        for p in paths {
            if root.exists(p)? {
                return Ok(stack);
            }
        }
    }
    if root
        .list("/etc/systemd/network")?
        .iter()
        .any(|n| n.ends_with(".network"))
    {
        return Ok(NetworkStack::Networkd);
    }
    Ok(NetworkStack::Unknown)
}

/// Whether cloud-init is installed: its program, or its configuration directory.
pub fn cloud_init<V: RootView>(root: &V) -> Result<bool, V::Error> {
    Ok(root.exists("/usr/bin/cloud-init")? || root.is_dir("/etc/cloud/cloud.cfg.d")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::convert::Infallible;

    /// A root as a set of paths (directories are the prefixes of the paths).
    struct Paths(BTreeSet<String>);

    impl Paths {
        fn new(paths: &[&str]) -> Paths {
            Paths(paths.iter().map(|p| p.to_string()).collect())
        }
    }

    impl RootView for Paths {
        type Error = Infallible;
        fn exists(&self, path: &str) -> Result<bool, Infallible> {
            Ok(self.0.contains(path) || self.is_dir(path)?)
        }
        fn is_dir(&self, path: &str) -> Result<bool, Infallible> {
            let dir = format!("{path}/");
            Ok(self.0.iter().any(|p| p.starts_with(&dir)))
        }
        fn list(&self, path: &str) -> Result<Vec<String>, Infallible> {
            let dir = format!("{path}/");
            let names: BTreeSet<String> = self
                .0
                .iter()
                .filter_map(|p| p.strip_prefix(&dir))
                .map(|rest| rest.split('/').next().unwrap_or("").to_owned())
                .collect();
            Ok(names.into_iter().collect())
        }
    }

    fn stack(paths: &[&str]) -> NetworkStack {
        network_stack(&Paths::new(paths)).unwrap()
    }

    #[test]
    fn os_release_takes_the_codename_or_the_word_in_version() {
        let r = parse_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nID=debian\nVERSION_ID=\"13\"\n\
             VERSION_CODENAME=trixie\n",
        );
        assert_eq!(r.release(), Release::Trixie);
        assert_eq!(r.pretty_name, "Debian GNU/Linux 13 (trixie)");
        let r = parse_os_release("ID=raspbian\nVERSION=\"11 (Bullseye)\"\n");
        assert_eq!(r.release(), Release::Bullseye);
        assert_eq!(r.default_boot_mount(), "/boot");
        // The last of a key given twice, as `. /etc/os-release` would have it.
        let r = parse_os_release("VERSION_CODENAME=bookworm\nVERSION_CODENAME='trixie'\n");
        assert_eq!(r.release(), Release::Trixie);
        assert_eq!(r.default_boot_mount(), "/boot/firmware");
        assert_eq!(
            parse_os_release("# nothing\n").release(),
            Release::Other(String::new())
        );
    }

    #[test]
    fn fstab_boot_mount_prefers_boot_and_decodes_escapes() {
        let t = "proc /proc proc defaults 0 0\n\
                 PARTUUID=1-01 /boot/firmware vfat defaults 0 2\n\
                 PARTUUID=1-02 / ext4 defaults,noatime 0 1\n";
        assert_eq!(boot_mount_from_fstab(t).as_deref(), Some("/boot/firmware"));
        let t = "/dev/sda1 /mnt/usb vfat defaults 0 0\n/dev/mmcblk0p1 /boot msdos defaults 0 0\n";
        assert_eq!(boot_mount_from_fstab(t).as_deref(), Some("/boot"));
        // Not `/bootstrap`, which only starts with the same letters; the first FAT line then.
        let t = "/dev/sdb1 /my\\040card vfat defaults 0 0\n/dev/sdc1 /bootstrap vfat x 0 0\n";
        assert_eq!(boot_mount_from_fstab(t).as_deref(), Some("/my card"));
        assert_eq!(boot_mount_from_fstab("# /boot vfat\n"), None);
    }

    #[test]
    fn network_stack_goes_by_enabled_unit_then_program_then_config() {
        // Bookworm and Trixie: NetworkManager enabled (dhcpcd's config may linger).
        assert_eq!(
            stack(&[
                "/etc/systemd/system/multi-user.target.wants/NetworkManager.service",
                "/etc/dhcpcd.conf",
                "/usr/sbin/dhcpcd",
            ]),
            NetworkStack::NetworkManager
        );
        // Bullseye: dhcpcd enabled, NetworkManager's config installed but not enabled.
        assert_eq!(
            stack(&[
                "/etc/systemd/system/multi-user.target.wants/dhcpcd.service",
                "/etc/NetworkManager/NetworkManager.conf",
            ]),
            NetworkStack::Dhcpcd
        );
        // Enabled through another target's wants, e.g. network-online.
        assert_eq!(
            stack(&["/etc/systemd/system/network-online.target.wants/systemd-networkd.service"]),
            NetworkStack::Networkd
        );
        assert_eq!(
            stack(&["/usr/sbin/NetworkManager"]),
            NetworkStack::NetworkManager
        );
        assert_eq!(stack(&["/etc/dhcpcd.conf"]), NetworkStack::Dhcpcd);
        assert_eq!(
            stack(&["/etc/systemd/network/10-eth.network"]),
            NetworkStack::Networkd
        );
        assert_eq!(stack(&["/etc/hostname"]), NetworkStack::Unknown);
    }

    #[test]
    fn an_unknown_stack_falls_back_to_what_the_release_ships() {
        let u = NetworkStack::Unknown;
        assert_eq!(
            u.or_release_default(&Release::Bullseye),
            NetworkStack::Dhcpcd
        );
        assert_eq!(
            u.or_release_default(&Release::Trixie),
            NetworkStack::NetworkManager
        );
        assert_eq!(
            u.or_release_default(&Release::Other("sid".into())),
            NetworkStack::Networkd
        );
        assert_eq!(
            NetworkStack::Dhcpcd.or_release_default(&Release::Trixie),
            NetworkStack::Dhcpcd
        );
    }

    #[test]
    fn cloud_init_by_program_or_config_directory() {
        assert!(cloud_init(&Paths::new(&["/usr/bin/cloud-init"])).unwrap());
        assert!(cloud_init(&Paths::new(&["/etc/cloud/cloud.cfg.d/05_logging.cfg"])).unwrap());
        assert!(!cloud_init(&Paths::new(&["/etc/cloud/templates"])).unwrap());
    }

    #[test]
    fn os_release_quotes_and_fallbacks() {
        let r = parse_os_release(
            "# comment\nPRETTY_NAME=\"Raspbian GNU/Linux 11 (bullseye)\"\nID=raspbian\n\
             VERSION=\"11 (Bullseye)\"\nbroken line\nNAME='a \"b\"'\nVERSION_ID=\"1\\\"1\"\n",
        );
        assert_eq!(r.id, "raspbian");
        assert_eq!(r.pretty_name, "Raspbian GNU/Linux 11 (bullseye)");
        assert_eq!(r.version_codename, "bullseye");
        assert_eq!(r.version_id, "1\"1");
        assert_eq!(parse_os_release(""), OsRelease::default());
    }

    #[test]
    fn fstab_boot_mount() {
        let t = "proc /proc proc defaults 0 0\n# PARTUUID=x /boot vfat\n\
                 PARTUUID=a-01  /boot/firmware  vfat    defaults          0       2\n";
        assert_eq!(boot_mount_from_fstab(t).as_deref(), Some("/boot/firmware"));
        assert_eq!(
            boot_mount_from_fstab("/dev/sda1 /mnt\\040x vfat\n").as_deref(),
            Some("/mnt x")
        );
        assert_eq!(
            boot_mount_from_fstab("a /mnt vfat\nb /boot vfat\n").as_deref(),
            Some("/boot")
        );
        assert_eq!(
            boot_mount_from_fstab("PARTUUID=a-02 / ext4 defaults 0 1\n"),
            None
        );
        assert_eq!(
            boot_mount_from_fstab("x /b vfat \\1"),
            Some("/b".to_owned())
        );
    }
}
