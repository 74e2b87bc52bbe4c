//! mDNS discovery between two network namespaces joined by a veth pair, made by the test:
//! two agents with no seeds find each other over `_piforge._udp.local.` and form a cluster;
//! an agent of another cluster on the same link is not joined.
//!
//! Needs root (namespaces, veth) and iproute2; skipped with a clear message otherwise. The
//! namespaces are private to the test (no traffic leaves them) and removed at the end.

use piforge_test_support::{Netns, Proc, ip};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_piforge-node");
const KEY: &str = "3333333333333333333333333333333333333333333333333333333333333333";

fn agent(
    dir: &std::path::Path,
    ns: &str,
    name: &str,
    cluster: &str,
    gossip: &str,
    http: &str,
) -> Proc {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "schema-version = 1\nname = \"{name}\"\nstate-dir = \"{}\"\n\
             [cluster]\nname = \"{cluster}\"\nkey = \"{KEY}\"\nmdns = true\n\
             [detector]\nprobe-period-ms = 300\nprobe-rtt-ms = 100\n",
            dir.join(format!("state-{name}")).display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Proc(
        Command::new("ip")
            .args(["netns", "exec", ns, BIN, "agent", "--config"])
            .arg(&cfg)
            .args(["--bind", gossip, "--http", http])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn members(ns: &str, http: &str) -> Vec<serde_json::Value> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, BIN, "members", "--json", "--http", http,
        ])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

#[test]
fn mdns_finds_same_cluster_peers_across_namespaces() {
    let tag = std::process::id();
    let (a, b) = (format!("pfa{tag}"), format!("pfb{tag}"));
    if !ip(&["netns", "add", &a]) {
        eprintln!(
            "SKIPPED mdns netns test: cannot create a network namespace (needs root and iproute2)"
        );
        return;
    }
    let _guard = Netns(vec![a.clone(), b.clone()]);
    let (va, vb) = (format!("va{tag}"), format!("vb{tag}"));
    let setup = ip(&["netns", "add", &b])
        && ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])
        && ip(&["link", "set", &va, "netns", &a])
        && ip(&["link", "set", &vb, "netns", &b])
        && ip(&["-n", &a, "addr", "add", "10.231.0.1/24", "dev", &va])
        && ip(&["-n", &b, "addr", "add", "10.231.0.2/24", "dev", &vb])
        && ip(&["-n", &a, "link", "set", &va, "up"])
        && ip(&["-n", &b, "link", "set", &vb, "up"])
        && ip(&["-n", &a, "link", "set", "lo", "up"])
        && ip(&["-n", &b, "link", "set", "lo", "up"]);
    assert!(setup, "setting up the veth pair failed");

    let dir = tempfile::tempdir().unwrap();
    let _pa = agent(
        dir.path(),
        &a,
        "alpha",
        "lab",
        "10.231.0.1:7946",
        "127.0.0.1:8080",
    );
    let _pb = agent(
        dir.path(),
        &b,
        "beta",
        "lab",
        "10.231.0.2:7946",
        "127.0.0.1:8080",
    );
    // Another cluster on the same link: seen over mDNS, never joined.
    let _pc = agent(
        dir.path(),
        &b,
        "gamma",
        "prod",
        "10.231.0.2:7947",
        "127.0.0.1:8081",
    );
    let start = Instant::now();
    loop {
        let ma = members(&a, "127.0.0.1:8080");
        let mb = members(&b, "127.0.0.1:8080");
        let alive =
            |ms: &[serde_json::Value]| ms.len() == 2 && ms.iter().all(|m| m["state"] == "alive");
        if alive(&ma) && alive(&mb) {
            eprintln!(
                "mDNS discovery formed the cluster after {:?}",
                start.elapsed()
            );
            std::thread::sleep(Duration::from_secs(2));
            assert_eq!(members(&a, "127.0.0.1:8080").len(), 2);
            assert_eq!(
                members(&b, "127.0.0.1:8081").len(),
                1,
                "gamma joined another cluster"
            );
            break;
        }
        if start.elapsed() > Duration::from_secs(20) {
            for f in ["alpha.log", "beta.log"] {
                eprintln!(
                    "--- {f}\n{}",
                    std::fs::read_to_string(dir.path().join(f)).unwrap_or_default()
                );
            }
            panic!("no cluster via mDNS: {ma:?} / {mb:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
