//! The report a run leaves on the root for `piforge status` (through the node agent's
//! `GET /api/node`): outcome, hostname and how long each phase took, as
//! `piforge_config::status::RunReport` JSON in `/var/lib/piforge/firstboot-report.json` (or
//! `reidentify-report.json` for the clone check). Public data only (no secret is ever in a
//! report), so mode 0644.
//!
//! Best effort: a report that cannot be written is logged and the run goes on.

use std::path::Path;
use std::time::Instant;

use piforge_config::status::{FIRSTBOOT_REPORT_PATH, Phase, RunReport};
use tracing::warn;

use crate::action::{Base, Dirs, Owner};
use crate::apply::{self, System};

/// Times the phases of one run.
#[derive(Debug)]
pub struct Timer {
    start: Instant,
    last: Instant,
    started_at_uptime: Option<f64>,
    phases: Vec<Phase>,
}

/// Seconds since the kernel started, from `<root>/proc/uptime` (absent on a test prefix).
pub fn uptime(root: &Path) -> Option<f64> {
    std::fs::read_to_string(root.join("proc/uptime"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Timer {
    /// Starts timing now.
    pub fn start(root: &Path) -> Timer {
        let now = Instant::now();
        Timer {
            start: now,
            last: now,
            started_at_uptime: uptime(root),
            phases: vec![],
        }
    }

    /// Ends the phase `name` (it began where the previous one ended).
    pub fn phase(&mut self, name: &str) {
        let now = Instant::now();
        self.phases.push(Phase {
            name: name.to_string(),
            ms: now.duration_since(self.last).as_millis() as u64,
        });
        self.last = now;
    }

    /// The report so far.
    pub fn report(
        &self,
        outcome: &str,
        reason: Option<&str>,
        hostname: Option<&str>,
        host_keys_pending: Vec<String>,
    ) -> RunReport {
        RunReport {
            outcome: outcome.to_string(),
            reason: reason.map(String::from),
            hostname: hostname.map(String::from),
            started_at_uptime: self.started_at_uptime,
            total_ms: self.start.elapsed().as_millis() as u64,
            phases: self.phases.clone(),
            host_keys_pending,
        }
    }

    /// Writes the first-boot report.
    pub fn save(
        &self,
        dirs: &Dirs,
        sys: &mut dyn System,
        outcome: &str,
        reason: Option<&str>,
        hostname: Option<&str>,
        pending: Vec<String>,
    ) {
        self.save_as(
            dirs,
            sys,
            FIRSTBOOT_REPORT_PATH,
            outcome,
            reason,
            hostname,
            pending,
        );
    }

    /// Writes the report to `rel` under the root.
    #[allow(clippy::too_many_arguments)]
    pub fn save_as(
        &self,
        dirs: &Dirs,
        sys: &mut dyn System,
        rel: &str,
        outcome: &str,
        reason: Option<&str>,
        hostname: Option<&str>,
        pending: Vec<String>,
    ) {
        let r = self.report(outcome, reason, hostname, pending);
        let json = serde_json::to_vec_pretty(&r).expect("a report always serializes");
        let p = dirs.root.join(rel);
        if let Err(e) = apply::write_atomic(&p, &json, 0o644, Owner::ROOT, Base::Root, sys) {
            warn!(error = %format!("{e:#}"), path = %p.display(), "cannot write the run report");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_add_up_and_uptime_parses() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("proc")).unwrap();
        std::fs::write(t.path().join("proc/uptime"), "12.34 40.00\n").unwrap();
        let mut timer = Timer::start(t.path());
        timer.phase("facts");
        std::thread::sleep(std::time::Duration::from_millis(20));
        timer.phase("plan");
        let r = timer.report("configured", None, Some("pi-1"), vec!["rsa".into()]);
        assert_eq!(r.started_at_uptime, Some(12.34));
        assert_eq!(
            r.phases.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["facts", "plan"]
        );
        assert!(r.phases[1].ms >= 20, "{r:?}");
        assert!(r.total_ms >= r.phases.iter().map(|p| p.ms).sum::<u64>());
        assert_eq!(uptime(&t.path().join("nope")), None);
    }
}
