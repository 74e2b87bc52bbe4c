//! Handler processes under an event storm (issue #17, finding 9): a peer changes its tags many
//! times in a row, every change is a `member-update` for the observer, whose handler takes a
//! second; at most [`MAX_CONCURRENT_HANDLERS`] handlers run at once and the rest wait their
//! turn instead of being forked all at once (or dropped). What waited is coalesced: fewer runs
//! than events, and the last change reaches a handler.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::*;
use piforge_node::api::TagsRequest;
use piforge_node::client;
use piforge_node::events::MAX_CONCURRENT_HANDLERS;
use piforge_node::membership::MemberState;

/// (starts, ends, most handlers running at once) from the handler's log.
fn overlap(log: &str) -> (usize, usize, usize) {
    let mut marks: Vec<(f64, i32)> = log
        .lines()
        .filter_map(|l| {
            let (k, t) = l.split_once(' ')?;
            Some((t.trim().parse().ok()?, if k == "S" { 1 } else { -1 }))
        })
        .collect();
    // Ends before starts at the same instant.
    marks.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (mut now, mut most) = (0, 0);
    for (_, d) in &marks {
        now += d;
        most = most.max(now);
    }
    let starts = marks.iter().filter(|(_, d)| *d == 1).count();
    (starts, marks.len() - starts, most as usize)
}

#[test]
fn issue17_handler_storm_runs_a_bounded_number_at_once() {
    let root = tempfile::tempdir().unwrap();
    let script = root.path().join("slow.sh");
    let out = root.path().join("slow.out");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"S $(date +%s.%N)\" >> {o}\ncat >> {o}\nsleep 1\necho \"E $(date +%s.%N)\" >> {o}\n",
            o = out.display()
        ),
    )
    .unwrap();
    assert!(
        Command::new("chmod")
            .arg("+x")
            .arg(&script)
            .status()
            .unwrap()
            .success()
    );
    let extra = format!(
        "[[handlers]]\ncommand = \"{}\"\nevents = [\"member-update\"]\ntimeout-secs = 20\n",
        script.display()
    );
    let a = Agent::new(root.path(), "a", &[], KEY, &extra);
    let b = Agent::new(root.path(), "b", &[&a], KEY, "");
    all_see(&[&a, &b], "b", MemberState::Alive, 10);
    for i in 0..16 {
        let req = TagsRequest {
            set: BTreeMap::from([("n".to_string(), i.to_string())]),
            delete: vec![],
        };
        client::tags(&b.http, &req).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every started handler ends, and the count stops growing.
    let mut last = 0;
    wait_for("the handlers to drain", 30, || {
        let log = std::fs::read_to_string(&out).unwrap_or_default();
        let (s, e, _) = overlap(&log);
        let done = log.contains("n=15") && s == e && s == last;
        last = s;
        std::thread::sleep(Duration::from_millis(600));
        done
    });
    let log = std::fs::read_to_string(&out).unwrap();
    let (starts, _, most) = overlap(&log);
    eprintln!("{starts} handler runs, at most {most} at once");
    assert!(
        most <= MAX_CONCURRENT_HANDLERS,
        "{most} handlers ran at once:\n{log}"
    );
    assert!(starts >= 2, "the storm was lost, not queued: {starts} runs");
    assert!(
        starts < 16,
        "16 updates made {starts} runs: nothing was coalesced\n{log}"
    );
    // Every stdin line is one member (b), and the last change is among them.
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("b\t")).collect();
    assert!(
        lines.len() <= starts,
        "more than one line per member and run:\n{log}"
    );
    assert!(
        lines.iter().any(|l| l.contains("n=15")),
        "the last update never reached a handler:\n{log}"
    );
}
