//! Network configuration as text, for whichever stack the image uses: NetworkManager keyfiles
//! (Bookworm, Trixie), `dhcpcd.conf` + `wpa_supplicant.conf` (Bullseye), systemd-networkd
//! `.network` files. Every profile does DHCP sending our hostname with a client id derived from
//! the machine-id (so a clone never asks for its twin's lease), optionally a static address,
//! and optionally an IPv4 link-local fallback so a bare switch without DHCP still forms a cluster.
//!
//! Pure renderers only; which files to write, with which modes, is decided in `plan`. Files that
//! hold the Wi-Fi PSK are always written 0600 by the plan.

use piforge_config::card::{StaticIp, Wifi};
use sha2::{Digest, Sha256};

/// Marks the block piforge manages inside `/etc/dhcpcd.conf`.
pub const DHCPCD_BEGIN: &str = "# BEGIN piforge (managed by piforge-firstboot)";
/// End of the managed block.
pub const DHCPCD_END: &str = "# END piforge";

/// Directory of NetworkManager keyfiles.
pub const NM_DIR: &str = "etc/NetworkManager/system-connections";

/// A stable UUID for a connection profile named `id` (keyfiles need one).
pub fn nm_uuid(id: &str) -> String {
    let mut h: [u8; 32] = Sha256::digest(format!("piforge-nm:{id}").as_bytes()).into();
    h[6] = (h[6] & 0x0f) | 0x50;
    h[8] = (h[8] & 0x3f) | 0x80;
    let x = hex::encode(&h[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

fn nm_ipv4(
    out: &mut String,
    hostname: &str,
    client_id: &str,
    st: Option<&StaticIp>,
    may_fail: bool,
) {
    out.push_str("\n[ipv4]\n");
    match st {
        Some(s) => {
            out.push_str("method=manual\n");
            match &s.gateway {
                Some(g) => out.push_str(&format!("address1={},{g}\n", s.address)),
                None => out.push_str(&format!("address1={}\n", s.address)),
            }
            if !s.dns.is_empty() {
                out.push_str(&format!("dns={};\n", s.dns.join(";")));
            }
        }
        None => {
            out.push_str("method=auto\n");
            out.push_str(&format!("dhcp-hostname={hostname}\n"));
            out.push_str("dhcp-send-hostname=true\n");
            out.push_str(&format!("dhcp-client-id={client_id}\n"));
            if !may_fail {
                // Give DHCP 30 s, then NetworkManager falls back to the link-local profile.
                out.push_str("dhcp-timeout=30\nmay-fail=false\n");
            }
        }
    }
    out.push_str("\n[ipv6]\nmethod=auto\naddr-gen-mode=stable-privacy\n");
}

/// Keyfile for a wired interface. With `link_local_fallback` it gives up DHCP after 30 s so
/// that the lower-priority [`nm_link_local`] profile takes over.
pub fn nm_ethernet(
    iface: &str,
    hostname: &str,
    client_id: &str,
    st: Option<&StaticIp>,
    link_local_fallback: bool,
) -> String {
    let id = format!("piforge-{iface}");
    let mut s = format!(
        "# Written by piforge-firstboot.\n[connection]\nid={id}\nuuid={}\ntype=ethernet\n\
         interface-name={iface}\nautoconnect=true\nautoconnect-priority=10\n\n[ethernet]\n",
        nm_uuid(&id)
    );
    nm_ipv4(&mut s, hostname, client_id, st, !link_local_fallback);
    s
}

/// The fallback profile: IPv4 link-local (169.254/16) when DHCP on `iface` gave up.
pub fn nm_link_local(iface: &str) -> String {
    let id = format!("piforge-{iface}-link-local");
    format!(
        "# Written by piforge-firstboot: used when no DHCP server answers on {iface}.\n\
         [connection]\nid={id}\nuuid={}\ntype=ethernet\ninterface-name={iface}\n\
         autoconnect=true\nautoconnect-priority=0\n\n[ethernet]\n\n[ipv4]\nmethod=link-local\n\n\
         [ipv6]\nmethod=link-local\n",
        nm_uuid(&id)
    )
}

/// An SSID as a keyfile value: plain when it is simple, else the decimal byte list.
fn nm_ssid(ssid: &str) -> String {
    if ssid
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b" _-.".contains(&c))
        && !ssid.starts_with(' ')
        && !ssid.ends_with(' ')
    {
        ssid.to_string()
    } else {
        ssid.bytes().map(|b| format!("{b};")).collect()
    }
}

/// Escapes a GKeyFile string value.
fn keyfile_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            ' ' if i == 0 => out.push_str("\\s"),
            _ => out.push(c),
        }
    }
    out
}

