//! The Ansible inventories read by real ansible-core (`ansible-inventory`, Debian package
//! `ansible-core`): `piforge-node inventory` as an executable dynamic-inventory script, and the
//! static INI it prints, against real agents on loopback. Asserted: members grouped by role
//! (and every other tag) under valid group names (`role=web-1` → `role_web_1`), `ansible_host`
//! set to each member's address, a failed member left out, both forms giving Ansible the same
//! inventory, and no Ansible warning. Fails (does not skip) when ansible-inventory is missing.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;
use piforge_node::membership::MemberState;
use serde_json::Value;

/// Runs `ansible-inventory -i SOURCE --list` with only `plugin` enabled, in a private HOME.
/// Returns the JSON and stderr.
fn ansible_inventory(home: &Path, source: &Path, plugin: &str) -> (Value, String) {
    let out = Command::new("ansible-inventory")
        .arg("-i")
        .arg(source)
        .arg("--list")
        .env("HOME", home)
        .env("ANSIBLE_LOCAL_TEMP", home.join("tmp"))
        .env("ANSIBLE_INVENTORY_ENABLED", plugin)
        .env("ANSIBLE_INVENTORY_UNPARSED_FAILED", "true")
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .expect("ansible-inventory is not installed: apt-get install ansible-core (CI: ci/setup)");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "ansible-inventory -i {}: {err}",
        source.display()
    );
    (serde_json::from_slice(&out.stdout).unwrap(), err)
}

/// group → hosts and host → ansible_host, as Ansible sees them.
fn digest(inv: &Value) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, String>) {
    let mut groups = BTreeMap::new();
    for (k, v) in inv.as_object().unwrap() {
        if let Some(hosts) = v.get("hosts").and_then(Value::as_array) {
            let mut hs: Vec<String> = hosts.iter().map(|h| h.as_str().unwrap().into()).collect();
            hs.sort();
            groups.insert(k.clone(), hs);
        }
    }
    let vars = inv["_meta"]["hostvars"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(h, v)| {
            (
                h.clone(),
                v["ansible_host"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    (groups, vars)
}

#[test]
fn ansible_inventory_reads_script_and_ini() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let lb = Agent::spawn(dir, "lb", "127.0.0.1", &[("role", "lb")], &[], KEY, "");
    let w1 = Agent::spawn(
        dir,
        "web-1",
        "127.0.0.2",
        &[("role", "web")],
        &[&lb],
        KEY,
        "",
    );
    let w2 = Agent::spawn(
        dir,
        "web-2",
        "127.0.0.3",
        &[("role", "web-1"), ("zone", "eu.west")],
        &[&lb],
        KEY,
        "",
    );
    let mut gone = Agent::spawn(
        dir,
        "gone",
        "127.0.0.5",
        &[("role", "web")],
        &[&lb],
        KEY,
        "",
    );
    for n in ["web-1", "web-2", "gone"] {
        all_see(&[&lb], n, MemberState::Alive, 15);
    }
    gone.signal("KILL");
    gone.wait_exit(5);
    all_see(&[&lb, &w1, &w2], "gone", MemberState::Failed, 15);

    // Dynamic inventory: an executable that ansible calls with --list (and maybe --host).
    let script = dir.join("piforge-inventory");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec '{BIN}' inventory --http '{}' \"$@\"\n",
            lb.http
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (inv, err) = ansible_inventory(dir, &script, "script");
    assert!(!err.contains("WARNING"), "{err}");
    let (groups, vars) = digest(&inv);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(groups.get("role_lb"), Some(&s(&["lb"])), "{inv:#}");
    assert_eq!(groups.get("role_web"), Some(&s(&["web-1"])), "{inv:#}");
    assert_eq!(groups.get("role_web_1"), Some(&s(&["web-2"])), "{inv:#}");
    assert_eq!(groups.get("zone_eu_west"), Some(&s(&["web-2"])), "{inv:#}");
    let want: BTreeMap<String, String> = [
        ("lb", "127.0.0.1"),
        ("web-1", "127.0.0.2"),
        ("web-2", "127.0.0.3"),
    ]
    .into_iter()
    .map(|(h, ip)| (h.to_string(), ip.to_string()))
    .collect();
    assert_eq!(vars, want, "{inv:#}");
    assert_eq!(
        inv["_meta"]["hostvars"]["web-2"]["piforge_tags"]["zone"],
        "eu.west"
    );
    assert!(!inv.to_string().contains("\"gone\""), "{inv:#}");
    let children = inv["all"]["children"].as_array().unwrap();
    for g in ["role_lb", "role_web", "role_web_1"] {
        assert!(children.iter().any(|c| c == g), "{inv:#}");
    }

    // Static INI, through Ansible's ini plugin: the same inventory.
    let out = Command::new(BIN)
        .args(["inventory", "--ansible", "--http", &lb.http])
        .output()
        .unwrap();
    assert!(out.status.success());
    let ini = dir.join("hosts.ini");
    std::fs::write(&ini, &out.stdout).unwrap();
    let (inv_ini, err) = ansible_inventory(dir, &ini, "ini");
    assert!(!err.contains("WARNING"), "{err}");
    let (groups_ini, vars_ini) = digest(&inv_ini);
    assert_eq!(vars_ini, want, "{inv_ini:#}");
    assert_eq!(groups_ini, groups, "INI and script inventories differ");
}
