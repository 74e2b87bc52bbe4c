//! How long first boot spends making SSH host keys, the bulk of its CPU time.
//!
//! `cargo bench -p piforge-firstboot --bench host_keys` prints a table: per seed, the time for
//! ed25519 + ecdsa and for the RSA-3072 key (RSA prime search is random, so the spread matters
//! as much as the median). Run it with the payload's profile to see what a Pi gets:
//! `cargo bench -p piforge-firstboot --bench host_keys --profile pi`.

use std::time::Instant;

use piforge_firstboot::identity::{RSA_BITS, host_keys};

fn main() {
    let runs: usize = std::env::var("PIFORGE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let mut small = Vec::new();
    let mut rsa = Vec::new();
    println!("| seed | ed25519+ecdsa ms | rsa-{RSA_BITS} ms |");
    println!("|---:|---:|---:|");
    for i in 0..runs {
        let seed = [i as u8 + 1; 32];
        let t = Instant::now();
        let keys = host_keys(&seed, "bench", 0).expect("ed25519 and ecdsa keys");
        let a = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(keys.len(), 2);
        let t = Instant::now();
        let keys = host_keys(&seed, "bench", RSA_BITS).expect("all three keys");
        let b = t.elapsed().as_secs_f64() * 1e3 - a;
        assert_eq!(keys.len(), 3);
        println!("| {} | {a:.1} | {b:.0} |", i + 1);
        small.push(a);
        rsa.push(b);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "| median | {:.1} | {:.0} |",
        median(&mut small),
        median(&mut rsa)
    );
}
