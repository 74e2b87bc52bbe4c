//! piforge-node: the cluster agent that makes the cards one cluster.
//!
//! Layers, from pure to I/O: [`seal`] (XChaCha20-Poly1305 datagrams) and [`wire`] (what an
//! opened datagram holds, between [`id::NodeId`]s) → [`membership`] (sans-I/O core around
//! foca: views, tags, left vs failed, phi, reaping) → [`sim`] (in-memory cluster with a
//! test-controlled clock) → the [`agent`] (UDP loop, signals) and the tasks it starts
//! ([`http`], [`events`], [`mqtt`], [`mdns`]) around the state they share ([`shared`]). The CLI lives in `cli.rs` of the binary side; this library takes
//! checked requests, never raw arguments.
#![forbid(unsafe_code)]

pub mod agent;
pub mod alerts;
pub mod api;
pub mod client;
pub mod dashboard;
pub mod events;
pub mod http;
pub mod id;
pub mod mdns;
pub mod membership;
pub mod mqtt;
pub mod nodeinfo;
pub mod render;
pub mod report;
pub mod seal;
pub mod seeds;
pub mod shared;
pub mod sim;
pub mod tls;
pub mod wire;
