//! `piforge inventory`: the Ansible inventory of a running cluster, from the laptop.
//!
//! Finds a node by mDNS (`_piforge._udp.local.`, cluster name and HTTP port in TXT, see
//! `piforge_config::discovery`) unless `--node HOST:PORT` names one, asks its HTTP API for the
//! member list, and prints the same INI or dynamic-inventory JSON as `piforge-node inventory`
//! on a Pi (both render through `piforge_config::inventory`). `--script` writes a small
//! executable into the cache that runs `piforge inventory` with the same options, and prints
//! its path, so `ansible -i "$(piforge inventory --script)" all -m ping` works.
//!
//! Answers count only when they prove cluster membership ([`crate::cluster::nodeapi`]: an HMAC over a
//! fresh challenge under the cluster key from the key store or `--key-file`); a node that
//! cannot is reported as "unauthenticated" and skipped, so a stranger on the LAN cannot feed
//! Ansible its own host list. mDNS only says where to ask.
//!
//! The choice of node ([`choose_nodes`]) and the script text ([`script_text`]) are pure. This
//! module deliberately does not join the gossip and does not talk to more than one node once
//! one answered with a valid proof.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use piforge_config::discovery::{SERVICE_TYPE, TXT_CLUSTER, TXT_HTTP_PORT, TXT_NAME};
use piforge_config::members::{ApiMember, parse_members};
use piforge_config::{DEFAULT_HTTP_PORT, inventory};

use crate::cluster::nodeapi::{self, Proof};

/// What to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryOutput {
    /// Static INI (the default).
    Ini,
    /// Dynamic-inventory JSON (`--list`, what Ansible asks a script for).
    List,
    /// Host variables of one host (`--host H`): empty, `--list` carries `_meta.hostvars`.
    Host(String),
    /// Write an inventory script and print its path.
    Script,
}

/// A checked `piforge inventory` command.
#[derive(Debug, Clone)]
pub struct InventoryRequest {
    /// Ask this node's HTTP API (`host:port`) instead of looking on the LAN.
    pub node: Option<String>,
    /// Only a cluster of this name (required when the LAN has several).
    pub cluster: Option<String>,
    /// How long to look for nodes, and the HTTP timeout.
    pub timeout: Duration,
    /// What to print.
    pub output: InventoryOutput,
    /// Where `--script` writes (normally the cache dir).
    pub script_dir: PathBuf,
    /// The cluster key to check answers with, instead of the key store's.
    pub key_file: Option<PathBuf>,
}

/// One node found on the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundNode {
    /// Its member name (TXT `name`, else the instance name).
    pub name: String,
    /// Its cluster (TXT `cluster`).
    pub cluster: String,
    /// Its IPv4 addresses.
    pub addrs: Vec<IpAddr>,
    /// Its HTTP API port (TXT `http-port`; older agents: the default 8080).
    pub http_port: u16,
}

/// The cluster to list and the HTTP endpoints (`ip:port`) to try for it, in order: all nodes
/// of `cluster` if given, else of the only cluster found. Errors say what was found and what
/// to pass instead.
pub fn choose_nodes(found: &[FoundNode], cluster: Option<&str>) -> Result<(String, Vec<String>)> {
    let mut clusters: Vec<&str> = found.iter().map(|f| f.cluster.as_str()).collect();
    clusters.sort();
    clusters.dedup();
    let want = match (cluster, clusters.as_slice()) {
        (_, []) => bail!(
            "found no piforge node on the LAN (mDNS {SERVICE_TYPE}); are the Pis up and on \
             this network? Or name one: --node HOST:8080"
        ),
        (Some(c), _) if !clusters.contains(&c) => bail!(
            "found no node of cluster {c:?} on the LAN, only of: {}",
            clusters.join(", ")
        ),
        (Some(c), _) => c,
        (None, [only]) => *only,
        (None, many) => bail!(
            "found several clusters on the LAN ({}); pick one with --cluster NAME",
            many.join(", ")
        ),
    };
    let mut nodes: Vec<&FoundNode> = found.iter().filter(|f| f.cluster == want).collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let endpoints = nodes
        .iter()
        .flat_map(|f| {
            f.addrs
                .iter()
                .filter(|a| a.is_ipv4())
                .map(|a| format!("{a}:{}", f.http_port))
        })
        .collect();
    Ok((want.to_string(), endpoints))
}

