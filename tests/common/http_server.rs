//! A small HTTP/1.1 server for the tests' providers and pages: one thread per connection, so a
//! keep-alive connection never keeps another waiting.
//!
//! It replaces tiny_http 0.12, whose connection pool loses a wake-up when two connections arrive
//! together: the second one then waits until some other connection closes (seconds, with a proxy
//! that keeps its upstream connections alive). That stalled requests "through payedge" that
//! payedge had already sent on.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::mock::{MockResponse, Recorded};

pub type Handler = dyn Fn(&Recorded) -> MockResponse + Send + Sync;

/// Serves `handler` on 127.0.0.1 until dropped; dropping closes the listener and every open
/// connection, as a provider that goes away.
pub struct HttpServer {
    pub addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    open: Arc<Open>,
    acceptor: Option<JoinHandle<()>>,
}

/// The open connections (a handle on each, to close them all when the server goes away); a
/// connection takes itself out when it ends.
type Open = Mutex<HashMap<u64, TcpStream>>;

impl HttpServer {
    pub fn start(handler: Arc<Handler>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("test server cannot bind");
        let addr = listener.local_addr().expect("test server has no address");
        let stopping = Arc::new(AtomicBool::new(false));
        let open: Arc<Open> = Arc::default();
        let acceptor = {
            let (stopping, open) = (Arc::clone(&stopping), Arc::clone(&open));
            let ids = AtomicU64::new(0);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let id = ids.fetch_add(1, Ordering::Relaxed);
                    if let Ok(copy) = stream.try_clone() {
                        open.lock().unwrap().insert(id, copy);
                    }
                    let (handler, open) = (Arc::clone(&handler), Arc::clone(&open));
                    std::thread::spawn(move || {
                        serve(stream, &*handler);
                        // The handle kept in `open` would hold the socket open: close it here.
                        if let Some(copy) = open.lock().unwrap().remove(&id) {
                            let _ = copy.shutdown(Shutdown::Both);
                        }
                    });
                }
            })
        };
        Self {
            addr,
            stopping,
            open,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the acceptor so it sees the flag and drops the listener before we return.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for (_, stream) in self.open.lock().unwrap().drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Requests on one connection, one after another, until the peer closes or asks to.
fn serve(stream: TcpStream, handler: &Handler) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Some((request, close)) = read_request(&mut reader, &mut writer) {
        let answer = handler(&request);
        std::thread::sleep(answer.delay);
        if writer.write_all(&encode(&request, &answer, close)).is_err() || close {
            return;
        }
    }
}

fn read_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
) -> Option<(Recorded, bool)> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        reader.read_until(b'\n', &mut head).ok()?;
        if head.len() == before {
            return None; // closed
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            break;
        }
    }
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut fields);
    if !parsed.parse(&head).ok()?.is_complete() {
        return None;
    }
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let mut request = Recorded {
        method: parsed.method?.to_string(),
        path: parsed.path?.to_string(),
        headers,
        body: Vec::new(),
    };
    if request
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").ok()?;
    }
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        request.body = read_chunked(reader)?;
    } else if let Some(length) = request.header("content-length") {
        let mut body = vec![0; length.trim().parse().ok()?];
        reader.read_exact(&mut body).ok()?;
        request.body = body;
    }
    let close = request
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        || parsed.version == Some(0);
    Some((request, close))
}

fn read_chunked(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let size = usize::from_str_radix(line.trim().split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                line.clear();
                reader.read_line(&mut line).ok()?;
                if line.trim().is_empty() {
                    return Some(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).ok()?;
        line.clear();
        reader.read_line(&mut line).ok()?;
    }
}

fn encode(request: &Recorded, answer: &MockResponse, close: bool) -> Vec<u8> {
    let reason = http::StatusCode::from_u16(answer.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Status");
    let mut out = format!("HTTP/1.1 {} {reason}\r\n", answer.status).into_bytes();
    for (name, value) in &answer.headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    let bodiless = request.method == "HEAD" || answer.status == 204 || answer.status == 304;
    if answer.status != 204 && answer.status != 304 {
        out.extend_from_slice(format!("Content-Length: {}\r\n", answer.body.len()).as_bytes());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !bodiless {
        out.extend_from_slice(&answer.body);
    }
    out
}
