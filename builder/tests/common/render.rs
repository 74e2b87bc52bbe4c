//! The node's real template renderer for overlay tests: `piforge-node render --once` over a
//! member list served here as the node API's `GET /api/members` on loopback.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Serves `members` as the node API's `GET /api/members` (and an empty `/api/events`) on
/// loopback until the process ends; returns `host:port`.
pub fn serve_members(members: serde_json::Value) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let mut line = String::new();
            let mut r = BufReader::new(s.try_clone().unwrap());
            if r.read_line(&mut line).is_err() {
                continue;
            }
            // Drain the headers.
            let mut h = String::new();
            while r.read_line(&mut h).is_ok_and(|n| n > 2) {
                h.clear();
            }
            let body = if line.starts_with("GET /api/members") {
                members.to_string()
            } else if line.starts_with("GET /api/events") {
                "{\"next\":0,\"events\":[]}".to_string()
            } else {
                String::new()
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

/// The piforge-node binary: `PIFORGE_NODE_BIN`, else the one cargo built next to this test.
pub fn node_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PIFORGE_NODE_BIN").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join("piforge-node");
    assert!(
        p.is_file(),
        "{} missing: the live templates are rendered by the node's real renderer; run \
         `cargo build -p piforge-node` (cargo test --workspace builds it) or set PIFORGE_NODE_BIN",
        p.display()
    );
    p
}

/// Renders `template` with `piforge-node render --once` over `members` into `dest`; returns
/// what it wrote.
pub fn node_render(template: &Path, members: serde_json::Value, dest: &Path) -> String {
    let http = serve_members(members);
    let out = Command::new(node_bin())
        .args(["render", "--once", "--http", &http, "--dest"])
        .arg(dest)
        .arg(template)
        .env_remove("RUST_LOG")
        .output()
        .expect("running piforge-node render");
    assert!(
        out.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dest).unwrap()
}
