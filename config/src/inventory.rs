//! Ansible inventories of a member list: the static INI form and the dynamic-inventory JSON
//! (`--list`). Shared by `piforge-node inventory` (on a Pi) and `piforge inventory` (on the
//! laptop), so both print the same bytes for the same members.
//!
//! Only alive members are listed (an inventory is for running things). Every tag `k=v` becomes
//! a group `k_v` (so `role=web` → `role_web`), sanitised into a valid Ansible group name: ASCII
//! letters, digits and `_`, not starting with a digit (`role=web-1` → `role_web_1`). Two tag
//! values that sanitise to the same name share the group. A member whose name could not be an
//! inventory host name (see [`valid_host_name`]) or whose `ip` is not an IP address is left
//! out rather than breaking (or forging lines into) the INI.
//! Pure: members in, text or JSON out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::members::{ApiMember, MemberState};

/// A valid Ansible group name for `raw`: every character outside `[A-Za-z0-9_]` becomes `_`,
/// and a leading digit gets a `_` in front (Ansible rejects names starting with a digit).
pub fn group_name(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// Whether `name` can stand as a host in an INI inventory line: 1–253 characters of
/// `[A-Za-z0-9._-]`, not starting with `-` or `.` (hostnames, the names piforge gives members).
pub fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

fn listed(members: &[ApiMember]) -> Vec<&ApiMember> {
    let mut v: Vec<&ApiMember> = members
        .iter()
        .filter(|m| m.state == MemberState::Alive && valid_host_name(&m.name))
        .filter(|m| m.ip.parse::<std::net::IpAddr>().is_ok())
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v.dedup_by(|a, b| a.name == b.name);
    v
}

/// Group → sorted host names, one group per distinct sanitised `k_v` of a listed member.
pub fn groups(members: &[ApiMember]) -> BTreeMap<String, Vec<String>> {
    let mut g: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in listed(members) {
        for (k, v) in &m.tags {
            g.entry(group_name(&format!("{k}_{v}")))
                .or_default()
                .push(m.name.clone());
        }
    }
    for hosts in g.values_mut() {
        hosts.sort();
        hosts.dedup();
    }
    g
}

/// Static INI inventory: `[all]` with `ansible_host=`, then one section per group.
pub fn inventory_ini(members: &[ApiMember]) -> String {
    let mut s = String::from("[all]\n");
    for m in listed(members) {
        let _ = writeln!(s, "{} ansible_host={}", m.name, m.ip);
    }
    for (group, hosts) in groups(members) {
        let _ = write!(s, "\n[{group}]\n");
        for h in hosts {
            let _ = writeln!(s, "{h}");
        }
    }
    s
}

/// Ansible dynamic-inventory JSON (`--list`): groups with `hosts`, `all`, and
/// `_meta.hostvars` with `ansible_host`, the gossip port and the tags (so Ansible never needs
/// to call `--host`).
pub fn inventory_json(members: &[ApiMember]) -> serde_json::Value {
    let hosts = listed(members);
    let mut root = serde_json::Map::new();
    let mut hostvars = serde_json::Map::new();
    for m in &hosts {
        hostvars.insert(
            m.name.clone(),
            serde_json::json!({
                "ansible_host": m.ip,
                "piforge_gossip_port": m.port,
                "piforge_tags": m.tags,
            }),
        );
    }
    let all: Vec<&str> = hosts.iter().map(|m| m.name.as_str()).collect();
    root.insert("all".into(), serde_json::json!({ "hosts": all }));
    for (group, hosts) in groups(members) {
        root.insert(group, serde_json::json!({ "hosts": hosts }));
    }
    root.insert("_meta".into(), serde_json::json!({ "hostvars": hostvars }));
    serde_json::Value::Object(root)
}

/// The answer to `--host NAME`: empty, because `--list` already carries `_meta.hostvars`.
pub fn inventory_host_json() -> serde_json::Value {
    serde_json::json!({})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, ip: &str, state: MemberState, tags: &[(&str, &str)]) -> ApiMember {
        ApiMember {
            phi: 0.5,
            uptime: 1,
            last_seen: Some(0.1),
            ..ApiMember::listed(name, ip, state, tags)
        }
    }

    fn sample() -> Vec<ApiMember> {
        vec![
            m(
                "pi-2",
                "10.0.0.2",
                MemberState::Alive,
                &[("role", "web"), ("arch", "arm64")],
            ),
            m("pi-1", "10.0.0.1", MemberState::Alive, &[("role", "lb")]),
            m("pi-3", "10.0.0.3", MemberState::Failed, &[("role", "web")]),
            m("pi-4", "10.0.0.4", MemberState::Alive, &[("role", "web-1")]),
            m(
                "bad name",
                "10.0.0.5",
                MemberState::Alive,
                &[("role", "web")],
            ),
        ]
    }

    #[test]
    fn group_names_are_valid_for_ansible() {
        assert_eq!(group_name("role_web-1"), "role_web_1");
        assert_eq!(group_name("9k_v"), "_9k_v");
        assert_eq!(group_name("zone_é.x"), "zone___x");
        assert_eq!(group_name(""), "_");
    }

    #[test]
    fn host_names() {
        assert!(valid_host_name("pi-01.lab"));
        for bad in ["", "-x", ".x", "a b", "a[1]", "a=b", "x#"] {
            assert!(!valid_host_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn ini_lists_alive_members_and_sanitised_groups() {
        let ini = inventory_ini(&sample());
        assert_eq!(
            ini,
            "[all]\npi-1 ansible_host=10.0.0.1\npi-2 ansible_host=10.0.0.2\n\
             pi-4 ansible_host=10.0.0.4\n\n[arch_arm64]\npi-2\n\n[role_lb]\npi-1\n\n\
             [role_web]\npi-2\n\n[role_web_1]\npi-4\n"
        );
    }

    #[test]
    fn json_has_groups_and_hostvars() {
        let j = inventory_json(&sample());
        assert_eq!(j["_meta"]["hostvars"]["pi-2"]["ansible_host"], "10.0.0.2");
        assert_eq!(
            j["_meta"]["hostvars"]["pi-2"]["piforge_tags"]["arch"],
            "arm64"
        );
        assert_eq!(j["role_lb"]["hosts"], serde_json::json!(["pi-1"]));
        assert_eq!(j["role_web_1"]["hosts"], serde_json::json!(["pi-4"]));
        assert_eq!(
            j["all"]["hosts"],
            serde_json::json!(["pi-1", "pi-2", "pi-4"])
        );
        assert!(j["_meta"]["hostvars"].get("pi-3").is_none());
        assert_eq!(inventory_host_json(), serde_json::json!({}));
    }
}
