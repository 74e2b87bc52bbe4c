//! The agent's HTTP server: dashboard page, JSON API, Prometheus metrics.
//!
//! Reads go to anyone who can reach the port (`/api/members` and `/api/node` prove they come
//! from a cluster member when asked with a challenge, see [`crate::nodeinfo`]); mutating calls (`POST /api/join`, `/api/leave`,
//! `/api/tags`) are refused with 403 unless the peer address is loopback, the request is not one
//! a plain HTML form can send (its `Content-Type` must be `application/json`, so a cross-site
//! page needs a CORS preflight, which this server never grants) and its `Host` names this node
//! (`localhost`, a loopback address, or the node's own name), so a page that rebinds its own DNS
//! name to 127.0.0.1 cannot call them either ([`mutation_refusal`]). `GET /api/events`
//! is a long poll (the CLI's `monitor` loops on it) so no streaming dependency is needed. The
//! JSON types are in [`crate::api`]; this file only routes and renders.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::{ApiMember, EventsPage, EventsQuery, JoinRequest, TagsRequest};
use crate::membership::MemberState;
use crate::nodeinfo::{AuthQuery, answer};
use crate::shared::{Shared, start_leave};
use piforge_config::status::{NODE_STATUS_PATH, NodeStatus};

/// Serves until the process exits.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let app = Router::new()
        .route("/", get(dashboard))
        .route("/api/members", get(members))
        .route(NODE_STATUS_PATH, get(node))
        .route("/api/events", get(events))
        .route("/api/join", post(join))
        .route("/api/leave", post(leave))
        .route("/api/tags", post(tags))
        .route("/metrics", get(metrics))
        .with_state(shared);
    let r = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await;
    if let Err(e) = r {
        tracing::error!(error = %e, "HTTP server stopped");
    }
}

fn members_now(shared: &Shared) -> Vec<ApiMember> {
    let now = shared.now();
    shared
        .core()
        .members(now)
        .into_iter()
        .map(ApiMember::from)
        .collect()
}

/// The member list; signed when the client sends a challenge (`crate::nodeinfo`).
async fn members(State(shared): State<Arc<Shared>>, Query(q): Query<AuthQuery>) -> Response {
    answer(&shared.api_key, "/api/members", &q, &members_now(&shared))
}

/// This node about itself, for `piforge status`; signed like the member list.
async fn node(State(shared): State<Arc<Shared>>, Query(q): Query<AuthQuery>) -> Response {
    answer(&shared.api_key, NODE_STATUS_PATH, &q, &node_status(&shared))
}

async fn dashboard() -> Html<&'static str> {
    Html(crate::dashboard::PAGE)
}

async fn events(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<EventsQuery>,
) -> Json<EventsPage> {
    // Subscribe before looking, so nothing published in between is missed.
    let mut rx = shared.events.subscribe();
    let (_, next) = shared.events_after(u64::MAX);
    let after = q.after.unwrap_or(next);
    let (found, _) = shared.events_after(after);
    if found.is_empty() {
        let wait = Duration::from_secs(q.wait.unwrap_or(25).min(60));
        let _ = tokio::time::timeout(wait, rx.recv()).await;
    }
    let (found, next) = shared.events_after(after);
    Json(EventsPage::new(found, next))
}

/// Whether a peer may call mutating endpoints: loopback only (IPv4-mapped included).
pub fn may_mutate(peer: SocketAddr) -> bool {
    match peer.ip() {
        std::net::IpAddr::V6(v6) => {
            v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()) || v6.is_loopback()
        }
        ip => ip.is_loopback(),
    }
}

/// Why a mutating call must be refused, or `None` when it may go ahead: the peer is not
/// loopback, the body is not declared JSON (a form or a "simple" cross-site request), or the
/// `Host` header names something other than this node (DNS rebinding).
pub fn mutation_refusal(
    peer: SocketAddr,
    headers: &HeaderMap,
    own_name: &str,
) -> Option<&'static str> {
    if !may_mutate(peer) {
        return Some("mutating calls are only accepted from localhost");
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Some("mutating calls need Content-Type: application/json");
    }
    let host_ok = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| host_is_self(h, own_name));
    if !host_ok {
        return Some("mutating calls need a Host header naming this node");
    }
    None
}

