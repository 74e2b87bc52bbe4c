//! The shipped overlays (`overlays/` of the repository) applied by firstboot on a fake root:
//! files with their modes, units and render units enabled, static templates rendered, tags,
//! handlers and MQTT merged into node.toml, packages listed. Then the real programs on what
//! firstboot wrote: lighttpd serves the web overlay's page on a loopback port (it shows the
//! hostname), and the alert handler posts its webhook and SMS requests (curl) to a listener on
//! loopback, and calls nothing while the settings are the shipped placeholders.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use piforge_config::NodeConfig;
use piforge_firstboot::apply::RecordingSystem;
use piforge_firstboot::{Outcome, run_firstboot};
use piforge_test_support::{Proc, free_port, require_tool};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../overlays")
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

/// A fake bookworm root whose card applies the shipped `overlays`, after first boot.
fn first_boot_with(overlays: &[&str]) -> (Fake, String) {
    first_boot_with_card(overlays, full_card())
}

/// [`first_boot_with`] for a given card.
fn first_boot_with_card(overlays: &[&str], mut card: piforge_config::Card) -> (Fake, String) {
    let f = Fake::new(Rel::Bookworm, true, "10000000c0ffee01");
    card.overlays = overlays.iter().map(|s| s.to_string()).collect();
    f.put_payload(&card);
    let dir = f.boot.join("piforge/overlays");
    fs::remove_dir_all(&dir).unwrap();
    for o in overlays {
        copy_tree(&shipped().join(o), &dir.join(o));
    }
    let mut sys = RecordingSystem::default();
    let out = run_firstboot(&f.request(hooks(1)), &mut sys).unwrap();
    let Outcome::Configured { hostname, .. } = out else {
        panic!("{out:?}")
    };
    (f, hostname)
}

#[test]
fn web_and_alert_overlays_install_files_units_templates_and_node_settings() {
    let (f, hostname) = first_boot_with(&["web", "alert"]);
    // Static template rendered with the hostname; live one kept by a render unit.
    let page = f.read("var/www/html/index.html");
    assert!(
        page.contains(&format!("<h1 id=\"hostname\">{hostname}</h1>")),
        "{page}"
    );
    assert!(page.contains("cluster <b>lab</b>"), "{page}");
    let unit = f.read("etc/systemd/system/piforge-render-web-1.service");
    assert!(
        unit.contains(
            "render --dest /var/www/html/cluster.html /etc/piforge/templates/web/cluster.html.hbs"
        ),
        "{unit}"
    );
    assert_eq!(
        f.link("etc/systemd/system/multi-user.target.wants/piforge-render-web-1.service"),
        "/etc/systemd/system/piforge-render-web-1.service"
    );
    assert!(
        f.read("etc/piforge/templates/web/cluster.html.hbs")
            .contains("{{#each members}}")
    );
    assert_eq!(
        f.link("etc/systemd/system/multi-user.target.wants/lighttpd.service"),
        "/lib/systemd/system/lighttpd.service"
    );
    // Alert: executables by location, the settings file private, the GPIO template unit.
    assert_eq!(f.mode("usr/local/bin/piforge-alert"), 0o755);
    assert_eq!(f.mode("usr/local/bin/piforge-alert-gpio"), 0o755);
    assert_eq!(f.mode("usr/local/bin/piforge-alert-local"), 0o755);
    assert_eq!(f.mode("etc/piforge/alert/alert.env"), 0o600);
    assert!(
        f.read("etc/piforge/alert/alert.env")
            .contains(&format!("settings of {hostname}"))
    );
    assert!(
        f.read("etc/systemd/system/piforge-alert-gpio@.service")
            .contains("%i")
    );
    // node.toml: overlay tags (the card's win), the handler and the broker.
    let node = NodeConfig::parse(&f.read("etc/piforge/node.toml")).unwrap();
    assert_eq!(node.tags["role"], "web");
    assert_eq!(node.tags["http-port"], "80");
    assert_eq!(node.tags["rack"], "a", "the card's tag stays");
    // Alerts once per cluster, the LED/buzzer on every node.
    assert_eq!(node.handlers.len(), 2);
    assert_eq!(node.handlers[0].command, "/usr/local/bin/piforge-alert");
    assert_eq!(node.handlers[0].timeout_secs, 20);
    assert_eq!(node.handlers[0].scope, piforge_config::node::Scope::Cluster);
    assert_eq!(
        node.handlers[1].command,
        "/usr/local/bin/piforge-alert-local"
    );
    assert_eq!(node.handlers[1].scope, piforge_config::node::Scope::Node);
    // The card's broker (piforge build --mqtt-url) wins over the overlay's local one.
    assert_eq!(
        node.mqtt.unwrap().broker,
        "mqtts://alerts@mq.example.com:8883"
    );
    let packages = f.read("etc/piforge/packages.list");
    assert_eq!(
        packages.lines().collect::<Vec<_>>(),
        [
            "lighttpd",
            "mosquitto",
            "mosquitto-clients",
            "gpiod",
            "curl"
        ]
    );
}

