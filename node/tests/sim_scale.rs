//! The membership protocol at 10, 100 and 1,000 simulated nodes with 1 % packet loss: how
//! many gossip rounds a join and a failure take to reach every member, and the bytes each node
//! sends per second. Asserts that the rounds grow no faster than O(log N); prints the table
//! (`cargo test -p piforge-node --test sim_scale -- --nocapture`).

use std::time::{Duration, Instant};

use piforge_node::membership::{EventKind, MemberState};
use piforge_node::sim::{Sim, Step, steps::*};

fn name(i: usize) -> String {
    format!("n{i:04}")
}

/// foca's periodic gossip period (`Config::new_lan`): the unit of a dissemination round.
const ROUND: Duration = Duration::from_millis(200);
/// The default suspect-to-failed timeout: a fixed part of every failure's convergence time.
const SUSPECT_TO_FAILED: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Run {
    n: usize,
    formed: Duration,
    join: Duration,
    fail: Duration,
    bytes_per_node_s: f64,
    false_failed: usize,
    wall: Duration,
}

fn run(n: usize, seed: u64) -> Run {
    let wall = Instant::now();
    let mut sim = Sim::new(seed);
    // A million join events at 1,000 nodes: keep only what is asserted.
    sim.log_filter = |e| e.kind == EventKind::MemberFailed;
    let mut s = vec![Step::SetLoss(0.01)];
    s.extend((0..n).map(|i| add(&name(i), &[])));
    s.push(Step::Bootstrap);
    sim.run(&s).expect("nodes start");
    let t0 = sim.now();
    // Everyone lists the last and the first member alive (tags exchanged: join events out).
    sim.run(&[
        secs(5),
        await_state(&name(n - 1), MemberState::Alive, 60),
        await_state(&name(0), MemberState::Alive, 60),
    ])
    .expect("the cluster forms");
    let formed = sim.now() - t0;

    // Idle traffic over a window that includes full-state syncs.
    let sent = |sim: &Sim| -> u64 {
        (0..n)
            .filter_map(|i| sim.counters(&name(i)))
            .map(|c| c.bytes_out)
            .sum()
    };
    let (b0, t_idle) = (sent(&sim), sim.now());
    sim.run(&[secs(60)]).unwrap();
    let bytes_per_node_s = (sent(&sim) - b0) as f64 / n as f64 / (sim.now() - t_idle).as_secs_f64();
    let false_failed = sim.log.len();

    // A join: the newcomer knows one seed; every member must list it alive.
    let newcomer = name(n);
    let seed_name = name(n / 3);
    sim.run(&[
        add(&newcomer, &[seed_name.as_str()]),
        await_state(&newcomer, MemberState::Alive, 120),
    ])
    .expect("the join converges");
    let join = *sim.waits.last().unwrap();

    // A failure: every survivor must list the victim failed.
    let victim = name(n / 2);
    sim.run(&[
        Step::Kill(victim.clone()),
        await_state(&victim, MemberState::Failed, 300),
    ])
    .expect("the failure converges");
    let fail = *sim.waits.last().unwrap();
    if std::env::var("PIFORGE_SIM_SCALE_DEBUG").is_ok() {
        let t_kill = sim.now() - fail;
        let mut ts: Vec<f64> = sim
            .log
            .iter()
            .filter(|(t, _, e)| {
                *t >= t_kill && e.kind == EventKind::MemberFailed && e.member.name == victim
            })
            .map(|(t, _, _)| (*t - t_kill).as_secs_f64())
            .collect();
        ts.sort_by(f64::total_cmp);
        eprintln!("n={n} delivered {} dropped {}", sim.delivered, sim.dropped);
        eprintln!(
            "n={n} failed times: {:?}",
            ts.iter().map(|t| format!("{t:.1}")).collect::<Vec<_>>()
        );
    }
    Run {
        n,
        formed,
        join,
        fail,
        bytes_per_node_s,
        false_failed,
        wall: wall.elapsed(),
    }
}

fn rounds(d: Duration) -> f64 {
    d.as_secs_f64() / ROUND.as_secs_f64()
}

#[test]
fn convergence_rounds_grow_logarithmically_up_to_1000_nodes() {
    println!(
        "| nodes | formed | join seen by all | SIGKILL failed on all | bytes/s/node idle | false failed | wall |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut runs = Vec::new();
    let sizes: Vec<usize> = std::env::var("PIFORGE_SIM_SCALE_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 1000]);
    for (seed, n) in sizes.into_iter().enumerate() {
        let r = run(n, seed as u64 + 1);
        println!(
            "| {} | {:.1} s | {:.1} s ({:.0} rounds) | {:.1} s ({:.0} rounds) | {:.0} | {} | {:.1} s |",
            r.n,
            r.formed.as_secs_f64(),
            r.join.as_secs_f64(),
            rounds(r.join),
            r.fail.as_secs_f64(),
            rounds(r.fail),
            r.bytes_per_node_s,
            r.false_failed,
            r.wall.as_secs_f64()
        );
        runs.push(r);
    }
    // O(log N): from the smallest run up, the rounds a join takes, and the rounds a failure
    // takes beyond the fixed suspicion timeout, may grow at most in proportion to log N (with
    // a factor 2 of slack and a floor for the tiny counts of the smallest cluster). Linear
    // growth would be 100x from 10 to 1,000 nodes.
    let base = &runs[0];
    let beyond = |r: &Run| rounds(r.fail.saturating_sub(SUSPECT_TO_FAILED));
    for r in &runs {
        let log_ratio = (r.n as f64).log2() / (base.n as f64).log2();
        let join_bound = 2.0 * log_ratio * rounds(base.join).max(2.0);
        assert!(
            rounds(r.join) <= join_bound,
            "join at {} nodes took {:.0} rounds, bound {join_bound:.0}: {runs:?}",
            r.n,
            rounds(r.join)
        );
        let fail_bound = 2.0 * log_ratio * beyond(base).max(5.0);
        assert!(
            beyond(r) <= fail_bound,
            "failure at {} nodes took {:.0} rounds past the suspicion timeout, bound \
             {fail_bound:.0}: {runs:?}",
            r.n,
            beyond(r)
        );
        assert_eq!(r.false_failed, 0, "false failures at 1 % loss: {r:?}");
    }
}
