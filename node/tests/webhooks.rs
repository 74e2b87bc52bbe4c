//! Webhooks against a real receiver started by the test (Python's http.server, TLS by
//! Python's ssl module with a certificate the openssl CLI made): https with a CA from the
//! config and a bearer token; a wrong CA is refused; and with five agents on loopback every
//! event is POSTed exactly once for the whole cluster, also when the sender dies (issue #18
//! items 4 and 5).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use piforge_node::membership::MemberState;

/// `[[webhooks]]` for `url` trusting `ca`, with a bearer token, only `member-failed`.
fn webhook(url: &str, ca: &str, token: &str) -> String {
    format!(
        "[[webhooks]]\nurl = {}\nevents = [\"member-failed\"]\nbearer-token = {}\nca = {}\n",
        toml_str(url),
        toml_str(token),
        toml_str(ca)
    )
}

/// POSTs per idempotency key.
fn per_key(r: &Receiver) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for q in r.requests() {
        *m.entry(q["key"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    m
}

fn generation(a: &Agent, name: &str) -> u64 {
    a.members()
        .into_iter()
        .find(|m| m.name == name)
        .map(|m| m.generation)
        .unwrap()
}

#[test]
fn https_webhook_with_ca_and_bearer_token_wrong_ca_refused() {
    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new(root.path(), "ca");
    let other = Pki::new(root.path(), "other-ca");
    let (cert, key) = pki.issue("server");
    let rx = Receiver::start(root.path(), Some((&cert, &key)));
    let token = "tok-3f9a7c";
    let good = webhook(&rx.url, &pki.ca, token);
    // `b` trusts the wrong CA: its every attempt must fail the TLS handshake.
    let bad = format!(
        "{}scope = \"node\"\n",
        webhook(&rx.url, &other.ca, "tok-wrong-ca")
    );
    let a = Agent::new(root.path(), "a", &[], KEY, &good);
    let b = Agent::new(root.path(), "b", &[&a], KEY, &bad);
    let mut c = Agent::new(root.path(), "c", &[&a], KEY, "");
    all_see(&[&a, &b], "c", MemberState::Alive, 15);
    let gen_c = generation(&a, "c");
    c.signal("KILL");
    c.wait_exit(5);
    all_see(&[&a, &b], "c", MemberState::Failed, 15);
    wait_for("the https POST", 10, || !rx.requests().is_empty());
    std::thread::sleep(Duration::from_secs(2));
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let q = &reqs[0];
    assert_eq!(q["path"], "/hook");
    assert_eq!(q["auth"], format!("Bearer {token}"));
    let id = format!("member-failed/c/{gen_c}");
    assert_eq!(q["key"], id.as_str());
    let body: serde_json::Value = serde_json::from_str(q["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["event"], "member-failed");
    assert_eq!(body["member"]["name"], "c");
    // b's TLS failed, in words, and its token went nowhere.
    let log_b = std::fs::read_to_string(b.dir.join("agent.log")).unwrap();
    assert!(
        log_b.contains("webhook failed") && log_b.contains("UnknownIssuer"),
        "{log_b}"
    );
    for log in [
        &log_b,
        &std::fs::read_to_string(a.dir.join("agent.log")).unwrap(),
    ] {
        assert!(!log.contains("tok-"), "a token reached the log: {log}");
    }
}

#[test]
fn five_agents_post_each_failure_once_and_hand_over() {
    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new(root.path(), "ca");
    let (cert, key) = pki.issue("server");
    let rx = Receiver::start(root.path(), Some((&cert, &key)));
    let hook = webhook(&rx.url, &pki.ca, "t0");
    let mut a = Agent::new(root.path(), "a", &[], KEY, &hook);
    let mut b = Agent::new(root.path(), "b", &[&a], KEY, &hook);
    let mut c = Agent::new(root.path(), "c", &[&a], KEY, &hook);
    let mut d = Agent::new(root.path(), "d", &[&a], KEY, &hook);
    let e = Agent::new(root.path(), "e", &[&a], KEY, &hook);
    let all = [&a, &b, &c, &d, &e];
    for n in ["a", "b", "c", "d", "e"] {
        all_see(&all, n, MemberState::Alive, 20);
    }
    let gens: BTreeMap<&str, u64> = ["a", "b", "c", "d"]
        .into_iter()
        .map(|n| (n, generation(&e, n)))
        .collect();
    let id = |n: &str| format!("member-failed/{n}/{}", gens[n]);
    // Settle: every node has seen every node's `alert-sinks` tag.
    std::thread::sleep(Duration::from_secs(1));

    // 1. c dies: four survivors see it, one (a, the lowest) posts.
    c.signal("KILL");
    c.wait_exit(5);
    all_see(&[&a, &b, &d, &e], "c", MemberState::Failed, 15);
    wait_for("c's POST", 10, || per_key(&rx).contains_key(&id("c")));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(per_key(&rx), BTreeMap::from([(id("c"), 1)]));

    // 2. The sender a dies: b takes over, and does not repeat c's failure.
    a.signal("KILL");
    a.wait_exit(5);
    all_see(&[&b, &d, &e], "a", MemberState::Failed, 15);
    wait_for("a's POST", 10, || per_key(&rx).contains_key(&id("a")));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(per_key(&rx), BTreeMap::from([(id("a"), 1), (id("c"), 1)]));

    // 3. The sender b and d die together: b cannot send d's failure, e sends both.
    b.signal("KILL");
    d.signal("KILL");
    b.wait_exit(5);
    d.wait_exit(5);
    all_see(&[&e], "b", MemberState::Failed, 15);
    all_see(&[&e], "d", MemberState::Failed, 15);
    wait_for("b's and d's POSTs", 10, || per_key(&rx).len() == 4);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        per_key(&rx),
        BTreeMap::from([(id("a"), 1), (id("b"), 1), (id("c"), 1), (id("d"), 1)])
    );
}
