//! Power-cut safety: stop first boot after each action k, boot again (a new run, with other
//! randomness), and the end state (every file, mode, link and recorded owner) equals an
//! uninterrupted run — with the identity of the interrupted run once its record was written.

mod common;

use common::*;
use piforge_firstboot::apply::RecordingSystem;
use piforge_firstboot::{Outcome, TestHooks, run_firstboot};

fn quick(entropy: u8, step_limit: Option<usize>) -> TestHooks {
    TestHooks {
        entropy: Some([entropy; 32]),
        step_limit,
        // RSA generation would dominate ~150 runs; the identity logic is the same without it.
        rsa_bits: Some(0),
    }
}

fn reference(rel: Rel, entropy: u8) -> (Snapshot, usize) {
    let f = Fake::new(rel, true, "10000000aaaaaa01");
    let mut sys = RecordingSystem::default();
    let out = run_firstboot(&f.request(quick(entropy, None)), &mut sys).unwrap();
    let Outcome::Configured { changed, .. } = out else {
        panic!("{out:?}")
    };
    (without_log(snapshot(&f.root, Some(&sys))), changed.len())
}

fn without_log(mut s: Snapshot) -> Snapshot {
    // Logs and run reports hold timings.
    s.retain(|k, _| !k.ends_with("firstboot.log") && !k.ends_with("-report.json"));
    s
}

#[test]
fn interrupted_after_every_step_converges_to_the_same_end_state() {
    for rel in Rel::ALL {
        let (ref1, n) = reference(rel, 1);
        let (ref2, _) = reference(rel, 2);
        assert_ne!(ref1, ref2, "different randomness, different identity");
        assert!(n > 40, "{n} actions");
        eprintln!("{rel:?}: {n} changing actions, cutting after each");
        // One more than the number of changes: the plan also has steps that were no-ops.
        for k in 0..=n + 8 {
            let f = Fake::new(rel, true, "10000000aaaaaa01");
            let mut sys = RecordingSystem::default();
            let out = run_firstboot(&f.request(quick(1, Some(k))), &mut sys).unwrap();
            let record_written = f.root.join("var/lib/piforge/identity").exists();
            // Next boot: a fresh run, with different randomness.
            run_firstboot(&f.request(quick(2, None)), &mut sys).unwrap();
            let end = without_log(snapshot(&f.root, Some(&sys)));
            let want = if record_written { &ref1 } else { &ref2 };
            assert_eq!(
                diff(want, &end),
                Vec::<String>::new(),
                "{rel:?}: cut after {k} steps ({out:?})"
            );
        }
    }
}

#[test]
fn interrupted_re_identification_resumes_on_the_next_boot() {
    use piforge_firstboot::run_reidentify;
    let base = Fake::new(Rel::Bookworm, true, "10000000aaaaaa01");
    let mut sys = RecordingSystem::default();
    run_firstboot(&base.request(quick(1, None)), &mut sys).unwrap();
    base.set_serial("10000000bbbbbb02");
    let reference = |entropy: u8| {
        let c = base.clone_to_new_dir();
        let mut sys = RecordingSystem::default();
        run_reidentify(&c.reidentify_request(quick(entropy, None)), &mut sys).unwrap();
        // The boot after verifies the new identity once (a marker).
        run_reidentify(&c.reidentify_request(quick(9, None)), &mut sys).unwrap();
        let Outcome::Reidentify { changed, .. } =
            run_reidentify(&c.reidentify_request(quick(9, None)), &mut sys).unwrap()
        else {
            panic!()
        };
        assert!(changed.is_empty(), "{changed:?}");
        (without_log(snapshot(&c.root, None)), sys.running_hostname)
    };
    let (ref1, host1) = reference(1 + 10);
    let (ref2, _) = reference(2 + 10);
    assert_ne!(ref1, ref2);
    assert_eq!(host1.as_deref(), Some("pi-bbbb02"));
    for k in 0..40 {
        let c = base.clone_to_new_dir();
        let mut sys = RecordingSystem::default();
        let out = run_reidentify(&c.reidentify_request(quick(11, Some(k))), &mut sys).unwrap();
        let rec = std::fs::read_to_string(c.root.join("var/lib/piforge/identity")).unwrap();
        let new_record = rec.contains("10000000bbbbbb02");
        // Next boot, then one more: converged (and verified), and then quiet.
        run_reidentify(&c.reidentify_request(quick(12, None)), &mut sys).unwrap();
        run_reidentify(&c.reidentify_request(quick(12, None)), &mut sys).unwrap();
        let Outcome::Reidentify { changed, .. } =
            run_reidentify(&c.reidentify_request(quick(13, None)), &mut sys).unwrap()
        else {
            panic!()
        };
        assert!(
            changed.is_empty(),
            "cut after {k}: third boot changed {changed:?}"
        );
        let end = without_log(snapshot(&c.root, None));
        let want = if new_record { &ref1 } else { &ref2 };
        assert_eq!(
            diff(want, &end),
            Vec::<String>::new(),
            "cut after {k} ({out:?})"
        );
    }
}

/// The background host key step (issue #20) cut after every action converges on what an
/// uninterrupted one leaves: the keys derive from the identity seed, the marker goes last.
#[test]
fn interrupted_background_host_keys_converge() {
    use piforge_firstboot::run_host_keys;
    let keys = |entropy: u8, limit: Option<usize>| TestHooks {
        entropy: Some([entropy; 32]),
        step_limit: limit,
        rsa_bits: Some(2048),
    };
    let base = Fake::new(Rel::Bookworm, true, "10000000aaaaaa01");
    let mut sys = RecordingSystem::default();
    run_firstboot(&base.request(quick(1, None)), &mut sys).unwrap();
    let reference = {
        let c = base.clone_to_new_dir();
        let mut sys = RecordingSystem::default();
        run_host_keys(&c.reidentify_request(keys(5, None)), &mut sys).unwrap();
        without_log(snapshot(&c.root, None))
    };
    assert!(!reference.contains_key("var/lib/piforge/host-keys.pending"));
    for k in 0..6 {
        let c = base.clone_to_new_dir();
        let mut sys = RecordingSystem::default();
        run_host_keys(&c.reidentify_request(keys(6, Some(k))), &mut sys).unwrap();
        run_host_keys(&c.reidentify_request(keys(7, None)), &mut sys).unwrap();
        let end = without_log(snapshot(&c.root, None));
        assert_eq!(
            diff(&reference, &end),
            Vec::<String>::new(),
            "cut after {k}"
        );
    }
}
