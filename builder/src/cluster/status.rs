//! `piforge status`: where each card of the current batch stands — not flashed, flashed,
//! seen on the LAN, joined — with its address, first-boot outcome and duration, gossip state
//! and whether its SSH host key is the one the batch made.
//!
//! It learns by mDNS (`_piforge._udp`, cluster of the batch), from `--node` endpoints and from
//! the addresses in the member lists it gets, and trusts only answers that prove membership
//! with the cluster key ([`crate::cluster::nodeapi`]); anything else is listed as unauthenticated.
//! Addresses of authenticated cards are recorded in `batch.toml` and `known_hosts`.
//! [`rows`] (observations in, table out) is pure; [`look`] does the network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use piforge_config::api_auth::ApiKey;
use piforge_config::members::{ApiMember, MemberState, parse_members};
use piforge_config::status::{NODE_STATUS_PATH, NodeStatus, OUTCOME_REIDENTIFIED, RunReport};
use serde::Serialize;

use crate::build::batch::{self, Batch};
use crate::cluster::nodeapi::{self, Proof};

/// A checked `piforge status`.
#[derive(Debug, Clone)]
pub struct StatusRequest {
    /// Batch directory.
    pub batch_dir: PathBuf,
    /// Node API endpoints to ask besides what mDNS finds (`host:port`).
    pub nodes: Vec<String>,
    /// Browse mDNS.
    pub mdns: bool,
    /// How long one look at the LAN takes at most (mDNS browse, HTTP timeout).
    pub look: Duration,
    /// Refresh until every flashed card joined.
    pub watch: bool,
    /// With `watch`: give up after this long.
    pub timeout: Duration,
    /// Print JSON.
    pub json: bool,
    /// Cluster key file instead of the key store's key of the batch's cluster.
    pub key_file: Option<PathBuf>,
}

/// Where a card stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CardState {
    /// `piforge flash` has not written it (and it was not seen).
    NotFlashed,
    /// Written, not seen yet.
    Flashed,
    /// Its agent answered with a valid proof.
    Seen,
    /// Another member lists it alive (or it is the batch's only card and answered).
    Joined,
}

impl CardState {
    fn as_str(self) -> &'static str {
        match self {
            CardState::NotFlashed => "not flashed",
            CardState::Flashed => "flashed",
            CardState::Seen => "seen on the LAN",
            CardState::Joined => "joined",
        }
    }
}

/// How the card's SSH host keys compare with the batch's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKeyCheck {
    /// Not known (not seen, or the batch has no keys).
    Unknown,
    /// Every key it serves is one the batch made.
    Match,
    /// It serves a key the batch did not make: a re-identified clone (or a rebuilt card).
    Changed,
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Card number in the batch (`None`: a member that is not a card of this batch).
    pub card: Option<u32>,
    /// Hostname (member name).
    pub hostname: String,
    /// Where it stands.
    pub state: CardState,
    /// Its IP address (seen now, or recorded earlier).
    pub address: Option<String>,
    /// First boot's outcome (`configured`, `failed`, ...).
    pub firstboot: Option<String>,
    /// First boot's duration, seconds.
    pub firstboot_secs: Option<f64>,
    /// First boot's phases, `name` → milliseconds.
    pub firstboot_phases: Vec<(String, u64)>,
    /// Re-identified on other hardware (a copied card).
    pub reidentified: bool,
    /// For a member that is not a card of the batch: the batch card it was copied from (its
    /// first boot ran as that card, and it re-identified since).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_of: Option<String>,
    /// Its gossip state as the other members see it.
    pub gossip: Option<MemberState>,
    /// Members the cluster view it belongs to has alive.
    pub members_alive: Option<usize>,
    /// Host key check.
    pub host_key: HostKeyCheck,
}

/// An endpoint that answered without proving membership.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stranger {
    /// `host:port` asked.
    pub endpoint: String,
    /// The name it claimed (mDNS or its answer), unverified.
    pub claimed: Option<String>,
    /// Why it is not trusted.
    pub reason: String,
}

/// The whole answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The batch's cluster.
    pub cluster: String,
    /// One row per batch card, in order, then members that are not cards of the batch.
    pub rows: Vec<Row>,
    /// Unauthenticated answers.
    pub unauthenticated: Vec<Stranger>,
}

