//! Event sinks: handler executables and webhooks, fed from the agent's event channel.
//!
//! Each sink runs in its own task and never blocks gossip: a slow handler is killed after its
//! timeout, a webhook runs on the blocking pool, and a sink that falls behind loses events
//! (logged) rather than stalling the loop. Handlers get Serf-style input: `PIFORGE_EVENT`,
//! `PIFORGE_EVENT_ID`, `PIFORGE_SELF_NAME`, `PIFORGE_SELF_ADDR`, `PIFORGE_CLUSTER`,
//! `PIFORGE_TAG_<KEY>` of self and `PIFORGE_OBSERVER_RANK` in the environment, and one line
//! per member on stdin: `name<TAB>ip<TAB>port<TAB>state<TAB>tags` with tags as `k=v,k=v`
//! ([`member_line`]: `%`, control characters, `,` and `=` inside a field are `%XX`).
//! At most [`MAX_CONCURRENT_HANDLERS`] handler processes run at once; further invocations
//! wait in the event channel (bounded: overflow is dropped and logged). Events of one kind
//! that queued up while a node-scoped handler waited for its turn go to one run, one stdin line
//! per member (the latest event per member), as Serf coalesces member events: a burst of 99
//! joins costs a few processes, not 99, and a lone event waits for nothing
//! ([`MAX_MEMBERS_PER_RUN`]). `PIFORGE_EVENT_ID` and `PIFORGE_OBSERVER_RANK` are those of the
//! first line.
//!
//! Sinks with `scope = "cluster"` (webhooks by default) fire once per event for the whole
//! cluster ([`crate::alerts`]); `scope = "node"` sinks (handlers by default: an LED, a local
//! reload) fire on every node that sees the event. Webhooks POST `{"id": ...}` plus the
//! [`ApiEvent`] as JSON with the id also in `Idempotency-Key`, over http or https (rustls,
//! [`crate::tls`]) with an optional bearer token, and retry failures with a doubling delay.
//! This module does not decide what an event is.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use piforge_config::Secret;
use piforge_config::node::{EventHandler, Scope, Webhook};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, broadcast};

use crate::alerts::{Outbox, Pending, SENT_TAG, SINKS_TAG, SentList, event_id, sink_id};
use crate::api::ApiEvent;
use crate::membership::{Event, MemberInfo};
use crate::shared::{AgentRequest, Shared};

/// How many handler processes may run at once on a node (all handlers together).
pub const MAX_CONCURRENT_HANDLERS: usize = 4;
/// Most member lines one handler run gets (the rest of a burst goes to the next run).
pub const MAX_MEMBERS_PER_RUN: usize = 256;
/// How often a webhook is tried before the event is given up (1+2+4+8 s between tries).
pub const WEBHOOK_ATTEMPTS: u32 = 5;

/// One field of a handler's stdin line: `%`, control characters (tab, newline...), `,` and
/// `=` become `%XX`, so a name or tag can neither add a line nor a field nor a tag.
pub fn escape_field(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '%' || c == ',' || c == '=' || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One stdin line for a handler.
pub fn member_line(m: &MemberInfo) -> String {
    let tags: Vec<String> = m
        .tags
        .iter()
        .map(|(k, v)| format!("{}={}", escape_field(k), escape_field(v)))
        .collect();
    format!(
        "{}\t{}\t{}\t{}\t{}\n",
        escape_field(&m.name),
        m.addr.ip(),
        m.addr.port(),
        m.state.as_str(),
        tags.join(",")
    )
}

/// This node's rank among the observers of an event about `subject`: how many members alive
/// in `members` (other than `subject`) sort before `me` by name. Informational for
/// `scope = "node"` handlers; a handler that should act once per cluster uses
/// `scope = "cluster"` instead.
pub fn observer_rank(me: &str, subject: &str, members: &[MemberInfo]) -> usize {
    members
        .iter()
        .filter(|m| m.state == crate::membership::MemberState::Alive)
        .filter(|m| m.name != subject && m.name.as_str() < me)
        .count()
}

/// The environment of a handler for `event` on node `me`, `rank` from [`observer_rank`].
pub fn handler_env(
    event: &Event,
    me: &MemberInfo,
    cluster: &str,
    rank: usize,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("PIFORGE_EVENT".to_string(), event.kind.as_str().to_string()),
        ("PIFORGE_EVENT_ID".to_string(), event_id(event)),
        ("PIFORGE_SELF_NAME".to_string(), me.name.clone()),
        ("PIFORGE_SELF_ADDR".to_string(), me.addr.to_string()),
        ("PIFORGE_CLUSTER".to_string(), cluster.to_string()),
        ("PIFORGE_OBSERVER_RANK".to_string(), rank.to_string()),
    ];
    for (k, v) in &me.tags {
        let key: String = k
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        env.push((format!("PIFORGE_TAG_{key}"), v.clone()));
    }
    env
}

