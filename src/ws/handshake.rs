//! The WebSocket opening handshake, server side (RFC 6455 section 4.2,
//! protocol section 8): the client's HTTP/1.1 upgrade request in, which
//! service it asked for or why it is refused out, and the answers.
//!
//! [`parse`] is a plain function over the bytes received so far (httparse
//! underneath), like the command decoders: [`Parsed::Incomplete`] means
//! read more; the request is refused without waiting once it passes
//! [`WS_HANDSHAKE_MAX_BYTES`]. What it accepts:
//! - `GET`, HTTP/1.1, no body; path `/chatd` or `/statusd` (a query string
//!   is ignored), any other path is 404;
//! - `Host`, `Sec-WebSocket-Key` (base64 of 16 bytes),
//!   `Sec-WebSocket-Version: 13` (another version: 400 naming 13);
//! - `Upgrade: websocket` and `Connection: Upgrade`; a request valid but
//!   for those is 426, anything else invalid is 400;
//! - an `Origin` the [`OriginPolicy`] allows, else 403. A request without
//!   `Origin` is allowed: browsers always send it on a WebSocket
//!   handshake, so its absence means a client that is not a browser, which
//!   an origin check cannot protect against anyway (it authenticates with
//!   its token like a TCP client).
//!
//! No subprotocol and no extension is offered: `Sec-WebSocket-Protocol`
//! and `Sec-WebSocket-Extensions` (a `permessage-deflate` offer) are
//! ignored, which declines them (RFC 6455 sections 4.2.2 and 9.1).
//!
//! It must not do I/O or hold state: the driver feeds it, writes the
//! answer ([`accept`] or [`Reject::write`]), and for a refusal closes the
//! connection after the answer is sent.

use base64::Engine as _;
use bytes::BufMut;
use sha1::{Digest as _, Sha1};

use crate::ids::Service;
use crate::limits::{WS_HANDSHAKE_MAX_BYTES, WS_HANDSHAKE_MAX_HEADERS};

/// The GUID RFC 6455 section 1.3 appends to the key before hashing.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Length of a `Sec-WebSocket-Accept` value: base64 of a 20-byte SHA-1.
const ACCEPT_LEN: usize = 28;

/// What the bytes received so far amount to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A valid prefix of a request: read more.
    Incomplete,
    /// A valid upgrade that took the first `used` bytes; bytes after them
    /// are already WebSocket frames.
    Upgrade {
        /// What the client asked for.
        request: Request<'a>,
        /// Bytes of the request (request line and headers).
        used: usize,
    },
    /// Refused: write [`Reject::write`], then close.
    Reject(Reject),
}

/// An accepted upgrade request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The service the path named.
    pub service: Service,
    /// The `Origin` header, if any (allowed by the policy).
    pub origin: Option<&'a str>,
    /// The `Sec-WebSocket-Key` header, trimmed.
    pub key: &'a str,
    /// The `Sec-WebSocket-Accept` answer to `key`.
    accept: [u8; ACCEPT_LEN],
}

impl Request<'_> {
    /// The `Sec-WebSocket-Accept` value answering this request's key.
    pub fn accept_key(&self) -> &str {
        // base64 output is ASCII, so this never falls back.
        std::str::from_utf8(&self.accept).unwrap_or_default()
    }
}

/// Why a handshake is refused; each has its HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// Not an HTTP/1.x request (400).
    #[error("not an HTTP request")]
    Malformed,
    /// The request line and headers passed [`WS_HANDSHAKE_MAX_BYTES`] (400).
    #[error("request header too large")]
    TooLarge,
    /// More than [`WS_HANDSHAKE_MAX_HEADERS`] header lines (400).
    #[error("too many header lines")]
    TooManyHeaders,
    /// A method other than GET (400).
    #[error("method is not GET")]
    NotGet,
    /// HTTP/1.0 (400): only HTTP/1.1 upgrades are served.
    #[error("not HTTP/1.1")]
    NotHttp11,
    /// A header that may appear once appeared twice (400).
    #[error("duplicate {0} header")]
    Duplicate(&'static str),
    /// No `Host` header (400).
    #[error("no Host header")]
    NoHost,
    /// A `Content-Length` other than 0 or a `Transfer-Encoding` (400): a
    /// handshake has no body, and its bytes would be read as frames.
    #[error("request has a body")]
    HasBody,
    /// `Sec-WebSocket-Key` missing or not base64 of 16 bytes (400).
    #[error("missing or invalid Sec-WebSocket-Key")]
    BadKey,
    /// `Sec-WebSocket-Version` missing or not 13 (400, answered with
    /// `Sec-WebSocket-Version: 13`).
    #[error("unsupported Sec-WebSocket-Version (13 is)")]
    BadVersion,
    /// A path other than `/chatd` and `/statusd` (404).
    #[error("no such path")]
    NotFound,
    /// A valid handshake but for `Upgrade: websocket` / `Connection:
    /// Upgrade` (426).
    #[error("WebSocket upgrade required")]
    NoUpgrade,
    /// An `Origin` the policy does not allow (403).
    #[error("origin not allowed")]
    OriginNotAllowed,
}

