//! The host's side of the node API: one authenticated `GET`, used by `piforge inventory` and
//! `piforge status`.
//!
//! Each request carries a fresh 32-byte challenge from the OS RNG; the answer counts only if
//! its `X-Piforge-Auth` header is the HMAC of `piforge_config::api_auth` over that challenge,
//! the path and the body, under one of the cluster keys the caller holds. Anything else on the
//! LAN (a stranger's mDNS record, a node of another cluster, a man in the middle) comes back
//! as [`Proof::Missing`] or [`Proof::Wrong`], and the callers say "unauthenticated" and do not
//! use its body. This module does not decide what to do with an unauthenticated answer.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use piforge_config::ClusterKey;
use piforge_config::api_auth::{AUTH_HEADER, ApiKey, CHALLENGE_LEN, CHALLENGE_PARAM};
use rand::TryRngCore;

/// Largest answer read (a member list of thousands of nodes fits).
const MAX_BODY: u64 = 16 << 20;

/// Whether an answer proved cluster membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Proved with the key at this index of the caller's keys.
    Valid(usize),
    /// No proof header (not a piforge node, or an agent too old to sign).
    Missing,
    /// A proof that none of the keys verifies (another cluster, or forged).
    Wrong,
}

impl Proof {
    /// Why an unproven answer is not trusted, for messages.
    pub fn reason(self) -> &'static str {
        match self {
            Proof::Valid(_) => "authenticated",
            Proof::Missing => "unauthenticated: the answer carries no proof of cluster membership",
            Proof::Wrong => "unauthenticated: the answer's proof does not match the cluster key",
        }
    }
}

/// An answer and its proof.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The body as received.
    pub body: Vec<u8>,
    /// Whether it proved membership.
    pub proof: Proof,
}

/// API keys for cluster keys.
pub fn api_keys(keys: &[ClusterKey]) -> Vec<ApiKey> {
    keys.iter().map(ApiKey::derive).collect()
}

/// `GET http://<node><path>?challenge=...` and checks the proof against `keys`. Errors are
/// for no answer or a non-200 status; an unproven 200 is an `Ok` with its [`Proof`].
pub fn get(node: &str, path: &str, keys: &[ApiKey], timeout: Duration) -> Result<Answer> {
    let mut challenge = [0u8; CHALLENGE_LEN];
    rand::rngs::OsRng
        .try_fill_bytes(&mut challenge)
        .context("reading the OS random number generator")?;
    let url = format!("http://{node}{path}");
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None) // cluster nodes are on the LAN, never behind the laptop's proxy
        .timeout_global(Some(timeout))
        .user_agent(concat!("piforge/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent();
    let resp = agent
        .get(&url)
        .query(CHALLENGE_PARAM, hex::encode(challenge))
        .call()
        .with_context(|| format!("asking {url}"))?;
    let status = resp.status().as_u16();
    let proof_header = resp
        .headers()
        .get(AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .into_body()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .with_context(|| format!("reading {url}"))?;
    if status != 200 {
        bail!(
            "asking {url}: HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)]).trim()
        );
    }
    let proof = match proof_header {
        None => Proof::Missing,
        Some(p) => keys
            .iter()
            .position(|k| k.verify(&challenge, path, &body, &p))
            .map_or(Proof::Wrong, Proof::Valid),
    };
    Ok(Answer { body, proof })
}