fn wants(filter: &[String], event: &Event) -> bool {
    filter.is_empty() || filter.iter().any(|f| f == event.kind.as_str())
}

/// A webhook endpoint with its HTTP(S) client.
pub struct WebhookClient {
    url: String,
    token: Option<Secret>,
    agent: ureq_node::Agent,
}

impl WebhookClient {
    /// A client for `w`: TLS roots from its CA or the system, no redirects, 10 s timeout.
    pub fn new(w: &Webhook) -> anyhow::Result<WebhookClient> {
        use ureq_node::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
        w.validate().map_err(anyhow::Error::msg)?;
        let roots: Vec<Certificate<'static>> = if w.url.starts_with("https://") {
            crate::tls::roots(w.ca.as_deref())
                .with_context(|| format!("setting up TLS for webhook {}", w.url))?
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect()
        } else {
            Vec::new()
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(RootCerts::Specific(Arc::new(roots)))
            .unversioned_rustls_crypto_provider(crate::tls::provider())
            .build();
        let agent = ureq_node::Agent::config_builder()
            .tls_config(tls)
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent("piforge-node")
            .build()
            .into();
        Ok(WebhookClient {
            url: w.url.clone(),
            token: w.bearer_token.clone(),
            agent,
        })
    }

    /// POSTs `body` (JSON) once; the HTTP status. Blocking.
    pub fn post(&self, id: &str, body: &str) -> anyhow::Result<u16> {
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", id);
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {}", t.expose()));
        }
        let resp = req
            .send(body)
            .with_context(|| format!("posting to webhook {}", self.url))?;
        Ok(resp.status().as_u16())
    }

    /// POSTs until it is accepted (2xx), refused (4xx other than 408/429) or
    /// [`WEBHOOK_ATTEMPTS`] tries failed. Whether it was accepted.
    pub async fn deliver(self: &Arc<Self>, id: &str, body: String) -> bool {
        let mut backoff = crate::mqtt::Backoff::default();
        for attempt in 1..=WEBHOOK_ATTEMPTS {
            let (c, i, b) = (self.clone(), id.to_string(), body.clone());
            match tokio::task::spawn_blocking(move || c.post(&i, &b)).await {
                Ok(Ok(s)) if s < 300 => return true,
                Ok(Ok(s)) if s == 408 || s == 429 || s >= 500 => {
                    tracing::warn!(url = %self.url, status = s, attempt, event = id, "webhook failed");
                }
                Ok(Ok(s)) => {
                    tracing::warn!(url = %self.url, status = s, event = id, "webhook refused the event");
                    return false;
                }
                Ok(Err(e)) => tracing::warn!(url = %self.url, error = %format!("{e:#}"), attempt,
                    event = id, "webhook failed"),
                Err(e) => tracing::warn!(url = %self.url, error = %e, "webhook task failed"),
            }
            if attempt < WEBHOOK_ATTEMPTS {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        tracing::error!(url = %self.url, event = id, "webhook gave up on the event");
        false
    }
}

/// What a webhook receives.
#[derive(serde::Serialize)]
struct WebhookBody {
    /// [`event_id`]: the same from every node, so a receiver can drop a repeat.
    id: String,
    #[serde(flatten)]
    event: ApiEvent,
}

fn webhook_body(seq: u64, event: Event) -> (String, String) {
    let id = event_id(&event);
    let body = WebhookBody {
        id: id.clone(),
        event: ApiEvent::new(seq, event),
    };
    (
        id,
        serde_json::to_string(&body).expect("an event always encodes"),
    )
}

/// A cluster-scoped sink.
enum ClusterSink {
    Webhook(Arc<WebhookClient>, Vec<String>),
    Handler(EventHandler),
}

impl ClusterSink {
    fn events(&self) -> &[String] {
        match self {
            ClusterSink::Webhook(_, e) => e,
            ClusterSink::Handler(h) => &h.events,
        }
    }
}

/// Starts one task per handler and per webhook, and the MQTT task; returns the tasks worth
/// waiting for at exit (MQTT publishes `left`).
pub fn spawn_sinks(req: &AgentRequest, shared: &Arc<Shared>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut wait = Vec::new();
    let pool = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDLERS));
    let mut cluster: Vec<(String, ClusterSink)> = Vec::new();
    for h in &req.handlers {
        match h.scope {
            Scope::Node => {
                let rx = shared.events.subscribe();
                tokio::spawn(run_handler(h.clone(), rx, shared.clone(), pool.clone()));
            }
            Scope::Cluster => cluster.push((
                sink_id(&format!("handler {} {}", h.command, h.events.join(","))),
                ClusterSink::Handler(h.clone()),
            )),
        }
    }
    for w in &req.webhooks {
        let client = match WebhookClient::new(w) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::error!(url = %w.url, error = %format!("{e:#}"), "webhook is off");
                continue;
            }
        };
        match w.scope {
            Scope::Node => {
                let rx = shared.events.subscribe();
                tokio::spawn(run_webhook(client, w.events.clone(), rx));
            }
            Scope::Cluster => cluster.push((
                sink_id(&format!("webhook {} {}", w.url, w.events.join(","))),
                ClusterSink::Webhook(client, w.events.clone()),
            )),
        }
    }
    if !cluster.is_empty() {
        let mut ids: Vec<&str> = cluster.iter().map(|(id, _)| id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let now = shared.now();
        if let Err(e) = shared.core().set_tag(SINKS_TAG, &ids.join(" "), now) {
            tracing::warn!(error = %e, "cannot advertise the cluster-wide sinks");
        }
        let sent: Arc<Mutex<SentList>> = Arc::default();
        for (id, sink) in cluster {
            let rx = shared.events.subscribe();
            tokio::spawn(run_cluster_sink(
                id,
                sink,
                rx,
                shared.clone(),
                pool.clone(),
                sent.clone(),
            ));
        }
    }
    if let Some(m) = &req.mqtt {
        // A backup alert publisher waits until the elected one surely saw the failure too.
        let backup = Duration::from_millis(
            req.detector.suspect_to_failed_ms + 2 * req.detector.probe_period_ms,
        )
        .max(Duration::from_secs(3));
        wait.extend(crate::mqtt::spawn(
            m.clone(),
            req.name.clone(),
            shared.clone(),
            backup,
        ));
    }
    wait
}

