//! Fake Raspberry Pi OS roots for bullseye, bookworm and trixie, built from the real fixture
//! files plus what each firstboot step needs, and helpers to snapshot and compare them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use piforge_config::card::{DbSecrets, StaticIp, Wifi};
use piforge_config::{Card, ClusterKey, Secret, cmdline};
use piforge_firstboot::action::Owner;
use piforge_firstboot::apply::RecordingSystem;
use piforge_firstboot::{FirstbootRequest, ReidentifyRequest, TestHooks};

pub const FIX: &str = piforge_test_support::RASPIOS_FIXTURES;
pub const KEY: [u8; 32] = [0x5a; 32];
pub const PSK: &str = "correct horse battery";
pub const HASH: &str = "$y$j9T$F5Jx5fExrKuJdqUu0qh8o/$SeCrEtHaShVaLuE0123456789abcdefghijkl";
pub const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx6Wbd1dwSDB0zJ9cFqgKTXRIGbPzVwgsuS4X1Gnba8 me@laptop";
pub const DISKID: &str = "0a1b2c3d";
/// The db overlay's passwords on the full card.
pub const DB_PASSWORDS: [&str; 3] = [
    "SuPeRuSeRpAsSwOrD0123456789abcdef",
    "rEpLiCaTiOnPaSsWoRd0123456789abcd",
    "ReStApIpAsSwOrD-0123456789_abcdef",
];

/// One release's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rel {
    Bullseye,
    Bookworm,
    Trixie,
}

impl Rel {
    pub fn name(self) -> &'static str {
        match self {
            Rel::Bullseye => "bullseye",
            Rel::Bookworm => "bookworm",
            Rel::Trixie => "trixie",
        }
    }
    pub fn mount(self) -> &'static str {
        match self {
            Rel::Bullseye => "/boot",
            _ => "/boot/firmware",
        }
    }
    pub const ALL: [Rel; 3] = [Rel::Bullseye, Rel::Bookworm, Rel::Trixie];
}

pub struct Fake {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub boot: PathBuf,
    pub rel: Rel,
    /// cmdline.txt as the image had it before the builder added our arguments.
    pub stock_cmdline: String,
}

/// A temporary directory, on tmpfs when there is one: firstboot fsyncs every file it writes,
/// which on a disk-backed /tmp makes the power-cut test (~150 runs) crawl.
pub fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(t) = tempfile::Builder::new()
            .prefix("piforge-fb-")
            .tempdir_in(shm)
    {
        return t;
    }
    tempfile::tempdir().unwrap()
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            fs::copy(e.path(), &dst).unwrap();
        }
    }
}

fn put(p: &Path, text: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

/// SSH host keys as `piforge build` puts them on a card (made once per test process: RSA
/// prime search takes a second or more).
pub fn card_host_keys() -> piforge_config::host_keys::HostKeys {
    static KEYS: std::sync::OnceLock<piforge_config::host_keys::HostKeys> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        piforge_config::host_keys::generate_card_keys_from_os("root@lab-01").unwrap()
    })
    .clone()
}

/// A card as `piforge build --cards N` makes it: a fixed hostname and its SSH host keys.
pub fn named_card() -> Card {
    let mut c = full_card();
    c.identity.hostname = Some("lab-01".into());
    c.host_keys = Some(card_host_keys());
    c
}

/// The card of a cloneable image: no fixed hostname, no host keys (the Pi makes them).
pub fn full_card() -> Card {
    let mut c = Card::new("lab", ClusterKey::from_bytes(KEY));
    c.cluster.seeds = vec!["10.0.0.2:7946".into()];
    c.access.user = "alice".into();
    c.access.password_hash = Some(Secret::new(HASH));
    c.access.ssh_authorized_keys = vec![SSH_KEY.into()];
    c.network.wifi = Some(Wifi {
        ssid: "lab-net".into(),
        psk: Secret::new(PSK),
        country: "DE".into(),
        hidden: false,
    });
    c.network.link_local_fallback = true;
    c.locale.timezone = Some("Europe/Berlin".into());
    c.locale.keymap = Some("de".into());
    c.locale.locale = Some("de_DE.UTF-8".into());
    c.overlays = vec!["web".into()];
    c.node.tags.insert("rack".into(), "a".into());
    c.db = Some(DbSecrets {
        superuser_password: Secret::new(DB_PASSWORDS[0]),
        replication_password: Secret::new(DB_PASSWORDS[1]),
        rest_api_password: Secret::new(DB_PASSWORDS[2]),
    });
    c.node.mqtt = Some(piforge_config::node::MqttSettings {
        password: Some(Secret::new(MQTT_PASSWORD)),
        ..piforge_config::node::MqttSettings::plain("mqtts://alerts@mq.example.com:8883")
    });
    c
}

