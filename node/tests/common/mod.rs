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

pub fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

pub fn all_see(observers: &[&Agent], name: &str, state: MemberState, secs: u64) -> Duration {
    wait_for(&format!("everyone to see {name} {state:?}"), secs, || {
        observers.iter().all(|o| o.state_of(name) == Some(state))
    })
}
