//! MQTT sink (rumqttc, plain TCP, no TLS): events, a retained per-node status, and a last will.
//!
//! Topics (prefix from `[mqtt] topic-prefix`, default `piforge`):
//! - `<prefix>/<cluster>/nodes/<self>/status`, retained: `online` after connecting, `left` on a
//!   graceful leave, and `offline` from the broker itself (last will) when the node vanishes.
//! - `<prefix>/<cluster>/events/<self>`: one JSON [`crate::api::ApiEvent`] per event this node
//!   observes (QoS 1). Each agent publishes under its own name, so subscribers can tell
//!   observers apart.
//!
//! The sink runs in its own task and never blocks gossip; while the broker is away events are
//! queued in rumqttc up to its capacity and then dropped with a warning.

use std::sync::Arc;
use std::time::Duration;

use piforge_config::node::MqttSettings;
use rumqttc::{AsyncClient, Event as MqttEvent, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::broadcast;

use crate::agent::Shared;
use crate::api::ApiEvent;

/// The topics of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Retained status topic.
    pub status: String,
    /// Event topic.
    pub events: String,
}

/// Topics for node `name` of `cluster` under `prefix`.
pub fn topics(prefix: &str, cluster: &str, name: &str) -> Topics {
    Topics {
        status: format!("{prefix}/{cluster}/nodes/{name}/status"),
        events: format!("{prefix}/{cluster}/events/{name}"),
    }
}

/// Starts the MQTT task; it returns after publishing `left` once the node has left.
pub fn spawn(
    settings: MqttSettings,
    name: String,
    shared: Arc<Shared>,
) -> Option<tokio::task::JoinHandle<()>> {
    let Some((host, port)) = settings
        .broker
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
    else {
        tracing::error!(broker = %settings.broker, "mqtt broker must be host:port");
        return None;
    };
    let t = topics(&settings.topic_prefix, &shared.cluster, &name);
    let mut opts = MqttOptions::new(format!("piforge-{}-{name}", shared.cluster), host, port);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_last_will(LastWill::new(&t.status, "offline", QoS::AtLeastOnce, true));
    let (client, mut eventloop) = AsyncClient::new(opts, 256);
    let rx = shared.events.subscribe();
    let mut leaving = shared.leaving.subscribe();
    Some(tokio::spawn(async move {
        let publisher = tokio::spawn(publish_events(client.clone(), t.events.clone(), rx));
        loop {
            tokio::select! {
                ev = eventloop.poll() => match ev {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        tracing::info!("connected to the mqtt broker");
                        let c = client.clone();
                        let topic = t.status.clone();
                        tokio::spawn(async move {
                            let _ = c.publish(topic, QoS::AtLeastOnce, true, "online").await;
                        });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "mqtt connection failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
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
        let drain = async {
            while let Ok(ev) = eventloop.poll().await {
                if matches!(ev, MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }))
}

async fn publish_events(
    client: AsyncClient,
    topic: String,
    mut rx: broadcast::Receiver<(u64, crate::membership::Event)>,
) {
    loop {
        match rx.recv().await {
            Ok((seq, e)) => {
                let body = match serde_json::to_vec(&ApiEvent::new(seq, e)) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "encoding an mqtt event");
                        continue;
                    }
                };
                if let Err(e) = client.publish(&topic, QoS::AtLeastOnce, false, body).await {
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
    fn topic_layout() {
        let t = topics("piforge", "lab", "pi-1");
        assert_eq!(t.status, "piforge/lab/nodes/pi-1/status");
        assert_eq!(t.events, "piforge/lab/events/pi-1");
    }
}
