//! The agent: the membership core on a real UDP socket, a real clock and signals.
//!
//! [`run`] binds the gossip socket, starts the HTTP server ([`crate::http`]) and the event
//! sinks ([`crate::events`]) around the state they share ([`crate::shared`]), then loops:
//! receive, tick at the core's deadline, flush what the core wants sent, publish events.
//! SIGTERM/SIGINT (or `POST /api/leave`) start a graceful leave; the agent exits once foca has
//! announced it. It deliberately holds no membership logic of its own: that is
//! [`crate::membership`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::net::UdpSocket;

use crate::id::NodeId;
use crate::membership::{Membership, Settings};
use crate::shared::{AgentRequest, Shared, start_leave};

/// Picks this process's generation: larger than any before it on this node (persisted in
/// `state_dir/generation`) and than the wall clock in milliseconds, so it also grows when the
/// state directory is lost.
pub fn next_generation(state_dir: &std::path::Path, now_ms: u64) -> u64 {
    let path = state_dir.join("generation");
    let stored = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let generation = now_ms.max(stored + 1);
    // Atomic and durable: a torn or lost write after a power cut would read back as 0 and let
    // the generation go backwards when the clock is behind.
    let write = std::fs::create_dir_all(state_dir).and_then(|()| {
        piforge_config::atomic::write_atomic(&path, format!("{generation}\n").as_bytes(), None)
    });
    if let Err(e) = write {
        tracing::warn!(path = %path.display(), error = %e, "cannot persist the generation");
    }
    generation
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The address others reach us at when bound to a wildcard: the source address the kernel
/// would use for the default route (a `connect` on UDP sends nothing).
/// The source address of the default route, if there is one (no packet is sent: connecting a
/// UDP socket only picks a route). `None` while the machine has no route off loopback.
fn default_route_ip() -> Option<IpAddr> {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

/// How long a wildcard-bound agent waits for a routable address before it falls back to
/// advertising loopback. At boot the DHCP lease can arrive after `network-online.target`
/// (found by the system test: one of three VMs advertised 127.0.0.1 and was unreachable for its
/// whole life), so waiting is the rule and the fallback only keeps a routeless host running.
const ROUTE_WAIT: Duration = Duration::from_secs(300);

/// Polls `probe` every `tick` until it finds an address or `wait` has passed (then loopback).
async fn wait_for_ip(probe: impl Fn() -> Option<IpAddr>, wait: Duration, tick: Duration) -> IpAddr {
    let deadline = tokio::time::Instant::now() + wait;
    let mut logged = false;
    loop {
        if let Some(ip) = probe() {
            return ip;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                waited_s = wait.as_secs(),
                "no route off this host: advertising 127.0.0.1, other hosts cannot reach this node"
            );
            return IpAddr::V4(Ipv4Addr::LOCALHOST);
        }
        if !logged {
            tracing::info!("waiting for a network address to advertise");
            logged = true;
        }
        tokio::time::sleep(tick).await;
    }
}

async fn resolve(seeds: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for s in seeds {
        match tokio::net::lookup_host(s.as_str()).await {
            Ok(mut addrs) => out.extend(addrs.next()),
            Err(e) => tracing::warn!(seed = %s, error = %e, "cannot resolve seed"),
        }
    }
    out
}

/// Runs the agent until it has left the cluster (signal or `POST /api/leave`).
pub async fn run(req: AgentRequest) -> Result<()> {
    let sock = UdpSocket::bind(req.bind)
        .await
        .with_context(|| format!("binding gossip socket {}", req.bind))?;
    let bound = sock
        .local_addr()
        .context("reading the gossip socket address")?;
    let advertise = match req.advertise {
        Some(a) => a,
        None if bound.ip().is_unspecified() => SocketAddr::new(
            wait_for_ip(default_route_ip, ROUTE_WAIT, Duration::from_secs(1)).await,
            bound.port(),
        ),
        None => bound,
    };
    let generation = next_generation(&req.state_dir, unix_ms());
    let id = NodeId {
        name: req.name.clone(),
        generation,
        addr: advertise,
    };
    let mut settings = Settings::new(id, &req.cluster, req.key.clone());
    settings.tags = req.tags.clone();
    settings.seeds = resolve(&req.seeds).await;
    settings.probe_period = Duration::from_millis(req.detector.probe_period_ms);
    settings.probe_rtt = Duration::from_millis(req.detector.probe_rtt_ms);
    settings.suspect_to_failed = Duration::from_millis(req.detector.suspect_to_failed_ms);
    settings.phi_threshold = req.detector.phi_threshold;
    settings.reap_after = Duration::from_secs(req.detector.reap_after_secs);
    let clock = Instant::now();
    let core = Membership::new(settings, Duration::ZERO, {
        use rand_node::RngExt;
        rand_node::make_rng::<rand_node::rngs::StdRng>().random::<u64>()
    })
    .context("starting the membership core")?;
    let shared = Arc::new(Shared::new(core, clock, &req));

    let listener = tokio::net::TcpListener::bind(req.http)
        .await
        .with_context(|| format!("binding HTTP socket {}", req.http))?;
    let http_addr = listener
        .local_addr()
        .context("reading the HTTP socket address")?;
    tracing::info!(name = %req.name, generation, gossip = %bound, advertise = %advertise,
        http = %http_addr, "agent started");
    tokio::spawn(crate::http::serve(listener, shared.clone()));
    let sinks = crate::events::spawn_sinks(&req, &shared);
    let mdns = if req.mdns {
        match crate::mdns::start(&req.name, advertise, http_addr.port(), shared.clone()) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "mDNS discovery is off");
                None
            }
        }
    } else {
        None
    };

    let result = gossip_loop(&sock, &shared).await;
    shared.leaving.send_replace(true);
    if let Some(d) = mdns {
        let _ = d.shutdown();
    }
    // Give sinks that say goodbye (MQTT `left`) a moment, but never hang the exit.
    for s in sinks {
        let _ = tokio::time::timeout(Duration::from_secs(3), s).await;
    }
    result
}