/// Browses mDNS for `timeout` (less once a node of `cluster` answered, or shortly after the
/// first node when no cluster is given) and returns what resolved.
pub fn discover(cluster: Option<&str>, timeout: Duration) -> Result<Vec<FoundNode>> {
    let daemon = mdns_sd::ServiceDaemon::new().context("starting mDNS")?;
    let rx = daemon.browse(SERVICE_TYPE).context("browsing mDNS")?;
    let start = Instant::now();
    let mut deadline = start + timeout;
    let mut found: Vec<FoundNode> = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(ev) = rx.recv_timeout(left) else { break };
        let mdns_sd::ServiceEvent::ServiceResolved(s) = ev else {
            continue;
        };
        let Some(c) = s.get_property_val_str(TXT_CLUSTER) else {
            continue;
        };
        let node = FoundNode {
            name: s
                .get_property_val_str(TXT_NAME)
                .unwrap_or(s.get_fullname())
                .to_string(),
            cluster: c.to_string(),
            addrs: s.get_addresses_v4().into_iter().map(IpAddr::V4).collect(),
            http_port: s
                .get_property_val_str(TXT_HTTP_PORT)
                .and_then(|p| p.parse().ok())
                .unwrap_or(DEFAULT_HTTP_PORT),
        };
        tracing::debug!(node = %node.name, cluster = %node.cluster, "found a node over mDNS");
        let settles = cluster.is_none_or(|want| want == node.cluster);
        found.retain(|f| f.name != node.name || f.cluster != node.cluster);
        found.push(node);
        if settles {
            // One is enough to ask; wait a little for others (another cluster, more nodes).
            deadline = deadline.min(Instant::now() + Duration::from_millis(500));
        }
    }
    let _ = daemon.shutdown();
    Ok(found)
}

/// `GET http://<node>/api/members`, authenticated: `Ok(Err(proof))` when the node answered
/// but did not prove membership with one of `keys`.
pub fn fetch_members(
    node: &str,
    keys: &[piforge_config::api_auth::ApiKey],
    timeout: Duration,
) -> Result<std::result::Result<Vec<ApiMember>, Proof>> {
    let a = nodeapi::get(node, "/api/members", keys, timeout)?;
    if !matches!(a.proof, Proof::Valid(_)) {
        return Ok(Err(a.proof));
    }
    parse_members(&a.body)
        .map(Ok)
        .with_context(|| format!("decoding the member list from http://{node}/api/members"))
}

/// Quotes `s` for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The inventory script: runs `piforge` with the options of this request; Ansible appends
/// `--list` or `--host H`.
pub fn script_text(piforge: &Path, req: &InventoryRequest) -> String {
    let mut args = vec![
        sh_quote(&piforge.display().to_string()),
        "inventory".to_string(),
    ];
    if let Some(n) = &req.node {
        args.extend(["--node".into(), sh_quote(n)]);
    }
    if let Some(c) = &req.cluster {
        args.extend(["--cluster".into(), sh_quote(c)]);
    }
    if let Some(k) = &req.key_file {
        args.extend(["--key-file".into(), sh_quote(&k.display().to_string())]);
    }
    args.extend(["--timeout".into(), format!("{}", req.timeout.as_secs_f64())]);
    format!(
        "#!/bin/sh\n# Ansible dynamic inventory written by `piforge inventory --script`.\nexec {} \"$@\"\n",
        args.join(" ")
    )
}

/// File name of the script: one per cluster / node, so scripts for two clusters coexist.
fn script_name(req: &InventoryRequest) -> String {
    let key = match (&req.node, &req.cluster) {
        (Some(n), _) => format!("node-{n}"),
        (None, Some(c)) => format!("cluster-{c}"),
        (None, None) => "lan".to_string(),
    };
    let key: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("inventory-{key}")
}

/// Writes the inventory script (temp file, then rename; mode 0755) and returns its path.
pub fn write_script(req: &InventoryRequest) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the piforge executable")?;
    std::fs::create_dir_all(&req.script_dir)
        .with_context(|| format!("creating {}", req.script_dir.display()))?;
    let path = req.script_dir.join(script_name(req));
    piforge_config::atomic::write_atomic(&path, script_text(&exe, req).as_bytes(), Some(0o755))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The member list of the requested cluster: from `--node`, or from the first node found on
