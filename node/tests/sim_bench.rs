//! In-process benchmark on the simulated transport (seeded, deterministic): join convergence,
//! failure detection, and false `failed` events at 10 % loss, for 10 and 100 nodes.
//! Slow at 100 nodes, so ignored by default; run with
//! `cargo test -p piforge-node --release --test sim_bench -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use piforge_node::membership::{EventKind, MemberState};
use piforge_node::sim::{Sim, Step, steps::*};

fn name(i: usize) -> String {
    format!("n{i:03}")
}

fn bench(n: usize, loss: f64, quiet_minutes: u64) -> (Duration, Duration, usize, f64) {
    let mut sim = Sim::new(42 + n as u64);
    sim.template = |s| s.cluster_size_hint = 100;
    let mut s = vec![Step::SetLoss(loss), add(&name(0), &[])];
    for i in 1..n {
        let (prev, first) = (name(i - 1), name(0));
        s.push(add(&name(i), &[prev.as_str(), first.as_str()]));
    }
    sim.run(&s).expect("nodes start");
    // Join convergence: time until every node sees every node alive.
    let start = sim.now();
    for i in 0..n {
        sim.run(&[await_state(&name(i), MemberState::Alive, 120)])
            .expect("converges");
    }
    let joined = sim.now() - start;
    // Quiet period under loss: count false failures.
    let t0 = sim.now();
    sim.run(&[Step::Advance(Duration::from_secs(60 * quiet_minutes))])
        .unwrap();
    let false_failed = sim
        .log
        .iter()
        .filter(|(t, _, e)| *t >= t0 && e.kind == EventKind::MemberFailed)
        .count();
    let bytes: u64 = (0..n)
        .filter_map(|i| sim.counters(&name(i)))
        .map(|c| c.bytes_out)
        .sum();
    let per_node_bps = bytes as f64 / n as f64 / sim.now().as_secs_f64();
    // Failure detection.
    let victim = name(n / 2);
    let t1 = sim.now();
    sim.run(&[
        Step::Kill(victim.clone()),
        await_state(&victim, MemberState::Failed, 120),
    ])
    .expect("detects");
    (joined, sim.now() - t1, false_failed, per_node_bps)
}

#[test]
#[ignore = "slow: 100 simulated nodes for minutes of simulated time; run by hand"]
fn sim_benchmark_table() {
    println!(
        "| nodes | loss | join converged | kill detected everywhere | false failed (quiet period) | bytes/s/node | wall |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (n, loss) in [(10, 0.0), (10, 0.1), (100, 0.0), (100, 0.1)] {
        let wall = Instant::now();
        let minutes = std::env::var("PIFORGE_SIM_QUIET_MIN")
            .ok()
            .and_then(|m| m.parse().ok())
            .unwrap_or(10);
        let (j, d, f, bps) = bench(n, loss, minutes);
        println!(
            "| {n} | {:.0} % | {:.1} s | {:.1} s | {f} | {bps:.0} | {:.1} s |",
            loss * 100.0,
            j.as_secs_f64(),
            d.as_secs_f64(),
            wall.elapsed().as_secs_f64()
        );
    }
}

/// Spread of failure detection: when the first and the last observer declared the victim failed.
#[test]
#[ignore = "slow; diagnostic for detection time versus cluster size"]
fn sim_detection_spread() {
    for (n, quiet) in [(10usize, 10u64), (60, 10), (100, 10), (100, 120)] {
        let mut sim = Sim::new(7 + n as u64);
        sim.template = |s| s.cluster_size_hint = 100;
        let mut s = vec![add(&name(0), &[])];
        for i in 1..n {
            let first = name(0);
            s.push(add(&name(i), &[first.as_str()]));
        }
        for i in 0..n {
            s.push(await_state(&name(i), MemberState::Alive, 120));
        }
        s.push(secs(quiet));
        sim.run(&s).unwrap();
        let victim = name(n / 2);
        let t0 = sim.now();
        sim.run(&[
            Step::Kill(victim.clone()),
            await_state(&victim, MemberState::Failed, 300),
        ])
        .unwrap();
        let times: Vec<f64> = sim
            .log
            .iter()
            .filter(|(t, _, e)| {
                *t >= t0 && e.kind == EventKind::MemberFailed && e.member.name == victim
            })
            .map(|(t, _, _)| (*t - t0).as_secs_f64())
            .collect();
        let first = times.iter().cloned().fold(f64::MAX, f64::min);
        let last = times.iter().cloned().fold(0.0, f64::max);
        println!(
            "n={n} quiet={quiet}s: first failed after {first:.1} s, last after {last:.1} s ({} observers)",
            times.len()
        );
    }
}
