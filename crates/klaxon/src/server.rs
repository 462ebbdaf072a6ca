//! Serving over HTTP with a graceful stop: on SIGINT/SIGTERM stop taking requests, finish the
//! ones in progress, then stop delivery (in-flight sends get the grace period).

use std::future::Future;
use std::net::SocketAddr;

use klaxon_core::config::Config;

use crate::app::{Role, Service};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to listen on {0} without an API token: anyone who can reach it could send as you. Set server.api_token (or KLAXON_API_TOKEN), or listen on 127.0.0.1"
    )]
    NoToken(SocketAddr),
    #[error("`server.listen` = `{0}` is not an address like 127.0.0.1:8080")]
    BadListen(String),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(transparent)]
    Start(#[from] crate::app::StartError),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Checks the listen address against the token rule before anything starts.
pub fn listen_addr(config: &Config) -> Result<SocketAddr, ServeError> {
    let addr = parse_listen(config)?;
    if !addr.ip().is_loopback() && config.server.api_token.is_none() {
        return Err(ServeError::NoToken(addr));
    }
    Ok(addr)
}

fn parse_listen(config: &Config) -> Result<SocketAddr, ServeError> {
    config
        .server
        .listen
        .parse()
        .map_err(|_| ServeError::BadListen(config.server.listen.clone()))
}

/// Runs until `stop` resolves. `on_bound` learns the real address (port 0 in tests).
pub async fn serve(
    config: Config,
    stop: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    serve_as(config, Role::All, stop, on_bound).await
}

/// [`serve`] for one role. A worker serves only `/health`, `/ready` and `/metrics`, which
/// take no token, so it may listen beyond loopback without one.
pub async fn serve_as(
    config: Config,
    role: Role,
    stop: impl Future<Output = ()> + Send + 'static,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let addr = if role == Role::Worker {
        parse_listen(&config)?
    } else {
        listen_addr(&config)?
    };
    let grace = config.server.shutdown_grace;
    let service = Service::start_as(config, role).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError::Bind(addr, e))?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, "Klaxon listening");
    on_bound(bound);
    let app = if role == Role::Worker {
        crate::api::probe_router(service.shared.clone())
    } else {
        crate::api::router(service.shared.clone())
    };
    let events = service.shared.events.clone();
    let stop = async move {
        stop.await;
        // Live streams never finish by themselves: end them so the graceful stop can.
        events.close();
    };
    // The peer address: the TradingView hook's allow-list reads it.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop)
    .await?;
    tracing::info!(grace = ?grace, "stopping: intake closed, finishing sends in flight");
    service.shutdown(grace).await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
