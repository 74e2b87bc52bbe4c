//! A real HAProxy load balancer kept by `piforge-node render` (issue #7) with the shipped `lb`
//! overlay: three web backends on 127.0.0.2–4, a web agent beside each (tagged `role=web`,
//! `http-port=<port>`, gossip on the backend's address), an lb agent on 127.0.0.1, and haproxy
//! in master-worker mode reading a config directory like the overlay's unit does
//! (`overlays/lb/files/etc/haproxy/piforge/00-main.cfg`, with the binds moved to loopback ports
//! and the root-only `user`/`group`/syslog lines dropped, plus `50-backend.cfg` rendered from
//! `overlays/lb/templates/backend.cfg.hbs` over the lb agent's member list). The render
//! command checks the config with `haproxy -c` and reloads haproxy with SIGUSR2 (on the Pi:
//! `systemctl try-reload-or-restart haproxy`).
//!
//! Asserted: requests round-robin over all three backends; after one web *agent* is SIGKILLed
//! (its HTTP server keeps running, so haproxy's own health checks cannot be what removes it)
//! it leaves the rendered backend, haproxy reloads, and traffic goes only to the other two; a
//! graceful leave of a second one does the same; `haproxy -c -f` accepts every rendered
//! config. Fails (does not skip) when haproxy is missing: CI installs it.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use piforge_node::client;
use piforge_node::membership::MemberState;
use piforge_test_support::Proc;

/// The shipped lb overlay.
const LB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../overlays/lb");

/// The overlay's main config, made runnable by an unprivileged test: frontend and stats on
/// loopback ports, no user switch, no syslog.
fn main_cfg(front: &str, stats: &str) -> String {
    let shipped = std::fs::read_to_string(format!("{LB}/files/etc/haproxy/piforge/00-main.cfg"))
        .expect("reading the lb overlay's 00-main.cfg");
    assert!(
        shipped.contains("bind :80\n") && shipped.contains("bind :8404\n"),
        "{shipped}"
    );
    shipped
        .replace("bind :80\n", &format!("bind {front}\n"))
        .replace("bind :8404\n", &format!("bind {stats}\n"))
        .lines()
        .filter(|l| {
            let l = l.trim();
            !(l.starts_with("user ") || l.starts_with("group ") || l.starts_with("log /dev/log"))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn haproxy_bin() -> PathBuf {
    let found = ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    found.expect("haproxy is not installed: apt-get install haproxy (CI: ci/setup installs it)")
}

/// A backend that answers every request with its name.
fn web_backend(ip: &str, name: &'static str) -> u16 {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                    name.len()
                );
            });
        }
    });
    port
}

/// Who answers `n` requests through haproxy, in order.
fn answers(front: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(
            |_| match client::request(front, "GET", "/", None, Duration::from_secs(5)) {
                Ok(r) if r.status == 200 => String::from_utf8_lossy(&r.body).to_string(),
                Ok(r) => format!("HTTP {}", r.status),
                Err(e) => format!("error {e:#}"),
            },
        )
        .collect()
}