impl Reject {
    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            Reject::NotFound => 404,
            Reject::NoUpgrade => 426,
            Reject::OriginNotAllowed => 403,
            Reject::Malformed
            | Reject::TooLarge
            | Reject::TooManyHeaders
            | Reject::NotGet
            | Reject::NotHttp11
            | Reject::Duplicate(_)
            | Reject::NoHost
            | Reject::HasBody
            | Reject::BadKey
            | Reject::BadVersion => 400,
        }
    }

    /// Writes the HTTP answer: status, `Connection: close`, the headers
    /// the status calls for, and the reason as a one-line text body.
    pub fn write(self, dst: &mut impl BufMut) {
        let status = match self.status() {
            403 => "403 Forbidden",
            404 => "404 Not Found",
            426 => "426 Upgrade Required",
            _ => "400 Bad Request",
        };
        let body = format!("{self}\n");
        let mut head = format!(
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
            body.len()
        );
        match self {
            Reject::BadVersion => head.push_str("Sec-WebSocket-Version: 13\r\n"),
            Reject::NoUpgrade => head.push_str("Upgrade: websocket\r\n"),
            _ => {}
        }
        head.push_str("\r\n");
        dst.put_slice(head.as_bytes());
        dst.put_slice(body.as_bytes());
    }
}

/// Which browser origins may open a WebSocket (`--ws-allowed-origins`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginPolicy {
    /// `*`: any origin.
    Any,
    /// Only these origins (`scheme://host[:port]`), compared ignoring ASCII
    /// case (scheme and host are case-insensitive; a port is digits).
    Only(Vec<String>),
}

impl OriginPolicy {
    /// Parses the flag's value: `*`, or comma-separated origins. Entries
    /// are trimmed and a trailing `/` dropped (browsers send none); empty
    /// entries are skipped, so an empty list allows no browser at all
    /// (clients that send no `Origin` are still allowed). A `*` anywhere
    /// allows every origin.
    pub fn parse(list: &str) -> OriginPolicy {
        let mut origins = Vec::new();
        for entry in list.split(',') {
            let entry = entry.trim();
            if entry == "*" {
                return OriginPolicy::Any;
            }
            let entry = entry.strip_suffix('/').unwrap_or(entry);
            if !entry.is_empty() {
                origins.push(entry.to_owned());
            }
        }
        OriginPolicy::Only(origins)
    }

    /// Whether a handshake with this `Origin` header (or none) is allowed.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match (self, origin) {
            (_, None) | (OriginPolicy::Any, _) => true,
            (OriginPolicy::Only(list), Some(o)) => list.iter().any(|a| a.eq_ignore_ascii_case(o)),
        }
    }
}

impl std::str::FromStr for OriginPolicy {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(OriginPolicy::parse(s))
    }
}

