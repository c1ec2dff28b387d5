//! The upgrade request: what is accepted, each refusal and its status,
//! requests cut at every point, the size cap, and the answers' bytes.

use crate::ids::Service;
use crate::limits::WS_HANDSHAKE_MAX_BYTES;
use crate::ws::handshake::{accept, parse, OriginPolicy, Parsed, Reject, Request};

/// A browser's handshake (RFC 6455 section 1.3's key), with `extra`
/// header lines and without the ones named in `drop`.
fn request(path: &str, extra: &[&str], drop: &[&str]) -> String {
    let mut lines = vec![
        format!("GET {path} HTTP/1.1"),
        "Host: chat.example.com:7402".into(),
        "Upgrade: websocket".into(),
        "Connection: keep-alive, Upgrade".into(),
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".into(),
        "Sec-WebSocket-Version: 13".into(),
        "Origin: https://app.example.com".into(),
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits".into(),
        "User-Agent: test".into(),
    ];
    lines.retain(|l| !drop.iter().any(|d| l.starts_with(d)));
    lines.extend(extra.iter().map(|s| s.to_string()));
    let mut s = lines.join("\r\n");
    s.push_str("\r\n\r\n");
    s
}

fn any_origin() -> OriginPolicy {
    OriginPolicy::Any
}

fn accepted(bytes: &[u8]) -> (Request<'_>, usize) {
    match parse(bytes, &any_origin()) {
        Parsed::Upgrade { request, used } => (request, used),
        other => panic!("not accepted: {other:?}"),
    }
}

fn rejected(bytes: &[u8], origins: &OriginPolicy) -> Reject {
    match parse(bytes, origins) {
        Parsed::Reject(r) => r,
        other => panic!("not rejected: {other:?}"),
    }
}

