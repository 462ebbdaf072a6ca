//! The loopback HTTP server behind every fake: binds `127.0.0.1:0`, can be stopped so that the
//! port refuses connections (listener *and* open keep-alive connections are dropped, like a
//! crashed host), and restarted on the same port.
//!
//! A hand-written accept loop is used instead of `axum::serve` because the latter spawns each
//! connection as a detached task: aborting it closes the listener but leaves pooled client
//! connections answering, so a "stopped" fake would still serve requests.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::Response;
use http::{HeaderMap, Method, Uri};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::fault::Intake;
use crate::lock;

/// How long `restart` keeps trying to re-bind the old port: the OS may briefly hold it after the
/// listener is dropped.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two re-bind attempts.
const REBIND_STEP: Duration = Duration::from_millis(20);
/// Pause after a failed `accept` (e.g. out of file descriptors under a benchmark), so the loop
/// backs off instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// A running (or stopped) fake server.
#[derive(Debug)]
pub(crate) struct Server {
    /// The application, cloned into every connection; kept to serve again after `restart`.
    router: Router,
    /// Fixed at `start`: `restart` re-binds this same address so clients keep their URL.
    addr: SocketAddr,
    /// The accept loop; `None` while stopped. Aborting it drops the listener and, through its
    /// `JoinSet`, every connection task.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Server {
    /// Binds `127.0.0.1:0` and starts serving `router`.
    ///
    /// # Panics
    /// If the loopback interface cannot be bound at all: a test environment problem that no
    /// test could recover from.
    pub(crate) async fn start(router: Router) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("klaxon-fakes: cannot bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("klaxon-fakes: bound listener has no local address");
        let task = tokio::spawn(serve(listener, router.clone()));
        Self {
            router,
            addr,
            task: Mutex::new(Some(task)),
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving: new connections are refused and open ones are closed. Idempotent.
    pub(crate) async fn stop(&self) {
        let task = lock(&self.task).take();
        if let Some(task) = task {
            task.abort();
            // Wait until the task is really gone, so the listener is closed when we return.
            let _ = task.await;
        }
    }

    /// Stops (if running) and serves again on the same port.
    pub(crate) async fn try_restart(&self) -> io::Result<()> {
        self.stop().await;
        let listener = bind_retrying(self.addr).await?;
        let task = tokio::spawn(serve(listener, self.router.clone()));
        if let Some(previous) = lock(&self.task).replace(task) {
            // A concurrent restart won the race; keep only one server on the port.
            previous.abort();
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A fake dropped at the end of a test must not keep serving in the background.
        let task = self
            .task
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.abort();
        }
    }
}

/// A fake that reads each request whole and answers it synchronously (Slack, Twilio, ntfy,
/// Pushover): it states only its own answers; counting, injected faults and serving are
/// [`handle`]'s.
pub(crate) trait Provider: Send + Sync + 'static {
    /// The largest body read at all; past it the answer is a bare 413. Axum's own default is
    /// 2 MB, below what ntfy and Pushover accept as files, so each fake states its own.
    const BODY_LIMIT: usize;

    fn intake(&self) -> &Intake;
    /// The provider's error answer for an injected failure with this status.
    fn injected(&self, status: u16) -> Response;
    /// Answers a request that no injected failure took.
    fn serve(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response;
}

/// The one route of a [`Provider`]: count the request, apply the injected fault, serve.
async fn handle<P: Provider>(
    State(shared): State<Arc<P>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(status) = shared.intake().admit().await {
        return shared.injected(status);
    }
    shared.serve(&method, &uri, &headers, &body)
}

impl Server {
    /// Starts serving every path of `shared` through [`handle`].
    pub(crate) async fn start_provider<P: Provider>(shared: &Arc<P>) -> Self {
        Self::start(
            Router::new()
                .fallback(handle::<P>)
                .layer(DefaultBodyLimit::max(P::BODY_LIMIT))
                .with_state(Arc::clone(shared)),
        )
        .await
    }
}

/// Binds `addr`, retrying for up to [`REBIND_TIMEOUT`].
async fn bind_retrying(addr: SocketAddr) -> io::Result<TcpListener> {
    let deadline = tokio::time::Instant::now() + REBIND_TIMEOUT;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(err) if tokio::time::Instant::now() >= deadline => return Err(err),
            Err(_) => tokio::time::sleep(REBIND_STEP).await,
        }
    }
}

/// Accepts connections and serves each with HTTP/1.1 (keep-alive) until aborted.
async fn serve(listener: TcpListener, router: Router) {
    // Owning the connection tasks here means aborting this task closes them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Small request/response pairs: Nagle would only add latency.
                    let _ = stream.set_nodelay(true);
                    let service = TowerToHyperService::new(router.clone());
                    connections.spawn(async move {
                        // A client hanging up mid-request is not our problem.
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Err(_) => tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await,
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
