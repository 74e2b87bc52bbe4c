//! MQTT sink (rumqttc; TLS through [`crate::tls`], user/password login): events, a retained
//! per-node status, a last will, and cluster-wide alerts published once.
//!
//! Broker: `[mqtt] broker` is `mqtts://[user@]host[:port]`, `mqtt://...` or `host:port`; the
//! password, CA and client certificate are separate fields (node.toml is 0600). A refused
//! login or a failed TLS handshake is logged in plain words (never with the password) and
//! retried with a doubling delay up to a minute ([`Backoff`]).
//!
//! Topics (prefix from `[mqtt] topic-prefix`, default `piforge`):
//! - `<prefix>/<cluster>/nodes/<self>/status`, retained: `online` after connecting, `left` on a
//!   graceful leave, and `offline` from the broker itself (last will) when the node vanishes.
//! - `<prefix>/<cluster>/events/<self>`: one JSON [`crate::api::ApiEvent`] per event this node
//!   observes (QoS 1). Each agent publishes under its own name, so subscribers can tell
//!   observers apart; a failure seen by N nodes is N messages here.
//! - `<prefix>/<cluster>/alerts/<member>`, retained: one JSON [`Alert`] (`"alert": "failed"`)
//!   per failure of a member generation, **published once for the whole cluster**; cleared
//!   (empty retained message) when the member is back.
//!
//! Who publishes an alert: every node subscribes to the cluster's `nodes/+/status` and
//! `alerts/+` topics, so it knows which members are `online` at the broker and which failures
//! were already alerted. On `member-failed` a node ranks the members that are alive in its view
//! *and* online at the broker (itself always counted), by name, without the failed one
//! ([`alert_rank`]). Rank 0 publishes at once; rank r waits r × the backup delay and publishes
//! only if no alert for that member generation has reached it meanwhile (the elected node died
//! too, or lost the broker). The retained alert is the deduplication record, so a node that
//! (re)connects later learns about it and stays quiet. Duplicates need the elected publisher's
//! message to take longer than the backup delay (detector suspect→failed plus two probe
//! periods) to travel through the broker.
//!
//! The sink runs in its own task and never blocks gossip; while the broker is away events are
//! queued in rumqttc up to its capacity and then dropped with a warning.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use piforge_config::node::MqttSettings;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event as MqttEvent, LastWill, MqttOptions,
    Packet, QoS, TlsConfiguration, Transport,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::api::ApiEvent;
use crate::membership::{Event, EventKind, MemberState};
use crate::shared::Shared;

/// The topics of one node in its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Retained status topic of this node.
    pub status: String,
    /// Event topic of this node.
    pub events: String,
    /// `<prefix>/<cluster>/nodes/`: status topics of all nodes start with it.
    pub nodes: String,
    /// `<prefix>/<cluster>/alerts/`: alert topics start with it.
    pub alerts: String,
}

impl Topics {
    /// The retained alert topic of `member`.
    pub fn alert(&self, member: &str) -> String {
        format!("{}{member}", self.alerts)
    }

    /// Subscription filters: every node's status, every alert.
    pub fn filters(&self) -> [String; 2] {
        [
            format!("{}+/status", self.nodes),
            format!("{}+", self.alerts),
        ]
    }
}

/// Topics for node `name` of `cluster` under `prefix`.
pub fn topics(prefix: &str, cluster: &str, name: &str) -> Topics {
    Topics {
        status: format!("{prefix}/{cluster}/nodes/{name}/status"),
        events: format!("{prefix}/{cluster}/events/{name}"),
        nodes: format!("{prefix}/{cluster}/nodes/"),
        alerts: format!("{prefix}/{cluster}/alerts/"),
    }
}

/// The body of a retained alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// What happened; `failed` is the only alert so far.
    pub alert: String,
    /// The member it is about.
    pub member: String,
    /// Its generation (a restart is a new generation, so a new alert).
    pub generation: u64,
    /// Its gossip address.
    pub addr: String,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// The node that published the alert.
    pub observer: String,
}

/// Parses an alert body from the broker (untrusted: anyone may publish there).
pub fn parse_alert(payload: &[u8]) -> Option<Alert> {
    serde_json::from_slice(payload).ok()
}

/// What this node has learnt from the broker: which nodes are online and which failures were
/// alerted. Fed with every message on the [`Topics::filters`].
#[derive(Debug, Default)]
pub struct AlertBook {
    online: BTreeSet<String>,
    alerted: BTreeMap<String, u64>,
}