/// Parses the upgrade request at the start of `buf` (see the module doc
/// for what is accepted). Looks at no more than [`WS_HANDSHAKE_MAX_BYTES`].
pub fn parse<'a>(buf: &'a [u8], origins: &OriginPolicy) -> Parsed<'a> {
    let mut headers = [httparse::EMPTY_HEADER; WS_HANDSHAKE_MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(&buf[..buf.len().min(WS_HANDSHAKE_MAX_BYTES)]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= WS_HANDSHAKE_MAX_BYTES => {
            return Parsed::Reject(Reject::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Reject(Reject::TooManyHeaders),
        Err(_) => return Parsed::Reject(Reject::Malformed),
    };
    match check(&req, origins) {
        Ok(request) => Parsed::Upgrade { request, used },
        Err(reject) => Parsed::Reject(reject),
    }
}

/// The headers a handshake looks at.
#[derive(Default)]
struct Fields<'a> {
    host: bool,
    key: Option<&'a [u8]>,
    version: Option<&'a [u8]>,
    origin: Option<&'a [u8]>,
    upgrade: bool,
    connection_upgrade: bool,
    body: bool,
}

/// Checks a whole request, in the order the module doc lists the rules.
fn check<'a>(
    req: &httparse::Request<'_, 'a>,
    origins: &OriginPolicy,
) -> Result<Request<'a>, Reject> {
    if req.method != Some("GET") {
        return Err(Reject::NotGet);
    }
    if req.version != Some(1) {
        return Err(Reject::NotHttp11);
    }
    let path = req.path.unwrap_or_default();
    let path = path.split_once('?').map_or(path, |(p, _query)| p);
    let service = match path {
        "/chatd" => Service::Chatd,
        "/statusd" => Service::Statusd,
        _ => return Err(Reject::NotFound),
    };
    let f = fields(req.headers)?;
    if !f.host {
        return Err(Reject::NoHost);
    }
    if f.body {
        return Err(Reject::HasBody);
    }
    let key = f
        .key
        .map(<[u8]>::trim_ascii)
        .filter(|k| is_valid_key(k))
        .ok_or(Reject::BadKey)?;
    let key = std::str::from_utf8(key).map_err(|_| Reject::BadKey)?;
    if f.version.map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(Reject::BadVersion);
    }
    if !f.upgrade || !f.connection_upgrade {
        return Err(Reject::NoUpgrade);
    }
    let origin = match f.origin {
        Some(o) => Some(std::str::from_utf8(o.trim_ascii()).map_err(|_| Reject::OriginNotAllowed)?),
        None => None,
    };
    if !origins.allows(origin) {
        return Err(Reject::OriginNotAllowed);
    }
    Ok(Request {
        service,
        origin,
        key,
        accept: accept_key(key.as_bytes()),
    })
}

/// Collects the headers a handshake looks at; refuses duplicates of the
/// ones that may appear once.
fn fields<'a>(headers: &[httparse::Header<'a>]) -> Result<Fields<'a>, Reject> {
    fn once<'a>(
        slot: &mut Option<&'a [u8]>,
        v: &'a [u8],
        name: &'static str,
    ) -> Result<(), Reject> {
        match slot.replace(v) {
            Some(_) => Err(Reject::Duplicate(name)),
            None => Ok(()),
        }
    }
    let mut f = Fields::default();
    for h in headers {
        let name = h.name;
        let v = h.value;
        if name.eq_ignore_ascii_case("host") {
            if f.host {
                return Err(Reject::Duplicate("Host"));
            }
            f.host = true;
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            once(&mut f.key, v, "Sec-WebSocket-Key")?;
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            once(&mut f.version, v, "Sec-WebSocket-Version")?;
        } else if name.eq_ignore_ascii_case("origin") {
            once(&mut f.origin, v, "Origin")?;
        } else if name.eq_ignore_ascii_case("upgrade") {
            f.upgrade |= has_token(v, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            f.connection_upgrade |= has_token(v, "upgrade");
        } else if name.eq_ignore_ascii_case("content-length") {
            f.body |= v.trim_ascii() != b"0";
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            f.body = true;
        }
    }
    Ok(f)
}

/// Whether a comma-separated header value lists `token` (ASCII case
/// ignored).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether `key` is base64 of 16 bytes (RFC 6455 section 4.1, item 7).
fn is_valid_key(key: &[u8]) -> bool {
    let mut raw = [0u8; 18];
    key.len() == 24
        && matches!(
            base64::engine::general_purpose::STANDARD.decode_slice(key, &mut raw),
            Ok(16)
        )
}

/// `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key + GUID)).
fn accept_key(key: &[u8]) -> [u8; ACCEPT_LEN] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WS_GUID);
    let digest = sha.finalize();
    let mut out = [0u8; ACCEPT_LEN];
    // 20 bytes encode to exactly 28, so the slice always fits.
    let _ = base64::engine::general_purpose::STANDARD.encode_slice(digest, &mut out);
    out
}

/// Writes the 101 answer accepting `request`: no subprotocol, no extension.
pub fn accept(request: &Request<'_>, dst: &mut impl BufMut) {
    dst.put_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    dst.put_slice(&request.accept);
    dst.put_slice(b"\r\n\r\n");
}
