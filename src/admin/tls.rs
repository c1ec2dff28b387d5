//! HTTPS for the admin API (protocol section 9): a listener adapter that
//! axum serves like a plain one. An accept task takes TCP connections and
//! runs each TLS handshake in a task of its own (so a slow or silent
//! client holds up nobody else), bounded by the login timeout; finished
//! handshakes are handed to axum. Each connection uses the certificate
//! pair current when it was accepted, so a SIGHUP reload applies to new
//! connections only. A failed handshake ends that connection alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::tls::Reloadable;

/// Handshakes done but not yet taken by axum: beyond this the accept task
/// waits, so a flood of connections cannot queue unbounded memory.
const READY_QUEUE: usize = 64;

/// The admin listener with TLS.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener` (inside the admin runtime); each
    /// handshake must finish within `timeout`.
    pub fn start(
        listener: TcpListener,
        tls: Arc<Reloadable>,
        timeout: Duration,
    ) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors, say: back off, as the shards do.
                        tracing::warn!("admin accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let acceptor = TlsAcceptor::from(tls.current().admin.clone());
                let ready = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = ready.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "admin TLS handshake: {e}"),
                        Err(_) => tracing::debug!(%peer, "admin TLS handshake timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept task ended (the server is stopping): wait for the
            // shutdown signal that ends serving.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