/// The broker password of [`full_card`] (`piforge build --mqtt-password-file`).
pub const MQTT_PASSWORD: &str = "mq-Pa55-on-the-card";

pub fn static_card() -> Card {
    let mut c = full_card();
    c.network.static_ip = Some(StaticIp {
        interface: "eth0".into(),
        address: "192.168.1.50/24".into(),
        gateway: Some("192.168.1.1".into()),
        dns: vec!["1.1.1.1".into()],
    });
    c
}

impl Fake {
    /// A fresh root of `rel` with a uid-1000 `pi` user (or none) and hardware `serial`.
    pub fn new(rel: Rel, with_pi: bool, serial: &str) -> Fake {
        let tmp = tempdir();
        let root = tmp.path().join("root");
        copy_tree(&Path::new(FIX).join(rel.name()).join("rootfs"), &root);
        let boot = root.join(rel.mount().trim_start_matches('/'));
        copy_tree(&Path::new(FIX).join(rel.name()).join("bootfs"), &boot);
        let fstab = root.join("etc/fstab");
        let t = fs::read_to_string(&fstab)
            .unwrap()
            .replace("DISKID", DISKID);
        fs::write(fstab, t).unwrap();
        let stock_cmdline = fs::read_to_string(boot.join("cmdline.txt"))
            .unwrap()
            .replace("DISKID", DISKID);
        fs::write(
            boot.join("cmdline.txt"),
            cmdline::add(&stock_cmdline, rel.mount()),
        )
        .unwrap();
        // Accounts as Raspberry Pi OS ships them.
        let (pw, sh, gr, gs) = if with_pi {
            (
                "pi:x:1000:1000:,,,:/home/pi:/bin/bash\n",
                "pi:*:19500:0:99999:7:::\n",
                "pi:x:1000:\n",
                "pi:!::\n",
            )
        } else {
            ("", "", "", "")
        };
        let sudo = if with_pi { "pi" } else { "" };
        put(
            &root.join("etc/passwd"),
            &format!(
                "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                 systemd-network:x:998:998:systemd Network Management:/:/usr/sbin/nologin\n{pw}"
            ),
        );
        put(
            &root.join("etc/shadow"),
            &format!("root:*:19500:0:99999:7:::\ndaemon:*:19500:0:99999:7:::\n{sh}"),
        );
        put(
            &root.join("etc/group"),
            &format!(
                "root:x:0:\nadm:x:4:{sudo}\nsudo:x:27:{sudo}\nvideo:x:44:{sudo}\nshadow:x:42:\n\
                 netdev:x:109:{sudo}\n{gr}"
            ),
        );
        put(
            &root.join("etc/gshadow"),
            &format!(
                "root:*::\nadm:*::{sudo}\nsudo:*::{sudo}\nvideo:*::{sudo}\nshadow:*::\nnetdev:!::{sudo}\n{gs}"
            ),
        );
        for f in ["etc/shadow", "etc/gshadow"] {
            fs::set_permissions(root.join(f), fs::Permissions::from_mode(0o640)).unwrap();
        }
        put(&root.join("etc/skel/.bashrc"), "# ~/.bashrc\n");
        put(&root.join("etc/skel/.profile"), "# ~/.profile\n");
        if with_pi {
            put(&root.join("home/pi/.bashrc"), "# ~/.bashrc\n");
            put(
                &root.join("etc/sudoers.d/010_pi-nopasswd"),
                "pi ALL=(ALL) NOPASSWD: ALL\n",
            );
        }
        put(
            &root.join("etc/locale.gen"),
            "# en_GB.UTF-8 UTF-8\n# de_DE.UTF-8 UTF-8\n",
        );
        // Network stack.
        match rel {
            Rel::Bullseye => put(
                &root.join("etc/dhcpcd.conf"),
                "# A sample configuration for dhcpcd.\nhostname\nclientid\npersistent\n\
                 option rapid_commit\nslaac private\n",
            ),
            _ => {
                fs::create_dir_all(root.join("etc/NetworkManager/system-connections")).unwrap();
                let wants = root.join("etc/systemd/system/multi-user.target.wants");
                fs::create_dir_all(&wants).unwrap();
                std::os::unix::fs::symlink(
                    "/lib/systemd/system/NetworkManager.service",
                    wants.join("NetworkManager.service"),
                )
                .unwrap();
            }
        }
        if rel == Rel::Bookworm {
            put(
                &root.join("lib/systemd/system/userconfig.service"),
                "[Unit]\n",
            );
            let wants = root.join("etc/systemd/system/multi-user.target.wants");
            fs::create_dir_all(&wants).unwrap();
            std::os::unix::fs::symlink(
                "/lib/systemd/system/regenerate_ssh_host_keys.service",
                wants.join("regenerate_ssh_host_keys.service"),
            )
            .unwrap();
        }
        put(
            &root.join("var/lib/systemd/rfkill/platform-3f300000.mmcnr:wlan"),
            "1\n",
        );
        // Hardware.
        put(
            &root.join("sys/firmware/devicetree/base/serial-number"),
            &format!("{serial}\0"),
        );
        put(
            &root.join("proc/cpuinfo"),
            &format!(
                "processor\t: 0\nSerial\t\t: {serial}\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
            ),
        );
        put(
            &root.join("sys/class/net/eth0/address"),
            "dc:a6:32:01:02:03\n",
        );
        put(
            &root.join("sys/class/net/wlan0/address"),
            "dc:a6:32:01:02:04\n",
        );
        put(
            &root.join("sys/class/net/lo/address"),
            "00:00:00:00:00:00\n",
        );
        let f = Fake {
            tmp,
            root,
            boot,
            rel,
            stock_cmdline,
        };
        f.put_payload(&full_card());
        f
    }