/// Keyfile for Wi-Fi on wlan0 (holds the PSK: mode 0600).
pub fn nm_wifi(w: &Wifi, hostname: &str, client_id: &str, st: Option<&StaticIp>) -> String {
    let id = "piforge-wlan0";
    let mut s = format!(
        "# Written by piforge-firstboot.\n[connection]\nid={id}\nuuid={}\ntype=wifi\n\
         interface-name=wlan0\nautoconnect=true\n\n[wifi]\nmode=infrastructure\nssid={}\n",
        nm_uuid(id),
        nm_ssid(&w.ssid)
    );
    if w.hidden {
        s.push_str("hidden=true\n");
    }
    s.push_str(&format!(
        "\n[wifi-security]\nkey-mgmt=wpa-psk\npsk={}\n",
        keyfile_escape(w.psk.expose())
    ));
    nm_ipv4(&mut s, hostname, client_id, st, true);
    s
}

/// Replaces the identity lines (`dhcp-hostname=`, `dhcp-client-id=`) of a keyfile we wrote;
/// used when a cloned card re-identifies and the card is long gone.
pub fn nm_retarget(text: &str, hostname: &str, client_id: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("dhcp-hostname=") {
                format!("dhcp-hostname={hostname}\n")
            } else if l.starts_with("dhcp-client-id=") {
                format!("dhcp-client-id={client_id}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect()
}

/// Our block for `/etc/dhcpcd.conf`. dhcpcd sends the system hostname already (stock `hostname`
/// option); we pin the client id and the optional static address. dhcpcd falls back to IPv4LL
/// by default; without `link_local_fallback` we leave that default alone.
pub fn dhcpcd_block(client_ids: &[(String, String)], st: Option<&StaticIp>) -> String {
    let mut s = format!("{DHCPCD_BEGIN}\nhostname\n");
    for (iface, id) in client_ids {
        s.push_str(&format!("interface {iface}\nclientid {id}\n"));
        if let Some(st) = st.filter(|st| &st.interface == iface) {
            s.push_str(&format!("static ip_address={}\n", st.address));
            if let Some(g) = &st.gateway {
                s.push_str(&format!("static routers={g}\n"));
            }
            if !st.dns.is_empty() {
                s.push_str(&format!(
                    "static domain_name_servers={}\n",
                    st.dns.join(" ")
                ));
            }
        }
    }
    s.push_str(DHCPCD_END);
    s.push('\n');
    s
}

/// `dhcpcd.conf` with our block in place of any earlier one (appended the first time). Stock
/// global `clientid`/`duid` lines are commented out so our per-interface id wins.
pub fn dhcpcd_conf(stock: &str, block: &str) -> String {
    let mut out = String::with_capacity(stock.len() + block.len());
    let mut inside = false;
    for l in stock.lines() {
        if l == DHCPCD_BEGIN {
            inside = true;
            continue;
        }
        if inside {
            if l == DHCPCD_END {
                inside = false;
            }
            continue;
        }
        let t = l.trim();
        if t == "clientid" || t == "duid" {
            out.push_str(&format!("#{l} # disabled by piforge: see block below\n"));
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(block);
    out
}

/// Replaces `clientid` lines inside our dhcpcd block (re-identification).
pub fn dhcpcd_retarget(text: &str, client_id_for: impl Fn(&str) -> String) -> String {
    let mut inside = false;
    let mut iface = String::new();
    let mut out = String::with_capacity(text.len());
    for l in text.lines() {
        if l == DHCPCD_BEGIN {
            inside = true;
        } else if l == DHCPCD_END {
            inside = false;
        }
        if inside {
            if let Some(i) = l.strip_prefix("interface ") {
                iface = i.trim().to_string();
            } else if l.starts_with("clientid ") {
                out.push_str(&format!("clientid {}\n", client_id_for(&iface)));
                continue;
            }
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// `wpa_supplicant.conf` for dhcpcd or networkd (holds the PSK: mode 0600).
pub fn wpa_supplicant_conf(w: &Wifi) -> String {
    let ssid = if w
        .ssid
        .bytes()
        .all(|c| (0x20..0x7f).contains(&c) && c != b'"')
    {
        format!("\"{}\"", w.ssid)
    } else {
        hex::encode(w.ssid.as_bytes())
    };
    let psk = w.psk.expose();
    let psk = if psk.len() == 64 && psk.bytes().all(|c| c.is_ascii_hexdigit()) {
        psk.to_string()
    } else {
        format!("\"{psk}\"")
    };
    let scan = if w.hidden { "\tscan_ssid=1\n" } else { "" };
    format!(
        "# Written by piforge-firstboot.\nctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev\n\
         update_config=1\ncountry={}\n\nnetwork={{\n\tssid={ssid}\n\tpsk={psk}\n{scan}}}\n",
        w.country
    )
}

/// A systemd-networkd `.network` file for `iface`: DHCP with the DUID (networkd derives it from
/// the machine-id), hostname sent; or a static address; link-local fallback if asked.
pub fn networkd_network(iface: &str, st: Option<&StaticIp>, link_local: bool) -> String {
    let mut s = format!("# Written by piforge-firstboot.\n[Match]\nName={iface}\n\n[Network]\n");
    match st {
        Some(st) => {
            s.push_str(&format!("Address={}\n", st.address));
            if let Some(g) = &st.gateway {
                s.push_str(&format!("Gateway={g}\n"));
            }
            for d in &st.dns {
                s.push_str(&format!("DNS={d}\n"));
            }
        }
        None => s.push_str("DHCP=yes\n"),
    }
    if link_local {
        s.push_str("LinkLocalAddressing=ipv4\n");
    }
    if st.is_none() {
        s.push_str("\n[DHCPv4]\nClientIdentifier=duid\nSendHostname=yes\n");
    }
    s
}

/// `/etc/modprobe.d` line setting the Wi-Fi regulatory domain when cfg80211 loads (works on
/// every release without touching `cmdline.txt`).
pub fn regdom_modprobe(country: &str) -> String {
    format!(
        "# Written by piforge-firstboot: Wi-Fi regulatory country.\noptions cfg80211 ieee80211_regdom={country}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use piforge_config::Secret;

    fn wifi(ssid: &str, psk: &str) -> Wifi {
        Wifi {
            ssid: ssid.into(),
            psk: Secret::new(psk),
            country: "DE".into(),
            hidden: true,
        }
    }

    #[test]
    fn nm_ethernet_sends_hostname_and_client_id() {
        let k = nm_ethernet("eth0", "pi-3f9a2c", "ff:01", None, false);
        for want in [
            "interface-name=eth0\n",
            "method=auto\n",
            "dhcp-hostname=pi-3f9a2c\n",
            "dhcp-send-hostname=true\n",
            "dhcp-client-id=ff:01\n",
        ] {
            assert!(k.contains(want), "{want}: {k}");
        }
        assert!(!k.contains("may-fail=false"));
        let ll = nm_ethernet("eth0", "h", "ff:01", None, true);
        assert!(ll.contains("dhcp-timeout=30\nmay-fail=false\n"));
        assert!(nm_link_local("eth0").contains("method=link-local\n"));
        let r = nm_retarget(&k, "pi-000001", "ff:02");
        assert!(r.contains("dhcp-hostname=pi-000001\n") && r.contains("dhcp-client-id=ff:02\n"));
        assert_eq!(r.lines().count(), k.lines().count());
    }

    #[test]
    fn static_address() {
        let st = StaticIp {
            interface: "eth0".into(),
            address: "192.168.1.50/24".into(),
            gateway: Some("192.168.1.1".into()),
            dns: vec!["1.1.1.1".into(), "9.9.9.9".into()],
        };
        let k = nm_ethernet("eth0", "h", "ff", Some(&st), false);
        assert!(k.contains(
            "method=manual\naddress1=192.168.1.50/24,192.168.1.1\ndns=1.1.1.1;9.9.9.9;\n"
        ));
        let b = dhcpcd_block(&[("eth0".into(), "ff:01".into())], Some(&st));
        assert!(b.contains("static ip_address=192.168.1.50/24\nstatic routers=192.168.1.1\n"));
        let n = networkd_network("eth0", Some(&st), false);
        assert!(n.contains("Address=192.168.1.50/24\nGateway=192.168.1.1\nDNS=1.1.1.1\n"));
    }

    #[test]
    fn wifi_profiles() {
        let k = nm_wifi(&wifi("lab net", "correct horse"), "h", "ff", None);
        assert!(k.contains("ssid=lab net\n") && k.contains("psk=correct horse\n"));
        assert!(k.contains("hidden=true\n") && k.contains("type=wifi\n"));
        let odd = nm_wifi(&wifi("a;b", "12345678"), "h", "ff", None);
        assert!(odd.contains("ssid=97;59;98;\n"), "{odd}");
        let w = wpa_supplicant_conf(&wifi("lab", &"ab".repeat(32)));
        assert!(w.contains("country=DE\n") && w.contains("\tssid=\"lab\"\n"));
        assert!(
            w.contains(&format!("\tpsk={}\n", "ab".repeat(32))),
            "raw PSK unquoted"
        );
        assert!(w.contains("scan_ssid=1"));
        assert!(wpa_supplicant_conf(&wifi("a\"b", "12345678")).contains("ssid=612262\n"));
    }

    #[test]
    fn dhcpcd_block_is_replaced_not_stacked() {
        let stock = "hostname\nclientid\n#duid\npersistent\n";
        let b1 = dhcpcd_block(&[("eth0".into(), "ff:01".into())], None);
        let once = dhcpcd_conf(stock, &b1);
        assert!(once.starts_with("hostname\n#clientid # disabled by piforge"));
        assert!(once.contains("#duid\n"));
        assert_eq!(dhcpcd_conf(&once, &b1), once, "idempotent");
        let b2 = dhcpcd_block(&[("eth0".into(), "ff:02".into())], None);
        let twice = dhcpcd_conf(&once, &b2);
        assert_eq!(twice.matches(DHCPCD_BEGIN).count(), 1);
        assert!(twice.contains("clientid ff:02\n") && !twice.contains("ff:01"));
        assert_eq!(dhcpcd_retarget(&once, |_| "ff:02".into()), twice);
    }

    proptest::proptest! {
        #[test]
        fn dhcpcd_edit_converges(stock in "\\PC{0,300}") {
            let b = dhcpcd_block(&[("eth0".into(), "ff:01".into())], None);
            let once = dhcpcd_conf(&stock, &b);
            proptest::prop_assert_eq!(dhcpcd_conf(&once, &b), once.clone());
            proptest::prop_assert_eq!(dhcpcd_retarget(&once, |_| "ff:01".into()), once);
            let _ = nm_retarget(&stock, "h", "ff");
        }
    }

    #[test]
    fn uuids_are_stable_and_distinct() {
        assert_eq!(nm_uuid("a"), nm_uuid("a"));
        assert_ne!(nm_uuid("a"), nm_uuid("b"));
        assert_eq!(nm_uuid("a").len(), 36);
    }
}
