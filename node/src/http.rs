//! The agent's HTTP server: dashboard page, JSON API, Prometheus metrics.
//!
//! Reads go to anyone who can reach the port (`/api/members` and `/api/node` prove they come
//! from a cluster member when asked with a challenge, see [`crate::nodeinfo`]); mutating calls (`POST /api/join`, `/api/leave`,
//! `/api/tags`) are refused with 403 unless the peer address is loopback. `GET /api/events`
//! is a long poll (the CLI's `monitor` loops on it) so no streaming dependency is needed. The
//! JSON types are in [`crate::api`]; this file only routes and renders.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::agent::{Shared, start_leave};
use crate::api::{ApiMember, EventsPage, EventsQuery, JoinRequest, TagsRequest};
use crate::membership::MemberState;
use crate::nodeinfo::{AuthQuery, answer, node_status};
use piforge_config::status::NODE_STATUS_PATH;

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
    answer(&shared, "/api/members", &q, &members_now(&shared))
}

/// This node about itself, for `piforge status`; signed like the member list.
async fn node(State(shared): State<Arc<Shared>>, Query(q): Query<AuthQuery>) -> Response {
    answer(&shared, NODE_STATUS_PATH, &q, &node_status(&shared))
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

fn local_only(peer: SocketAddr) -> Option<Response> {
    if may_mutate(peer) {
        None
    } else {
        tracing::warn!(%peer, "refusing a mutating call from a non-local peer");
        Some(
            (
                StatusCode::FORBIDDEN,
                "mutating calls are only accepted from localhost\n",
            )
                .into_response(),
        )
    }
}

async fn join(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(req): Json<JoinRequest>,
) -> Response {
    if let Some(r) = local_only(peer) {
        return r;
    }
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
) -> Response {
    if let Some(r) = local_only(peer) {
        return r;
    }
    start_leave(&shared, "API request");
    (StatusCode::OK, Json(serde_json::json!({ "leaving": true }))).into_response()
}

async fn tags(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(req): Json<TagsRequest>,
) -> Response {
    if let Some(r) = local_only(peer) {
        return r;
    }
    let now = shared.now();
    let result = {
        let mut core = shared.core();
        let mut r = Ok(());
        for (k, v) in &req.set {
            r = r.and_then(|()| core.set_tag(k, v, now));
        }
        for k in &req.delete {
            r = r.and_then(|()| core.delete_tag(k, now));
        }
        r.map(|()| {
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
