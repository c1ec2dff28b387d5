//! The server's frames, byte for byte (RFC 6455 section 5.2).

use crate::ws::encode::{close, pong, Header};
use crate::ws::CloseCode;

#[test]
fn binary_headers_use_the_shortest_length_encoding() {
    assert_eq!(Header::binary(0).as_bytes(), [0x82, 0]);
    assert_eq!(Header::binary(125).as_bytes(), [0x82, 125]);
    assert_eq!(Header::binary(126).as_bytes(), [0x82, 126, 0, 126]);
    assert_eq!(Header::binary(0xFFFF).as_bytes(), [0x82, 126, 0xFF, 0xFF]);
    assert_eq!(
        Header::binary(0x1_0000).as_bytes(),
        [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]
    );
    assert_eq!(
        Header::binary(0x0123_4567_89AB).as_bytes(),
        [0x82, 127, 0, 0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xAB]
    );
}

#[test]
fn a_close_carries_its_status_and_reason_unmasked() {
    let mut out = Vec::new();
    close(Some(CloseCode::POLICY_VIOLATION), "bye", &mut out);
    assert_eq!(out, [0x88, 5, 0x03, 0xF0, b'b', b'y', b'e']);
    out.clear();
    close(None, "ignored", &mut out);
    assert_eq!(out, [0x88, 0]);
}

#[test]
fn a_long_close_reason_is_cut_at_a_character_boundary() {
    // 61 two-byte characters (122 bytes) and one more: 124 bytes, one over.
    let reason = "é".repeat(62);
    let mut out = Vec::new();
    close(Some(CloseCode::NORMAL), &reason, &mut out);
    assert_eq!(out[1], 2 + 122);
    assert_eq!(out.len(), 2 + 2 + 122);
    assert!(std::str::from_utf8(&out[4..]).is_ok());
}

#[test]
fn a_pong_echoes_the_ping_payload() {
    let mut out = Vec::new();
    pong(b"abc", &mut out);
    assert_eq!(out, [0x8A, 3, b'a', b'b', b'c']);
}
