//! MQTT with a real mosquitto (Debian `mosquitto`) started by the test on a free loopback
//! port: exactly one message per event and observer, retained `online`/`left` status, the
//! broker's last will `offline` for a SIGKILLed agent, and exactly one cluster-wide `failed`
//! alert for a SIGKILLed member (retained, cleared when it comes back). Fails when `mosquitto`
//! is not installed (CI installs it).

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use piforge_node::membership::MemberState;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

fn mosquitto_bin() -> String {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(String::from)
        .expect("mosquitto is not installed: apt-get install mosquitto (CI: ci/setup installs it)")
}

/// A mosquitto on a free loopback port.
fn broker(dir: &std::path::Path) -> (Broker, u16) {
    let port = free_tcp().port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
    )
    .unwrap();
    let broker = Broker(
        Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("mosquitto", 10, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (broker, port)
}

struct Broker(Child);
impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type Seen = Arc<Mutex<Vec<(String, String, bool)>>>;

fn subscribe(port: u16, id: &str) -> Seen {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client::new(opts, 64);
    client
        .subscribe("piforge/test/#", QoS::AtLeastOnce)
        .unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    std::thread::spawn(move || {
        let _keep = client;
        for ev in conn.iter() {
            match ev {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let body = String::from_utf8_lossy(&p.payload).to_string();
                    s.lock().unwrap().push((p.topic.clone(), body, p.retain));
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    seen
}

fn status(seen: &Seen, node: &str) -> Option<String> {
    let topic = format!("piforge/test/nodes/{node}/status");
    seen.lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(t, _, _)| *t == topic)
        .map(|(_, b, _)| b.clone())
}

#[test]
fn mqtt_events_status_and_last_will() {
    let root = tempfile::tempdir().unwrap();
    let (broker, port) = broker(root.path());
    let seen = subscribe(port, "piforge-test-sub");
    std::thread::sleep(Duration::from_millis(300));

    let mqtt = format!("[mqtt]\nbroker = \"127.0.0.1:{port}\"\n");
    let mut a = Agent::new(root.path(), "a", &[], KEY, &mqtt);
    let mut b = Agent::new(root.path(), "b", &[&a], KEY, "");
    let mut c = Agent::new(root.path(), "c", &[&a], KEY, &mqtt);
    all_see(&[&a, &b], "c", MemberState::Alive, 10);
    wait_for("status online", 10, || {
        status(&seen, "a").as_deref() == Some("online")
            && status(&seen, "c").as_deref() == Some("online")
    });
    b.signal("KILL");
    b.wait_exit(5);
    all_see(&[&a, &c], "b", MemberState::Failed, 15);
    // SIGTERM: the node leaves and says so (retained `left`, no last will).
    c.signal("TERM");
    assert!(c.wait_exit(10).success());
    wait_for("status left", 10, || {
        status(&seen, "c").as_deref() == Some("left")
    });
    // SIGKILL: the broker announces `offline` (keep-alive 5 s, so within ~8 s).
    a.signal("KILL");
    a.wait_exit(5);
    wait_for("last will", 15, || {
        status(&seen, "a").as_deref() == Some("offline")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        status(&seen, "c").as_deref(),
        Some("left"),
        "c's last will fired after a leave"
    );

    let mut events: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for (topic, body, _) in seen.lock().unwrap().iter() {
        if let Some(observer) = topic.strip_prefix("piforge/test/events/") {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            let k = (
                observer.to_string(),
                v["event"].as_str().unwrap().to_string(),
                v["member"]["name"].as_str().unwrap().to_string(),
            );
            *events.entry(k).or_default() += 1;
        }
    }
    let k = |o: &str, e: &str, m: &str| (o.to_string(), e.to_string(), m.to_string());
    assert_eq!(
        events.get(&k("a", "member-join", "b")),
        Some(&1),
        "{events:?}"
    );
    assert_eq!(
        events.get(&k("a", "member-join", "c")),
        Some(&1),
        "{events:?}"
    );
    assert_eq!(
        events.get(&k("a", "member-failed", "b")),
        Some(&1),
        "{events:?}"
    );
    assert_eq!(
        events.get(&k("a", "member-leave", "c")),
        Some(&1),
        "{events:?}"
    );
    assert_eq!(
        events.get(&k("c", "member-join", "a")),
        Some(&1),
        "{events:?}"
    );
    drop(broker);
}

/// Alerts about `member` that `seen` received: (body, retained flag), non-empty only.
fn alerts(seen: &Seen, member: &str) -> Vec<(serde_json::Value, bool)> {
    let topic = format!("piforge/test/alerts/{member}");
    seen.lock()
        .unwrap()
        .iter()
        .filter(|(t, b, _)| *t == topic && !b.is_empty())
        .map(|(_, b, r)| (serde_json::from_str(b).unwrap(), *r))
        .collect()
}

#[test]
fn sigkill_gives_exactly_one_failed_alert() {
    let root = tempfile::tempdir().unwrap();
    let (broker, port) = broker(root.path());
    let seen = subscribe(port, "piforge-test-alerts");
    std::thread::sleep(Duration::from_millis(300));
    let mqtt = format!("[mqtt]\nbroker = \"127.0.0.1:{port}\"\n");
    // Four observers with MQTT; the victim is `a`, the lowest name, so the elected publisher
    // must skip it and be `b`.
    let mut a = Agent::new(root.path(), "a", &[], KEY, &mqtt);
    let b = Agent::new(root.path(), "b", &[&a], KEY, &mqtt);
    let c = Agent::new(root.path(), "c", &[&a], KEY, &mqtt);
    let d = Agent::new(root.path(), "d", &[&b], KEY, &mqtt);
    for n in ["a", "b", "c", "d"] {
        all_see(&[&a, &b, &c, &d], n, MemberState::Alive, 15);
    }
    wait_for("everyone online", 10, || {
        ["a", "b", "c", "d"]
            .iter()
            .all(|n| status(&seen, n).as_deref() == Some("online"))
    });
    // Let every agent's own subscription see the others' retained `online`.
    std::thread::sleep(Duration::from_millis(500));

    a.signal("KILL");
    a.wait_exit(5);
    let t = all_see(&[&b, &c, &d], "a", MemberState::Failed, 15);
    eprintln!("SIGKILL → failed everywhere after {t:?}");
    wait_for("the failure alert", 10, || !alerts(&seen, "a").is_empty());
    // Backups wait 3 s per rank (the minimum; test timings are shorter): c 3 s, d 6 s after
    // their own detection. Give them all that and more, then count.
    std::thread::sleep(Duration::from_secs(8));
    let got = alerts(&seen, "a");
    assert_eq!(got.len(), 1, "not exactly one alert: {got:?}");
    let alert = &got[0].0;
    assert_eq!(alert["alert"], "failed");
    assert_eq!(alert["member"], "a");
    assert_eq!(
        alert["observer"], "b",
        "the elected publisher is the lowest survivor"
    );
    assert_eq!(alert["tags"]["role"], "r-a");
    // The per-observer event feed still has one `member-failed` from each survivor.
    let failed_events = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, body, _)| {
            t.starts_with("piforge/test/events/") && {
                let v: serde_json::Value = serde_json::from_str(body).unwrap();
                v["event"] == "member-failed" && v["member"]["name"] == "a"
            }
        })
        .count();
    assert_eq!(failed_events, 3);
    wait_for("last will offline", 15, || {
        status(&seen, "a").as_deref() == Some("offline")
    });

    // A late subscriber finds the alert retained.
    let late = subscribe(port, "piforge-test-late");
    wait_for("retained alert", 5, || !alerts(&late, "a").is_empty());
    let got = alerts(&late, "a");
    assert!(got.len() == 1 && got[0].1, "{got:?}");

    // `a` comes back (new generation): the elected node clears the retained alert, and no new
    // `failed` alert appears.
    a.seeds = vec![b.gossip];
    a.start();
    all_see(&[&b, &c, &d], "a", MemberState::Alive, 15);
    wait_for("alert cleared", 10, || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(t, body, _)| t == "piforge/test/alerts/a" && body.is_empty())
    });
    let later = subscribe(port, "piforge-test-later");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        alerts(&later, "a").is_empty(),
        "the alert is still retained"
    );
    assert!(
        status(&later, "a").is_some(),
        "the later subscriber got nothing at all"
    );
    assert_eq!(alerts(&seen, "a").len(), 1);
    drop(broker);
}
