//! TLS tests, in memory (no sockets): certificates made with rcgen, a
//! rustls client talking to [`Session`] by handing bytes across. Loading
//! and its one-line errors, reload keeping the old pair, ALPN, a full
//! exchange both ways with close_notify, a plaintext client and a client
//! that refuses the certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::{load, Configs, Reloadable, Session, SessionError, TlsError};

/// A CA and a leaf certificate for `localhost` it signed.
struct Pki {
    ca: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
    /// Leaf then CA, as a server's chain file holds them.
    chain_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Pki {
        ca: ca.der().clone(),
        leaf: leaf.der().clone(),
        chain_pem: format!("{}{}", leaf.pem(), ca.pem()),
        key_pem: key.serialize_pem(),
    }
}

/// Writes `pki`'s chain and key into `dir`; returns their paths.
fn write_pair(dir: &Path, pki: &Pki) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &pki.chain_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    (cert, key)
}

/// A client trusting `ca`, offering `alpn`.
fn client(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> ClientConnection {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap()
}

/// Moves bytes both ways until neither side has anything to send; the
/// server's plaintext goes to `plain`. Returns the first error of either
/// side (the server's as a SessionError, the client's as rustls's).
fn pump(
    c: &mut ClientConnection,
    s: &mut Session,
    plain: &mut BytesMut,
) -> Result<(), Result<SessionError, rustls::Error>> {
    loop {
        let mut to_server = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut to_server).unwrap();
        }
        if !to_server.is_empty() {
            s.receive(&to_server, plain).map_err(Ok)?;
        }
        let mut to_client = BytesMut::new();
        s.pending(&mut to_client).map_err(Ok)?;
        let mut rest = &to_client[..];
        while !rest.is_empty() {
            c.read_tls(&mut rest).unwrap();
            c.process_new_packets().map_err(Err)?;
        }
        if to_server.is_empty() && to_client.is_empty() {
            return Ok(());
        }
    }
}

/// Reads all the plaintext the client received.
fn client_plaintext(c: &mut ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match std::io::Read::read(&mut c.reader(), &mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return out,
            Err(e) => panic!("client read: {e}"),
        }
    }
}

/// How many TLS records `wire` holds (5-byte headers: type, version, length).
fn records(mut wire: &[u8]) -> usize {
    let mut n = 0;
    while let [_, _, _, hi, lo, rest @ ..] = wire {
        wire = &rest[usize::from(u16::from_be_bytes([*hi, *lo]))..];
        n += 1;
    }
    assert!(wire.is_empty(), "a record was cut");
    n
}

#[test]
fn a_client_and_the_server_exchange_data_and_close_notify() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), &pki);
    let mut s = Session::new(load(&cert, &key).unwrap()).unwrap();
    let mut c = client(&pki.ca, &[]);
    let mut plain = BytesMut::new();
    assert!(s.is_handshaking());
    pump(&mut c, &mut s, &mut plain).unwrap();
    assert!(!s.is_handshaking() && !c.is_handshaking());
    assert_eq!(c.peer_certificates().unwrap()[0], pki.leaf);
    assert_eq!(s.alpn_protocol(), None);
    // TLS 1.3 with the post-quantum hybrid key exchange first.
    assert_eq!(c.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let group = c.negotiated_key_exchange_group().map(|g| g.name());
    assert_eq!(group, Some(rustls::NamedGroup::X25519MLKEM768));

    // Client to server: commands arrive as plaintext in the read buffer.
    std::io::Write::write_all(&mut c.writer(), b"\x06\x03\x00abc\x00").unwrap();
    pump(&mut c, &mut s, &mut plain).unwrap();
    assert_eq!(&plain[..], b"\x06\x03\x00abc\x00");

    // Server to client: a header and queued frames, larger than rustls's
    // 64 KiB output buffer and than one record.
    let frames: Vec<Bytes> = (0..40u8).map(|i| Bytes::from(vec![i; 5000])).collect();
    let mut out = BytesMut::new();
    s.send(b"HEAD", &frames, &mut out).unwrap();
    // Frames are gathered into full records, not one record per frame:
    // 200,004 bytes fit 13 records of at most 16 KiB.
    assert_eq!(records(&out), 13);
    let mut rest = &out[..];
    let mut got = Vec::new();
    while !rest.is_empty() {
        c.read_tls(&mut rest).unwrap();
        c.process_new_packets().unwrap();
        got.extend(client_plaintext(&mut c));
    }
    let mut want = b"HEAD".to_vec();
    frames.iter().for_each(|f| want.extend_from_slice(f));
    assert_eq!(got, want);

    // The client closes; the server sees it and answers.
    c.send_close_notify();
    let mut to_server = Vec::new();
    c.write_tls(&mut to_server).unwrap();
    let got = s.receive(&to_server, &mut plain).unwrap();
    assert!(got.peer_closed);
    let mut out = BytesMut::new();
    s.close_notify(&mut out).unwrap();
    c.read_tls(&mut &out[..]).unwrap();
    assert!(c.process_new_packets().unwrap().peer_has_closed());
}

