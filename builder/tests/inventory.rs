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
//! The builder does not depend on the node crate, so the test gets the `piforge-node` binary
//! from `PIFORGE_NODE_BIN` or by running `cargo build -p piforge-node` into this target dir.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
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
    let mut cmd = Command::new(wrap.first().copied().unwrap_or("ansible-inventory"));
    if !wrap.is_empty() {
        cmd.args(&wrap[1..]).arg("ansible-inventory");
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
    let piforge = |args: &[&str]| {
        let mut c = Command::new(PIFORGE);
        c.args(["inventory", "--node", &http])
            .args(args)
            .env("PIFORGE_CACHE_DIR", dir.join("cache"));
        run(&mut c)
    };
    wait_for("three alive members", 20, || {
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
    let o = run(Command::new(PIFORGE).args(["inventory", "--node", &dead, "--timeout", "2"]));
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("http://{dead}/api/members")), "{err}");
    assert!(o.stdout.is_empty());
    drop(agents);
}

struct Netns(Vec<String>);
impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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
    let _alpha = agent("alpha", "lab", "10.232.0.1:7946", "0.0.0.0:18080");
    let _gamma = agent("gamma", "prod", "10.232.0.1:7947", "0.0.0.0:18081");
    let inventory = |args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &b, PIFORGE, "inventory", "--timeout", "8"])
            .args(args)
            .env("PIFORGE_CACHE_DIR", dir.join("cache"));
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
    let inv = ansible_inventory(dir, path.trim(), &["ip", "netns", "exec", &b]);
    assert_eq!(
        inv["role_web"]["hosts"],
        serde_json::json!(["alpha"]),
        "{inv:#}"
    );
}
