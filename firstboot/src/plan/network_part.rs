//! The network part of a plan: NetworkManager keyfiles, dhcpcd or systemd-networkd files, Wi-Fi,
//! by the stack the root uses.

use super::*;

pub(super) fn nm_path(name: &str) -> String {
    format!("{}/piforge-{name}.nmconnection", network::NM_DIR)
}

pub(super) fn network_actions(
    card: &Card,
    facts: &Facts,
    state: &State,
    id: &Identity,
    out: &mut Vec<Action>,
) {
    let net = &card.network;
    let cid = |iface: &str| identity::dhcp_client_id(&id.machine_id, iface);
    let st_for = |iface: &str| net.static_ip.as_ref().filter(|s| s.interface == iface);
    match facts.net {
        NetworkStack::NetworkManager => {
            out.push(mkdir(network::NM_DIR, 0o755));
            out.push(write(
                r(&nm_path("eth0")),
                network::nm_ethernet(
                    "eth0",
                    &id.hostname,
                    &cid("eth0"),
                    st_for("eth0"),
                    net.link_local_fallback,
                ),
                0o600,
            ));
            if net.link_local_fallback {
                out.push(write(
                    r(&nm_path("eth0-link-local")),
                    network::nm_link_local("eth0"),
                    0o600,
                ));
            } else {
                out.push(Action::Remove {
                    loc: r(&nm_path("eth0-link-local")),
                });
            }
            if let Some(w) = &net.wifi {
                out.push(write(
                    r(&nm_path("wlan0")),
                    network::nm_wifi(w, &id.hostname, &cid("wlan0"), st_for("wlan0")),
                    0o600,
                ));
            }
        }
        NetworkStack::Dhcpcd => {
            let mut ids = vec![("eth0".to_string(), cid("eth0"))];
            if net.wifi.is_some() {
                ids.push(("wlan0".to_string(), cid("wlan0")));
            }
            let block = network::dhcpcd_block(&ids, net.static_ip.as_ref());
            let stock = state.text(&r("etc/dhcpcd.conf")).unwrap_or_default();
            out.push(write(
                r("etc/dhcpcd.conf"),
                network::dhcpcd_conf(&stock, &block),
                0o644,
            ));
            if let Some(w) = &net.wifi {
                out.push(mkdir("etc/wpa_supplicant", 0o755));
                out.push(write(
                    r("etc/wpa_supplicant/wpa_supplicant.conf"),
                    network::wpa_supplicant_conf(w),
                    0o600,
                ));
            }
        }
        // Unknown never gets here (gather_facts resolves it by release); networkd is what an
        // unknown release gets there too.
        NetworkStack::Networkd | NetworkStack::Unknown => {
            out.push(mkdir("etc/systemd/network", 0o755));
            out.push(write(
                r("etc/systemd/network/10-piforge-eth0.network"),
                network::networkd_network("eth0", st_for("eth0"), net.link_local_fallback),
                0o644,
            ));
            out.push(link(
                "etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
                "/lib/systemd/system/systemd-networkd.service",
            ));
            if let Some(w) = &net.wifi {
                out.push(write(
                    r("etc/systemd/network/10-piforge-wlan0.network"),
                    network::networkd_network("wlan0", st_for("wlan0"), false),
                    0o644,
                ));
                out.push(mkdir("etc/wpa_supplicant", 0o755));
                out.push(write(
                    r("etc/wpa_supplicant/wpa_supplicant-wlan0.conf"),
                    network::wpa_supplicant_conf(w),
                    0o600,
                ));
                out.push(link(
                    "etc/systemd/system/multi-user.target.wants/wpa_supplicant@wlan0.service",
                    "/lib/systemd/system/wpa_supplicant@.service",
                ));
            }
        }
    }
    if let Some(w) = &net.wifi {
        out.push(mkdir("etc/modprobe.d", 0o755));
        out.push(write(
            r("etc/modprobe.d/piforge-wifi-country.conf"),
            network::regdom_modprobe(&w.country),
            0o644,
        ));
        // Raspberry Pi OS keeps Wi-Fi soft-blocked until a country is set; unblock as
        // raspi-config does.
        for (rel, _) in state.tree(&r("var/lib/systemd/rfkill")) {
            if rel.ends_with(":wlan") {
                out.push(write(
                    r(&format!("var/lib/systemd/rfkill/{rel}")),
                    "0\n",
                    0o644,
                ));
            }
        }
    }
}
