//! Real agent processes on 127.0.0.1: join, tags at runtime, SIGKILL → failed, restart →
//! alive with no ghost, SIGTERM → left, wrong key rejected, handlers and webhooks fire once.
//!
//! Ports come from the OS (bind :0, read, release); timings are shortened in the config so
//! the whole file runs in well under a minute.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

use piforge_node::api::ApiMember;
use piforge_node::client;
use piforge_node::membership::MemberState;

#[test]
fn cluster_lifecycle_with_real_processes() {
    let root = tempfile::tempdir().unwrap();
    let a = Agent::new(root.path(), "a", &[], KEY, "");
    let b = Agent::new(root.path(), "b", &[&a], KEY, "");
    let mut c = Agent::new(root.path(), "c", &[&a], KEY, "");
    let mut d = Agent::new(root.path(), "d", &[&b], KEY, "");
    let t = all_see(&[&a, &b, &c], "d", MemberState::Alive, 10);
    eprintln!("join visible everywhere after {t:?}");
    for o in [&a, &b, &c, &d] {
        wait_for("full view", 10, || {
            let ms = o.members();
            ms.len() == 4 && ms.iter().all(|m| m.state == MemberState::Alive)
        });
    }
    // Static tags from node.toml and runtime tags.
    assert_eq!(
        a.members().iter().find(|m| m.name == "c").unwrap().tags["role"],
        "r-c"
    );
    let out = Command::new(BIN)
        .args(["tags", "--http", &c.http, "set", "svc=web", "tier=1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = wait_for("tag propagation", 5, || {
        [&a, &b, &d].iter().all(|o| {
            o.members()
                .iter()
                .any(|m| m.name == "c" && m.tags.get("svc").map(String::as_str) == Some("web"))
        })
    });
    eprintln!("tag visible everywhere after {t:?}");
    let out = Command::new(BIN)
        .args([
            "members", "--http", &a.http, "--tag", "svc=web", "--status", "alive",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(table.lines().count(), 1, "{table}");
    assert!(
        table.starts_with("c ") && table.contains("svc=web"),
        "{table}"
    );

    // SIGKILL → failed everywhere; restart → alive again, one entry, newer generation.
    let old_gen = a
        .members()
        .iter()
        .find(|m| m.name == "d")
        .unwrap()
        .generation;
    d.signal("KILL");
    d.wait_exit(5);
    let t = all_see(&[&a, &b, &c], "d", MemberState::Failed, 15);
    eprintln!("SIGKILL detected everywhere after {t:?}");
    d.start();
    all_see(&[&a, &b, &c], "d", MemberState::Alive, 15);
    for o in [&a, &b, &c] {
        let ms = o.members();
        let ds: Vec<&ApiMember> = ms.iter().filter(|m| m.name == "d").collect();
        assert_eq!(ds.len(), 1, "ghost of d: {ms:?}");
        assert!(ds[0].generation > old_gen);
    }

    // SIGTERM → left (not failed), and the process exits 0.
    c.signal("TERM");
    assert!(c.wait_exit(5).success());
    all_see(&[&a, &b, &d], "c", MemberState::Left, 5);
    std::thread::sleep(Duration::from_secs(3));
    for o in [&a, &b, &d] {
        assert_eq!(
            o.state_of("c"),
            Some(MemberState::Left),
            "c flipped to failed on {}",
            o.name
        );
    }

    // A stranger with the wrong key can neither join nor change anyone's view.
    let e = Agent::new(root.path(), "e", &[&a], OTHER_KEY, "");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(e.members().len(), 1);
    for o in [&a, &b, &d] {
        assert!(o.state_of("e").is_none());
    }
    let metrics =
        client::request(&a.http, "GET", "/metrics", None, Duration::from_secs(5)).unwrap();
    let metrics = String::from_utf8(metrics.body).unwrap();
    let rejected: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("piforge_packets_rejected_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rejected > 0, "{metrics}");
    assert!(
        metrics.contains("piforge_members{state=\"left\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("piforge_peer_phi{peer=\"b\"}"),
        "{metrics}"
    );

    // The dashboard is served.
    let page = client::request(&a.http, "GET", "/", None, Duration::from_secs(5)).unwrap();
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("/api/members"));
}

/// Collects webhook POST bodies on 127.0.0.1:0.
fn webhook_sink() -> (SocketAddr, Arc<Mutex<Vec<serde_json::Value>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            g.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap());
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (addr, got)
}

#[test]
fn handlers_and_webhooks_fire_once_per_event() {
    let root = tempfile::tempdir().unwrap();
    let (hook, got) = webhook_sink();
    let script = root.path().join("handler.sh");
    let out = root.path().join("handler.out");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nwhile IFS=\"$(printf '\\t')\" read -r name ip port state tags; do\n\
             echo \"$PIFORGE_EVENT $PIFORGE_SELF_NAME $name $state $tags rank=$PIFORGE_OBSERVER_RANK\" \
             >> {}\ndone\n",
            out.display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let extra = format!(
        "[[handlers]]\ncommand = \"{}\"\ntimeout-secs = 5\n[[webhooks]]\nurl = \"http://{hook}/hook\"\n",
        script.display()
    );
    let a = Agent::new(root.path(), "a", &[], KEY, &extra);
    let mut b = Agent::new(root.path(), "b", &[&a], KEY, "");
    let mut c = Agent::new(root.path(), "c", &[&a], KEY, "");
    all_see(&[&a, &b], "c", MemberState::Alive, 10);
    b.signal("KILL");
    b.wait_exit(5);
    all_see(&[&a, &c], "b", MemberState::Failed, 15);
    c.signal("TERM");
    c.wait_exit(5);
    all_see(&[&a], "c", MemberState::Left, 5);
    std::thread::sleep(Duration::from_secs(2));

    let lines = std::fs::read_to_string(&out).unwrap();
    let count = |ev: &str, who: &str| {
        lines
            .lines()
            .filter(|l| l.starts_with(&format!("{ev} a {who} ")))
            .count()
    };
    assert_eq!(count("member-join", "b"), 1, "{lines}");
    assert_eq!(count("member-join", "c"), 1, "{lines}");
    assert_eq!(count("member-failed", "b"), 1, "{lines}");
    assert_eq!(count("member-leave", "c"), 1, "{lines}");
    assert_eq!(count("member-failed", "c"), 0, "{lines}");
    assert!(
        lines.contains("member-join a b alive role=r-b rank=0"),
        "{lines}"
    );

    let hooks = got.lock().unwrap().clone();
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for h in &hooks {
        let k = (
            h["event"].as_str().unwrap().to_string(),
            h["member"]["name"].as_str().unwrap().to_string(),
        );
        *seen.entry(k).or_default() += 1;
    }
    for k in [
        ("member-join", "b"),
        ("member-join", "c"),
        ("member-failed", "b"),
        ("member-leave", "c"),
    ] {
        assert_eq!(
            seen.get(&(k.0.to_string(), k.1.to_string())),
            Some(&1),
            "{k:?}: {hooks:?}"
        );
    }
}

#[test]
fn render_and_inventory_follow_membership() {
    let root = tempfile::tempdir().unwrap();
    let a = Agent::new(root.path(), "a", &[], KEY, "");
    let b = Agent::new(root.path(), "b", &[&a], KEY, "");
    all_see(&[&a], "b", MemberState::Alive, 10);

    let inv = Command::new(BIN)
        .args(["inventory", "--ansible", "--http", &a.http])
        .output()
        .unwrap();
    let ini = String::from_utf8(inv.stdout).unwrap();
    assert!(
        ini.contains("a ansible_host=127.0.0.1\n") && ini.contains("[role_r_b]\nb\n"),
        "{ini}"
    );
    let inv = Command::new(BIN)
        .args(["inventory", "--ansible", "--json", "--http", &a.http])
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&inv.stdout).unwrap();
    assert_eq!(j["_meta"]["hostvars"]["b"]["ansible_host"], "127.0.0.1");
    assert_eq!(j["all"]["hosts"].as_array().unwrap().len(), 2);

    let tpl = root.path().join("backends.hbs");
    std::fs::write(
        &tpl,
        "{{#each alive}}server {{name}} {{ip}}:{{port}}\n{{/each}}",
    )
    .unwrap();
    let dest = root.path().join("backends.cfg");
    let ran = root.path().join("ran");
    let render = |once: bool| {
        let mut c = Command::new(BIN);
        c.args(["render", "--http", &a.http, "--debounce-ms", "300"])
            .arg(&tpl)
            .arg("--dest")
            .arg(&dest)
            .arg("--command")
            .arg(format!("echo x >> {}", ran.display()));
        if once {
            c.arg("--once");
        }
        c
    };
    assert!(render(true).status().unwrap().success());
    let lines = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(lines(&dest), 2);
    assert_eq!(lines(&ran), 1);
    // Unchanged output: no write, no command.
    assert!(render(true).status().unwrap().success());
    assert_eq!(lines(&ran), 1);

    let mut watcher = render(false)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let c = Agent::new(root.path(), "c", &[&b], KEY, "");
    wait_for("re-render with c", 15, || lines(&dest) == 3);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lines(&ran), 2, "command must run once per changed output");
    assert!(
        std::fs::read_to_string(&dest)
            .unwrap()
            .contains("server c 127.0.0.1:")
    );
    let _ = watcher.kill();
    let _ = watcher.wait();
    drop(c);
}