#[test]
fn ciphertext_fed_one_byte_at_a_time_gives_the_same_plaintext() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), &pki);
    let mut s = Session::new(load(&cert, &key).unwrap()).unwrap();
    let mut c = client(&pki.ca, &[]);
    let mut plain = BytesMut::new();
    pump(&mut c, &mut s, &mut plain).unwrap();
    let data: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
    std::io::Write::write_all(&mut c.writer(), &data).unwrap();
    let mut wire = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut wire).unwrap();
    }
    let mut total = 0;
    for b in wire.chunks(1) {
        total += s.receive(b, &mut plain).unwrap().plaintext;
    }
    assert_eq!((total, &plain[..]), (data.len(), &data[..]));
}

#[test]
fn the_admin_configuration_offers_http1_and_the_raw_one_nothing() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), &pki);
    let configs = Configs::load(&cert, &key).unwrap();
    let mut plain = BytesMut::new();

    let mut s = Session::new(configs.admin.clone()).unwrap();
    let mut c = client(&pki.ca, &[b"h2", b"http/1.1"]);
    pump(&mut c, &mut s, &mut plain).unwrap();
    assert_eq!(s.alpn_protocol(), Some(&b"http/1.1"[..]));

    // A client offering ALPN to a raw listener still connects, without it.
    let mut s = Session::new(configs.raw.clone()).unwrap();
    let mut c = client(&pki.ca, &[b"http/1.1"]);
    pump(&mut c, &mut s, &mut plain).unwrap();
    assert_eq!((s.is_handshaking(), s.alpn_protocol()), (false, None));
}

#[test]
fn tls_1_2_and_1_3_are_both_served() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), &pki);
    let config = load(&cert, &key).unwrap();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cc = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut c = ClientConnection::new(Arc::new(cc), ServerName::try_from("localhost").unwrap())
            .unwrap();
        let mut s = Session::new(config.clone()).unwrap();
        pump(&mut c, &mut s, &mut BytesMut::new()).unwrap();
        assert_eq!(c.protocol_version(), Some(version.version));
    }
}

#[test]
fn a_plaintext_client_gets_an_error_not_a_panic() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), &pki);
    let config = load(&cert, &key).unwrap();
    for hello in [
        &b"GET /chatd HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        // OP_AUTH, as a raw chatd client sends it.
        &b"\x06\x05\x00token\x05\x01\x00"[..],
    ] {
        let mut s = Session::new(config.clone()).unwrap();
        let mut plain = BytesMut::new();
        let err = s.receive(hello, &mut plain).unwrap_err();
        assert!(matches!(err, SessionError::Tls(_)), "{err}");
        assert!(plain.is_empty());
        // Whatever alert rustls queued can still be taken and sent.
        s.pending(&mut BytesMut::new()).unwrap();
    }
}

#[test]
fn a_client_refusing_the_certificate_ends_the_session_with_an_error() {
    let pki = pki();
    let other = pki_other_ca();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), &pki);
    let mut s = Session::new(load(&cert, &key).unwrap()).unwrap();
    let mut c = client(&other, &[]);
    let err = pump(&mut c, &mut s, &mut BytesMut::new()).unwrap_err();
    // The client refuses the chain; rustls then has its alert to send.
    assert!(
        matches!(err, Err(rustls::Error::InvalidCertificate(_))),
        "{err:?}"
    );
    let mut alert = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut alert).unwrap();
    }
    let err = s.receive(&alert, &mut BytesMut::new()).unwrap_err();
    assert!(
        matches!(err, SessionError::Tls(rustls::Error::AlertReceived(_))),
        "{err}"
    );
}

/// A CA that signed nothing the server has.
fn pki_other_ca() -> CertificateDer<'static> {
    pki().ca
}