    /// Puts the card payload on the boot partition.
    pub fn put_payload(&self, card: &Card) {
        let p = self.boot.join("piforge");
        put(&p.join("card.toml"), &card.render());
        put(&p.join("setup"), "#!fake firstboot binary\n");
        put(&p.join("node"), "#!fake node binary\n");
        let o = p.join("overlays/web");
        put(
            &o.join("overlay.toml"),
            "description = \"web server\"\npackages = [\"lighttpd\"]\nenable = [\"web.service\"]\n\
             [tags]\nrole = \"web\"\nrack = \"overlay-loses\"\n\
             [[template]]\nsource = \"backends.hbs\"\ndest = \"/etc/web/backends\"\nlive = true\n\
             command = \"systemctl reload web\"\n\
             [[template]]\nsource = \"motd.hbs\"\ndest = \"/etc/motd\"\n",
        );
        put(&o.join("files/etc/web/web.conf"), "port = 80\n");
        put(
            &o.join("files/usr/local/bin/hello"),
            "#!/bin/sh\necho hello\n",
        );
        put(
            &o.join("files/etc/systemd/system/web.service"),
            "[Service]\nExecStart=/usr/local/bin/hello\n",
        );
        put(
            &o.join("templates/backends.hbs"),
            "{{#each members}}{{name}}\n{{/each}}",
        );
        put(
            &o.join("templates/motd.hbs"),
            "{{hostname}} in {{cluster}}, role {{tags.role}}, rack {{tags.rack}}\n\
             {{#each members}}never at first boot{{/each}}",
        );
    }

    pub fn set_serial(&self, serial: &str) {
        put(
            &self.root.join("sys/firmware/devicetree/base/serial-number"),
            &format!("{serial}\0"),
        );
        put(
            &self.root.join("proc/cpuinfo"),
            &format!("Serial\t\t: {serial}\n"),
        );
    }

    pub fn request(&self, hooks: TestHooks) -> FirstbootRequest {
        FirstbootRequest {
            root: self.root.clone(),
            boot: Some(self.boot.clone()),
            hooks,
        }
    }

