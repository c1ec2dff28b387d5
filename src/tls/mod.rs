//! TLS for every listener (protocol section 9), on rustls 0.23 with the
//! aws-lc-rs provider, TLS 1.2 and 1.3 only.
//!
//! It owns the certificate and key and the TLS state of a connection:
//! - [`config`]: loads `--tls-cert` / `--tls-key` into the server
//!   configurations ([`Configs`]: one without ALPN for chatd, statusd and
//!   WebSocket, one offering `http/1.1` for the admin API), with a
//!   one-line [`TlsError`] naming the file when the pair is unusable, and
//!   [`Reloadable`], the holder SIGHUP reloads (a bad new pair keeps the
//!   old one);
//! - [`session`]: [`Session`], one connection's TLS, sans-IO: ciphertext
//!   in, plaintext appended to the connection's read buffer; plaintext
//!   frames in, ciphertext out.
//!
//! It must not do I/O, hold sockets, or know what the plaintext means: the
//! connection driver moves the bytes and decides when to close.
//! `docs/websocket-tls.md` says how the driver uses it, and what kernel TLS
//! offload would take.

pub mod config;
pub mod session;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use config::{load, Configs, Reloadable};
pub use session::{Received, Session, SessionError};

/// Why a certificate/key pair cannot be used. Each message is one line and
/// names the file at fault (protocol section 9).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file is missing or unreadable.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid PEM.
    #[error("{}: invalid PEM: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM reader said.
        reason: String,
    },
    /// The certificate file holds no certificate.
    #[error("{}: no certificate in the file", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key (PKCS#8, PKCS#1 or SEC1).
    #[error("{}: no private key in the file", path.display())]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is of a kind or size the provider cannot use.
    #[error("{}: unusable private key: {reason}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What the provider said.
        reason: String,
    },
    /// The first certificate cannot be parsed.
    #[error("{}: unusable certificate: {reason}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The private key is not the key of the first certificate.
    #[error("{}: the private key does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the configuration (not expected with a valid pair).
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}
