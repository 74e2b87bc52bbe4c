//! A minimal blocking HTTP/1.1 client for the agent's API (the CLI; webhooks use ureq).
//!
//! Plain `http://` only, one request per connection (`Connection: close`), fixed-length and
//! chunked responses. It exists so the CLI needs no HTTP client crate (and no TLS
//! stack) on the Pi; it deliberately does not follow redirects or reuse connections.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::api::{ApiMember, EventsPage, JoinRequest, TagsRequest};

/// A response: status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Body, decoded from chunked if needed.
    pub body: Vec<u8>,
}

/// Sends one request to `host:port` and reads the whole response.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    json: Option<&str>,
    timeout: Duration,
) -> Result<Response> {
    let sock = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("resolving {addr}: no address"))?;
    let mut s = TcpStream::connect_timeout(&sock, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))
        .context("setting a read timeout")?;
    let body = json.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: piforge-node\r\n"
    );
    if json.is_some() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes())
        .with_context(|| format!("sending a request to {addr}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading the response from {addr}"))?;
    parse_response(&raw).with_context(|| format!("parsing the response from {addr}"))
}

/// Parses a complete HTTP/1.1 response. Pure; a fuzzing entry point.
pub fn parse_response(raw: &[u8]) -> Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).context("headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().context("no status line")?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("bad status line")?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size_str = std::str::from_utf8(&b[..nl]).context("chunk size is not UTF-8")?;
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        b = &b[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&b[..size]);
        b = b.get(size + 2..).unwrap_or(&[]);
    }
}

fn ok_json<T: serde::de::DeserializeOwned>(r: Response, what: &str) -> Result<T> {
    if r.status != 200 {
        bail!(
            "{what}: HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body).trim()
        );
    }
    serde_json::from_slice(&r.body).with_context(|| format!("decoding {what}"))
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /api/members`.
pub fn members(http: &str) -> Result<Vec<ApiMember>> {
    ok_json(
        request(http, "GET", "/api/members", None, TIMEOUT)?,
        "the member list",
    )
}

/// `POST /api/join`.
pub fn join(http: &str, addr: &str) -> Result<serde_json::Value> {
    let body = serde_json::to_string(&JoinRequest { addr: addr.into() })?;
    ok_json(
        request(http, "POST", "/api/join", Some(&body), TIMEOUT)?,
        "the join answer",
    )
}

/// `POST /api/leave`.
pub fn leave(http: &str) -> Result<serde_json::Value> {
    ok_json(
        request(http, "POST", "/api/leave", Some("{}"), TIMEOUT)?,
        "the leave answer",
    )
}

/// `POST /api/tags`; the node's tags afterwards.
pub fn tags(http: &str, req: &TagsRequest) -> Result<serde_json::Value> {
    let body = serde_json::to_string(req)?;
    ok_json(
        request(http, "POST", "/api/tags", Some(&body), TIMEOUT)?,
        "the tags answer",
    )
}

/// `GET /api/events` (long poll).
pub fn events(http: &str, after: Option<u64>, wait_secs: u64) -> Result<EventsPage> {
    let path = match after {
        Some(a) => format!("/api/events?after={a}&wait={wait_secs}"),
        None => format!("/api/events?wait={wait_secs}"),
    };
    let timeout = Duration::from_secs(wait_secs + 10);
    ok_json(
        request(http, "GET", &path, None, timeout)?,
        "the event page",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fixed_and_chunked() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hi"[..]));
        let r = parse_response(
            b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (403, &b"abcde"[..]));
        assert!(parse_response(b"garbage").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nab")
                .is_err()
        );
    }
}
