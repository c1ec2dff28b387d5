//! Provisioning a run through the admin API (protocol section 6): rooms,
//! contacts, bulk changes and tokens (and the metrics text), with `chatd-client`'s admin client over kept-alive
//! connections. Blocking: provisioning happens before the load starts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chatd_client::admin::blocking::AdminClient;
pub use chatd_client::admin::BatchOp;

/// Why provisioning failed.
pub use chatd_client::admin::AdminError as ProvisionError;

/// Token lifetime asked for: longer than any run.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// An admin API client for a run's set-up.
pub struct Admin {
    addr: SocketAddr,
    token: String,
    /// HTTPS (a server with TLS): the client configuration.
    tls: Option<Arc<chatd_client::rustls::ClientConfig>>,
    /// Made at the first request.
    api: Option<AdminClient>,
}

impl Admin {
    /// A client of the API at `addr` with bearer `token` (over HTTPS with
    /// `tls`).
    pub fn new(
        addr: SocketAddr,
        token: &str,
        tls: Option<Arc<chatd_client::rustls::ClientConfig>>,
    ) -> Admin {
        Admin {
            addr,
            token: token.to_string(),
            tls,
            api: None,
        }
    }

    /// The client (made at the first request).
    fn api(&mut self) -> Result<&AdminClient, ProvisionError> {
        let api = match self.api.take() {
            Some(api) => api,
            None => {
                let api = chatd_client::admin::AdminClient::new(self.addr, self.token.clone());
                AdminClient::wrap(match &self.tls {
                    Some(tls) => api.with_tls(tls.clone()),
                    None => api,
                })?
            }
        };
        Ok(self.api.insert(api))
    }

    /// Sets the member list of `chat`.
    pub fn set_room(&mut self, chat: u64, members: &[u64]) -> Result<(), ProvisionError> {
        self.api()?.set_members(chat, members)
    }

    /// Makes `user` a member of `chat`.
    pub fn add_member(&mut self, chat: u64, user: u64) -> Result<(), ProvisionError> {
        self.api()?.add_member(chat, user)
    }

    /// Removes `user` from `chat`.
    pub fn remove_member(&mut self, chat: u64, user: u64) -> Result<(), ProvisionError> {
        self.api()?.remove_member(chat, user)
    }

    /// Runs `ops` as one `POST /v1/batch`.
    pub fn batch(&mut self, ops: &[BatchOp]) -> Result<(), ProvisionError> {
        self.api()?.batch(ops).map(drop)
    }

    /// The server's metrics, as text.
    pub fn metrics(&mut self) -> Result<String, ProvisionError> {
        self.api()?.metrics()
    }

    /// Makes `a` and `b` contacts.
    pub fn add_contact(&mut self, a: u64, b: u64) -> Result<(), ProvisionError> {
        self.api()?.add_contact(a, b)
    }

    /// A token for `user`.
    pub fn token(&mut self, user: u64) -> Result<String, ProvisionError> {
        self.api()?.token(user, TOKEN_TTL)
    }
}
