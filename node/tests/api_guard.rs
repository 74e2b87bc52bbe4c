//! The agent's mutating API against hostile callers (issue 17, findings 8 and 12), with real
//! agent processes on 127.0.0.1 and, for the cross-site form, a real headless Chromium.
//!
//! - `tags set` over the limits is refused whole and changes nothing anywhere: a node never
//!   announces a tag set its peers would drop.
//! - `POST /api/leave` (and the other mutating calls) refuse what a web page can send without a
//!   CORS preflight (a form, a `text/plain` body) and a `Host` that is not this node (a page
//!   that rebinds its own DNS name to 127.0.0.1).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::*;
use piforge_node::membership::MemberState;

fn tags_of(observer: &Agent, name: &str) -> std::collections::BTreeMap<String, String> {
    observer
        .members()
        .into_iter()
        .find(|m| m.name == name)
        .map(|m| m.tags)
        .unwrap_or_default()
}

#[test]
fn tags_over_the_limits_are_refused_whole() {
    let root = tempfile::tempdir().unwrap();
    let a = Agent::new(root.path(), "a", &[], KEY, "");
    let b = Agent::new(root.path(), "b", &[&a], KEY, "");
    all_see(&[&a, &b], "a", MemberState::Alive, 10);
    all_see(&[&a, &b], "b", MemberState::Alive, 10);

    // `a` has one tag (role); 64 more make 65.
    let too_many: Vec<String> = (0..64).map(|i| format!("k{i}=v")).collect();
    let long = format!("blob={}", "x".repeat(257));
    for args in [too_many.clone(), vec!["ok=1".to_string(), long]] {
        let out = Command::new(BIN)
            .args(["tags", "--http", &a.http, "set"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "over-limit tags were accepted");
        assert!(err.contains("at most"), "the error says the limit: {err}");
    }
    // Nothing of either request was applied, locally or remotely.
    let want: std::collections::BTreeMap<String, String> =
        [("role".to_string(), "r-a".to_string())].into();
    assert_eq!(tags_of(&a, "a"), want);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(tags_of(&b, "a"), want);

    // 63 more make exactly 64: accepted and seen by the peer.
    let out = Command::new(BIN)
        .args(["tags", "--http", &a.http, "set"])
        .args(&too_many[..63])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("64 tags on the peer", 10, || tags_of(&b, "a").len() == 64);
}

/// A request: path, headers, body.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

/// One raw HTTP/1.1 request; the status code.
fn raw_post(addr: &str, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("POST {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn forms_and_foreign_hosts_cannot_call_mutating_endpoints() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Agent::new(root.path(), "a", &[], KEY, "");
    let host = a.http.clone();
    let json = "application/json";
    let cases: &[Case] = &[
        // What an HTML form sends.
        (
            "/api/leave",
            &[
                ("Host", &host),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            "a=b",
        ),
        (
            "/api/leave",
            &[("Host", &host), ("Content-Type", "text/plain")],
            "{}",
        ),
        ("/api/leave", &[("Host", &host)], ""),
        // A page whose own name now resolves to 127.0.0.1 (DNS rebinding).
        (
            "/api/leave",
            &[("Host", "attacker.example:8080"), ("Content-Type", json)],
            "{}",
        ),
        ("/api/leave", &[("Content-Type", json)], "{}"),
        (
            "/api/tags",
            &[("Host", "attacker.example"), ("Content-Type", json)],
            r#"{"set":{"role":"owned"}}"#,
        ),
        (
            "/api/join",
            &[("Host", &host), ("Content-Type", "text/plain")],
            r#"{"addr":"127.0.0.1:9"}"#,
        ),
    ];
    for (path, headers, body) in cases {
        assert_eq!(
            raw_post(&a.http, path, headers, body),
            403,
            "{path} {headers:?} was not refused"
        );
    }
    assert_eq!(a.state_of("a"), Some(MemberState::Alive));
    assert_eq!(tags_of(&a, "a")["role"], "r-a");
    assert!(a.child.as_mut().unwrap().try_wait().unwrap().is_none());

    // Other names of this node are fine: localhost, the node's own name.
    let port = a.http.rsplit_once(':').unwrap().1.to_string();
    for h in [format!("localhost:{port}"), format!("a.local:{port}")] {
        assert_eq!(
            raw_post(
                &a.http,
                "/api/tags",
                &[("Host", &h), ("Content-Type", json)],
                r#"{"set":{"via":"ok"}}"#
            ),
            200,
            "{h}"
        );
    }
    // The CLI (JSON, Host = the address it was given) still works, and the node leaves.
    let out = Command::new(BIN)
        .args(["leave", "--http", &a.http])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(a.wait_exit(15).success());
}

/// Serves one fixed HTML page on `listener` to every request, forever (test thread).
fn serve_page(listener: TcpListener, page: String) {
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
}

#[test]
fn a_cross_site_form_in_chromium_cannot_make_the_node_leave() {
    let Some(bin) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("SKIPPED: chromium is not installed (apt-get install chromium)");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut a = Agent::new(root.path(), "a", &[], KEY, "");
    // The attacker's page, on another origin (127.0.0.2), posts a form to the node: the
    // classic CSRF. enctype text/plain lets it send a body that looks like JSON.
    let page = format!(
        r#"<!doctype html><html><body>
<form id="f" method="POST" action="http://{0}/api/leave" enctype="text/plain">
<input name='{{"x":"' value='"}}'></form>
<script>fetch("http://{0}/api/tags",{{method:"POST",mode:"no-cors",body:'{{"set":{{"role":"owned"}}}}'}});
document.getElementById("f").submit();</script></body></html>"#,
        a.http
    );
    let listener = TcpListener::bind("127.0.0.2:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    serve_page(listener, page);
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            root.path().join("profile").display()
        ))
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    // The form was submitted: Chromium ended on the agent's answer, not the attacker page.
    assert!(
        dom.contains("mutating calls") || dom.contains("leaving"),
        "the form did not reach the agent: {dom}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        a.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the node left on a cross-site form"
    );
    assert_eq!(a.state_of("a"), Some(MemberState::Alive));
    assert_eq!(tags_of(&a, "a")["role"], "r-a", "a no-cors fetch set a tag");
}
