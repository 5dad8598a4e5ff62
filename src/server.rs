//! Running the HTTP server: bind, serve, and drain on SIGTERM / Ctrl-C.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt as _;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use crate::api;
use crate::gateway::Gateway;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to listen on {0} without SWITCHYARD_MASTER_KEY: anyone who can reach this address could spend your provider keys. Set SWITCHYARD_MASTER_KEY, or listen on 127.0.0.1"
    )]
    Unprotected(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves until SIGTERM or Ctrl-C, then stops accepting and lets in-flight requests
/// finish for up to the configured grace period.
pub async fn serve(gateway: Arc<Gateway>, listen: SocketAddr) -> Result<(), ServeError> {
    if gateway.master_key.is_none() && !listen.ip().is_loopback() {
        return Err(ServeError::Unprotected(listen));
    }
    let shutdown = shutdown_signal()?;
    let listener = bind(listen).map_err(|source| ServeError::Bind { addr: listen, source })?;
    let local = listener.local_addr()?;
    let available: Vec<&str> = gateway.registry.iter().filter(|p| p.is_available()).map(|p| p.id()).collect();
    tracing::info!(config = %gateway.config.origin, providers = ?available, "switchyard listening on http://{local}");
    if gateway.master_key.is_none() {
        tracing::warn!("SWITCHYARD_MASTER_KEY is not set: requests are not authenticated (loopback only)");
    }

    let (stopping_tx, mut stopping_rx) = watch::channel(false);
    let grace = gateway.config.shutdown_grace;
    let policy_watcher = tokio::spawn(gateway.policies.clone().watch(
        gateway.router.clone(),
        gateway.registry.clone(),
        gateway.config.policy_reload_interval,
        stopping_rx.clone(),
    ));
    // No Nagle delay on streamed chunks.
    let listener = listener.tap_io(|connection| {
        let _ = connection.set_nodelay(true);
    });
    let usage = gateway.usage.clone();
    let audit = gateway.audit.clone();
    let tracer = gateway.tracer.clone();
    let app = api::router(gateway).into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; draining in-flight requests for up to {grace:?}");
        let _ = stopping_tx.send(true);
    });
    let grace_expired = async move {
        let _ = stopping_rx.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result?,
        () = grace_expired => tracing::warn!("grace period over; closing the remaining connections"),
    }
    policy_watcher.abort();
    usage.flush_and_stop().await;
    audit.flush_and_stop().await;
    tracer.flush().await;
    Ok(())
}

/// A listener with a deep accept queue: a burst of new connections (clients reconnecting
/// after a deploy) waits in the queue instead of being dropped into SYN retries.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are registered when this is called, not
/// when the future is first polled, so a signal during start-up is not lost.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
