//! Pure renderings of a member list for the CLI: filtering, the `members` table (like
//! `serf members`), and Ansible inventories (static INI and dynamic JSON, defined in
//! `piforge-config` and shared with the host's `piforge inventory`). Values in, strings out;
//! the CLI does the HTTP call and the printing.

use std::fmt::Write as _;

use crate::api::ApiMember;
use crate::membership::MemberState;

/// Keeps members in `status` (if given) that carry every `k=v` of `tags`.
pub fn filter_members(
    members: Vec<ApiMember>,
    status: Option<MemberState>,
    tags: &[(String, String)],
) -> Vec<ApiMember> {
    members
        .into_iter()
        .filter(|m| status.is_none_or(|s| m.state == s))
        .filter(|m| tags.iter().all(|(k, v)| m.tags.get(k) == Some(v)))
        .collect()
}

/// The `members` table: name, address, state, phi/threshold, tags; columns padded.
pub fn members_table(members: &[ApiMember]) -> String {
    let rows: Vec<[String; 4]> = members
        .iter()
        .map(|m| {
            let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            [
                m.name.clone(),
                m.addr.clone(),
                m.state.as_str().to_string(),
                format!("phi={:.2}/{} {}", m.phi, m.threshold, tags.join(",")),
            ]
        })
        .collect();
    let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0);
    let w2 = rows.iter().map(|r| r[2].len()).max().unwrap_or(0);
    let mut s = String::new();
    for r in rows {
        let line = format!("{:w0$}  {:w1$}  {:w2$}  {}", r[0], r[1], r[2], r[3]);
        let _ = writeln!(s, "{}", line.trim_end());
    }
    s
}

pub use piforge_config::inventory::{inventory_ini, inventory_json};

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
            m("pi-1", "10.0.0.1", MemberState::Alive, &[("role", "lb")]),
            m(
                "pi-2",
                "10.0.0.2",
                MemberState::Alive,
                &[("role", "web"), ("arch", "arm64")],
            ),
            m("pi-3", "10.0.0.3", MemberState::Failed, &[("role", "web")]),
        ]
    }

    #[test]
    fn filters_by_status_and_tag() {
        let web = vec![("role".to_string(), "web".to_string())];
        assert_eq!(filter_members(sample(), None, &web).len(), 2);
        let f = filter_members(sample(), Some(MemberState::Alive), &web);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].name, "pi-2");
    }

    #[test]
    fn table_is_aligned() {
        let t = members_table(&sample());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("pi-1  10.0.0.1:7946  alive   phi=0.50/8 role=lb"),
            "{t}"
        );
        assert!(lines[2].contains("failed"));
    }

    #[test]
    fn inventories() {
        let ini = inventory_ini(&sample());
        assert!(ini.starts_with("[all]\npi-1 ansible_host=10.0.0.1\npi-2 ansible_host=10.0.0.2\n"));
        assert!(ini.contains("[role_web]\npi-2\n"), "{ini}");
        assert!(!ini.contains("pi-3"));
        let j = inventory_json(&sample());
        assert_eq!(j["_meta"]["hostvars"]["pi-2"]["ansible_host"], "10.0.0.2");
        assert_eq!(j["role_lb"]["hosts"][0], "pi-1");
        assert_eq!(j["all"]["hosts"].as_array().unwrap().len(), 2);
    }
}
