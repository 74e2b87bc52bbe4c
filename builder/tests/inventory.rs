//! `piforge inventory` against real `piforge-node` agents (issue #7):
//!
//! - on loopback with `--node`: the INI and `--list` JSON are byte-identical to what
//!   `piforge-node inventory` prints on the node, `--script` writes an executable that real
//!   `ansible-inventory` (ansible-core) reads, and a dead node gives a clear error;
//! - by mDNS inside two network namespaces made by the test (a veth pair; no traffic leaves
//!   them): agents of clusters `lab` and `prod` on one side, `piforge inventory` on the other
//!   finds `lab` by `--cluster`, and refuses to guess between two clusters. Needs root and
//!   iproute2; skipped with a message otherwise (like node/tests/mdns_netns.rs).
//!
//! - `piforge status` (issue #20) with agents on loopback: cards of a batch joined or not, the
//!   first-boot report and host keys they serve, an agent with another cluster key shown as
//!   unauthenticated, `--watch` exit codes, and the addresses recorded in `known_hosts`;
//! - issue #17 finding 5: `piforge inventory` refuses an agent that cannot prove membership.
//!
//! The builder does not depend on the node crate, so the test gets the `piforge-node` binary
//! from `PIFORGE_NODE_BIN` or by running `cargo build -p piforge-node` into this target dir.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use piforge_test_support::{Netns, Proc, ip, wait_for};
use serde_json::Value;

const PIFORGE: &str = env!("CARGO_BIN_EXE_piforge");
const KEY: &str = "4444444444444444444444444444444444444444444444444444444444444444";

/// The piforge-node binary of this workspace, built if needed.
fn node_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PIFORGE_NODE_BIN") {
        return PathBuf::from(p);
    }
    // <target>/<profile>/deps/inventory-<hash> → <target>/<profile>/piforge-node
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["build", "-q", "-p", "piforge-node", "--bin", "piforge-node"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cargo.arg("--release");
    }
    let st = cargo
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(st.success(), "cargo build -p piforge-node failed");
    let bin = profile_dir.join("piforge-node");
    assert!(bin.exists(), "no {} after cargo build", bin.display());
    bin
}

/// node.toml of a test agent (short timings).
fn node_toml(dir: &Path, name: &str, cluster: &str, role: &str, mdns: bool) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "schema-version = 1\nname = \"{name}\"\nstate-dir = \"{}\"\n\
             [cluster]\nname = \"{cluster}\"\nkey = \"{KEY}\"\nmdns = {mdns}\n\
             [tags]\nrole = \"{role}\"\n\
             [detector]\nprobe-period-ms = 300\nprobe-rtt-ms = 100\n",
            dir.join(format!("state-{name}")).display()
        ),
    )
    .unwrap();
    p
}