async fn next(rx: &mut broadcast::Receiver<(u64, Event)>, sink: &str) -> Option<(u64, Event)> {
    loop {
        match rx.recv().await {
            Ok(e) => return Some(e),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(sink, missed = n, "event sink fell behind");
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// Environment and stdin of a handler run for `events` (one kind, at least one) on this node:
/// the environment of the first, one line per event.
fn handler_input(events: &[Event], shared: &Shared) -> (Vec<(String, String)>, String) {
    let (me, members) = {
        let now = shared.now();
        let ms = shared.core().members(now);
        (ms[0].clone(), ms)
    };
    let first = &events[0];
    let rank = observer_rank(&me.name, &first.member.name, &members);
    // Reaped members are gone from the list: the lines come from the events themselves.
    (
        handler_env(first, &me, &shared.cluster, rank),
        events.iter().map(|e| member_line(&e.member)).collect(),
    )
}

/// Adds `event` to a handler run's `batch` if it is of the batch's kind: replacing an earlier
/// event about the same member (its latest state is what the handler should see), else
/// appended. Returns the event back if it is of another kind (it starts the next run).
pub fn coalesce(batch: &mut Vec<Event>, event: Event) -> Option<Event> {
    if batch.first().is_some_and(|f| f.kind != event.kind) {
        return Some(event);
    }
    match batch
        .iter_mut()
        .find(|e| e.member.name == event.member.name)
    {
        Some(e) => *e = event,
        None => batch.push(event),
    }
    None
}

async fn run_handler(
    h: EventHandler,
    mut rx: broadcast::Receiver<(u64, Event)>,
    shared: Arc<Shared>,
    pool: Arc<Semaphore>,
) {
    let mut carried: Option<Event> = None;
    loop {
        let event = match carried.take() {
            Some(e) => e,
            None => match next(&mut rx, &h.command).await {
                Some((_, e)) => e,
                None => return,
            },
        };
        if !wants(&h.events, &event) {
            continue;
        }
        // Wait for a free slot: the event channel is the (bounded) queue meanwhile.
        let Ok(permit) = pool.clone().acquire_owned().await else {
            return;
        };
        // What queued up meanwhile, of the same kind, goes to this run.
        let mut batch = vec![event];
        while batch.len() < MAX_MEMBERS_PER_RUN {
            match rx.try_recv() {
                Ok((_, e)) if !wants(&h.events, &e) => {}
                Ok((_, e)) => {
                    carried = coalesce(&mut batch, e);
                    if carried.is_some() {
                        break;
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    tracing::warn!(sink = %h.command, missed = n, "event sink fell behind");
                }
                Err(_) => break,
            }
        }
        let (env, stdin) = handler_input(&batch, &shared);
        let h2 = h.clone();
        // One task per invocation: a slow handler delays neither gossip nor the next event.
        tokio::spawn(async move {
            if let Err(e) = invoke(&h2, env, stdin).await {
                tracing::warn!(handler = %h2.command, error = %format!("{e:#}"), "handler failed");
            }
            drop(permit);
        });
    }
}

async fn invoke(h: &EventHandler, env: Vec<(String, String)>, stdin: String) -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new(&h.command)
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting handler {}", h.command))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin.as_bytes()).await; // a handler may ignore stdin
    }
    match tokio::time::timeout(Duration::from_secs(h.timeout_secs), child.wait()).await {
        Ok(status) => {
            let status = status.with_context(|| format!("waiting for handler {}", h.command))?;
            if !status.success() {
                anyhow::bail!("handler {} exited with {status}", h.command);
            }
            Ok(())
        }
        Err(_) => {
            let _ = child.kill().await;
            anyhow::bail!("handler {} killed after {}s", h.command, h.timeout_secs)
        }
    }
}

async fn run_webhook(
    client: Arc<WebhookClient>,
    events: Vec<String>,
    mut rx: broadcast::Receiver<(u64, Event)>,
) {
    while let Some((seq, event)) = next(&mut rx, &client.url).await {
        if !wants(&events, &event) {
            continue;
        }
        let (id, body) = webhook_body(seq, event);
        client.deliver(&id, body).await;
    }
}

/// Delivers one pending event through a cluster-scoped sink; whether it was delivered.
async fn deliver(sink: &ClusterSink, p: Pending, shared: &Shared, pool: &Arc<Semaphore>) -> bool {
    match sink {
        ClusterSink::Webhook(client, _) => {
            let (id, body) = webhook_body(p.seq, p.event);
            client.deliver(&id, body).await
        }
        ClusterSink::Handler(h) => {
            let (env, stdin) = handler_input(std::slice::from_ref(&p.event), shared);
            let Ok(_permit) = pool.acquire().await else {
                return false;
            };
            match invoke(h, env, stdin).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(handler = %h.command, error = %format!("{e:#}"), "handler failed");
                    false
                }
            }
        }
    }
}

