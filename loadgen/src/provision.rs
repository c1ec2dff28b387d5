//! A minimal HTTP/1.1 client of the admin API (protocol section 6), over
//! one keep-alive connection: rooms, contacts and tokens for a run.
//! Blocking: provisioning happens before the load starts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Token lifetime asked for: longer than any run.
const TOKEN_TTL_SECS: u64 = 24 * 3600;

/// Why provisioning failed.
#[derive(Debug)]
pub enum ProvisionError {
    /// The admin API could not be reached or the connection broke.
    Io(std::io::Error),
    /// An answer that is not HTTP we understand.
    BadResponse(String),
    /// The API refused a request.
    Status {
        /// What was asked.
        request: String,
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
}

impl std::fmt::Display for ProvisionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProvisionError::Io(e) => write!(f, "admin API: {e}"),
            ProvisionError::BadResponse(s) => write!(f, "admin API: bad response: {s}"),
            ProvisionError::Status {
                request,
                status,
                body,
            } => write!(f, "admin API: {request} answered {status}: {body}"),
        }
    }
}

impl std::error::Error for ProvisionError {}

impl From<std::io::Error> for ProvisionError {
    fn from(e: std::io::Error) -> Self {
        ProvisionError::Io(e)
    }
}

/// An admin API client.
pub struct Admin {
    addr: SocketAddr,
    token: String,
    conn: Option<BufReader<TcpStream>>,
    /// Requests made so far.
    pub requests: u64,
}

impl Admin {
    /// A client of the API at `addr` with bearer `token`.
    pub fn new(addr: SocketAddr, token: &str) -> Admin {
        Admin {
            addr,
            token: token.to_string(),
            conn: None,
            requests: 0,
        }
    }

    fn open(&mut self) -> Result<&mut BufReader<TcpStream>, ProvisionError> {
        if self.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            self.conn = Some(BufReader::new(s));
        }
        self.conn
            .as_mut()
            .ok_or_else(|| ProvisionError::BadResponse("no connection".into()))
    }

    /// One request; returns (status, body). Retries once on a fresh
    /// connection when the kept-alive one was closed.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), ProvisionError> {
        match self.try_request(method, path, body) {
            Ok(r) => Ok(r),
            Err(ProvisionError::Io(_)) | Err(ProvisionError::BadResponse(_)) => {
                self.conn = None;
                self.try_request(method, path, body)
            }
            Err(e) => Err(e),
        }
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), ProvisionError> {
        self.requests += 1;
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: chatd\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.token,
            body.len()
        );
        let conn = self.open()?;
        conn.get_mut().write_all(req.as_bytes())?;
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            return Err(ProvisionError::BadResponse("connection closed".into()));
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ProvisionError::BadResponse(line.trim().to_string()))?;
        let mut len = 0usize;
        let mut close = false;
        loop {
            let mut h = String::new();
            if conn.read_line(&mut h)? == 0 {
                return Err(ProvisionError::BadResponse("truncated headers".into()));
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    len = v
                        .parse()
                        .map_err(|_| ProvisionError::BadResponse(h.to_string()))?;
                } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                    close = true;
                } else if k == "transfer-encoding" {
                    return Err(ProvisionError::BadResponse(format!("unsupported {h}")));
                }
            }
        }
        let mut buf = vec![0u8; len];
        conn.read_exact(&mut buf)?;
        if close {
            self.conn = None;
        }
        Ok((status, String::from_utf8_lossy(&buf).into_owned()))
    }

    /// A request that must answer `want`.
    fn expect(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
        want: u16,
    ) -> Result<String, ProvisionError> {
        let (status, out) = self.request(method, path, body)?;
        if status != want {
            return Err(ProvisionError::Status {
                request: format!("{method} {path}"),
                status,
                body: out,
            });
        }
        Ok(out)
    }

    /// Sets the member list of `chat`.
    pub fn set_room(&mut self, chat: u64, members: &[u64]) -> Result<(), ProvisionError> {
        let list: Vec<String> = members.iter().map(|m| format!("\"{m}\"")).collect();
        let body = format!("{{\"members\":[{}]}}", list.join(","));
        self.expect("PUT", &format!("/v1/rooms/{chat}"), Some(&body), 204)
            .map(|_| ())
    }

    /// Makes `a` and `b` contacts.
    pub fn add_contact(&mut self, a: u64, b: u64) -> Result<(), ProvisionError> {
        self.expect("PUT", &format!("/v1/users/{a}/contacts/{b}"), None, 204)
            .map(|_| ())
    }

    /// A token for `user`.
    pub fn token(&mut self, user: u64) -> Result<String, ProvisionError> {
        let body = format!("{{\"userid\":\"{user}\",\"ttl_secs\":{TOKEN_TTL_SECS}}}");
        let out = self.expect("POST", "/v1/tokens", Some(&body), 200)?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| ProvisionError::BadResponse(format!("token JSON: {e}")))?;
        v.get("token")
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| ProvisionError::BadResponse(format!("no token in {out}")))
    }
}
