//! What first boot and the clone check spend on SSH host keys, before and after issue #20.
//!
//! `cargo bench -p piforge-firstboot --bench host_keys` prints a table, one row per seed:
//! - `before`: all three keys made on the Pi (what first boot did until #20: ed25519 + ecdsa
//!   + RSA-3072 prime search, whose spread matters as much as its median);
//! - `card keys`: parsing the three keys the host made (what first boot does now);
//! - `ed25519`: what the clone check (before the network) and a cloneable card's first boot
//!   do now; ECDSA and RSA are left to the background step after boot (`rsa` column).
//!
//! Run it with the payload's profile to see what a Pi gets:
//! `cargo bench -p piforge-firstboot --bench host_keys --profile pi`.

use std::time::Instant;

use piforge_firstboot::identity::{RSA_BITS, host_key, host_keys};

fn main() {
    let runs: usize = std::env::var("PIFORGE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let (mut before, mut card, mut ed, mut rsa) = (vec![], vec![], vec![], vec![]);
    println!(
        "| seed | before: all three on the Pi ms | now: card keys (parse) ms | now: ed25519 only ms | background rsa-{RSA_BITS} ms |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for i in 0..runs {
        let seed = [i as u8 + 1; 32];
        let t = Instant::now();
        let all = host_keys(&seed, "bench", RSA_BITS).expect("all three keys");
        let b = ms(t);
        assert_eq!(all.len(), 3);
        let t = Instant::now();
        for k in &all {
            piforge_config::host_keys::parse_private(k.kind, k.private.expose())
                .expect("a key just made parses");
        }
        let c = ms(t);
        let t = Instant::now();
        host_key(&seed, "bench", "ed25519", RSA_BITS).expect("ed25519");
        let e = ms(t);
        let t = Instant::now();
        host_key(&seed, "bench", "rsa", RSA_BITS).expect("rsa");
        let r = ms(t);
        println!("| {} | {b:.0} | {c:.2} | {e:.2} | {r:.0} |", i + 1);
        before.push(b);
        card.push(c);
        ed.push(e);
        rsa.push(r);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (b, c) = (median(&mut before), median(&mut card));
    println!(
        "| median | {b:.0} | {c:.2} | {:.2} | {:.0} |",
        median(&mut ed),
        median(&mut rsa)
    );
    println!(
        "first boot's host key step: {b:.0} ms before, {c:.2} ms now ({:.0}x less)",
        b / c
    );
}