#[test]
fn lb_overlay_installs_the_haproxy_drop_in_and_a_reloading_render_unit() {
    let (f, _) = first_boot_with(&["lb"]);
    assert!(
        f.read("etc/haproxy/piforge/00-main.cfg")
            .contains("default_backend web")
    );
    assert!(
        f.read("etc/systemd/system/haproxy.service.d/piforge.conf")
            .contains("CONFIG=/etc/haproxy/piforge")
    );
    let unit = f.read("etc/systemd/system/piforge-render-lb-0.service");
    assert!(
        unit.contains(
            "--dest /etc/haproxy/piforge/50-backend.cfg /etc/piforge/templates/lb/backend.cfg.hbs \
             --command \"systemctl try-reload-or-restart haproxy.service\""
        ),
        "{unit}"
    );
    let node = NodeConfig::parse(&f.read("etc/piforge/node.toml")).unwrap();
    assert_eq!(node.tags["role"], "lb");
}

/// Waits until something accepts connections on `port`.
fn wait_for(port: u16, child: &mut std::process::Child) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the server exited: {status}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no server on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn a_hostile_role_tag_is_text_in_the_static_web_page() {
    let mut card = full_card();
    let role = "<script>alert(\"x\")</script>";
    card.node.tags.insert("role".into(), role.into());
    let (f, hostname) = first_boot_with_card(&["web"], card);
    let page = f.read("var/www/html/index.html");
    assert!(!page.contains("<script"), "{page}");
    assert!(
        page.contains("(role &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;)"),
        "{page}"
    );
    assert!(
        page.contains(&format!("<h1 id=\"hostname\">{hostname}</h1>")),
        "{page}"
    );
    let node = NodeConfig::parse(&f.read("etc/piforge/node.toml")).unwrap();
    assert_eq!(node.tags["role"], role, "the tag itself is kept as it is");
}

#[test]
fn lighttpd_serves_the_web_page_with_the_hostname() {
    let lighttpd = require_tool("lighttpd", "lighttpd");
    let (f, hostname) = first_boot_with(&["web"]);
    let port = free_port();
    // Debian's lighttpd.conf, reduced to what serving the page needs, on loopback.
    let conf = f.tmp.path().join("lighttpd.conf");
    fs::write(
        &conf,
        format!(
            "server.modules = (\"mod_indexfile\")\n\
             server.document-root = \"{}\"\n\
             server.bind = \"127.0.0.1\"\nserver.port = {port}\n\
             server.errorlog = \"{}\"\n\
             index-file.names = (\"index.html\")\n\
             mimetype.assign = (\".html\" => \"text/html\")\n",
            f.root.join("var/www/html").display(),
            f.tmp.path().join("lighttpd.err").display()
        ),
    )
    .unwrap();
    let child = Command::new(lighttpd)
        .arg("-D")
        .arg("-f")
        .arg(&conf)
        .stdin(Stdio::null())
        .spawn()
        .expect("starting lighttpd");
    let mut child = Proc(child);
    wait_for(port, &mut child.0);
    let resp = get(port, "/");
    assert!(resp.starts_with("HTTP/1.0 200"), "{resp}");
    assert!(resp.contains("Content-Type: text/html"), "{resp}");
    assert!(
        resp.contains(&format!("<h1 id=\"hostname\">{hostname}</h1>")),
        "{resp}"
    );
}

