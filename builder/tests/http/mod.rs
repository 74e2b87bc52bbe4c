//! A small, real HTTP/1.1 file server for tests, on `127.0.0.1:0` (never a fixed port, never the
//! network), built on `std::net` only.
//!
//! Reuse it from any integration test in `builder/tests/` with `mod http;`, then:
//! ```ignore
//! let server = http::TestServer::start();
//! server.serve("/img.xz", bytes);                   // GET/HEAD, single `Range: bytes=N-[M]`
//! server.serve("/img.xz.sha256", format!("{sha}  img.xz\n"));
//! server.cut_after("/img.xz", 1 << 20, 1);          // next response: close after 1 MiB of body
//! server.ignore_range("/img.xz");                   // answer 200 + whole file to Range requests
//! server.set_status("/gone", 500);                  // answer 500 with an empty body
//! let url = server.url("/img.xz");                  // http://127.0.0.1:PORT/img.xz
//! server.requests_for("/img.xz");                   // what the client asked for (with Range)
//! ```
//! Anything not served answers 404. To serve wrong bytes, `serve` them. One request per
//! connection (`Connection: close`). The server stops when dropped.
//! Deliberately minimal: no chunked encoding, no keep-alive, no multi-range, no TLS.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The request target, e.g. `/img.xz`.
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
}

/// How one path is answered.
#[derive(Debug, Clone)]
struct Route {
    body: Arc<Vec<u8>>,
    status: u16,
    honour_range: bool,
    /// Close the connection after this many body bytes, for the next `cuts_left` responses.
    cut_after: Option<u64>,
    cuts_left: usize,
}

#[derive(Default)]
struct Shared {
    routes: Mutex<HashMap<String, Route>>,
    log: Mutex<Vec<Request>>,
}

/// The server. Dropping it stops it.
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Listen on `127.0.0.1:0` and serve in background threads.
    pub fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        let addr = listener.local_addr().expect("reading the bound address");
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let shared = shared.clone();
                    std::thread::spawn(move || {
                        let _ = handle(conn, &shared);
                    });
                }
            })
        };
        TestServer {
            addr,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Serve `body` at `path` with status 200 and `Range` support, replacing what was there.
    pub fn serve(&self, path: &str, body: impl Into<Vec<u8>>) {
        self.routes().insert(
            path.to_owned(),
            Route {
                body: Arc::new(body.into()),
                status: 200,
                honour_range: true,
                cut_after: None,
                cuts_left: 0,
            },
        );
    }

    /// Stop serving `path` (it answers 404 again).
    pub fn remove(&self, path: &str) {
        self.routes().remove(path);
    }

    /// The next `times` responses for `path` close the connection after `bytes` body bytes
    /// (while announcing the full `Content-Length`), like a network failure.
    pub fn cut_after(&self, path: &str, bytes: u64, times: usize) {
        let mut routes = self.routes();
        let route = routes
            .get_mut(path)
            .expect("cut_after: serve the path first");
        route.cut_after = Some(bytes);
        route.cuts_left = times;
    }

    /// Answer `Range` requests for `path` with 200 and the whole body, like servers without
    /// range support.
    pub fn ignore_range(&self, path: &str) {
        let mut routes = self.routes();
        routes
            .get_mut(path)
            .expect("ignore_range: serve the path first")
            .honour_range = false;
    }

    /// Answer `path` with `status` and an empty body.
    pub fn set_status(&self, path: &str, status: u16) {
        self.routes().insert(
            path.to_owned(),
            Route {
                body: Arc::new(Vec::new()),
                status,
                honour_range: false,
                cut_after: None,
                cuts_left: 0,
            },
        );
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.log.lock().expect("request log lock").clone()
    }

    /// The requests for one path.
    pub fn requests_for(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Route>> {
        self.shared.routes.lock().expect("routes lock")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((name, value)) = h.split_once(':')
            && name.trim().eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_owned());
        }
    }
    shared.log.lock().expect("request log lock").push(Request {
        method: method.clone(),
        path: path.clone(),
        range: range.clone(),
    });

    let route = {
        let mut routes = shared.routes.lock().expect("routes lock");
        routes.get_mut(&path).map(|r| {
            let snapshot = r.clone();
            if r.cuts_left > 0 {
                r.cuts_left -= 1;
            }
            snapshot
        })
    };
    let mut out = conn;
    let Some(route) = route else {
        return respond(&mut out, 404, &[], b"not found\n", &method, None);
    };
    if route.status != 200 {
        return respond(&mut out, route.status, &[], b"", &method, None);
    }
    let len = route.body.len() as u64;
    let cut = route.cut_after.filter(|_| route.cuts_left > 0);
    match range
        .as_deref()
        .filter(|_| route.honour_range)
        .and_then(parse_range)
    {
        Some((start, _)) if start >= len => {
            let cr = format!("bytes */{len}");
            respond(&mut out, 416, &[("Content-Range", &cr)], b"", &method, None)
        }
        Some((start, end)) => {
            let end = end.unwrap_or(len - 1).min(len - 1);
            let cr = format!("bytes {start}-{end}/{len}");
            let body = &route.body[start as usize..=end as usize];
            respond(&mut out, 206, &[("Content-Range", &cr)], body, &method, cut)
        }
        None => respond(&mut out, 200, &[], &route.body, &method, cut),
    }
}

/// `bytes=N-` or `bytes=N-M`.
fn parse_range(v: &str) -> Option<(u64, Option<u64>)> {
    let (start, end) = v.strip_prefix("bytes=")?.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => None,
        e => Some(e.parse().ok()?),
    };
    Some((start, end))
}

fn respond(
    out: &mut TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    method: &str,
    cut_after: Option<u64>,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n\
         Content-Type: application/octet-stream\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if method != "HEAD" {
        let send = cut_after.map_or(body.len(), |n| (n as usize).min(body.len()));
        for chunk in body[..send].chunks(64 * 1024) {
            out.write_all(chunk)?;
        }
    }
    out.flush()?;
    out.shutdown(Shutdown::Write)
}
