//! A TCP relay in front of a server, whose open connections can be frozen: they stay open but
//! nothing passes any more, as when a peer vanishes without closing (a host gone, a dropped NAT
//! entry). Connections made after a freeze work. Or they can be cut: both sides see their
//! connection end, as when a proxy in between restarts. Or the server's replies can be slowed,
//! as over a long link.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Relay {
    pub addr: SocketAddr,
    next_id: Arc<AtomicU64>,
    /// Connections with an id below this pass nothing.
    frozen_below: Arc<AtomicU64>,
    /// Connections with an id below this pass requests but swallow the server's replies.
    muted_below: Arc<AtomicU64>,
    /// Both ends of every connection made, for `cut`.
    open: Arc<Mutex<Vec<TcpStream>>>,
    /// How long each of the server's replies is held before it passes (ms).
    reply_delay_ms: Arc<AtomicU64>,
}

impl Relay {
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let next_id = Arc::new(AtomicU64::new(0));
        let frozen_below = Arc::new(AtomicU64::new(0));
        let muted_below = Arc::new(AtomicU64::new(0));
        let open = Arc::new(Mutex::new(Vec::new()));
        let reply_delay_ms = Arc::new(AtomicU64::new(0));
        let (ids, frozen, muted, opened, delay) = (
            Arc::clone(&next_id),
            Arc::clone(&frozen_below),
            Arc::clone(&muted_below),
            Arc::clone(&open),
            Arc::clone(&reply_delay_ms),
        );
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let id = ids.fetch_add(1, Ordering::SeqCst);
                opened
                    .lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (from, to, replies) in [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        false,
                    ),
                    (server, client, true),
                ] {
                    let frozen = Arc::clone(&frozen);
                    let muted = replies.then(|| Arc::clone(&muted));
                    let delay = replies.then(|| Arc::clone(&delay));
                    std::thread::spawn(move || {
                        pump(from, to, id, &frozen, muted.as_deref(), delay.as_deref())
                    });
                }
            }
        });
        Self {
            addr,
            next_id,
            frozen_below,
            muted_below,
            open,
            reply_delay_ms,
        }
    }

    /// From now on each of the server's replies is held `ms` before it passes (0: none).
    pub fn delay_replies(&self, ms: u64) {
        self.reply_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Ends every connection open now, on both sides; new ones work.
    pub fn cut(&self) {
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Every connection open now stops passing bytes, without being closed.
    pub fn freeze(&self) {
        self.frozen_below
            .store(self.next_id.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Every connection open now keeps carrying the client's bytes to the server, but the
    /// server's replies are lost: the server acts on what it is sent and the client never hears
    /// back. Connections made after this work.
    pub fn mute_replies(&self) {
        self.muted_below
            .store(self.next_id.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// `muted_below`, `delay_ms`: for the server-to-client direction, connections whose replies
/// `mute_replies` swallows, and how long `delay_replies` holds each.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    id: u64,
    frozen_below: &AtomicU64,
    muted_below: Option<&AtomicU64>,
    delay_ms: Option<&AtomicU64>,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = [0u8; 16 * 1024];
    let frozen = || id < frozen_below.load(Ordering::SeqCst);
    let muted = || muted_below.is_some_and(|m| id < m.load(Ordering::SeqCst));
    loop {
        let read = from.read(&mut buf);
        if frozen() {
            // Hold both sockets open and pass nothing (not even what was just read), for as
            // long as the test runs.
            std::thread::sleep(Duration::from_secs(3600));
        }
        match read {
            Ok(0) => break,
            Ok(_) if muted() => {}
            Ok(n) => {
                let delay = delay_ms.map_or(0, |d| d.load(Ordering::SeqCst));
                if delay > 0 {
                    std::thread::sleep(Duration::from_millis(delay));
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
