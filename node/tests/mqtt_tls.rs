//! MQTT over TLS with a login, against a real mosquitto started by the test: a CA and server
//! certificate made by the openssl CLI, a password file made by `mosquitto_passwd`, and
//! `mosquitto_sub` (a second MQTT client) as the observer (issue #18 item 3).
//! - right password: status `online`, events, the last will `offline` and the retained
//!   status all arrive;
//! - wrong password: a clear error in the log, retries with a growing delay, the agent lives;
//! - a listener that requires client certificates: an agent with one connects, one without
//!   does not.
//!
//! No password or key ever reaches an agent's log.

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use piforge_node::membership::MemberState;
use piforge_test_support::Proc;

const PASSWORD: &str = "pw-7Hq2xK9";
const ADMIN_PASSWORD: &str = "admin-pw-4Zt";

/// A TLS broker: (process, port with login, port that also requires a client certificate).
fn broker(dir: &Path, pki: &Pki) -> (Proc, u16, u16) {
    let (cert, key) = pki.issue("broker");
    run(
        "mosquitto_passwd",
        &["-b", "-c", "passwd", "alerts", PASSWORD],
        dir,
    );
    run(
        "mosquitto_passwd",
        &["-b", "passwd", "admin", ADMIN_PASSWORD],
        dir,
    );
    let (p1, p2) = (free_tcp().port(), free_tcp().port());
    let tls = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\n",
        pki.dir.join("ca.pem").display(),
        cert.display(),
        key.display()
    );
    let conf = format!(
        "user root\nper_listener_settings false\nallow_anonymous false\npassword_file {}\n\
         listener {p1} 127.0.0.1\n{tls}\
         listener {p2} 127.0.0.1\n{tls}require_certificate true\n",
        dir.join("passwd").display()
    );
    std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
    let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("mosquitto is not installed (ci/setup installs it)");
    let proc = Proc(child);
    wait_for("mosquitto", 10, || {
        std::net::TcpStream::connect(("127.0.0.1", p1)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", p2)).is_ok()
    });
    (proc, p1, p2)
}

type Lines = Arc<Mutex<Vec<String>>>;