fn check_config(haproxy: &Path, main: &Path, cfg: &Path) {
    let out = Command::new(haproxy)
        .arg("-c")
        .arg("-f")
        .arg(main)
        .arg("-f")
        .arg(cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "haproxy -c rejected {}:\n{}\n{}",
        cfg.display(),
        std::fs::read_to_string(cfg).unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn servers(cfg: &Path) -> Vec<String> {
    std::fs::read_to_string(cfg)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn haproxy_follows_the_alive_web_members() {
    let haproxy = haproxy_bin();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let names = ["web-1", "web-2", "web-3"];
    let ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"];
    let ports: Vec<u16> = names
        .iter()
        .zip(ips)
        .map(|(n, ip)| web_backend(ip, n))
        .collect();

    let lb = Agent::spawn(dir, "lb", "127.0.0.1", &[("role", "lb")], &[], KEY, "");
    let mut webs: Vec<Agent> = names
        .iter()
        .zip(ips)
        .zip(&ports)
        .map(|((n, ip), port)| {
            let port = port.to_string();
            let tags = [("role", "web"), ("http-port", port.as_str())];
            Agent::spawn(dir, n, ip, &tags, &[&lb], KEY, "")
        })
        .collect();
    for n in names {
        all_see(&[&lb], n, MemberState::Alive, 15);
    }

    let front = free_tcp().to_string();
    let conf_dir = dir.join("haproxy");
    std::fs::create_dir(&conf_dir).unwrap();
    let main = conf_dir.join("00-main.cfg");
    std::fs::write(&main, main_cfg(&front, &free_tcp().to_string())).unwrap();
    let tpl = PathBuf::from(format!("{LB}/templates/backend.cfg.hbs"));
    let cfg = conf_dir.join("50-backend.cfg");
    let render = |extra: &[&str]| {
        let mut c = Command::new(BIN);
        c.args([
            "render",
            "--http",
            &lb.http,
            "--debounce-ms",
            "300",
            "--dest",
        ])
        .arg(&cfg)
        .arg(&tpl)
        .args(extra);
        c
    };
    let st = render(&["--once"]).status().unwrap();
    assert!(st.success());
    assert_eq!(servers(&cfg), names);
    check_config(&haproxy, &main, &cfg);

    // haproxy in master-worker mode: SIGUSR2 to the master re-reads the config.
    let hap_log = dir.join("haproxy.log");
    let hap = Proc(
        Command::new(&haproxy)
            .arg("-W")
            .arg("-f")
            .arg(&conf_dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&hap_log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("haproxy listening", 10, || {
        std::net::TcpStream::connect(&front).is_ok()
    });
    let snaps = dir.join("rendered");
    std::fs::create_dir(&snaps).unwrap();
    let reloads = dir.join("reloads");
    // Keep every rendered config, refuse to reload a bad one, count the reloads.
    let command = format!(
        "cp {cfg} {snaps}/$(date +%s%N).cfg && {hap} -c -q -f {dir} && kill -USR2 {pid} && \
         echo reload >> {reloads}",
        cfg = cfg.display(),
        dir = conf_dir.display(),
        snaps = snaps.display(),
        hap = haproxy.display(),
        pid = hap.0.id(),
        reloads = reloads.display()
    );
    let render_log = std::fs::File::create(dir.join("render.log")).unwrap();
    let _render = Proc(
        render(&["--command", &command])
            .stdout(Stdio::null())
            .stderr(render_log)
            .spawn()
            .unwrap(),
    );
    let reload_count = || {
        std::fs::read_to_string(&reloads)
            .unwrap_or_default()
            .lines()
            .count()
    };

    // Round robin over all three.
    let got = answers(&front, 9);
    for n in names {
        assert!(got.iter().any(|g| g == n), "{n} never answered: {got:?}");
    }
    assert_eq!(reload_count(), 0, "reloaded although nothing changed");

    // SIGKILL web-3's agent (its HTTP server stays up): failure detection, re-render, reload.
    webs[2].signal("KILL");
    webs[2].wait_exit(5);
    let t = wait_for("web-3 out of the rendered backend", 20, || {
        servers(&cfg) == ["web-1", "web-2"]
    });
    eprintln!("SIGKILL → web-3 out of the rendered backend after {t:?}");
    wait_for("a reload", 10, || reload_count() >= 1);
    let t = wait_for("traffic only to web-1 and web-2", 15, || {
        !answers(&front, 4).iter().any(|g| g == "web-3")
    });
    eprintln!("… and out of the traffic {t:?} later");
    let got = answers(&front, 12);
    assert!(got.iter().all(|g| g == "web-1" || g == "web-2"), "{got:?}");
    assert!(
        got.iter().any(|g| g == "web-1") && got.iter().any(|g| g == "web-2"),
        "{got:?}"
    );

    // A graceful leave (SIGTERM) takes web-2 out the same way.
    webs[1].signal("TERM");
    assert!(webs[1].wait_exit(10).success());
    wait_for("web-2 out of the rendered backend", 15, || {
        servers(&cfg) == ["web-1"]
    });
    wait_for("traffic only to web-1", 15, || {
        answers(&front, 4).iter().all(|g| g == "web-1")
    });
    assert!(answers(&front, 6).iter().all(|g| g == "web-1"));

    let rendered: Vec<PathBuf> = std::fs::read_dir(&snaps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(rendered.len() >= 2, "{rendered:?}");
    for r in &rendered {
        check_config(&haproxy, &main, r);
    }
    assert!(reload_count() >= 2);
    let log = std::fs::read_to_string(&hap_log).unwrap_or_default();
    eprintln!(
        "{} configs rendered and accepted by haproxy -c, {} reloads",
        rendered.len() + 1,
        reload_count()
    );
    assert!(
        log.to_lowercase().contains("reload"),
        "haproxy did not log a reload:\n{log}"
    );
    drop(webs);
}