    pub fn reidentify_request(&self, hooks: TestHooks) -> ReidentifyRequest {
        ReidentifyRequest {
            root: self.root.clone(),
            boot: Some(self.boot.clone()),
            hooks,
        }
    }

    pub fn read(&self, p: &str) -> String {
        fs::read_to_string(self.root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    pub fn mode(&self, p: &str) -> u32 {
        fs::symlink_metadata(self.root.join(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .permissions()
            .mode()
            & 0o7777
    }

    pub fn link(&self, p: &str) -> String {
        fs::read_link(self.root.join(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .to_string_lossy()
            .into_owned()
    }

    /// A copy of the whole tree (a card copied with `dd` to another SD card).
    pub fn clone_to_new_dir(&self) -> Fake {
        let tmp = tempdir();
        let root = tmp.path().join("root");
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(&self.root)
            .arg(&root)
            .status()
            .unwrap();
        assert!(st.success());
        let boot = root.join(self.rel.mount().trim_start_matches('/'));
        Fake {
            tmp,
            root,
            boot,
            rel: self.rel,
            stock_cmdline: self.stock_cmdline.clone(),
        }
    }
}

pub fn hooks(entropy: u8) -> TestHooks {
    TestHooks {
        entropy: Some([entropy; 32]),
        step_limit: None,
        rsa_bits: Some(2048),
    }
}

/// Every path under `dir`: kind, mode, bytes or link target (and the recorded owner).
pub type Snapshot = BTreeMap<String, (char, u32, Vec<u8>, Option<Owner>)>;

pub fn snapshot(dir: &Path, sys: Option<&RecordingSystem>) -> Snapshot {
    let mut out = BTreeMap::new();
    walk(dir, dir, sys, &mut out);
    out
}

fn walk(base: &Path, dir: &Path, sys: Option<&RecordingSystem>, out: &mut Snapshot) {
    let mut entries: Vec<_> = fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
        let m = fs::symlink_metadata(&p).unwrap();
        let mode = m.permissions().mode() & 0o7777;
        let owner = sys.and_then(|s| s.owners.get(&p).copied());
        if m.file_type().is_symlink() {
            let t = fs::read_link(&p).unwrap().to_string_lossy().into_owned();
            out.insert(rel, ('l', 0, t.into_bytes(), owner));
        } else if m.is_dir() {
            out.insert(rel.clone(), ('d', mode, vec![], owner));
            walk(base, &p, sys, out);
        } else {
            out.insert(rel, ('f', mode, fs::read(&p).unwrap(), owner));
        }
    }
}

/// Differences between two snapshots, for assertion messages.
pub fn diff(a: &Snapshot, b: &Snapshot) -> Vec<String> {
    let mut d = vec![];
    for (k, v) in a {
        match b.get(k) {
            None => d.push(format!("only before: {k}")),
            Some(w) if w != v => d.push(format!(
                "changed: {k} ({} {:o} {:?}) -> ({} {:o} {:?})",
                v.0, v.1, v.3, w.0, w.1, w.3
            )),
            _ => {}
        }
    }
    for k in b.keys() {
        if !a.contains_key(k) {
            d.push(format!("only after: {k}"));
        }
    }
    d
}

/// Every file under `dir` that contains one of the secrets.
pub fn files_with_secrets(dir: &Path) -> Vec<String> {
    let secrets: Vec<Vec<u8>> = vec![
        hex::encode(KEY).into_bytes(),
        PSK.as_bytes().to_vec(),
        HASH.as_bytes().to_vec(),
        b"SeCrEtHaSh".to_vec(),
        DB_PASSWORDS[0].as_bytes().to_vec(),
        DB_PASSWORDS[1].as_bytes().to_vec(),
        DB_PASSWORDS[2].as_bytes().to_vec(),
        MQTT_PASSWORD.as_bytes().to_vec(),
    ];
    snapshot(dir, None)
        .into_iter()
        .filter(|(_, (_, _, bytes, _))| {
            secrets
                .iter()
                .any(|s| bytes.windows(s.len()).any(|w| w == s.as_slice()))
        })
        .map(|(k, _)| k)
        .collect()
}