/// Whether a `Host` header value (`name[:port]`, `ip[:port]`, `[v6][:port]`) names this node:
/// `localhost`, a loopback address, or the node's own name (bare or `.local`).
fn host_is_self(host: &str, own_name: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inside, _)) => inside,
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    let name = name.trim_end_matches('.');
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return may_mutate(SocketAddr::new(ip, 0));
    }
    let name = name.to_ascii_lowercase();
    let own = own_name.to_ascii_lowercase();
    name == "localhost" || name == own || name == format!("{own}.local")
}

fn local_only(shared: &Shared, peer: SocketAddr, headers: &HeaderMap) -> Option<Response> {
    let own_name = shared.core().id().name.clone();
    let reason = mutation_refusal(peer, headers, &own_name)?;
    tracing::warn!(%peer, reason, "refusing a mutating call");
    Some((StatusCode::FORBIDDEN, format!("{reason}\n")).into_response())
}

async fn join(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = local_only(&shared, peer, &headers) {
        return r;
    }
    let req: JoinRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("bad join request: {e}\n")).into_response();
        }
    };
    let addr = match tokio::net::lookup_host(req.addr.as_str())
        .await
        .map(|mut a| a.next())
    {
        Ok(Some(a)) => a,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                format!("cannot resolve {}\n", req.addr),
            )
                .into_response();
        }
    };
    let now = shared.now();
    shared.core().add_seed(addr, now);
    shared.wake.notify_one();
    (
        StatusCode::OK,
        Json(serde_json::json!({ "joining": addr.to_string() })),
    )
        .into_response()
}

async fn leave(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = local_only(&shared, peer, &headers) {
        return r;
    }
    start_leave(&shared, "API request");
    (StatusCode::OK, Json(serde_json::json!({ "leaving": true }))).into_response()
}

async fn tags(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = local_only(&shared, peer, &headers) {
        return r;
    }
    let req: TagsRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("bad tags request: {e}\n")).into_response();
        }
    };
    let now = shared.now();
    let result = {
        let mut core = shared.core();
        // All or nothing: a request that would break the tag limits changes no tag.
        core.update_tags(&req.set, &req.delete, now).map(|()| {
            core.members(now)
                .into_iter()
                .next()
                .map(|m| m.tags)
                .unwrap_or_default()
        })
    };
    shared.wake.notify_one();
    match result {
        Ok(tags) => (StatusCode::OK, Json(tags)).into_response(),
        Err(e) => (StatusCode::CONFLICT, format!("{e}\n")).into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let (members, counters) = {
        let now = shared.now();
        let core = shared.core();
        (core.members(now), core.counters())
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render_metrics(&members, &counters),
    )
}

