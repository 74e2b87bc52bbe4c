//! What cluster services read from the network: a member list from a node's HTTP API (the
//! laptop's `piforge inventory` trusts no LAN host) rendered into both Ansible inventories, and
//! MQTT messages on the cluster's status/alert topics (anyone may publish to a broker) fed to
//! the alert book. Must never panic; the INI must stay line-structured.
#![no_main]

use libfuzzer_sys::fuzz_target;
use piforge_config::inventory;
use piforge_config::members::parse_members;
use piforge_node::mqtt::{AlertBook, parse_alert, topics};

fuzz_target!(|data: &[u8]| {
    if let Ok(ms) = parse_members(data) {
        let ini = inventory::inventory_ini(&ms);
        // Host names with newlines or brackets would forge sections: they are left out.
        for line in ini.lines().filter(|l| !l.is_empty() && !l.starts_with('[')) {
            assert!(
                inventory::valid_host_name(line.split(' ').next().unwrap_or("")),
                "{line:?}"
            );
        }
        let _ = inventory::inventory_json(&ms);
    }
    let _ = parse_alert(data);
    // First byte splits topic from payload.
    let (topic, payload) = match data.split_first() {
        Some((n, rest)) => rest.split_at((*n as usize).min(rest.len())),
        None => (&[][..], &[][..]),
    };
    let t = topics("piforge", "lab", "pi-1");
    let mut book = AlertBook::default();
    book.observe(&t, &String::from_utf8_lossy(topic), payload);
    let _ = book.alerted("pi-2", 1);
});