fn spawn(mut cmd: Command, log: &Path) -> Proc {
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    Proc(cmd.spawn().unwrap())
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn ok_stdout(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn ansible_inventory(home: &Path, source: &str, wrap: &[&str]) -> Value {
    ansible_inventory_env(home, source, wrap, &[])
}

fn ansible_inventory_env(
    home: &Path,
    source: &str,
    wrap: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> Value {
    let mut cmd = Command::new(wrap.first().copied().unwrap_or("ansible-inventory"));
    if !wrap.is_empty() {
        cmd.args(&wrap[1..]).arg("ansible-inventory");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = run(cmd
        .args(["-i", source, "--list"])
        .env("HOME", home)
        .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
        .env("ANSIBLE_INVENTORY_ENABLED", "script")
        .env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "true"));
    let out = ok_stdout(o, "ansible-inventory (apt-get install ansible-core)");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn inventory_from_a_node_on_loopback_matches_the_node_and_feeds_ansible() {
    let node = node_bin();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let udp = |ip: &str| UdpSocket::bind((ip, 0)).unwrap().local_addr().unwrap();
    let http = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let lb_gossip = udp("127.0.0.1");
    let mut agents = Vec::new();
    for (name, ip, role) in [
        ("lb", "127.0.0.1", "lb"),
        ("web-1", "127.0.0.2", "web"),
        ("web-2", "127.0.0.3", "web"),
    ] {
        let mut cmd = Command::new(&node);
        cmd.arg("agent")
            .arg("--config")
            .arg(node_toml(dir, name, "lab", role, false));
        if name == "lb" {
            cmd.args(["--bind", &lb_gossip.to_string(), "--http", &http]);
        } else {
            let free = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            cmd.args(["--bind", &udp(ip).to_string(), "--http", &free.to_string()])
                .args(["--seed", &lb_gossip.to_string()]);
        }
        agents.push(spawn(cmd, &dir.join(format!("{name}.log"))));
    }
    let key_file = dir.join("lab.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let key_arg = key_file.to_str().unwrap().to_string();
    let piforge = |args: &[&str]| {
        let mut c = Command::new(PIFORGE);
        c.args(["inventory", "--node", &http, "--key-file", &key_arg])
            .args(args)
            .env("PIFORGE_CACHE_DIR", dir.join("cache"));
        run(&mut c)
    };
    // A bound, not a measurement: formation takes ~2 s here, but once (2026-12-06) over 20 s
    // while qemu-user and cargo ran beside the tests; CI builds its base image alongside.
    wait_for("three alive members", 60, || {
        let o = piforge(&["--list"]);
        o.status.success()
            && serde_json::from_slice::<Value>(&o.stdout)
                .is_ok_and(|v| v["all"]["hosts"].as_array().is_some_and(|h| h.len() == 3))
    });

    // The same bytes as the node prints.
    let on_node = |args: &[&str]| {
        let o = run(Command::new(&node)
            .args(["inventory", "--http", &http])
            .args(args));
        ok_stdout(o, "piforge-node inventory")
    };
    let list = ok_stdout(piforge(&["--list"]), "piforge inventory --list");
    assert_eq!(list, on_node(&["--list"]));
    let ini = ok_stdout(piforge(&[]), "piforge inventory");
    assert_eq!(ini, on_node(&["--ansible"]));
    assert!(ini.contains("web-2 ansible_host=127.0.0.3\n"), "{ini}");
    assert!(ini.contains("\n[role_web]\nweb-1\nweb-2\n"), "{ini}");
    assert_eq!(
        ok_stdout(piforge(&["--host", "web-1"]), "--host").trim(),
        "{}"
    );

    // --script: a path in the cache, executable, that ansible-inventory reads.
    let path = ok_stdout(piforge(&["--script"]), "piforge inventory --script");
    let path = path.trim();
    assert!(
        Path::new(path).starts_with(dir.join("cache/inventory")),
        "{path}"
    );
    let inv = ansible_inventory(dir, path, &[]);
    assert_eq!(
        inv["role_web"]["hosts"],
        serde_json::json!(["web-1", "web-2"]),
        "{inv:#}"
    );
    assert_eq!(
        inv["role_lb"]["hosts"],
        serde_json::json!(["lb"]),
        "{inv:#}"
    );
    assert_eq!(
        inv["_meta"]["hostvars"]["web-1"]["ansible_host"],
        "127.0.0.2"
    );

    // A node that does not answer: a clear error, non-zero exit, nothing on stdout.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let o = run(Command::new(PIFORGE).args([
        "inventory",
        "--node",
        &dead,
        "--timeout",
        "2",
        "--key-file",
        &key_arg,
    ]));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("http://{dead}/api/members")), "{err}");
    assert!(o.stdout.is_empty());

    // Issue #17 finding 5: an agent that answers the same API but holds another key (a
    // stranger on the LAN) is named unauthenticated and its list is not used.
    let stranger_http = free_tcp();
    let mut cmd = Command::new(&node);
    cmd.arg("agent")
        .arg("--config")
        .arg(node_toml_keyed(
            dir, "intruder", "lab", "web", false, OTHER_KEY,
        ))
        .args([
            "--bind",
            &udp("127.0.0.4").to_string(),
            "--http",
            &stranger_http,
        ]);
    agents.push(spawn(cmd, &dir.join("intruder.log")));
    wait_for("the intruder's HTTP API", 20, || {
        std::net::TcpStream::connect(&stranger_http).is_ok()
    });
    let o = run(Command::new(PIFORGE).args([
        "inventory",
        "--node",
        &stranger_http,
        "--key-file",
        &key_arg,
    ]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("unauthenticated"), "{err}");
    assert!(
        o.stdout.is_empty(),
        "nothing from an unauthenticated node is printed"
    );
    drop(agents);
}

const OTHER_KEY: &str = "5555555555555555555555555555555555555555555555555555555555555555";

fn free_tcp() -> String {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

/// Like [`node_toml`], with another cluster key.
fn node_toml_keyed(
    dir: &Path,
    name: &str,
    cluster: &str,
    role: &str,
    mdns: bool,
    key: &str,
) -> PathBuf {
    let p = node_toml(dir, name, cluster, role, mdns);
    let t = std::fs::read_to_string(&p).unwrap().replace(KEY, key);
    std::fs::write(&p, t).unwrap();
    p
}

/// A root with what firstboot leaves for the agent to report: an SSH host public key and the
/// first-boot report.
fn node_root(dir: &Path, name: &str, host_key: &str) -> PathBuf {
    let root = dir.join(format!("root-{name}"));
    std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
    std::fs::create_dir_all(root.join("var/lib/piforge")).unwrap();
    std::fs::write(root.join("etc/ssh/ssh_host_ed25519_key.pub"), host_key).unwrap();
    std::fs::write(
        root.join("var/lib/piforge/firstboot-report.json"),
        format!(
            r#"{{"outcome":"configured","hostname":"{name}","total_ms":2345,
                "phases":[{{"name":"plan","ms":3}},{{"name":"identity","ms":40}}]}}"#
        ),
    )
    .unwrap();
    root
}