/// the LAN that proves membership of the cluster. Nodes that answer without a valid proof are
/// reported as unauthenticated and skipped.
pub fn members(req: &InventoryRequest) -> Result<Vec<ApiMember>> {
    let (nodes, cluster) = match &req.node {
        Some(n) => (vec![n.clone()], req.cluster.clone()),
        None => {
            let found = discover(req.cluster.as_deref(), req.timeout)?;
            let (c, nodes) = choose_nodes(&found, req.cluster.as_deref())?;
            (nodes, Some(c))
        }
    };
    let keys = crate::build::keystore::keys_for(req.key_file.as_deref(), cluster.as_deref())?;
    let api_keys = nodeapi::api_keys(&keys);
    let mut last = None;
    let mut unauthenticated = vec![];
    for n in &nodes {
        match fetch_members(n, &api_keys, req.timeout) {
            Ok(Ok(ms)) => return Ok(ms),
            Ok(Err(proof)) => {
                tracing::warn!(node = %n, "{}", proof.reason());
                unauthenticated.push(format!("{n} ({})", proof.reason()));
            }
            Err(e) => {
                tracing::warn!(node = %n, error = %format!("{e:#}"), "node did not answer");
                last = Some(e);
            }
        }
    }
    if !unauthenticated.is_empty() {
        bail!(
            "no node proved membership of the cluster{}: {}",
            cluster.map(|c| format!(" {c:?}")).unwrap_or_default(),
            unauthenticated.join("; ")
        );
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("found nodes but none with an IPv4 address")))
}

/// Runs the request; returns what to print on stdout.
pub fn run(req: &InventoryRequest) -> Result<String> {
    Ok(match &req.output {
        InventoryOutput::Script => format!("{}\n", write_script(req)?.display()),
        InventoryOutput::Host(_) => format!("{}\n", inventory::inventory_host_json()),
        InventoryOutput::Ini => inventory::inventory_ini(&members(req)?),
        InventoryOutput::List => format!(
            "{}\n",
            serde_json::to_string_pretty(&inventory::inventory_json(&members(req)?))?
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, cluster: &str, ip: &str, port: u16) -> FoundNode {
        FoundNode {
            name: name.into(),
            cluster: cluster.into(),
            addrs: vec![ip.parse().unwrap()],
            http_port: port,
        }
    }

    #[test]
    fn picks_the_only_cluster_or_the_named_one() {
        let one = [
            f("pi-2", "lab", "10.0.0.2", 8080),
            f("pi-1", "lab", "10.0.0.1", 8080),
        ];
        assert_eq!(
            choose_nodes(&one, None).unwrap(),
            (
                "lab".to_string(),
                vec!["10.0.0.1:8080".to_string(), "10.0.0.2:8080".to_string()]
            )
        );
        let two = [
            f("pi-1", "lab", "10.0.0.1", 8080),
            f("x", "prod", "10.0.1.1", 9000),
        ];
        let e = choose_nodes(&two, None).unwrap_err().to_string();
        assert!(e.contains("lab, prod") && e.contains("--cluster"), "{e}");
        assert_eq!(
            choose_nodes(&two, Some("prod")).unwrap().1,
            ["10.0.1.1:9000"]
        );
        let e = choose_nodes(&two, Some("dev")).unwrap_err().to_string();
        assert!(e.contains("\"dev\"") && e.contains("lab, prod"), "{e}");
        let e = choose_nodes(&[], None).unwrap_err().to_string();
        assert!(e.contains("--node"), "{e}");
    }

    #[test]
    fn script_runs_piforge_with_the_same_options() {
        let req = InventoryRequest {
            node: None,
            cluster: Some("it's".into()),
            timeout: Duration::from_millis(2500),
            output: InventoryOutput::Script,
            script_dir: PathBuf::from("/nonexistent"),
            key_file: Some(PathBuf::from("/k/lab.key")),
        };
        let s = script_text(Path::new("/opt/pi forge/piforge"), &req);
        assert_eq!(
            s.lines().last().unwrap(),
            r#"exec '/opt/pi forge/piforge' inventory --cluster 'it'\''s' --key-file '/k/lab.key' --timeout 2.5 "$@""#
        );
        assert!(s.starts_with("#!/bin/sh\n"));
        assert_eq!(script_name(&req), "inventory-cluster-it_s");
    }

    #[cfg(unix)]
    #[test]
    fn script_is_written_executable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let req = InventoryRequest {
            node: Some("127.0.0.1:8080".into()),
            cluster: None,
            timeout: Duration::from_secs(3),
            output: InventoryOutput::Script,
            script_dir: dir.path().join("inv"),
            key_file: None,
        };
        let p = write_script(&req).unwrap();
        assert_eq!(p, dir.path().join("inv/inventory-node-127_0_0_1_8080"));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(
            std::fs::read_to_string(&p)
                .unwrap()
                .contains("--node '127.0.0.1:8080'")
        );
    }
}