/// `mosquitto_sub` as admin over TLS: lines `<retained 0|1> <topic> <payload>`.
fn subscribe(port: u16, pki: &Pki, topic: &str, extra: &[&str]) -> (Proc, Lines) {
    let mut child = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "--cafile"])
        .arg(pki.dir.join("ca.pem"))
        .args([
            "-u",
            "admin",
            "-P",
            ADMIN_PASSWORD,
            "-t",
            topic,
            "-F",
            "%r %t %p",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub is missing: apt-get install mosquitto-clients (ci/setup)");
    let out = child.stdout.take().unwrap();
    let lines: Lines = Arc::default();
    let l = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    (Proc(child), lines)
}

fn has(lines: &Lines, want: &str) -> bool {
    lines.lock().unwrap().iter().any(|l| l == want)
}

fn mqtt(port: u16, pki: &Pki, password: &str, extra: &str) -> String {
    format!(
        "[mqtt]\nbroker = \"mqtts://alerts@127.0.0.1:{port}\"\npassword = {}\nca = {}\n{extra}",
        toml_str(password),
        toml_str(&pki.ca)
    )
}

fn log_of(a: &Agent) -> String {
    std::fs::read_to_string(a.dir.join("agent.log")).unwrap()
}

fn assert_no_secret(a: &Agent) {
    let log = log_of(a);
    for s in [PASSWORD, "wrong-pw", "PRIVATE KEY"] {
        assert!(!log.contains(s), "{}'s log holds a secret: {log}", a.name);
    }
}

#[test]
fn mqtts_login_events_retained_status_and_last_will() {
    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new(root.path(), "ca");
    let (_broker, port, _) = broker(root.path(), &pki);
    let (_sub, seen) = subscribe(port, &pki, "piforge/test/#", &[]);
    std::thread::sleep(Duration::from_millis(300));
    let cfg = mqtt(port, &pki, PASSWORD, "");
    let a = Agent::new(root.path(), "a", &[], KEY, &cfg);
    let mut b = Agent::new(root.path(), "b", &[&a], KEY, &cfg);
    all_see(&[&a, &b], "b", MemberState::Alive, 15);
    wait_for("status online over TLS", 10, || {
        has(&seen, "0 piforge/test/nodes/a/status online")
            && has(&seen, "0 piforge/test/nodes/b/status online")
    });
    b.signal("KILL");
    b.wait_exit(5);
    all_see(&[&a], "b", MemberState::Failed, 15);
    wait_for("a's member-failed event and b's last will", 15, || {
        let l = seen.lock().unwrap();
        let event = l.iter().any(|x| {
            x.starts_with("0 piforge/test/events/a ")
                && x.contains("\"event\":\"member-failed\"")
                && x.contains("\"name\":\"b\"")
        });
        event
            && l.iter()
                .any(|x| x == "0 piforge/test/nodes/b/status offline")
    });
    // A later subscriber gets the retained statuses and the retained alert.
    let (_late, late) = subscribe(port, &pki, "piforge/test/#", &["-W", "5"]);
    wait_for("retained status and alert", 5, || {
        has(&late, "1 piforge/test/nodes/a/status online")
            && has(&late, "1 piforge/test/nodes/b/status offline")
            && late
                .lock()
                .unwrap()
                .iter()
                .any(|x| x.starts_with("1 piforge/test/alerts/b {"))
    });
    assert_no_secret(&a);
    assert_no_secret(&b);
}

#[test]
fn mqtts_wrong_password_retries_with_backoff_and_client_certificates() {
    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new(root.path(), "ca");
    let (_broker, port, cert_port) = broker(root.path(), &pki);
    let (_sub, seen) = subscribe(port, &pki, "piforge/test/nodes/+/status", &[]);
    let (client_cert, client_key) = pki.issue("client");
    let client = format!(
        "client-cert = {}\nclient-key = {}\n",
        toml_str(&std::fs::read_to_string(&client_cert).unwrap()),
        toml_str(&std::fs::read_to_string(&client_key).unwrap())
    );
    std::thread::sleep(Duration::from_millis(300));
    // c: wrong password. d: client certificate on the listener that requires one. e: none.
    let c = Agent::new(
        root.path(),
        "c",
        &[],
        KEY,
        &mqtt(port, &pki, "wrong-pw", ""),
    );
    let d = Agent::new(
        root.path(),
        "d",
        &[&c],
        KEY,
        &mqtt(cert_port, &pki, PASSWORD, &client),
    );
    let e = Agent::new(
        root.path(),
        "e",
        &[&c],
        KEY,
        &mqtt(cert_port, &pki, PASSWORD, ""),
    );
    wait_for("d online with its client certificate", 10, || {
        has(&seen, "0 piforge/test/nodes/d/status online")
    });
    // Attempts at about 0, 1, 3, 7 s (a fixed 1 s retry would make 9 or 10).
    std::thread::sleep(Duration::from_secs(9));
    let log_c = log_of(&c);
    let tries = log_c.matches("mqtt connection failed").count();
    assert!(
        log_c.contains("the broker refused the login: check the user"),
        "{log_c}"
    );
    assert!((2..=5).contains(&tries), "{tries} attempts in 9 s: {log_c}");
    assert!(log_c.contains("retry_in_s=4"), "{log_c}");
    // No crash: c still answers and is a member.
    all_see(&[&c, &d, &e], "c", MemberState::Alive, 5);
    assert!(
        log_of(&e).contains("mqtt connection failed"),
        "{}",
        log_of(&e)
    );
    for n in ["c", "e"] {
        assert!(
            !seen
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(&format!("nodes/{n}/status online"))),
            "{n} got in"
        );
    }
    for a in [&c, &d, &e] {
        assert_no_secret(a);
    }
}