async fn run_cluster_sink(
    id: String,
    sink: ClusterSink,
    mut rx: broadcast::Receiver<(u64, Event)>,
    shared: Arc<Shared>,
    pool: Arc<Semaphore>,
    sent: Arc<Mutex<SentList>>,
) {
    let me = shared.core().id().name.clone();
    let mut outbox = Outbox::new(&id, &me);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = rx.recv() => match r {
                Ok((seq, e)) => {
                    if wants(sink.events(), &e) {
                        let now = shared.now();
                        let view = shared.core().members(now);
                        outbox.observe(seq, e, &view, now);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(sink = %id, missed = n, "cluster-wide sink fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tick.tick() => {}
        }
        let now = shared.now();
        let view = shared.core().members(now);
        for p in outbox.due(&view, now) {
            let (key, event) = (p.key.clone(), p.id.clone());
            let delivered = deliver(&sink, p, &shared, &pool).await;
            tracing::info!(sink = %id, event = %event, delivered, "sent once for the cluster");
            // Listed even when it failed for good: a handover must not retry what this node
            // already gave up on.
            let value = sent.lock().unwrap_or_else(|p| p.into_inner()).push(key);
            let now = shared.now();
            if let Err(e) = shared.core().set_tag(SENT_TAG, &value, now) {
                tracing::debug!(error = %e, "cannot list a sent event");
            }
            shared.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{EventKind, MemberState};

    fn member() -> MemberInfo {
        MemberInfo {
            name: "pi-1".into(),
            addr: "10.0.0.1:7946".parse().unwrap(),
            generation: 1,
            state: MemberState::Alive,
            phi: 0.0,
            threshold: 8.0,
            tags: [
                ("role".to_string(), "lb".to_string()),
                ("x-y".to_string(), "1".to_string()),
            ]
            .into(),
            uptime_secs: 3,
            last_seen_secs: None,
        }
    }

    #[test]
    fn handler_input_is_serf_like() {
        let m = member();
        assert_eq!(
            member_line(&m),
            "pi-1\t10.0.0.1\t7946\talive\trole=lb,x-y=1\n"
        );
        let e = Event {
            kind: EventKind::MemberJoin,
            member: m.clone(),
        };
        let env = handler_env(&e, &m, "lab", 2);
        assert!(env.contains(&("PIFORGE_EVENT".into(), "member-join".into())));
        assert!(env.contains(&("PIFORGE_OBSERVER_RANK".into(), "2".into())));
        assert!(env.contains(&("PIFORGE_TAG_X_Y".into(), "1".into())));
        assert!(env.contains(&("PIFORGE_CLUSTER".into(), "lab".into())));
    }

    #[test]
    fn a_burst_of_one_kind_is_one_run_with_the_latest_line_per_member() {
        let ev = |kind, name: &str, role: &str| Event {
            kind,
            member: MemberInfo {
                name: name.into(),
                tags: [("role".to_string(), role.to_string())].into(),
                ..member()
            },
        };
        let mut batch = vec![ev(EventKind::MemberJoin, "pi-1", "a")];
        assert!(coalesce(&mut batch, ev(EventKind::MemberJoin, "pi-2", "a")).is_none());
        assert!(coalesce(&mut batch, ev(EventKind::MemberJoin, "pi-1", "b")).is_none());
        let names: Vec<(&str, &str)> = batch
            .iter()
            .map(|e| (e.member.name.as_str(), e.member.tags["role"].as_str()))
            .collect();
        assert_eq!(names, [("pi-1", "b"), ("pi-2", "a")]);
        // Another kind is not merged: it comes back and starts the next run.
        let back = coalesce(&mut batch, ev(EventKind::MemberFailed, "pi-3", "a"));
        assert_eq!(back.map(|e| e.kind), Some(EventKind::MemberFailed));
        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn observer_rank_counts_alive_members_before_me() {
        let at = |name: &str, state: MemberState| MemberInfo {
            name: name.into(),
            state,
            ..member()
        };
        let ms = [
            at("pi-1", MemberState::Alive),
            at("pi-2", MemberState::Failed),
            at("pi-3", MemberState::Alive),
            at("pi-4", MemberState::Alive),
        ];
        assert_eq!(observer_rank("pi-3", "pi-2", &ms), 1);
        assert_eq!(observer_rank("pi-3", "pi-1", &ms), 0);
        assert_eq!(observer_rank("pi-1", "pi-4", &ms), 0);
        assert_eq!(observer_rank("pi-4", "pi-9", &ms), 2);
    }

    /// Issue #17, finding 9: a name or tag with a tab, newline, comma or `=` must not add a
    /// line, a field or a tag to a handler's input.
    #[test]
    fn issue17_member_line_escapes_separators() {
        let mut m = member();
        m.name = "evil\nroot\t10.0.0.9".into();
        m.tags = [
            ("role".to_string(), "web,admin=yes".to_string()),
            ("a\tb".to_string(), "50%\r\n".to_string()),
        ]
        .into();
        let line = member_line(&m);
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        assert!(line.ends_with('\n'));
        let fields: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
        assert_eq!(fields.len(), 5, "{line:?}");
        assert_eq!(fields[0], "evil%0Aroot%0910.0.0.9");
        let tags: Vec<&str> = fields[4].split(',').collect();
        assert_eq!(tags, ["a%09b=50%25%0D%0A", "role=web%2Cadmin%3Dyes"]);
        // Ordinary values are unchanged.
        assert_eq!(escape_field("pi-1.lab_ü"), "pi-1.lab_ü");
    }
}
