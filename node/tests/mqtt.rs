//! MQTT with a real mosquitto (Debian `mosquitto`) started by the test on a free loopback
//! port: exactly one message per event, retained `online`/`left` status, and the broker's last
//! will `offline` for a SIGKILLed agent. Skipped, loudly, when `mosquitto` is not installed.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use piforge_node::membership::MemberState;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

fn mosquitto_bin() -> Option<String> {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(String::from)
}

struct Broker(Child);
impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

type Seen = Arc<Mutex<Vec<(String, String, bool)>>>;

fn subscribe(port: u16) -> Seen {
    let mut opts = MqttOptions::new("piforge-test-sub", "127.0.0.1", port);
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
    let Some(bin) = mosquitto_bin() else {
        eprintln!("SKIPPED mqtt test: mosquitto is not installed (apt-get install mosquitto)");
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let port = free_tcp().port();
    let conf = root.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n"),
    )
    .unwrap();
    let broker = Broker(
        Command::new(bin)
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
    let seen = subscribe(port);
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