#[test]
fn nothing_is_sent_before_the_handshake_finishes() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), &pki);
    let mut s = Session::new(load(&cert, &key).unwrap()).unwrap();
    let err = s.send(b"", &[Bytes::from_static(b"x")], &mut BytesMut::new());
    assert!(matches!(err, Err(SessionError::NotReady)));
}

/// Loads and returns the error's message, checking it is one line.
fn load_error(cert: &Path, key: &Path) -> (TlsError, String) {
    let err = load(cert, key).unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "not one line: {msg}");
    (err, msg)
}

#[test]
fn each_unusable_pair_is_refused_with_a_line_naming_the_file() {
    let pki = pki();
    let other = self::pki();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), &pki);
    let path = |name: &str| dir.path().join(name);
    let show = |p: &Path| p.display().to_string();

    let missing = path("missing.pem");
    let (e, msg) = load_error(&missing, &key);
    assert!(
        matches!(e, TlsError::Read { .. }) && msg.starts_with(&show(&missing)),
        "{msg}"
    );
    let (e, msg) = load_error(&cert, &missing);
    assert!(
        matches!(e, TlsError::Read { .. }) && msg.starts_with(&show(&missing)),
        "{msg}"
    );

    // The key file given as the certificate, and the other way round.
    let (e, msg) = load_error(&key, &key);
    assert!(
        matches!(e, TlsError::NoCertificate { .. }) && msg.starts_with(&show(&key)),
        "{msg}"
    );
    let (e, msg) = load_error(&cert, &cert);
    assert!(
        matches!(e, TlsError::NoPrivateKey { .. }) && msg.starts_with(&show(&cert)),
        "{msg}"
    );

    let empty = path("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let (e, _) = load_error(&empty, &key);
    assert!(matches!(e, TlsError::NoCertificate { .. }));

    let broken = path("broken.pem");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (e, msg) = load_error(&broken, &key);
    assert!(
        matches!(e, TlsError::Pem { .. }) && msg.starts_with(&show(&broken)),
        "{msg}"
    );

    let garbage_cert = path("garbage.pem");
    let der = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        b"not a certificate",
    );
    std::fs::write(
        &garbage_cert,
        format!("-----BEGIN CERTIFICATE-----\n{der}\n-----END CERTIFICATE-----\n"),
    )
    .unwrap();
    let (e, msg) = load_error(&garbage_cert, &key);
    assert!(
        matches!(e, TlsError::BadCertificate { .. }) && msg.starts_with(&show(&garbage_cert)),
        "{msg}"
    );

    let other_key = path("other-key.pem");
    std::fs::write(&other_key, &other.key_pem).unwrap();
    let (e, msg) = load_error(&cert, &other_key);
    assert!(matches!(e, TlsError::KeyMismatch { .. }), "{msg}");
    assert!(
        msg.starts_with(&show(&other_key)) && msg.contains(&show(&cert)),
        "{msg}"
    );

    // One file holding both is fine.
    let both = path("both.pem");
    std::fs::write(&both, format!("{}{}", pki.chain_pem, pki.key_pem)).unwrap();
    load(&both, &both).unwrap();
}

#[test]
fn reload_serves_the_new_pair_and_a_bad_one_keeps_the_old() {
    let (first, second) = (pki(), pki());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), &first);
    let holder = Reloadable::load(&cert, &key).unwrap();
    let served = |holder: &Reloadable, ca: &CertificateDer<'static>| {
        let mut s = Session::new(holder.current().raw.clone()).unwrap();
        let mut c = client(ca, &[]);
        pump(&mut c, &mut s, &mut BytesMut::new()).unwrap();
        c.peer_certificates().unwrap()[0].clone()
    };
    assert_eq!(served(&holder, &first.ca), first.leaf);
    // A session started before a reload keeps its configuration.
    let mut early = Session::new(holder.current().raw.clone()).unwrap();

    write_pair(dir.path(), &second);
    holder.reload().unwrap();
    assert_eq!(served(&holder, &second.ca), second.leaf);
    let mut c = client(&first.ca, &[]);
    pump(&mut c, &mut early, &mut BytesMut::new()).unwrap();
    assert_eq!(c.peer_certificates().unwrap()[0], first.leaf);

    // Half-written files: the new certificate with the old key.
    std::fs::write(&cert, &first.chain_pem).unwrap();
    let err = holder.reload().unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert_eq!(served(&holder, &second.ca), second.leaf);
    std::fs::remove_file(&key).unwrap();
    assert!(matches!(holder.reload(), Err(TlsError::Read { .. })));
    assert_eq!(served(&holder, &second.ca), second.leaf);
}