fn ed25519_pub(comment: &str) -> String {
    let k = piforge_config::host_keys::generate_from_os("ed25519", comment).unwrap();
    k.public.trim().to_string()
}

#[test]
fn status_shows_each_card_and_who_cannot_prove_membership() {
    use piforge::build::batch::{Batch, BatchCard, save_card};
    let node = node_bin();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let key_file = dir.join("lab.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let udp = |ip: &str| UdpSocket::bind((ip, 0)).unwrap().local_addr().unwrap();

    // The batch: lab-01 and lab-02 flashed and running (lab-02 serves a key the batch did not
    // make, as a re-made card would), lab-03 flashed but never up, lab-04 not flashed.
    let keys: Vec<String> = (1..=4)
        .map(|i| ed25519_pub(&format!("root@lab-0{i}")))
        .collect();
    let https: Vec<String> = (0..4).map(|_| free_tcp()).collect();
    let mut cards = vec![];
    for i in 1..=4u32 {
        let host = format!("lab-0{i}");
        let mut card =
            piforge_config::Card::new("lab", piforge_config::ClusterKey::from_hex(KEY).unwrap());
        card.identity.hostname = Some(host.clone());
        card.node.http_port = https[i as usize - 1]
            .rsplit_once(':')
            .unwrap()
            .1
            .parse()
            .unwrap();
        save_card(&out, &card).unwrap();
        cards.push(BatchCard {
            index: i,
            hostname: host,
            role: None,
            flashed: i <= 3,
            host_keys: vec![keys[i as usize - 1].clone()],
            address: None,
        });
    }
    let batch = Batch {
        schema_version: piforge::build::batch::BATCH_SCHEMA,
        id: "test".into(),
        image: "lab.img".into(),
        source: "test".into(),
        source_sha256: None,
        arch: piforge::arch::Arch::Arm64,
        release: "trixie".into(),
        boot_mount: "/boot/firmware".into(),
        cloud_init: false,
        cluster: "lab".into(),
        cards,
    };
    batch.save(&out).unwrap();
    batch.save_known_hosts(&out).unwrap();

    let g1 = udp("127.0.0.1");
    let mut agents = vec![];
    for (i, name, ip, key, served) in [
        (0, "lab-01", "127.0.0.1", KEY, keys[0].clone()),
        (1, "lab-02", "127.0.0.2", KEY, ed25519_pub("root@lab-02")),
        // Claims to be lab-03 with the right cluster name, but holds another key.
        (2, "lab-03", "127.0.0.3", OTHER_KEY, keys[2].clone()),
    ] {
        let mut cmd = Command::new(&node);
        cmd.arg("agent")
            .arg("--config")
            .arg(node_toml_keyed(dir, name, "lab", "web", false, key))
            .arg("--root")
            .arg(node_root(dir, name, &served))
            .args(["--http", &https[i]]);
        if i == 0 {
            cmd.args(["--bind", &g1.to_string()]);
        } else {
            cmd.args(["--bind", &udp(ip).to_string(), "--seed", &g1.to_string()]);
        }
        agents.push(spawn(cmd, &dir.join(format!("{name}.log"))));
    }
    let status = |args: &[&str]| {
        let mut c = Command::new(PIFORGE);
        c.arg("status")
            .arg("--out")
            .arg(&out)
            .arg("--key-file")
            .arg(&key_file)
            .args(["--no-mdns", "--look", "2"]);
        for h in &https[..3] {
            c.args(["--node", h]);
        }
        run(c.args(args))
    };

    // lab-03 never joins (the impostor cannot): --watch gives up with exit 1, naming it.
    let started = Instant::now();
    let o = status(&["--watch", "--timeout", "8", "--json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("did not join") && err.contains("lab-03"),
        "{err}"
    );
    assert!(!err.contains("lab-04"), "lab-04 was never flashed: {err}");
    eprintln!("status --watch gave up after {:?}", started.elapsed());
    let last = String::from_utf8(o.stdout).unwrap();
    let report: Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
    let row = |h: &str| {
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["hostname"] == h)
            .cloned()
            .unwrap_or_else(|| panic!("no row {h}: {report:#}"))
    };
    assert_eq!(row("lab-01")["state"], "joined", "{report:#}");
    assert_eq!(row("lab-01")["address"], "127.0.0.1");
    assert_eq!(row("lab-01")["firstboot"], "configured");
    assert_eq!(row("lab-01")["firstboot_secs"], 2.3);
    assert_eq!(row("lab-01")["host_key"], "match");
    assert_eq!(row("lab-01")["gossip"], "alive");
    assert_eq!(row("lab-02")["state"], "joined");
    assert_eq!(row("lab-02")["host_key"], "changed");
    assert_eq!(
        row("lab-03")["state"],
        "flashed",
        "the impostor proves nothing"
    );
    assert_eq!(row("lab-04")["state"], "not-flashed");
    let strangers = report["unauthenticated"].as_array().unwrap();
    assert!(
        strangers
            .iter()
            .any(|s| s["endpoint"] == https[2].as_str() && s["claimed"] == "lab-03"),
        "{report:#}"
    );

    // The text table: one line per card, the impostor named unauthenticated.
    let o = status(&[]);
    let text = ok_stdout(o, "piforge status");
    let line = |h: &str| text.lines().find(|l| l.contains(h)).unwrap().to_string();
    assert!(
        line("lab-01").contains("joined") && line("lab-01").contains("configured in 2.3 s"),
        "{text}"
    );
    assert!(line("lab-02").contains("CHANGED"), "{text}");
    assert!(line("lab-04").contains("not flashed"), "{text}");
    assert!(
        text.contains(&format!(
            "unauthenticated  {} (claims to be lab-03)",
            https[2]
        )),
        "{text}"
    );

    // Seen addresses went into batch.toml and known_hosts, which ssh-keygen reads.
    let kh = ok_stdout(
        run(Command::new(PIFORGE)
            .arg("known-hosts")
            .arg("--out")
            .arg(&out)),
        "piforge known-hosts",
    );
    assert_eq!(
        kh,
        std::fs::read_to_string(out.join("known_hosts")).unwrap()
    );
    let k1 = keys[0].split_whitespace().nth(1).unwrap();
    assert!(
        kh.contains(&format!("lab-01,lab-01.local,127.0.0.1 ssh-ed25519 {k1}\n")),
        "{kh}"
    );
    assert!(kh.contains("lab-04,lab-04.local ssh-ed25519 "), "{kh}");
    for host in ["lab-01.local", "127.0.0.1"] {
        let o = run(Command::new("ssh-keygen")
            .args(["-F", host, "-f"])
            .arg(out.join("known_hosts")));
        let found = ok_stdout(o, "ssh-keygen -F (apt-get install openssh-client)");
        assert!(found.contains(k1), "{host}: {found}");
    }

    // lab-03 taken out of the batch's flashed cards: --watch ends with 0 once all joined.
    Batch::update(&out, |b| b.cards[2].flashed = false).unwrap();
    let o = status(&["--watch", "--timeout", "30"]);
    let t = ok_stdout(o, "piforge status --watch");
    assert!(t.contains("joined"), "{t}");
    drop(agents);
}

#[test]
fn inventory_finds_the_cluster_by_mdns_in_a_private_netns() {
    let tag = std::process::id();
    let (a, b) = (format!("pfia{tag}"), format!("pfib{tag}"));
    if !ip(&["netns", "add", &a]) {
        eprintln!(
            "SKIPPED mdns inventory test: cannot create a network namespace (needs root and \
             iproute2)"
        );
        return;
    }
    let _guard = Netns(vec![a.clone(), b.clone()]);
    let (va, vb) = (format!("via{tag}"), format!("vib{tag}"));
    let setup = ip(&["netns", "add", &b])
        && ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])
        && ip(&["link", "set", &va, "netns", &a])
        && ip(&["link", "set", &vb, "netns", &b])
        && ip(&["-n", &a, "addr", "add", "10.232.0.1/24", "dev", &va])
        && ip(&["-n", &b, "addr", "add", "10.232.0.2/24", "dev", &vb])
        && ip(&["-n", &a, "link", "set", &va, "up"])
        && ip(&["-n", &b, "link", "set", &vb, "up"])
        && ip(&["-n", &a, "link", "set", "lo", "up"])
        && ip(&["-n", &b, "link", "set", "lo", "up"]);
    assert!(setup, "setting up the veth pair failed");

    let node = node_bin();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let agent = |name: &str, cluster: &str, gossip: &str, http: &str| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &a])
            .arg(&node)
            .arg("agent")
            .arg("--config")
            .arg(node_toml(dir, name, cluster, "web", true))
            .args(["--bind", gossip, "--http", http]);
        spawn(c, &dir.join(format!("{name}.log")))
    };
    // Non-default HTTP ports: the TXT record must carry them.
    // The laptop's key store holds both clusters' keys (answers are checked against them).
    let config = dir.join("config");
    std::fs::create_dir_all(config.join("clusters")).unwrap();
    for c in ["lab", "prod"] {
        let p = config.join(format!("clusters/{c}.key"));
        std::fs::write(&p, format!("{KEY}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let _alpha = agent("alpha", "lab", "10.232.0.1:7946", "0.0.0.0:18080");
    let _gamma = agent("gamma", "prod", "10.232.0.1:7947", "0.0.0.0:18081");
    let inventory = |args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &b, PIFORGE, "inventory", "--timeout", "8"])
            .args(args)
            .env("PIFORGE_CACHE_DIR", dir.join("cache"))
            .env("PIFORGE_CONFIG_DIR", &config);
        run(&mut c)
    };
    let start = Instant::now();
    let o = inventory(&["--cluster", "lab", "--list"]);
    let list: Value = serde_json::from_str(&ok_stdout(o, "inventory --cluster lab")).unwrap();
    eprintln!(
        "found cluster lab by mDNS and listed it in {:?}",
        start.elapsed()
    );
    assert_eq!(
        list["all"]["hosts"],
        serde_json::json!(["alpha"]),
        "{list:#}"
    );
    assert_eq!(
        list["_meta"]["hostvars"]["alpha"]["ansible_host"],
        "10.232.0.1"
    );
    let o = inventory(&["--cluster", "prod", "--list"]);
    let list: Value = serde_json::from_str(&ok_stdout(o, "inventory --cluster prod")).unwrap();
    assert_eq!(
        list["all"]["hosts"],
        serde_json::json!(["gamma"]),
        "{list:#}"
    );

    let o = inventory(&["--list"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("lab, prod") && err.contains("--cluster"),
        "{err}"
    );
    let o = inventory(&["--cluster", "dev"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("\"dev\""), "{err}");

    // ansible -i "$(piforge inventory --script)" from the "laptop" namespace.
    let path = ok_stdout(inventory(&["--cluster", "lab", "--script"]), "--script");
    // The script runs piforge, which finds the key store through PIFORGE_CONFIG_DIR.
    let inv = ansible_inventory_env(
        dir,
        path.trim(),
        &["ip", "netns", "exec", &b],
        &[("PIFORGE_CONFIG_DIR", config.as_os_str())],
    );
    assert_eq!(
        inv["role_web"]["hosts"],
        serde_json::json!(["alpha"]),
        "{inv:#}"
    );
}
