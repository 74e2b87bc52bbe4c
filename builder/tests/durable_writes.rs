//! Issue 17, finding 13: files piforge replaces (batch.toml, card files, .sha256/.bmap, cache
//! sidecars, cluster keys) go through one atomic-write helper with a unique temp name. Two
//! `piforge flash` runs at once both rewrite batch.toml: with a shared `batch.toml.part` one
//! run truncated the other's half-written temp file or lost its rename.

use std::path::Path;
use std::sync::Barrier;

use piforge::io::write_atomic;

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "batch.toml")
        .collect()
}

#[test]
fn issue17_concurrent_writers_of_one_file_never_collide() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("batch.toml");
    // Different lengths, so a torn or interleaved write shows as a third content.
    let a = "a".repeat(64 << 10);
    let b = "b".repeat(96 << 10);
    let barrier = Barrier::new(2);
    let (a, b) = (a.as_str(), b.as_str());
    std::thread::scope(|s| {
        for content in [a, b] {
            let (path, barrier) = (&path, &barrier);
            s.spawn(move || {
                barrier.wait();
                for i in 0..300 {
                    write_atomic(path, content.as_bytes(), 0o644)
                        .unwrap_or_else(|e| panic!("write {i}: {e:#}"));
                    let now = std::fs::read_to_string(path).unwrap();
                    assert!(now == a || now == b, "torn file of {} bytes", now.len());
                }
            });
        }
    });
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}
