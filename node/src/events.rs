//! Event sinks: handler executables and webhooks, fed from the agent's event channel.
//!
//! Each sink runs in its own task and never blocks gossip: a slow handler is killed after its
//! timeout, a webhook runs on the blocking pool, and a sink that falls behind loses events
//! (logged) rather than stalling the loop. Handlers get Serf-style input: `PIFORGE_EVENT`,
//! `PIFORGE_SELF_NAME`, `PIFORGE_SELF_ADDR`, `PIFORGE_CLUSTER`, `PIFORGE_TAG_<KEY>` of self and
//! `PIFORGE_OBSERVER_RANK` in the environment, and one line per member on stdin: `name<TAB>ip<TAB>port<TAB>state<TAB>tags`
//! with tags as `k=v,k=v`. This module does not decide what an event is.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use piforge_config::node::{EventHandler, Webhook};
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;

use crate::agent::{AgentRequest, Shared};
use crate::api::ApiEvent;
use crate::membership::{Event, MemberInfo};

/// One stdin line for a handler.
pub fn member_line(m: &MemberInfo) -> String {
    let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{}\t{}\t{}\t{}\t{}\n",
        m.name,
        m.addr.ip(),
        m.addr.port(),
        m.state.as_str(),
        tags.join(",")
    )
}

/// This node's rank among the observers of an event about `subject`: how many members alive
/// in `members` (other than `subject`) sort before `me` by name. Every node runs its handlers
/// for every event it sees; a handler that should act once per cluster (an SMS) can exit
/// unless `PIFORGE_OBSERVER_RANK` is 0. Unlike the MQTT alerts there is no backup: if the
/// rank-0 node is down too, nobody acts.
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

/// Starts one task per handler and per webhook, and the MQTT task; returns the tasks worth
/// waiting for at exit (MQTT publishes `left`).
pub fn spawn_sinks(req: &AgentRequest, shared: &Arc<Shared>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut wait = Vec::new();
    for h in &req.handlers {
        let rx = shared.events.subscribe();
        tokio::spawn(run_handler(h.clone(), rx, shared.clone()));
    }
    for w in &req.webhooks {
        let rx = shared.events.subscribe();
        tokio::spawn(run_webhook(w.clone(), rx));
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

async fn run_handler(
    h: EventHandler,
    mut rx: broadcast::Receiver<(u64, Event)>,
    shared: Arc<Shared>,
) {
    while let Some((_, event)) = next(&mut rx, &h.command).await {
        if !wants(&h.events, &event) {
            continue;
        }
        let (me, members) = {
            let now = shared.now();
            let ms = shared.core().members(now);
            (ms[0].clone(), ms)
        };
        let rank = observer_rank(&me.name, &event.member.name, &members);
        let env = handler_env(&event, &me, &shared.cluster, rank);
        let mut stdin: String = String::new();
        if members.iter().any(|m| m.name == event.member.name) {
            stdin.push_str(&member_line(&event.member));
        } else {
            stdin.push_str(&member_line(&event.member)); // reaped members are gone from the list
        }
        let h2 = h.clone();
        // One task per invocation: a slow handler delays neither gossip nor the next event.
        tokio::spawn(async move {
            if let Err(e) = invoke(&h2, env, stdin).await {
                tracing::warn!(handler = %h2.command, error = %format!("{e:#}"), "handler failed");
            }
        });
    }
}

async fn invoke(h: &EventHandler, env: Vec<(String, String)>, stdin: String) -> anyhow::Result<()> {
    use anyhow::Context;
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

/// Splits `http://host:port/path` into (`host:port`, `/path`).
pub fn split_http_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return None;
    }
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Some((host, path.to_string()))
}

async fn run_webhook(w: Webhook, mut rx: broadcast::Receiver<(u64, Event)>) {
    let Some((host, path)) = split_http_url(&w.url) else {
        tracing::error!(url = %w.url, "webhook URL must be http://host[:port]/path");
        return;
    };
    while let Some((seq, event)) = next(&mut rx, &w.url).await {
        if !wants(&w.events, &event) {
            continue;
        }
        let body = match serde_json::to_string(&ApiEvent::new(seq, event)) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "encoding a webhook body");
                continue;
            }
        };
        let (host, path) = (host.clone(), path.clone());
        let r = tokio::task::spawn_blocking(move || {
            crate::client::request(&host, "POST", &path, Some(&body), Duration::from_secs(10))
        })
        .await;
        match r {
            Ok(Ok(resp)) if resp.status < 300 => {}
            Ok(Ok(resp)) => tracing::warn!(url = %w.url, status = resp.status, "webhook refused"),
            Ok(Err(e)) => tracing::warn!(url = %w.url, error = %format!("{e:#}"), "webhook failed"),
            Err(e) => tracing::warn!(url = %w.url, error = %e, "webhook task failed"),
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

    #[test]
    fn webhook_urls() {
        assert_eq!(
            split_http_url("http://127.0.0.1:9000/hook"),
            Some(("127.0.0.1:9000".into(), "/hook".into()))
        );
        assert_eq!(
            split_http_url("http://h"),
            Some(("h:80".into(), "/".into()))
        );
        assert_eq!(split_http_url("https://h/x"), None);
    }
}
