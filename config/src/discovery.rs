//! What a node advertises over mDNS/DNS-SD, shared by the agent (which advertises and browses)
//! and the host's `piforge inventory` (which only browses): the service type and the TXT keys.
//!
//! Constants only; the mDNS traffic itself is the programs' business.

/// The DNS-SD service type every agent registers (port: the gossip UDP port).
pub const SERVICE_TYPE: &str = "_piforge._udp.local.";

/// TXT key: the cluster name. A hint, not a credential.
pub const TXT_CLUSTER: &str = "cluster";

/// TXT key: the member name.
pub const TXT_NAME: &str = "name";

/// TXT key: the TCP port of the node's HTTP API (`GET /api/members`), on the advertised address.
pub const TXT_HTTP_PORT: &str = "http-port";