#[test]
fn a_browser_handshake_is_accepted_with_the_rfc_accept_key() {
    let req = request("/chatd", &[], &[]);
    let (r, used) = accepted(req.as_bytes());
    assert_eq!(used, req.len());
    assert_eq!(r.service, Service::Chatd);
    assert_eq!(r.origin, Some("https://app.example.com"));
    assert_eq!(r.key, "dGhlIHNhbXBsZSBub25jZQ==");
    // The example of RFC 6455 section 1.3.
    assert_eq!(r.accept_key(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

#[test]
fn the_path_picks_the_service_and_a_query_string_is_ignored() {
    let req = request("/statusd?v=1&x=/chatd", &[], &[]);
    assert_eq!(accepted(req.as_bytes()).0.service, Service::Statusd);
    let req = request("/chatd?", &[], &[]);
    assert_eq!(accepted(req.as_bytes()).0.service, Service::Chatd);
}

#[test]
fn header_names_and_tokens_are_case_insensitive() {
    let req = "GET /chatd HTTP/1.1\r\nhost: x\r\nUPGRADE: WebSocket\r\nconnection: UPGRADE\r\n\
               sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nSEC-WEBSOCKET-VERSION:  13 \r\n\r\n";
    let (r, _) = accepted(req.as_bytes());
    assert_eq!(r.origin, None);
}

#[test]
fn bytes_after_the_request_are_left_for_the_frame_decoder() {
    let mut bytes = request("/chatd", &[], &[]).into_bytes();
    let len = bytes.len();
    bytes.extend_from_slice(&[0x82, 0x80, 1, 2, 3, 4]);
    assert_eq!(accepted(&bytes).1, len);
}

#[test]
fn a_request_cut_anywhere_is_incomplete_until_its_last_byte() {
    let req = request("/chatd", &[], &[]);
    for cut in 0..req.len() {
        assert_eq!(
            parse(&req.as_bytes()[..cut], &any_origin()),
            Parsed::Incomplete,
            "cut at {cut}"
        );
    }
}

#[test]
fn each_invalid_request_gets_its_status() {
    let none = OriginPolicy::parse("https://other.example.com");
    let cases: Vec<(String, Reject, u16)> = vec![
        ("SSH-2.0-OpenSSH_9.6\r\n".into(), Reject::Malformed, 400),
        (
            request("/chatd", &[], &[]).replace("GET", "POST"),
            Reject::NotGet,
            400,
        ),
        (
            request("/chatd", &[], &[]).replace("HTTP/1.1", "HTTP/1.0"),
            Reject::NotHttp11,
            400,
        ),
        (request("/", &[], &[]), Reject::NotFound, 404),
        (request("/chatd/", &[], &[]), Reject::NotFound, 404),
        (request("/CHATD", &[], &[]), Reject::NotFound, 404),
        (request("/chatd", &[], &["Host"]), Reject::NoHost, 400),
        (
            request("/chatd", &["Host: b"], &[]),
            Reject::Duplicate("Host"),
            400,
        ),
        (
            request("/chatd", &["Content-Length: 5"], &[]),
            Reject::HasBody,
            400,
        ),
        (
            request("/chatd", &["Transfer-Encoding: chunked"], &[]),
            Reject::HasBody,
            400,
        ),
        (
            request("/chatd", &[], &["Sec-WebSocket-Key"]),
            Reject::BadKey,
            400,
        ),
        (
            request(
                "/chatd",
                &["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="],
                &["Sec-WebSocket-Key"],
            )
            .replace("AAAAAAAAAAAAAAAAAAAAAA==", "AAAAAAAAAAAAAAAAAAAAAAAA"),
            Reject::BadKey,
            400,
        ),
        (
            request(
                "/chatd",
                &["Sec-WebSocket-Key: c2hvcnQ="],
                &["Sec-WebSocket-Key"],
            ),
            Reject::BadKey,
            400,
        ),
        (
            request(
                "/chatd",
                &["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="],
                &[],
            ),
            Reject::Duplicate("Sec-WebSocket-Key"),
            400,
        ),
        (
            request("/chatd", &[], &["Sec-WebSocket-Version"]),
            Reject::BadVersion,
            400,
        ),
        (
            request(
                "/chatd",
                &["Sec-WebSocket-Version: 8"],
                &["Sec-WebSocket-Version"],
            ),
            Reject::BadVersion,
            400,
        ),
        (request("/chatd", &[], &["Upgrade"]), Reject::NoUpgrade, 426),
        (
            request("/chatd", &["Upgrade: h2c"], &["Upgrade"]),
            Reject::NoUpgrade,
            426,
        ),
        (
            request("/chatd", &["Connection: keep-alive"], &["Connection"]),
            Reject::NoUpgrade,
            426,
        ),
        (
            request("/chatd", &["Origin: https://b.example.com"], &[]),
            Reject::Duplicate("Origin"),
            400,
        ),
    ];
    for (req, want, status) in cases {
        assert_eq!(rejected(req.as_bytes(), &any_origin()), want, "{req:?}");
        assert_eq!(want.status(), status, "{want}");
    }
    // A TLS ClientHello on a plain listener: refused at its first byte.
    let hello = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    assert_eq!(rejected(&hello, &any_origin()), Reject::Malformed);
    let req = request("/chatd", &[], &[]);
    assert_eq!(rejected(req.as_bytes(), &none), Reject::OriginNotAllowed);
    assert_eq!(Reject::OriginNotAllowed.status(), 403);
}

#[test]
fn a_plain_get_is_refused_for_its_missing_key_first() {
    // "426 when only the Upgrade is missing": a page request lacks more.
    let req = "GET /chatd HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(rejected(req.as_bytes(), &any_origin()), Reject::BadKey);
}

#[test]
fn origins_are_matched_exactly_ignoring_case_and_a_missing_origin_is_allowed() {
    let p = OriginPolicy::parse(" https://app.example.com/ , http://localhost:8080,,");
    assert_eq!(
        p,
        OriginPolicy::Only(vec![
            "https://app.example.com".into(),
            "http://localhost:8080".into()
        ])
    );
    assert!(p.allows(Some("https://app.example.com")));
    assert!(p.allows(Some("HTTPS://App.Example.COM")));
    assert!(p.allows(Some("http://localhost:8080")));
    assert!(!p.allows(Some("http://localhost:8081")));
    assert!(!p.allows(Some("https://app.example.com.evil.com")));
    assert!(!p.allows(Some("null")));
    assert!(p.allows(None));
    assert_eq!(OriginPolicy::parse("https://a, *"), OriginPolicy::Any);
    assert!(OriginPolicy::Any.allows(Some("null")));
    assert!(!OriginPolicy::parse("").allows(Some("https://a")));

    let req = request("/chatd", &["Origin: HTTPS://APP.example.com"], &["Origin"]);
    assert!(matches!(parse(req.as_bytes(), &p), Parsed::Upgrade { .. }));
    let req = request("/chatd", &[], &["Origin"]);
    assert!(matches!(
        parse(req.as_bytes(), &OriginPolicy::parse("")),
        Parsed::Upgrade { .. }
    ));
}

#[test]
fn a_request_past_the_size_cap_is_refused_without_its_end() {
    let filler = format!("X-Filler: {}", "a".repeat(WS_HANDSHAKE_MAX_BYTES));
    let req = request("/chatd", &[&filler], &[]);
    // The cap is reached long before the end of the headers.
    let head = &req.as_bytes()[..WS_HANDSHAKE_MAX_BYTES];
    assert_eq!(rejected(head, &any_origin()), Reject::TooLarge);
    assert_eq!(rejected(req.as_bytes(), &any_origin()), Reject::TooLarge);
    // One byte less: still waiting.
    assert_eq!(
        parse(&head[..head.len() - 1], &any_origin()),
        Parsed::Incomplete
    );
}

#[test]
fn too_many_header_lines_are_refused() {
    let lines: Vec<String> = (0..70).map(|i| format!("X-{i}: y")).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let req = request("/chatd", &refs, &[]);
    assert_eq!(
        rejected(req.as_bytes(), &any_origin()),
        Reject::TooManyHeaders
    );
}

#[test]
fn the_101_answer_offers_no_subprotocol_or_extension() {
    let req = request("/chatd", &["Sec-WebSocket-Protocol: chat"], &[]);
    let (r, _) = accepted(req.as_bytes());
    let mut out = Vec::new();
    accept(&r, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    );
}

/// Parses an HTTP answer; returns the status, headers and body.
fn parse_answer(bytes: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(n) = resp.parse(bytes).unwrap() else {
        panic!("incomplete answer");
    };
    let headers = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8(h.value.to_vec()).unwrap(),
            )
        })
        .collect();
    (resp.code.unwrap(), headers, bytes[n..].to_vec())
}

#[test]
fn error_answers_close_the_connection_and_carry_what_their_status_needs() {
    for (reject, extra) in [
        (Reject::BadKey, None),
        (Reject::BadVersion, Some(("Sec-WebSocket-Version", "13"))),
        (Reject::NoUpgrade, Some(("Upgrade", "websocket"))),
        (Reject::NotFound, None),
        (Reject::OriginNotAllowed, None),
    ] {
        let mut out = Vec::new();
        reject.write(&mut out);
        let (status, headers, body) = parse_answer(&out);
        assert_eq!(status, reject.status());
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("Connection"), Some("close"));
        assert_eq!(get("Content-Length"), Some(body.len().to_string().as_str()));
        assert_eq!(body, format!("{reject}\n").into_bytes());
        if let Some((name, value)) = extra {
            assert_eq!(get(name), Some(value), "{reject:?}");
        }
    }
}