/// Prometheus text exposition of a member list and packet counters.
pub fn render_metrics(
    members: &[crate::membership::MemberInfo],
    c: &crate::membership::Counters,
) -> String {
    let mut s = String::new();
    s.push_str("# HELP piforge_members Members by state, as seen by this node.\n");
    s.push_str("# TYPE piforge_members gauge\n");
    for st in [
        MemberState::Alive,
        MemberState::Suspect,
        MemberState::Failed,
        MemberState::Left,
    ] {
        let n = members.iter().filter(|m| m.state == st).count();
        let _ = writeln!(s, "piforge_members{{state=\"{}\"}} {n}", st.as_str());
    }
    for (name, help, v) in [
        (
            "piforge_packets_in_total",
            "Datagrams received.",
            c.packets_in,
        ),
        (
            "piforge_packets_out_total",
            "Datagrams sent.",
            c.packets_out,
        ),
        (
            "piforge_packets_rejected_total",
            "Datagrams that failed authentication.",
            c.rejected,
        ),
        (
            "piforge_packets_malformed_total",
            "Authenticated datagrams not understood.",
            c.malformed,
        ),
        ("piforge_bytes_in_total", "Bytes received.", c.bytes_in),
        ("piforge_bytes_out_total", "Bytes sent.", c.bytes_out),
    ] {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
    }
    s.push_str("# HELP piforge_peer_phi Phi-accrual suspicion level per peer.\n");
    s.push_str("# TYPE piforge_peer_phi gauge\n");
    for m in members.iter().skip(1) {
        let _ = writeln!(
            s,
            "piforge_peer_phi{{peer=\"{}\"}} {:.3}",
            escape(&m.name),
            m.phi
        );
    }
    if let Some(m) = members.first() {
        let _ = writeln!(
            s,
            "# HELP piforge_phi_threshold Phi above which a peer shows as suspect.\n\
             # TYPE piforge_phi_threshold gauge\npiforge_phi_threshold {}",
            m.threshold
        );
    }
    s
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// This node's [`NodeStatus`].
/// This node's [`NodeStatus`] for `GET /api/node`.
fn node_status(shared: &Shared) -> NodeStatus {
    use piforge_config::status::{FIRSTBOOT_REPORT_PATH, REIDENTIFY_REPORT_PATH};
    let now = shared.now();
    let me = shared.core().members(now).into_iter().next();
    NodeStatus {
        name: me.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
        cluster: shared.cluster.clone(),
        addr: me.as_ref().map(|m| m.addr.to_string()).unwrap_or_default(),
        generation: me.as_ref().map_or(0, |m| m.generation),
        agent_uptime: now.as_secs(),
        host_keys: crate::nodeinfo::host_public_keys(&shared.root),
        firstboot: crate::nodeinfo::report(&shared.root, FIRSTBOOT_REPORT_PATH),
        reidentify: crate::nodeinfo::report(&shared.root, REIDENTIFY_REPORT_PATH),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_may_mutate() {
        assert!(may_mutate("127.0.0.1:5".parse().unwrap()));
        assert!(may_mutate("127.3.0.1:5".parse().unwrap()));
        assert!(may_mutate("[::1]:5".parse().unwrap()));
        assert!(may_mutate("[::ffff:127.0.0.1]:5".parse().unwrap()));
        assert!(!may_mutate("192.168.1.5:5".parse().unwrap()));
        assert!(!may_mutate("[::ffff:10.0.0.1]:5".parse().unwrap()));
        assert!(!may_mutate("[fe80::1]:5".parse().unwrap()));
    }

    #[test]
    fn only_this_node_and_json_may_mutate() {
        let lo: SocketAddr = "127.0.0.1:5".parse().unwrap();
        let h = |host: Option<&str>, ct: Option<&str>| {
            let mut m = HeaderMap::new();
            if let Some(v) = host {
                m.insert(header::HOST, v.parse().unwrap());
            }
            if let Some(v) = ct {
                m.insert(header::CONTENT_TYPE, v.parse().unwrap());
            }
            m
        };
        let json = Some("application/json");
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.",
            "127.0.0.1:8080",
            "127.9.9.9",
            "[::1]:8080",
            "pi-01",
            "pi-01.local:8080",
            "Pi-01.Local",
        ] {
            assert_eq!(
                mutation_refusal(lo, &h(Some(ok), json), "pi-01"),
                None,
                "{ok}"
            );
        }
        assert_eq!(
            mutation_refusal(
                lo,
                &h(Some("x"), Some("application/json; charset=utf-8")),
                "x"
            ),
            None
        );
        for bad in [
            "attacker.example",
            "attacker.example:8080",
            "pi-01.attacker.example",
            "10.0.0.5:8080",
            "[fe80::1]:8080",
            "[::1",
            "",
        ] {
            assert!(
                mutation_refusal(lo, &h(Some(bad), json), "pi-01").is_some(),
                "{bad}"
            );
        }
        assert!(mutation_refusal(lo, &h(None, json), "pi-01").is_some());
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
        ] {
            assert!(
                mutation_refusal(lo, &h(Some("localhost"), ct), "pi-01").is_some(),
                "{ct:?}"
            );
        }
        let lan: SocketAddr = "192.168.1.5:5".parse().unwrap();
        assert!(mutation_refusal(lan, &h(Some("localhost"), json), "pi-01").is_some());
    }

    #[test]
    fn metrics_text() {
        let m = crate::membership::MemberInfo {
            name: "b\"x".into(),
            addr: "10.0.0.2:7946".parse().unwrap(),
            generation: 1,
            state: MemberState::Suspect,
            phi: 9.5,
            threshold: 8.0,
            tags: Default::default(),
            uptime_secs: 0,
            last_seen_secs: None,
        };
        let mut me = m.clone();
        me.state = MemberState::Alive;
        let c = crate::membership::Counters {
            rejected: 7,
            ..Default::default()
        };
        let t = render_metrics(&[me, m], &c);
        assert!(t.contains("piforge_members{state=\"suspect\"} 1\n"), "{t}");
        assert!(t.contains("piforge_packets_rejected_total 7\n"));
        assert!(
            t.contains("piforge_peer_phi{peer=\"b\\\"x\"} 9.500\n"),
            "{t}"
        );
    }
}