impl Report {
    /// Flashed cards that have not joined.
    pub fn not_joined(&self) -> Vec<&str> {
        self.rows
            .iter()
            .filter(|r| r.card.is_some() && r.state != CardState::NotFlashed)
            .filter(|r| r.state != CardState::Joined)
            .map(|r| r.hostname.as_str())
            .collect()
    }
}

/// What one look at the LAN found.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Authenticated node reports with the member list the same node gave.
    pub nodes: Vec<(NodeStatus, Vec<ApiMember>)>,
    /// Unauthenticated answers.
    pub strangers: Vec<Stranger>,
}

fn key_material(line: &str) -> Option<(String, String)> {
    let mut f = line.split_whitespace();
    Some((f.next()?.to_string(), f.next()?.to_string()))
}

fn compare_keys(batch: &[String], served: &[String]) -> HostKeyCheck {
    if batch.is_empty() || served.is_empty() {
        return HostKeyCheck::Unknown;
    }
    let made: BTreeSet<_> = batch.iter().filter_map(|l| key_material(l)).collect();
    if served
        .iter()
        .filter_map(|l| key_material(l))
        .all(|k| made.contains(&k))
    {
        HostKeyCheck::Match
    } else {
        HostKeyCheck::Changed
    }
}

/// The IP address of a node's `addr` (`ip:port` or a bare IP); `None` for anything else. The
/// address ends up in `known_hosts`: a name there would make the card's host key trusted for
/// that name (e.g. another server), so only an IP address is ever taken from a node.
fn ip_of(addr: &str) -> Option<String> {
    addr.parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| addr.parse::<std::net::IpAddr>())
        .ok()
        .map(|ip| ip.to_string())
}

/// The card was copied to another Pi and took a new identity there (not a repair on its own
/// hardware, which the clone check reports as `repaired`).
fn reidentified(n: &NodeStatus) -> bool {
    n.reidentify
        .as_ref()
        .is_some_and(|r| r.outcome == OUTCOME_REIDENTIFIED)
}

fn secs(r: &RunReport) -> f64 {
    (r.total_ms as f64 / 100.0).round() / 10.0
}