impl AlertBook {
    /// Records one message (status or alert); anything else is ignored.
    pub fn observe(&mut self, t: &Topics, topic: &str, payload: &[u8]) {
        if let Some(node) = topic
            .strip_prefix(&t.nodes)
            .and_then(|r| r.strip_suffix("/status"))
        {
            if payload == b"online" {
                self.online.insert(node.to_string());
            } else {
                self.online.remove(node);
            }
        } else if let Some(member) = topic.strip_prefix(&t.alerts) {
            match parse_alert(payload) {
                Some(a) if a.alert == "failed" && a.member == member => {
                    self.alerted.insert(a.member, a.generation);
                }
                _ => {
                    self.alerted.remove(member);
                }
            }
        }
    }

    /// Whether a `failed` alert for this member generation (or a newer one) is on the broker.
    pub fn alerted(&self, member: &str, generation: u64) -> bool {
        self.alerted.get(member).is_some_and(|g| *g >= generation)
    }

    /// Whether any alert about `member` is retained on the broker.
    pub fn has_alert(&self, member: &str) -> bool {
        self.alerted.contains_key(member)
    }

    /// Records an alert this node published itself.
    pub fn record(&mut self, member: &str, generation: u64) {
        self.alerted.insert(member.to_string(), generation);
    }

    /// Forgets the alert about `member` (after clearing it).
    pub fn clear(&mut self, member: &str) {
        self.alerted.remove(member);
    }

    /// Nodes whose retained status is `online`.
    pub fn online(&self) -> &BTreeSet<String> {
        &self.online
    }
}

/// This node's place in the line of alert publishers for a failure of `subject`: the number of
/// members before `me` (by name) that are alive in `alive` and online at the broker, excluding
/// `subject`. `me` counts as online whatever the broker says. 0 means "publish now".
pub fn alert_rank(me: &str, subject: &str, alive: &[String], online: &BTreeSet<String>) -> usize {
    alive
        .iter()
        .filter(|n| n.as_str() != subject && n.as_str() != me)
        .filter(|n| online.contains(n.as_str()))
        .filter(|n| n.as_str() < me)
        .count()
}

/// Starts the MQTT task; it returns after publishing `left` once the node has left.
/// `backup_delay` is how long each rank waits for the one before it to publish an alert.
pub fn spawn(
    settings: MqttSettings,
    name: String,
    shared: Arc<Shared>,
    backup_delay: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    let t = topics(&settings.topic_prefix, &shared.cluster, &name);
    let opts = match options(&settings, &format!("piforge-{}-{name}", shared.cluster), &t) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "mqtt is off");
            return None;
        }
    };
    let broker = settings.broker.clone();
    let (client, mut eventloop) = AsyncClient::new(opts, 256);
    let rx = shared.events.subscribe();
    let mut leaving = shared.leaving.subscribe();
    let book: Arc<Mutex<AlertBook>> = Arc::default();
    let mut backoff = Backoff::default();
    Some(tokio::spawn(async move {
        let publisher = tokio::spawn(publish_events(
            Publisher {
                client: client.clone(),
                topics: t.clone(),
                me: name,
                shared,
                book: book.clone(),
                backup_delay,
            },
            rx,
        ));
        loop {
            tokio::select! {
                ev = eventloop.poll() => match ev {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        backoff.reset();
                        tracing::info!(broker = %broker, "connected to the mqtt broker");
                        let c = client.clone();
                        let t = t.clone();
                        tokio::spawn(async move {
                            let _ = c.publish(&t.status, QoS::AtLeastOnce, true, "online").await;
                            for f in t.filters() {
                                let _ = c.subscribe(f, QoS::AtLeastOnce).await;
                            }
                        });
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        lock(&book).observe(&t, &p.topic, &p.payload);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let wait = backoff.next_delay();
                        tracing::warn!(broker = %broker, error = %explain(&e),
                            retry_in_s = wait.as_secs(), "mqtt connection failed");
                        tokio::time::sleep(wait).await;
                    }
                },
                r = leaving.changed() => {
                    if r.is_err() || *leaving.borrow() {
                        break;
                    }
                }
            }
        }
        publisher.abort();
        // Say goodbye properly: a retained `left`, then a clean disconnect (no last will).
        let _ = client
            .publish(&t.status, QoS::AtLeastOnce, true, "left")
            .await;
        let _ = client.disconnect().await;
        // `Outgoing::Disconnect` is reported before the packet surely left the socket; the
        // broker closing the connection (an error here) is the proof it got a clean
        // DISCONNECT and will not publish the last will.
        let drain = async {
            let mut sent = false;
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) => sent = true,
                    Ok(_) => {}
                    Err(_) if sent => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }))
}

