//! What the tests of builder, firstboot and node share, so each helper exists once: the
//! repository's fixtures, the Debian tools a test needs, child processes that die with the
//! test, free loopback ports, bounded waits and private network namespaces.
//!
//! A dev-dependency only; nothing here is part of a program. Every helper fails loudly
//! (a panic that says what to install or what did not happen), never silently skips.
#![forbid(unsafe_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Raspberry Pi OS fixtures (`tests/fixtures/raspios/<release>/{bootfs,rootfs}`), inside the
/// repository.
pub const RASPIOS_FIXTURES: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/raspios");

/// The tool's path; panics naming the Debian package to install if `tool` is not on PATH
/// (or in /usr/sbin, /sbin). CI installs every package a test names.
pub fn require_tool(tool: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{tool}` not found: apt-get install {package}"))
}

/// Runs `cmd` and insists it succeeded; returns its stdout and stderr together.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    text
}

/// Whether the test runs as root (root ignores permission bits; some tests need it, some
/// check what a non-root user sees).
#[cfg(unix)]
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A loopback TCP port that was free a moment ago (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("binding a loopback port")
        .local_addr()
        .expect("a bound socket has an address")
        .port()
}

/// A child process that is killed (and reaped) when the test is done with it, pass or fail.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 50 ms until it holds; panics with "timed out waiting for {what}" after
/// `secs` seconds. Returns how long it took. A bound, not a timing: tests assert behaviour.
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

/// Network namespaces a test made (`ip netns add`), deleted when the test is done.
pub struct Netns(pub Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `ip ARGS` (iproute2); whether it succeeded.
pub fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixtures_are_in_the_repository() {
        for rel in ["bullseye", "bookworm", "trixie"] {
            let os = PathBuf::from(RASPIOS_FIXTURES)
                .join(rel)
                .join("rootfs/etc/os-release");
            assert!(os.is_file(), "{}", os.display());
        }
    }

    #[test]
    fn a_missing_tool_names_its_package() {
        let e = std::panic::catch_unwind(|| require_tool("no-such-tool-x", "some-package"))
            .unwrap_err();
        let msg = e.downcast_ref::<String>().unwrap();
        assert!(msg.contains("apt-get install some-package"), "{msg}");
        assert!(require_tool("sh", "dash").is_file());
    }

    #[test]
    fn run_ok_returns_the_output_and_refuses_a_failure() {
        assert_eq!(
            run_ok(Command::new("sh").args(["-c", "echo out; echo err >&2"])),
            "out\nerr\n"
        );
        assert!(std::panic::catch_unwind(|| run_ok(&mut Command::new("false"))).is_err());
    }

    #[test]
    fn a_proc_dies_with_its_guard() {
        let p = Proc(Command::new("sleep").arg("30").spawn().unwrap());
        let pid = p.0.id();
        drop(p);
        assert!(!PathBuf::from(format!("/proc/{pid}")).exists());
    }

    #[test]
    fn wait_for_returns_once_true_and_panics_at_its_bound() {
        let mut n = 0;
        wait_for("three polls", 5, || {
            n += 1;
            n == 3
        });
        assert_eq!(n, 3);
        let e = std::panic::catch_unwind(|| wait_for("never", 0, || false)).unwrap_err();
        assert!(
            e.downcast_ref::<String>()
                .unwrap()
                .contains("timed out waiting for never")
        );
    }
}