/// The table for `batch` given what was observed (pure).
pub fn rows(batch: &Batch, obs: &Observations) -> Report {
    // Every member entry of every authenticated view: name → (observer, entry).
    let mut views: BTreeMap<&str, Vec<(&str, &ApiMember)>> = BTreeMap::new();
    for (n, members) in &obs.nodes {
        for m in members {
            views.entry(m.name.as_str()).or_default().push((&n.name, m));
        }
    }
    let flashed = batch.cards.iter().filter(|c| c.flashed).count();
    let row = |card: Option<u32>, hostname: &str, flashed_card: bool, batch_keys: &[String]| {
        let node = obs.nodes.iter().find(|(n, _)| n.name == hostname);
        let entries = views.get(hostname).cloned().unwrap_or_default();
        // What the others say; its own view only when nobody else lists it.
        let others: Vec<&ApiMember> = entries
            .iter()
            .filter(|(observer, _)| *observer != hostname)
            .map(|(_, m)| *m)
            .collect();
        let gossip = others
            .iter()
            .map(|m| m.state)
            .min() // alive < suspect < failed < left: the most hopeful report
            .or_else(|| entries.first().map(|(_, m)| m.state));
        let alone_ok = flashed <= 1 && node.is_some();
        let joined = others.iter().any(|m| m.state == MemberState::Alive) || alone_ok;
        let state = if joined {
            CardState::Joined
        } else if node.is_some() {
            CardState::Seen
        } else if flashed_card {
            CardState::Flashed
        } else {
            CardState::NotFlashed
        };
        let members_alive = node
            .map(|(_, ms)| ms)
            .or_else(|| obs.nodes.first().map(|(_, ms)| ms))
            .filter(|_| gossip.is_some())
            .map(|ms| ms.iter().filter(|m| m.state == MemberState::Alive).count());
        let address = node
            .and_then(|(n, _)| ip_of(&n.addr))
            .or_else(|| entries.first().map(|(_, m)| m.ip.clone()));
        let fb = node.and_then(|(n, _)| n.firstboot.as_ref());
        Row {
            card,
            hostname: hostname.to_string(),
            state,
            address,
            firstboot: fb.map(|r| r.outcome.clone()),
            firstboot_secs: fb.map(secs),
            firstboot_phases: fb
                .map(|r| r.phases.iter().map(|p| (p.name.clone(), p.ms)).collect())
                .unwrap_or_default(),
            reidentified: node.is_some_and(|(n, _)| reidentified(n)),
            copy_of: None,
            gossip,
            members_alive,
            host_key: node.map_or(HostKeyCheck::Unknown, |(n, _)| {
                compare_keys(batch_keys, &n.host_keys)
            }),
        }
    };
    let mut out: Vec<Row> = batch
        .cards
        .iter()
        .map(|c| {
            let mut r = row(Some(c.index), &c.hostname, c.flashed, &c.host_keys);
            if r.address.is_none() {
                r.address = c.address.clone();
            }
            r
        })
        .collect();
    let in_batch: BTreeSet<&str> = batch.cards.iter().map(|c| c.hostname.as_str()).collect();
    let mut extra: BTreeSet<&str> = obs.nodes.iter().map(|(n, _)| n.name.as_str()).collect();
    extra.extend(views.keys().copied());
    for name in extra.into_iter().filter(|n| !in_batch.contains(n)) {
        // Not a card of this batch (a copied card that renamed itself, or another build's).
        // A card copied to another Pi keeps the report of the first boot it ran as the batch's
        // card: its keys are checked against that card's, and a new key shows as CHANGED.
        let origin = obs
            .nodes
            .iter()
            .find(|(n, _)| n.name == name && reidentified(n))
            .and_then(|(n, _)| n.firstboot.as_ref()?.hostname.as_deref())
            .and_then(|h| batch.cards.iter().find(|c| c.hostname == h && h != name));
        let mut r = row(None, name, true, origin.map_or(&[][..], |c| &c.host_keys));
        if r.state == CardState::Flashed {
            continue; // only known from others' lists and not answering: nothing to say
        }
        r.copy_of = origin.map(|c| c.hostname.clone());
        if origin.is_none() {
            r.host_key = HostKeyCheck::Unknown;
        }
        out.push(r);
    }
    Report {
        cluster: batch.cluster.clone(),
        rows: out,
        unauthenticated: obs.strangers.clone(),
    }
}

