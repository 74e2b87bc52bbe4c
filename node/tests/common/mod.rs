//! Helpers shared by the process tests: agents on 127.0.0.1 with ports from the OS.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use piforge_node::api::ApiMember;
use piforge_node::client;
use piforge_node::membership::MemberState;

pub const BIN: &str = env!("CARGO_BIN_EXE_piforge-node");
pub const KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";
pub const OTHER_KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";

pub fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
pub fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

pub struct Agent {
    pub name: String,
    /// `[tags]` of node.toml, `k = "v"` lines.
    pub tags: Vec<(String, String)>,
    pub gossip: SocketAddr,
    pub http: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
    pub seeds: Vec<SocketAddr>,
}

impl Agent {
    pub fn config(&self, key: &str, extra: &str) {
        let tags: String = self
            .tags
            .iter()
            .map(|(k, v)| format!("\"{k}\" = \"{v}\"\n"))
            .collect();
        let text = format!(
            "schema-version = 1\nname = \"{}\"\nstate-dir = \"{}\"\n\
             [cluster]\nname = \"test\"\nkey = \"{key}\"\nmdns = false\n\
             [tags]\n{tags}\
             [detector]\nprobe-period-ms = 300\nprobe-rtt-ms = 100\nsuspect-to-failed-ms = 1200\n\
             {extra}",
            self.name,
            self.dir.join("state").display(),
        );
        std::fs::write(self.dir.join("node.toml"), text).unwrap();
    }

    pub fn new(root: &Path, name: &str, seeds: &[&Agent], key: &str, extra: &str) -> Agent {
        let role = format!("r-{name}");
        Agent::spawn(
            root,
            name,
            "127.0.0.1",
            &[("role", &role)],
            seeds,
            key,
            extra,
        )
    }

    /// An agent whose gossip socket is on `ip` (any 127.0.0.0/8 address is loopback), with
    /// these tags.
    pub fn spawn(
        root: &Path,
        name: &str,
        ip: &str,
        tags: &[(&str, &str)],
        seeds: &[&Agent],
        key: &str,
        extra: &str,
    ) -> Agent {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut a = Agent {
            name: name.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            gossip: UdpSocket::bind((ip, 0)).unwrap().local_addr().unwrap(),
            http: free_tcp().to_string(),
            dir,
            child: None,
            seeds: seeds.iter().map(|s| s.gossip).collect(),
        };
        a.config(key, extra);
        a.start();
        a
    }

    pub fn start(&mut self) {
        let mut cmd = Command::new(BIN);
        cmd.arg("agent")
            .arg("--config")
            .arg(self.dir.join("node.toml"))
            .arg("--bind")
            .arg(self.gossip.to_string())
            .arg("--http")
            .arg(&self.http);
        for s in &self.seeds {
            cmd.arg("--seed").arg(s.to_string());
        }
        let log = std::fs::File::create(self.dir.join("agent.log")).unwrap();
        cmd.stdout(Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().unwrap());
        wait_for(&format!("{} HTTP up", self.name), 10, || {
            client::members(&self.http).is_ok()
        });
    }

    pub fn members(&self) -> Vec<ApiMember> {
        client::members(&self.http).unwrap_or_default()
    }

    pub fn state_of(&self, name: &str) -> Option<MemberState> {
        self.members()
            .into_iter()
            .find(|m| m.name == name)
            .map(|m| m.state)
    }

    pub fn signal(&mut self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(
            Command::new("kill")
                .args(["-s", sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    pub fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "{} did not exit",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub use piforge_test_support::wait_for;

pub fn all_see(observers: &[&Agent], name: &str, state: MemberState, secs: u64) -> Duration {
    wait_for(&format!("everyone to see {name} {state:?}"), secs, || {
        observers.iter().all(|o| o.state_of(name) == Some(state))
    })
}

/// Runs a helper program of a test (openssl, mosquitto_passwd) and insists it worked.
pub fn run(cmd: &str, args: &[&str], dir: &Path) {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} is missing ({e}): ci/setup installs it"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and certificates it signed, made by the openssl CLI (a second TLS implementation).
pub struct Pki {
    pub dir: PathBuf,
    /// PEM of the CA certificate.
    pub ca: String,
}

impl Pki {
    /// A fresh CA (P-256) named `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let subj = format!("/CN={name}");
        run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                &subj,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            &dir,
        );
        let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
        Pki { dir, ca }
    }

    /// Issues `<name>.pem` + `<name>.key` for 127.0.0.1/localhost (server and client use);
    /// returns (certificate path, key path).
    pub fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let ext = format!("{name}.ext");
        std::fs::write(
            self.dir.join(&ext),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        run(
            "openssl",
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=localhost",
            ],
            &self.dir,
        );
        run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
            &self.dir,
        );
        (self.dir.join(pem), self.dir.join(key))
    }
}

/// A TOML basic string holding `s` (PEM text, paths).
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A webhook receiver: Python's http.server (TLS by Python's ssl module when given a
/// certificate) answering 200 to every POST and appending one JSON line per request (path,
/// headers, body) to `log`.
pub struct Receiver {
    child: Child,
    pub url: String,
    log: PathBuf,
}

const RECEIVER_PY: &str = r#"
import http.server, json, ssl, sys
port_file, log, cert, key = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n).decode()
        with open(log, "a") as f:
            f.write(json.dumps({"path": self.path, "auth": self.headers.get("Authorization"),
                "key": self.headers.get("Idempotency-Key"), "body": body}) + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
if cert:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
with open(port_file + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
import os; os.rename(port_file + ".tmp", port_file)
srv.serve_forever()
"#;

impl Receiver {
    /// Starts a receiver in `dir`; https with `tls = Some((cert, key))`.
    pub fn start(dir: &Path, tls: Option<(&Path, &Path)>) -> Receiver {
        let script = dir.join("receiver.py");
        std::fs::write(&script, RECEIVER_PY).unwrap();
        let port_file = dir.join("receiver.port");
        let log = dir.join("receiver.log");
        let (cert, key) = match tls {
            Some((c, k)) => (c.display().to_string(), k.display().to_string()),
            None => (String::new(), String::new()),
        };
        let child = Command::new("python3")
            .arg(&script)
            .arg(&port_file)
            .arg(&log)
            .arg(&cert)
            .arg(&key)
            .stdout(Stdio::null())
            .spawn()
            .expect("python3 is missing: ci/setup installs it");
        wait_for("webhook receiver", 10, || port_file.exists());
        let port = std::fs::read_to_string(&port_file).unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        Receiver {
            child,
            url: format!("{scheme}://127.0.0.1:{}/hook", port.trim()),
            log,
        }
    }

    /// Every request so far, as JSON values.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
