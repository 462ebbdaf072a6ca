//! A TCP proxy that can cut the line: the "database went away" of the reliability tests.
//!
//! Bytes pass through unchanged in both directions; [`TcpProxy::cut`] drops every open
//! connection and refuses new ones (accepted, then closed at once, as a host whose service died
//! does), [`TcpProxy::restore`] lets them through again. The service under test sees real
//! connection errors from its real client library — nothing in it is mocked.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct TcpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

struct Shared {
    upstream: SocketAddr,
    up: AtomicBool,
    /// Connections refused while cut.
    refused: AtomicUsize,
    open: Mutex<Vec<AbortHandle>>,
}

impl TcpProxy {
    /// Listens on `127.0.0.1:0` and forwards to `upstream`.
    ///
    /// # Panics
    /// If the loopback interface cannot be bound.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let shared = Arc::new(Shared {
            upstream,
            up: AtomicBool::new(true),
            refused: AtomicUsize::new(0),
            open: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !s.up.load(Ordering::SeqCst) {
                    s.refused.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                let upstream = s.upstream;
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let mut client = client;
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut open = s.open.lock().unwrap_or_else(|e| e.into_inner());
                open.retain(|h| !h.is_finished());
                open.push(task.abort_handle());
            }
        });
        TcpProxy {
            addr,
            shared,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Drops every open connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.shared.up.store(false, Ordering::SeqCst);
        let open = std::mem::take(&mut *self.shared.open.lock().unwrap_or_else(|e| e.into_inner()));
        for h in open {
            h.abort();
        }
    }

    pub fn restore(&self) {
        self.shared.up.store(true, Ordering::SeqCst);
    }

    /// Connections refused while the line was cut.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
