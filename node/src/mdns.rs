//! mDNS/DNS-SD discovery (`mdns-sd`, pure Rust): advertise `_piforge._udp.local.` with the
//! cluster name, member name and HTTP API port in TXT, browse the same type, and join every instance of the same cluster.
//!
//! `mdns-sd` opens 5353 with address and port reuse, so it coexists with avahi-daemon. The
//! daemon runs its own thread; the browse loop runs on another and only calls
//! [`crate::membership::Membership::add_seed`]. A peer found here becomes a seed, so it is
//! re-joined with backoff while we are alone. TXT `cluster` is a hint, not a credential:
//! a member of another cluster (or a stranger) simply fails to authenticate.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{Context, Result};
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};

use crate::shared::Shared;

pub use piforge_config::discovery::SERVICE_TYPE;
use piforge_config::discovery::{TXT_CLUSTER, TXT_HTTP_PORT, TXT_NAME};

/// Which gossip address to join for a resolved instance, if any: same cluster, not ourselves,
/// an IPv4 address (the first in sorted order, for determinism).
pub fn peer_to_join(
    our_cluster: &str,
    our_instance: &str,
    instance_fullname: &str,
    txt_cluster: Option<&str>,
    addrs: &[IpAddr],
    port: u16,
) -> Option<SocketAddr> {
    if txt_cluster != Some(our_cluster) || instance_fullname == our_instance {
        return None;
    }
    let mut v4: Vec<IpAddr> = addrs.iter().copied().filter(IpAddr::is_ipv4).collect();
    v4.sort();
    v4.first().map(|ip| SocketAddr::new(*ip, port))
}

/// Instance name of a node: `<name>.<cluster>` keeps two clusters on one LAN apart.
pub fn instance_name(name: &str, cluster: &str) -> String {
    format!("{name}-{cluster}")
}

/// Starts advertising and browsing. Keep the daemon alive for as long as discovery should run.
/// `http_port` goes into TXT so `piforge inventory` on a laptop can find the HTTP API.
pub fn start(
    name: &str,
    advertise: SocketAddr,
    http_port: u16,
    shared: Arc<Shared>,
) -> Result<ServiceDaemon> {
    let daemon = ServiceDaemon::new().context("starting the mDNS daemon")?;
    let cluster = shared.cluster.clone();
    let instance = instance_name(name, &cluster);
    let host = format!("{name}.local.");
    let http_port = http_port.to_string();
    let props = [
        (TXT_CLUSTER, cluster.as_str()),
        (TXT_NAME, name),
        (TXT_HTTP_PORT, http_port.as_str()),
    ];
    let info = if advertise.ip().is_unspecified() {
        ServiceInfo::new(
            SERVICE_TYPE,
            &instance,
            &host,
            "",
            advertise.port(),
            &props[..],
        )
        .map(|i| i.enable_addr_auto())
    } else {
        ServiceInfo::new(
            SERVICE_TYPE,
            &instance,
            &host,
            advertise.ip(),
            advertise.port(),
            &props[..],
        )
    }
    .context("building the mDNS service record")?;
    let our_fullname = info.get_fullname().to_string();
    daemon
        .register(info)
        .context("registering the mDNS service")?;
    let rx = daemon.browse(SERVICE_TYPE).context("browsing mDNS")?;
    std::thread::Builder::new()
        .name("mdns-browse".into())
        .spawn(move || {
            while let Ok(ev) = rx.recv() {
                let ServiceEvent::ServiceResolved(s) = ev else { continue };
                let addrs: Vec<IpAddr> = s.get_addresses_v4().into_iter().map(IpAddr::V4).collect();
                let peer = peer_to_join(
                    &cluster,
                    &our_fullname,
                    s.get_fullname(),
                    s.get_property_val_str(TXT_CLUSTER),
                    &addrs,
                    s.get_port(),
                );
                if let Some(addr) = peer {
                    tracing::info!(peer = %addr, instance = s.get_fullname(), "found a member over mDNS");
                    let now = shared.now();
                    shared.core().add_seed(addr, now);
                    shared.wake.notify_one();
                }
            }
        })
        .context("starting the mDNS browse thread")?;
    Ok(daemon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_only_same_cluster_others() {
        let ips: Vec<IpAddr> = vec![
            "fe80::1".parse().unwrap(),
            "10.0.0.9".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        ];
        let me = "a-lab._piforge._udp.local.";
        let other = "b-lab._piforge._udp.local.";
        assert_eq!(
            peer_to_join("lab", me, other, Some("lab"), &ips, 7946),
            Some("10.0.0.3:7946".parse().unwrap())
        );
        assert_eq!(peer_to_join("lab", me, me, Some("lab"), &ips, 7946), None);
        assert_eq!(
            peer_to_join("lab", me, other, Some("prod"), &ips, 7946),
            None
        );
        assert_eq!(peer_to_join("lab", me, other, None, &ips, 7946), None);
        assert_eq!(
            peer_to_join("lab", me, other, Some("lab"), &ips[..1], 7946),
            None
        );
    }
}