/// Accepts `n` HTTP requests on a loopback listener and returns them (head and body).
fn capture(listener: TcpListener, n: usize) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        let mut got = vec![];
        listener.set_nonblocking(false).unwrap();
        for _ in 0..n {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = vec![];
            let mut chunk = [0u8; 4096];
            loop {
                let k = s.read(&mut chunk).unwrap_or(0);
                buf.extend_from_slice(&chunk[..k]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
                if k == 0 {
                    break;
                }
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .unwrap();
            got.push(String::from_utf8_lossy(&buf).into_owned());
        }
        got
    })
}

fn run_handler(f: &Fake, env_file: &Path, event: &str) -> std::process::Output {
    let mut child = Command::new(f.root.join("usr/local/bin/piforge-alert"))
        .env("PIFORGE_ALERT_ENV", env_file)
        .env("PIFORGE_EVENT", event)
        .env("PIFORGE_EVENT_ID", format!("{event}/pi-03/7"))
        .env("PIFORGE_SELF_NAME", "pi-01")
        .env("PIFORGE_CLUSTER", "lab")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running piforge-alert");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"pi-03\t10.0.0.3\t7946\tfailed\trole=web\n")
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn alert_handler_posts_webhook_and_sms_only_when_configured() {
    require_tool("curl", "curl");
    let (f, _) = first_boot_with(&["alert"]);
    let shipped_env = f.root.join("etc/piforge/alert/alert.env");
    // As shipped the settings are placeholders (an .invalid host, CHANGE-ME): nothing is sent.
    let quiet = fs::read_to_string(&shipped_env)
        .unwrap()
        .replace("GPIO_LED_LINE=\"17\"", "GPIO_LED_LINE=\"\"")
        .replace("GPIO_BUZZER_LINE=\"27\"", "GPIO_BUZZER_LINE=\"\"");
    let env_file = f.tmp.path().join("alert.env");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = capture(listener, 3);
    // The SMS gateway on loopback but the token still the placeholder: nothing is sent (the
    // listener's first request must be the webhook of the configured run below).
    let placeholder_token = quiet.replace(
        "https://sms-gateway.example.invalid/api/v1/messages",
        &format!("http://127.0.0.1:{port}/sms"),
    );
    fs::write(&env_file, &placeholder_token).unwrap();
    let out = run_handler(&f, &env_file, "member-failed");
    assert!(out.status.success(), "{out:?}");

    // Configured: webhook and SMS gateway on the loopback listener; SMS only for failures.
    let configured = placeholder_token
        .replace(
            "ALERT_WEBHOOK_URL=\"\"",
            &format!("ALERT_WEBHOOK_URL=\"http://127.0.0.1:{port}/hook\""),
        )
        .replace("CHANGE-ME", "t0ken")
        .replace("+000000000000", "+15550100");
    fs::write(&env_file, configured).unwrap();
    let out = run_handler(&f, &env_file, "member-failed");
    assert!(out.status.success(), "{out:?}");
    let out = run_handler(&f, &env_file, "member-join");
    assert!(out.status.success(), "{out:?}");
    let got = requests.join().unwrap();
    assert!(got[0].starts_with("POST /hook "), "{}", got[0]);
    assert!(
        got[0].contains(
            "{\"id\":\"member-failed/pi-03/7\",\"event\":\"member-failed\",\"member\":\"pi-03\",\
             \"ip\":\"10.0.0.3\",\"cluster\":\"lab\",\"reporter\":\"pi-01\"}"
        ),
        "{}",
        got[0]
    );
    assert!(got[1].starts_with("POST /sms "), "{}", got[1]);
    assert!(got[1].contains("Authorization: Bearer t0ken"), "{}", got[1]);
    assert!(
        got[1].contains(
            "\"to\":\"+15550100\",\"text\":\"piforge lab: pi-03 (10.0.0.3) failed (seen by pi-01)\""
        ),
        "{}",
        got[1]
    );
    assert!(
        got[2].starts_with("POST /hook "),
        "member-join: webhook only: {}",
        got[2]
    );
    assert!(got[2].contains("\"event\":\"member-join\""), "{}", got[2]);
}
