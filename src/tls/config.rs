//! The certificate and key (`--tls-cert`, `--tls-key`) and the rustls
//! server configurations built from them.
//!
//! Loading checks everything protocol section 9 asks before anything
//! listens: both files readable, a certificate chain in one, a private key
//! in the other (the same file may hold both), the key matching the first
//! certificate. Each failure is a [`TlsError`] naming the file.
//!
//! Both configurations come from the same pair: [`Configs::raw`] (no ALPN:
//! chatd, statusd and WebSocket clients offer none, and a client offering
//! one still connects) and [`Configs::admin`] (ALPN `http/1.1`, what HTTPS
//! clients offer). [`Reloadable`] holds the current [`Configs`]; SIGHUP
//! calls [`Reloadable::reload`], new connections take [`Reloadable::current`]
//! and a connection keeps the configuration it started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerConfig;
use rustls::sign::{CertifiedKey, SingleCertAndKey};

use super::TlsError;

/// The ALPN protocol the admin listener offers.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The server configurations of one certificate/key pair.
#[derive(Clone, Debug)]
pub struct Configs {
    /// For chatd, statusd and WebSocket listeners: no ALPN.
    pub raw: Arc<ServerConfig>,
    /// For the admin listener: ALPN `http/1.1`.
    pub admin: Arc<ServerConfig>,
}

impl Configs {
    /// Loads the pair and builds both configurations.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Configs, TlsError> {
        let provider = provider();
        let key = load_pair(cert_path, key_path, &provider)?;
        Ok(Configs {
            raw: server_config(&provider, key.clone(), &[])?,
            admin: server_config(&provider, key, &[ALPN_HTTP1])?,
        })
    }
}

/// Loads the pair into the configuration for chatd, statusd and WebSocket
/// listeners (no ALPN). [`Configs::load`] builds the admin one too.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let key = load_pair(cert_path, key_path, &provider)?;
    server_config(&provider, key, &[])
}

/// The crypto provider: aws-lc-rs, rustls's default (it builds with the C
/// compiler alone here, no cmake or nasm), with its default cipher suites
/// and key exchange groups, the post-quantum hybrid X25519MLKEM768 first.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A configuration serving `key`, TLS 1.2 and 1.3 only, no client
/// certificates, offering `alpn`.
fn server_config(
    provider: &Arc<CryptoProvider>,
    key: Arc<CertifiedKey>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Reads the certificate chain and the private key and checks that they
/// belong together.
fn load_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let pem_error = |path: &Path, e: rustls::pki_types::pem::Error| TlsError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert_path, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(key) => key,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::NoPrivateKey {
                path: key_path.to_owned(),
            })
        }
        Err(e) => return Err(pem_error(key_path, e)),
    };
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::BadKey {
                path: key_path.to_owned(),
                reason: e.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(Arc::new(certified)),
        // Unknown: the key cannot tell its public half (every aws-lc-rs
        // key can); refused too, since the contract asks for a matching key.
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        }),
        Err(e) => Err(TlsError::BadCertificate {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The current [`Configs`], replaced as a whole on reload. Every shard's
/// accept path reads it (one uncontended read lock and an `Arc` clone per
/// TLS connection); only a reload writes.
#[derive(Debug)]
pub struct Reloadable {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<Configs>>,
}

impl Reloadable {
    /// Loads the pair; the error is the one start-up reports before
    /// anything listens.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Reloadable, TlsError> {
        let configs = Configs::load(cert_path, key_path)?;
        Ok(Reloadable {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(configs)),
        })
    }

    /// The configurations a new connection uses.
    pub fn current(&self) -> Arc<Configs> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads both files. On success new connections use the new pair;
    /// on error the old pair stays and the error says why (the caller
    /// logs it). Connections already open keep theirs either way.
    pub fn reload(&self) -> Result<(), TlsError> {
        let configs = Arc::new(Configs::load(&self.cert_path, &self.key_path)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = configs;
        Ok(())
    }
}