/// rumqttc options for `settings`: endpoint, login, TLS, keep-alive and the last will.
pub fn options(
    settings: &MqttSettings,
    client_id: &str,
    t: &Topics,
) -> anyhow::Result<MqttOptions> {
    use anyhow::Context;
    let ep = settings.endpoint().map_err(anyhow::Error::msg)?;
    let mut opts = MqttOptions::new(client_id, ep.host.clone(), ep.port);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_last_will(LastWill::new(&t.status, "offline", QoS::AtLeastOnce, true));
    if let Some(user) = &ep.user {
        let pw = settings.password.as_ref().map(|p| p.expose()).unwrap_or("");
        opts.set_credentials(user.clone(), pw);
    }
    if ep.tls {
        let client = match (&settings.client_cert, &settings.client_key) {
            (Some(c), Some(k)) => Some((c.as_str(), k.expose())),
            _ => None,
        };
        let cfg = crate::tls::client_config(settings.ca.as_deref(), client)
            .with_context(|| format!("setting up TLS for mqtt broker {}", settings.broker))?;
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(cfg),
        )));
    }
    Ok(opts)
}

/// A connection error in words a user can act on (never with the password).
pub fn explain(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => "the broker refused the login: check the user in the broker URL and the password \
              (--mqtt-password-file)"
            .to_string(),
        ConnectionError::ConnectionRefused(code) => format!("the broker refused: {code:?}"),
        ConnectionError::Tls(e) => format!("TLS with the broker failed: {e}"),
        other => other.to_string(),
    }
}

/// Reconnect delays: 1 s, doubling up to a minute; back to 1 s after a successful connect.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The longest wait between two attempts.
    pub const MAX: Duration = Duration::from_secs(60);

    /// The wait before the next attempt, after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let d = Duration::from_secs(1u64 << self.failures.min(6)).min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        d
    }

    /// A connection worked.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

fn lock(book: &Mutex<AlertBook>) -> std::sync::MutexGuard<'_, AlertBook> {
    book.lock().unwrap_or_else(|p| p.into_inner())
}

struct Publisher {
    client: AsyncClient,
    topics: Topics,
    me: String,
    shared: Arc<Shared>,
    book: Arc<Mutex<AlertBook>>,
    backup_delay: Duration,
}

impl Publisher {
    /// The rank of this node for an alert about `subject`, from the current view.
    fn rank(&self, subject: &str) -> usize {
        let alive: Vec<String> = {
            let now = self.shared.now();
            self.shared
                .core()
                .members(now)
                .into_iter()
                .filter(|m| m.state == MemberState::Alive)
                .map(|m| m.name)
                .collect()
        };
        let online = lock(&self.book).online().clone();
        alert_rank(&self.me, subject, &alive, &online)
    }

    fn on_event(&self, e: &Event) {
        match e.kind {
            EventKind::MemberFailed => {
                let rank = self.rank(&e.member.name);
                let alert = Alert {
                    alert: "failed".into(),
                    member: e.member.name.clone(),
                    generation: e.member.generation,
                    addr: e.member.addr.to_string(),
                    tags: e.member.tags.clone(),
                    observer: self.me.clone(),
                };
                let delay = self.backup_delay * rank as u32;
                let (client, topic, book) = (
                    self.client.clone(),
                    self.topics.alert(&alert.member),
                    self.book.clone(),
                );
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if lock(&book).alerted(&alert.member, alert.generation) {
                        return;
                    }
                    lock(&book).record(&alert.member, alert.generation);
                    tracing::info!(member = %alert.member, rank, "publishing the failure alert");
                    let body = serde_json::to_vec(&alert).unwrap_or_default();
                    if let Err(e) = client.publish(topic, QoS::AtLeastOnce, true, body).await {
                        tracing::warn!(error = %e, "mqtt alert publish failed");
                    }
                });
            }
            EventKind::MemberJoin => {
                let alerted = lock(&self.book).has_alert(&e.member.name);
                if alerted && self.rank(&e.member.name) == 0 {
                    lock(&self.book).clear(&e.member.name);
                    let (client, topic) = (self.client.clone(), self.topics.alert(&e.member.name));
                    tokio::spawn(async move {
                        // An empty retained message deletes the retained alert.
                        let _ = client.publish(topic, QoS::AtLeastOnce, true, "").await;
                    });
                }
            }
            _ => {}
        }
    }
}

