//! JSON types of the HTTP API, shared by the server ([`crate::http`]) and the CLI client
//! ([`crate::client`]). The member list itself ([`ApiMember`]) lives in `piforge-config`
//! because the host's `piforge inventory` reads it too. Only data and conversions; no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::membership::{Event, MemberInfo};

pub use piforge_config::members::ApiMember;

impl From<MemberInfo> for ApiMember {
    fn from(m: MemberInfo) -> Self {
        ApiMember {
            name: m.name,
            addr: m.addr.to_string(),
            ip: m.addr.ip().to_string(),
            port: m.addr.port(),
            generation: m.generation,
            state: m.state,
            phi: (m.phi * 1000.0).round() / 1000.0,
            threshold: m.threshold,
            tags: m.tags,
            uptime: m.uptime_secs,
            last_seen: m.last_seen_secs.map(|s| (s * 1000.0).round() / 1000.0),
        }
    }
}

/// Query of `GET /api/events`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventsQuery {
    /// Return events after this sequence number (default: only new ones).
    pub after: Option<u64>,
    /// Longest wait for a new event, seconds (default 25, at most 60).
    pub wait: Option<u64>,
}

/// One event in an [`EventsPage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiEvent {
    /// Sequence number on the answering node.
    pub seq: u64,
    /// `member-join`, `member-leave`, `member-failed`, `member-update`, `member-reap`.
    pub event: String,
    /// The member as of the event.
    pub member: ApiMember,
}

impl ApiEvent {
    /// Converts a core event.
    pub fn new(seq: u64, e: Event) -> ApiEvent {
        ApiEvent {
            seq,
            event: e.kind.as_str().to_string(),
            member: e.member.into(),
        }
    }
}

/// Answer of `GET /api/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsPage {
    /// Pass as `after` next time.
    pub next: u64,
    /// Events, oldest first.
    pub events: Vec<ApiEvent>,
}

impl EventsPage {
    /// Builds a page.
    pub fn new(events: Vec<(u64, Event)>, next: u64) -> EventsPage {
        EventsPage {
            next,
            events: events
                .into_iter()
                .map(|(s, e)| ApiEvent::new(s, e))
                .collect(),
        }
    }
}

/// Body of `POST /api/join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// `host:port` of any member.
    pub addr: String,
}

/// Body of `POST /api/tags`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TagsRequest {
    /// Tags to set.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Tag keys to delete.
    #[serde(default)]
    pub delete: Vec<String>,
}