/// The table as text, one line per card.
pub fn render_text(r: &Report) -> String {
    let mut lines = vec![
        [
            "CARD",
            "HOSTNAME",
            "STATE",
            "ADDRESS",
            "FIRST BOOT",
            "GOSSIP",
            "HOST KEY",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for row in &r.rows {
        let fb = match (&row.firstboot, row.firstboot_secs) {
            (Some(o), Some(s)) => format!("{o} in {s:.1} s"),
            (Some(o), None) => o.clone(),
            _ => "-".into(),
        };
        let fb = if row.reidentified {
            format!("{fb}; re-identified")
        } else {
            fb
        };
        let gossip = match (row.gossip, row.members_alive) {
            (Some(g), Some(n)) => format!("{}, cluster of {n}", g.as_str()),
            (Some(g), None) => g.as_str().to_string(),
            _ => "-".into(),
        };
        let key = match row.host_key {
            HostKeyCheck::Unknown => "-",
            HostKeyCheck::Match => "ok",
            HostKeyCheck::Changed => "CHANGED",
        };
        let state = if let Some(c) = &row.copy_of {
            format!("{} (copy of {c})", row.state.as_str())
        } else if row.card.is_none() {
            format!("{} (not in batch)", row.state.as_str())
        } else {
            row.state.as_str().to_string()
        };
        lines.push(vec![
            row.card.map_or("-".into(), |c| c.to_string()),
            row.hostname.clone(),
            state,
            row.address.clone().unwrap_or_else(|| "-".into()),
            fb,
            gossip,
            key.to_string(),
        ]);
    }
    let mut s = crate::term::table::aligned(&lines);
    for st in &r.unauthenticated {
        s.push_str(&format!(
            "unauthenticated  {}{}: {}\n",
            st.endpoint,
            st.claimed
                .as_deref()
                .map(|c| format!(" (claims to be {c})"))
                .unwrap_or_default(),
            st.reason
        ));
    }
    s
}

/// One look at the LAN: mDNS (if on), the `--node` endpoints, recorded addresses, and the
/// addresses in the member lists that come back (each card's HTTP port from its card).
pub fn look(req: &StatusRequest, batch: &Batch, keys: &[ApiKey]) -> Result<Observations> {
    let port_of = |name: &str| -> u16 {
        batch::load_card(&req.batch_dir, name)
            .map(|c| c.node.http_port)
            .unwrap_or(piforge_config::DEFAULT_HTTP_PORT)
    };
    let mut queue: Vec<(String, Option<String>)> =
        req.nodes.iter().map(|n| (n.clone(), None)).collect();
    for c in &batch.cards {
        if let Some(a) = &c.address {
            queue.push((format!("{a}:{}", port_of(&c.hostname)), None));
        }
    }
    if req.mdns {
        match crate::cluster::inventory::discover(Some(&batch.cluster), req.look) {
            Ok(found) => {
                for f in found.iter().filter(|f| f.cluster == batch.cluster) {
                    for a in f.addrs.iter().filter(|a| a.is_ipv4()) {
                        queue.push((format!("{a}:{}", f.http_port), Some(f.name.clone())));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "mDNS browse failed"),
        }
    }
    let mut asked = BTreeSet::new();
    let mut obs = Observations::default();
    while let Some((ep, claimed)) = queue.pop() {
        if !asked.insert(ep.clone()) {
            continue;
        }
        let node = match nodeapi::get(&ep, NODE_STATUS_PATH, keys, req.look) {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(endpoint = %ep, error = %format!("{e:#}"), "no answer");
                continue;
            }
        };
        if !matches!(node.proof, Proof::Valid(_)) {
            let claimed = claimed.or_else(|| {
                serde_json::from_slice::<NodeStatus>(&node.body)
                    .ok()
                    .map(|n| n.name)
            });
            obs.strangers.push(Stranger {
                endpoint: ep,
                claimed,
                reason: node.proof.reason().to_string(),
            });
            continue;
        }
        let status: NodeStatus = serde_json::from_slice(&node.body)
            .with_context(|| format!("decoding the node report from {ep}"))?;
        let members = match nodeapi::get(&ep, "/api/members", keys, req.look) {
            Ok(a) if matches!(a.proof, Proof::Valid(_)) => parse_members(&a.body)
                .with_context(|| format!("decoding the member list from {ep}"))?,
            _ => vec![],
        };
        for m in &members {
            if m.state == MemberState::Alive && m.ip.parse::<std::net::IpAddr>().is_ok() {
                let port = if m.name == status.name {
                    ep.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
                } else {
                    None
                }
                .unwrap_or_else(|| port_of(&m.name));
                let ip = m.ip.parse::<std::net::IpAddr>().expect("checked");
                queue.push((std::net::SocketAddr::new(ip, port).to_string(), None));
            }
        }
        obs.nodes.retain(|(n, _)| n.name != status.name);
        obs.nodes.push((status, members));
    }
    obs.nodes.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Ok(obs)
}

/// Records the addresses of authenticated cards in `batch.toml` and `known_hosts`.
fn record_addresses(dir: &Path, report: &Report, obs: &Observations) -> Result<()> {
    let seen: BTreeMap<&str, String> = obs
        .nodes
        .iter()
        .filter_map(|(n, _)| Some((n.name.as_str(), ip_of(&n.addr)?)))
        .collect();
    let _ = report;
    let b = Batch::load(dir)?;
    let changes = b.cards.iter().any(|c| {
        seen.get(c.hostname.as_str())
            .is_some_and(|a| c.address.as_ref() != Some(a))
    });
    if !changes {
        return Ok(());
    }
    let b = Batch::update(dir, |b| {
        for c in &mut b.cards {
            if let Some(a) = seen.get(c.hostname.as_str()) {
                c.address = Some(a.clone());
            }
        }
        b.clone()
    })?;
    b.save_known_hosts(dir)
}

/// Runs the request; prints each table to `out`. With `watch`, an error when some flashed
/// card has not joined within the timeout.
pub fn run(req: &StatusRequest, out: &mut impl std::io::Write) -> Result<()> {
    let batch = Batch::load(&req.batch_dir)?;
    let keys = crate::build::keystore::keys_for(req.key_file.as_deref(), Some(&batch.cluster))?;
    let keys = nodeapi::api_keys(&keys);
    let start = Instant::now();
    let mut last_text = String::new();
    loop {
        let batch = Batch::load(&req.batch_dir)?;
        let obs = look(req, &batch, &keys)?;
        let report = rows(&batch, &obs);
        record_addresses(&req.batch_dir, &report, &obs)?;
        let text = if req.json {
            serde_json::to_string(&report)? + "\n"
        } else {
            render_text(&report)
        };
        let pending = report.not_joined();
        let done = pending.is_empty();
        if !req.watch || done || text != last_text {
            if req.watch && !last_text.is_empty() && !req.json {
                writeln!(out)?;
            }
            out.write_all(text.as_bytes())?;
            out.flush()?;
            last_text = text;
        }
        if !req.watch || done {
            return Ok(());
        }
        if start.elapsed() >= req.timeout {
            anyhow::bail!(
                "{} flashed card(s) did not join within {} s: {}",
                pending.len(),
                req.timeout.as_secs(),
                pending.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_ip_address_from_a_node_reaches_known_hosts() {
        assert_eq!(ip_of("10.0.0.2:7946").as_deref(), Some("10.0.0.2"));
        assert_eq!(ip_of("[fe80::1]:7946").as_deref(), Some("fe80::1"));
        assert_eq!(ip_of("10.0.0.2").as_deref(), Some("10.0.0.2"));
        for hostile in ["github.com", "10.0.0.2 evil", "a\nb ssh-ed25519 AAAA", ""] {
            assert_eq!(ip_of(hostile), None, "{hostile:?}");
        }
    }
    use crate::arch::Arch;
    use crate::build::batch::BatchCard;

    fn batch() -> Batch {
        let card = |i: u32, flashed: bool| BatchCard {
            index: i,
            hostname: format!("lab-0{i}"),
            role: None,
            flashed,
            host_keys: vec![format!("ssh-ed25519 KEY{i} root@lab-0{i}")],
            address: None,
        };
        Batch {
            schema_version: batch::BATCH_SCHEMA,
            id: "x".into(),
            image: "lab.img".into(),
            source: "s".into(),
            source_sha256: None,
            arch: Arch::Arm64,
            release: "trixie".into(),
            boot_mount: "/boot/firmware".into(),
            cloud_init: false,
            cluster: "lab".into(),
            cards: vec![card(1, true), card(2, true), card(3, true), card(4, false)],
        }
    }

    fn node(name: &str, ip: &str, key: &str) -> NodeStatus {
        NodeStatus {
            name: name.into(),
            cluster: "lab".into(),
            addr: format!("{ip}:7946"),
            generation: 1,
            agent_uptime: 3,
            host_keys: vec![format!("ssh-ed25519 {key} root@{name}")],
            firstboot: Some(RunReport {
                outcome: "configured".into(),
                reason: None,
                hostname: Some(name.into()),
                started_at_uptime: None,
                total_ms: 1234,
                phases: vec![],
                host_keys_pending: vec![],
            }),
            reidentify: None,
        }
    }

    fn m(name: &str, ip: &str, state: MemberState) -> ApiMember {
        ApiMember::listed(name, ip, state, &[])
    }

    #[test]
    fn states_from_observations() {
        let b = batch();
        let view = vec![
            m("lab-01", "10.0.0.1", MemberState::Alive),
            m("lab-02", "10.0.0.2", MemberState::Alive),
            m("pi-abc123", "10.0.0.9", MemberState::Alive),
        ];
        let obs = Observations {
            nodes: vec![
                (node("lab-01", "10.0.0.1", "KEY1"), view.clone()),
                (node("lab-02", "10.0.0.2", "OTHER"), vec![view[1].clone()]),
            ],
            strangers: vec![Stranger {
                endpoint: "10.0.0.66:8080".into(),
                claimed: Some("lab-03".into()),
                reason: Proof::Wrong.reason().into(),
            }],
        };
        let r = rows(&b, &obs);
        let by = |h: &str| r.rows.iter().find(|x| x.hostname == h).unwrap();
        assert_eq!(by("lab-01").state, CardState::Seen, "nobody else lists it");
        assert_eq!(by("lab-01").host_key, HostKeyCheck::Match);
        assert_eq!(by("lab-01").firstboot_secs, Some(1.2));
        assert_eq!(
            by("lab-02").state,
            CardState::Joined,
            "lab-01 lists it alive"
        );
        assert_eq!(by("lab-02").host_key, HostKeyCheck::Changed);
        assert_eq!(by("lab-02").address.as_deref(), Some("10.0.0.2"));
        assert_eq!(by("lab-03").state, CardState::Flashed);
        assert_eq!(by("lab-04").state, CardState::NotFlashed);
        let extra = by("pi-abc123");
        assert_eq!((extra.card, extra.state), (None, CardState::Joined));
        assert_eq!(
            (extra.copy_of.as_deref(), extra.host_key),
            (None, HostKeyCheck::Unknown)
        );
        assert_eq!(r.not_joined(), ["lab-01", "lab-03"]);
        let text = render_text(&r);
        assert!(text.contains("CHANGED"), "{text}");
        assert!(text.contains("not in batch"), "{text}");
        assert!(
            text.contains("unauthenticated  10.0.0.66:8080 (claims to be lab-03)"),
            "{text}"
        );
        let lab1 = text.lines().find(|l| l.contains("lab-01")).unwrap();
        assert!(
            lab1.contains("configured in 1.2 s") && lab1.contains("alive, cluster of 3"),
            "{lab1}"
        );
    }

    fn copy_report(n: &NodeStatus) -> Option<RunReport> {
        n.firstboot.clone().map(|mut r| {
            r.outcome = "re-identified".into();
            r
        })
    }

    #[test]
    fn a_copied_card_is_named_after_its_origin_and_its_new_key_shows_changed() {
        let b = batch();
        // Card 2's disk copied to another Pi: it renamed itself, made new keys, and still
        // carries card 2's first-boot report.
        let mut copy = node("pi-0a0b0c", "10.0.0.7", "NEWKEY");
        copy.firstboot.as_mut().unwrap().hostname = Some("lab-02".into());
        copy.reidentify = copy_report(&copy);
        let view = vec![
            m("lab-01", "10.0.0.1", MemberState::Alive),
            m("pi-0a0b0c", "10.0.0.7", MemberState::Alive),
        ];
        let mut same = node("pi-0d0e0f", "10.0.0.8", "KEY2");
        same.firstboot.as_mut().unwrap().hostname = Some("lab-02".into());
        same.reidentify = copy_report(&same);
        // Not re-identified: a name claim alone proves nothing about being a copy, nor does
        // a repair on its own hardware.
        let mut claim = node("pi-111111", "10.0.0.9", "X");
        claim.firstboot.as_mut().unwrap().hostname = Some("lab-02".into());
        claim.reidentify = copy_report(&claim).map(|mut r| {
            r.outcome = "repaired".into();
            r
        });
        let obs = Observations {
            nodes: vec![
                (node("lab-01", "10.0.0.1", "KEY1"), view.clone()),
                (copy, view.clone()),
                (same, view.clone()),
                (claim, view),
            ],
            strangers: vec![],
        };
        let r = rows(&b, &obs);
        let by = |h: &str| r.rows.iter().find(|x| x.hostname == h).unwrap();
        let c = by("pi-0a0b0c");
        assert_eq!(c.copy_of.as_deref(), Some("lab-02"));
        assert_eq!(c.host_key, HostKeyCheck::Changed);
        assert!(c.reidentified);
        assert_eq!(by("pi-0d0e0f").host_key, HostKeyCheck::Match);
        assert_eq!(by("pi-111111").copy_of, None);
        assert!(!by("pi-111111").reidentified);
        assert_eq!(by("pi-111111").host_key, HostKeyCheck::Unknown);
        assert_eq!(
            by("lab-02").state,
            CardState::Flashed,
            "the original is not the copy"
        );
        let text = render_text(&r);
        let line = text.lines().find(|l| l.contains("pi-0a0b0c")).unwrap();
        assert!(
            line.contains("(copy of lab-02)") && line.contains("CHANGED"),
            "{line}"
        );
    }
}