async fn publish_events(p: Publisher, mut rx: broadcast::Receiver<(u64, Event)>) {
    loop {
        match rx.recv().await {
            Ok((seq, e)) => {
                p.on_event(&e);
                let body = match serde_json::to_vec(&ApiEvent::new(seq, e)) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "encoding an mqtt event");
                        continue;
                    }
                };
                if let Err(e) = p
                    .client
                    .publish(&p.topics.events, QoS::AtLeastOnce, false, body)
                    .await
                {
                    tracing::warn!(error = %e, "mqtt publish failed");
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "mqtt sink fell behind");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_minute_and_resets() {
        let mut b = Backoff::default();
        let secs: Vec<u64> = (0..9).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn refused_login_is_explained_without_the_password() {
        let e = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        let text = explain(&e);
        assert!(text.contains("refused the login"), "{text}");
        let mut s = MqttSettings::plain("mqtts://u@127.0.0.1:1");
        s.password = Some(piforge_config::Secret::new("hunter22"));
        s.ca = Some("nope".into());
        let t = topics("p", "c", "n");
        let e = format!("{:#}", options(&s, "id", &t).unwrap_err());
        assert!(e.contains("PEM") && !e.contains("hunter22"), "{e}");
    }

    #[test]
    fn topic_layout() {
        let t = topics("piforge", "lab", "pi-1");
        assert_eq!(t.status, "piforge/lab/nodes/pi-1/status");
        assert_eq!(t.events, "piforge/lab/events/pi-1");
        assert_eq!(t.alert("pi-2"), "piforge/lab/alerts/pi-2");
        assert_eq!(
            t.filters(),
            [
                "piforge/lab/nodes/+/status".to_string(),
                "piforge/lab/alerts/+".to_string()
            ]
        );
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_lowest_online_survivor_publishes_first() {
        let alive = names(&["a", "b", "c", "d"]);
        let online: BTreeSet<String> = names(&["a", "b", "c", "d"]).into_iter().collect();
        // d failed: a publishes, b and c are backups 1 and 2.
        assert_eq!(alert_rank("a", "d", &alive, &online), 0);
        assert_eq!(alert_rank("b", "d", &alive, &online), 1);
        assert_eq!(alert_rank("c", "d", &alive, &online), 2);
        // a failed (still alive in a stale view): b publishes.
        assert_eq!(alert_rank("b", "a", &alive, &online), 0);
        // a has no broker connection: it does not count before b.
        let no_a: BTreeSet<String> = names(&["b", "c"]).into_iter().collect();
        assert_eq!(alert_rank("b", "d", &alive, &no_a), 0);
        // A node always counts itself, even before its own `online` came back.
        assert_eq!(alert_rank("a", "d", &alive, &BTreeSet::new()), 0);
        // Members not alive in the view do not count.
        assert_eq!(alert_rank("c", "d", &names(&["c", "d"]), &online), 0);
    }

    #[test]
    fn book_follows_status_and_alerts() {
        let t = topics("piforge", "lab", "a");
        let mut b = AlertBook::default();
        b.observe(&t, "piforge/lab/nodes/b/status", b"online");
        b.observe(&t, "piforge/lab/nodes/c/status", b"online");
        b.observe(&t, "piforge/lab/nodes/c/status", b"offline");
        b.observe(&t, "piforge/other/nodes/x/status", b"online");
        assert_eq!(b.online().iter().collect::<Vec<_>>(), ["b"]);
        let alert = Alert {
            alert: "failed".into(),
            member: "c".into(),
            generation: 5,
            addr: "10.0.0.3:7946".into(),
            tags: BTreeMap::new(),
            observer: "b".into(),
        };
        b.observe(
            &t,
            "piforge/lab/alerts/c",
            &serde_json::to_vec(&alert).unwrap(),
        );
        assert!(b.alerted("c", 5) && b.alerted("c", 4) && !b.alerted("c", 6));
        // An alert whose body names another member than its topic is not believed.
        b.observe(
            &t,
            "piforge/lab/alerts/d",
            &serde_json::to_vec(&alert).unwrap(),
        );
        assert!(!b.has_alert("d"));
        b.observe(&t, "piforge/lab/alerts/c", b"");
        assert!(!b.has_alert("c"));
        assert_eq!(parse_alert(b"{not json"), None);
    }
}