async fn gossip_loop(sock: &UdpSocket, shared: &Arc<Shared>) -> Result<()> {
    // One byte more than the protocol's largest datagram: a longer one shows up as such and is
    // refused unopened. Opening happens outside the core's lock.
    let mut buf = vec![0u8; crate::seal::MAX_DATAGRAM + 1];
    let opener = shared.core().opener();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        let deadline = shared.core().next_deadline();
        let sleep = deadline.saturating_sub(shared.now());
        tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    let opened = opener.open(&buf[..n]);
                    let now = shared.now();
                    shared.core().handle_opened(from, n, opened, now);
                }
                Err(e) => tracing::debug!(error = %e, "receive failed"),
            },
            () = tokio::time::sleep(sleep) => {
                let now = shared.now();
                shared.core().tick(now);
            }
            () = shared.wake.notified() => {}
            _ = sigterm.recv() => start_leave(shared, "SIGTERM"),
            _ = tokio::signal::ctrl_c() => start_leave(shared, "SIGINT"),
        }
        let (out, events, left) = {
            let mut core = shared.core();
            (core.drain_outgoing(), core.drain_events(), core.has_left())
        };
        for (to, bytes) in out {
            if let Err(e) = sock.send_to(&bytes, to).await {
                tracing::debug!(%to, error = %e, "send failed");
            }
        }
        shared.publish(events);
        if left {
            tracing::info!("left the cluster");
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_grows_across_restarts_even_with_a_clock_behind() {
        let dir = tempfile::tempdir().unwrap();
        let g1 = next_generation(dir.path(), 1000);
        assert_eq!(g1, 1000);
        assert_eq!(next_generation(dir.path(), 5), 1001);
        assert_eq!(next_generation(dir.path(), 5000), 5000);
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn a_late_address_is_awaited_not_replaced_by_loopback() {
        let calls = std::cell::Cell::new(0);
        let lease: IpAddr = "10.77.0.111".parse().unwrap();
        let probe = || {
            calls.set(calls.get() + 1);
            (calls.get() > 3).then_some(lease)
        };
        let ip = rt().block_on(wait_for_ip(
            probe,
            Duration::from_secs(10),
            Duration::from_millis(5),
        ));
        assert_eq!(ip, lease);
        assert_eq!(calls.get(), 4);
    }

    #[test]
    fn without_any_route_it_falls_back_to_loopback_after_the_wait() {
        let ip = rt().block_on(wait_for_ip(
            || None,
            Duration::from_millis(30),
            Duration::from_millis(5),
        ));
        assert_eq!(ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
}
