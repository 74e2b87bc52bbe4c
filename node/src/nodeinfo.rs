//! `GET /api/node` (this node about itself: name, address, SSH host public keys, firstboot's
//! reports) and the proof of membership on API answers.
//!
//! A client that sends `?challenge=<64 hex>` gets the answer with an `X-Piforge-Auth` header:
//! the HMAC of `piforge_config::api_auth` over challenge, path and the exact body bytes. The
//! body is serialised here once and signed as sent. Without a challenge the answer is the same,
//! unsigned (the node's own CLI on loopback needs no proof). A malformed challenge is a 400.
//!
//! Everything served is public (public keys, durations, names): this module never reads a
//! private key or the identity record, only `*.pub` files and the reports firstboot wrote for
//! it, each read with a size cap.

use std::io::Read;
use std::path::Path;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use piforge_config::api_auth::{AUTH_HEADER, ApiKey, parse_challenge};
use piforge_config::host_keys::KINDS;
use piforge_config::status::{MAX_REPORT_LEN, RunReport};
use serde::{Deserialize, Serialize};

/// Query of the authenticated endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuthQuery {
    /// 64 hex digits of fresh randomness from the client.
    pub challenge: Option<String>,
}

/// A JSON answer to `path`, signed when the client sent a challenge.
pub fn answer(key: &ApiKey, path: &str, q: &AuthQuery, value: &impl Serialize) -> Response {
    let body = match serde_json::to_vec(value) {
        Ok(b) => b,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    };
    let proof = match q.challenge.as_deref().map(parse_challenge) {
        None => None,
        Some(Some(c)) => Some(key.sign(&c, path, &body)),
        Some(None) => {
            return (
                StatusCode::BAD_REQUEST,
                "challenge: give 64 hex digits of fresh randomness\n",
            )
                .into_response();
        }
    };
    let mut r = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(p) = proof
        && let Ok(v) = p.parse()
    {
        r.headers_mut().insert(AUTH_HEADER, v);
    }
    r
}

/// Reads at most `cap` bytes of a file as text; `None` if missing, unreadable or longer.
fn read_capped(path: &Path, cap: u64) -> Option<String> {
    let f = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    f.take(cap + 1).read_to_string(&mut text).ok()?;
    (text.len() as u64 <= cap).then_some(text)
}

/// The SSH host public keys under `root`, in `ed25519, ecdsa, rsa` order (missing ones left
/// out: a clone makes its ECDSA and RSA keys in the background).
pub fn host_public_keys(root: &Path) -> Vec<String> {
    KINDS
        .iter()
        .filter_map(|k| read_capped(&root.join(format!("etc/ssh/ssh_host_{k}_key.pub")), 16384))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty() && !t.contains('\n'))
        .collect()
}

/// A firstboot report under `root`, if present and well-formed.
pub fn report(root: &Path, rel: &str) -> Option<RunReport> {
    let text = read_capped(&root.join(rel), MAX_REPORT_LEN)?;
    match serde_json::from_str(&text) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::debug!(file = rel, error = %e, "ignoring a malformed firstboot report");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use piforge_config::status::{FIRSTBOOT_REPORT_PATH, REIDENTIFY_REPORT_PATH};

    #[test]
    fn reads_public_keys_and_reports_with_caps() {
        let t = tempfile::tempdir().unwrap();
        let ssh = t.path().join("etc/ssh");
        std::fs::create_dir_all(&ssh).unwrap();
        std::fs::write(ssh.join("ssh_host_rsa_key.pub"), "ssh-rsa AAAB root@x\n").unwrap();
        std::fs::write(
            ssh.join("ssh_host_ed25519_key.pub"),
            "ssh-ed25519 AAAA root@x\n",
        )
        .unwrap();
        std::fs::write(ssh.join("ssh_host_ed25519_key"), "PRIVATE").unwrap();
        assert_eq!(
            host_public_keys(t.path()),
            ["ssh-ed25519 AAAA root@x", "ssh-rsa AAAB root@x"]
        );
        let rep = t.path().join(FIRSTBOOT_REPORT_PATH);
        std::fs::create_dir_all(rep.parent().unwrap()).unwrap();
        std::fs::write(&rep, r#"{"outcome":"configured","total_ms":5,"phases":[]}"#).unwrap();
        assert_eq!(
            report(t.path(), FIRSTBOOT_REPORT_PATH).unwrap().outcome,
            "configured"
        );
        std::fs::write(&rep, " ".repeat(MAX_REPORT_LEN as usize + 1)).unwrap();
        assert!(
            report(t.path(), FIRSTBOOT_REPORT_PATH).is_none(),
            "too long"
        );
        std::fs::write(&rep, "{").unwrap();
        assert!(report(t.path(), FIRSTBOOT_REPORT_PATH).is_none());
        assert!(report(t.path(), REIDENTIFY_REPORT_PATH).is_none());
    }
}
