//! Codec tests: round trips, byte streams cut at every point, golden bytes
//! that pin the little-endian layouts, and each decode error reported as
//! early as the contract allows. Property tests cover arbitrary commands,
//! arbitrary cut points and arbitrary bytes; [`fuzz`] is a bounded fuzz run
//! of every decoder on mutated streams.

mod chatd;
mod fuzz;
mod statusd;

use super::{encode_error, DecodeError, ErrorCode, ERROR_LEN, OP_AUTH, OP_ERROR};
use crate::limits::MAX_TOKEN_LEN;

/// The result of any decoder in this module.
type Decoded<T> = Result<Option<(T, usize)>, DecodeError>;

/// Feeds `stream` to `decode` the way a connection reader does: bytes
/// arrive in chunks ending at each of `ends` (then at the end of the
/// stream); after each chunk it decodes until "need more", dropping what
/// each command used. Returns every command, in order, and asserts that
/// nothing is left over and that "need more" was only ever said about a
/// strict prefix of one command.
fn decode_chunked<'a, T>(
    stream: &'a [u8],
    ends: impl IntoIterator<Item = usize>,
    decode: impl Fn(&'a [u8]) -> Decoded<T>,
) -> Vec<T> {
    let mut out = Vec::new();
    let mut start = 0;
    for end in ends.into_iter().chain([stream.len()]) {
        let end = end.clamp(start, stream.len());
        while let Some((cmd, used)) = decode(&stream[start..end]).expect("valid stream") {
            assert!(used > 0 && used <= end - start, "used {used} out of range");
            out.push(cmd);
            start += used;
        }
    }
    assert_eq!(
        start,
        stream.len(),
        "a complete stream left bytes undecoded"
    );
    out
}

/// Every cut of `stream` into two chunks, and byte-by-byte feeding, decode
/// to `expected`.
fn assert_every_split<'a, T: PartialEq + std::fmt::Debug>(
    stream: &'a [u8],
    expected: &[T],
    decode: impl Fn(&'a [u8]) -> Decoded<T> + Copy,
) {
    for cut in 0..=stream.len() {
        assert_eq!(
            decode_chunked(stream, [cut], decode),
            expected,
            "cut at {cut}"
        );
    }
    assert_eq!(
        decode_chunked(stream, 1..stream.len(), decode),
        expected,
        "byte by byte"
    );
}

/// Every strict prefix of one encoded command is "need more".
fn assert_truncations_need_more<'a, T: std::fmt::Debug>(
    frame: &'a [u8],
    decode: impl Fn(&'a [u8]) -> Decoded<T>,
) {
    for len in 0..frame.len() {
        match decode(&frame[..len]) {
            Ok(None) => {}
            other => panic!("prefix of {len}/{} bytes gave {other:?}", frame.len()),
        }
    }
}

/// What every decoder must satisfy on arbitrary bytes: no panic, `used`
/// within the input, and a stable verdict on prefixes (a complete command's
/// prefixes need more; an error is never preceded by a different error).
fn check_arbitrary_bytes<'a, T: std::fmt::Debug>(
    bytes: &'a [u8],
    decode: impl Fn(&'a [u8]) -> Decoded<T>,
) {
    match decode(bytes) {
        Ok(Some((_, used))) => {
            assert!(used > 0 && used <= bytes.len());
            for len in 0..used {
                assert!(matches!(decode(&bytes[..len]), Ok(None)), "prefix {len}");
            }
        }
        Ok(None) => {}
        Err(e) => {
            for len in 0..bytes.len() {
                match decode(&bytes[..len]) {
                    Ok(None) => {}
                    Err(p) => assert_eq!(p, e, "prefix {len} gave another error"),
                    Ok(Some(c)) => panic!("prefix {len} decoded {c:?} before error {e:?}"),
                }
            }
        }
    }
}

/// An `OP_AUTH` prefix announcing `len`, with no token bytes.
fn auth_header(len: u16) -> Vec<u8> {
    let mut b = vec![OP_AUTH];
    b.extend_from_slice(&len.to_le_bytes());
    b
}

/// Token lengths the contract allows (1..=4096) and refuses.
fn token_len_cases() -> ([u16; 2], [u16; 3]) {
    let max = MAX_TOKEN_LEN as u16;
    ([1, max], [0, max + 1, u16::MAX])
}

#[test]
fn error_codes_have_their_contract_numbers_names_and_close_policy() {
    let table = [
        (1, "BAD_COMMAND", true),
        (2, "AUTH_FAILED", true),
        (3, "NOT_AUTHENTICATED", true),
        (4, "NOT_MEMBER", false),
        (5, "NOT_JOINED", false),
        (6, "TOO_LARGE", true),
        (7, "BAD_ADDRESS", false),
        (8, "SLOW_CONSUMER", true),
        (9, "BAD_VERSION", true),
        (10, "SHUTTING_DOWN", true),
        // chatd's extensions (docs/protocol.md, abuse limits).
        (11, "TOO_MANY_CONNECTIONS", true),
        (12, "TOO_MANY_ROOMS", false),
        (13, "RATE_LIMITED", false),
    ];
    assert_eq!(ErrorCode::ALL.len(), table.len());
    for (code, (num, name, closes)) in ErrorCode::ALL.into_iter().zip(table) {
        assert_eq!(code as u8, num);
        assert_eq!(code.name(), name);
        assert_eq!(code.to_string(), name);
        assert_eq!(code.closes_connection(), closes, "{name}");
        assert_eq!(ErrorCode::from_u8(num), Some(code));
    }
    assert_eq!(ErrorCode::from_u8(0), None);
    assert_eq!(ErrorCode::from_u8(14), None);
    assert_eq!(ErrorCode::from_u8(255), None);
}

#[test]
fn encode_error_writes_code_opcode_and_little_endian_id() {
    let mut b = Vec::new();
    encode_error(ErrorCode::NotMember, 0x01, 0x0102_0304_0506_0708, &mut b);
    assert_eq!(b, [OP_ERROR, 4, 0x01, 8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(b.len(), ERROR_LEN);
}

#[test]
fn decode_errors_map_to_the_op_error_the_server_sends() {
    let cases = [
        (
            DecodeError::UnknownOpcode(0x42),
            ErrorCode::BadCommand,
            0x42,
            0,
        ),
        (
            DecodeError::BadField {
                opcode: 5,
                chatid: 9,
                field: "status",
            },
            ErrorCode::BadCommand,
            5,
            9,
        ),
        (
            DecodeError::BadTokenLen { len: 0 },
            ErrorCode::AuthFailed,
            OP_AUTH,
            0,
        ),
        (
            DecodeError::TooLarge {
                opcode: crate::chatd::OP_RTMSG,
                chatid: 7,
                len: 10,
                max: 9,
            },
            ErrorCode::TooLarge,
            crate::chatd::OP_RTMSG,
            7,
        ),
    ];
    for (err, code, opcode, chatid) in cases {
        assert_eq!(err.error_code(), code, "{err}");
        assert_eq!(err.opcode(), opcode, "{err}");
        assert_eq!(err.chatid(), chatid, "{err}");
        let (mut got, mut want) = (Vec::new(), Vec::new());
        err.encode(&mut got);
        encode_error(code, opcode, chatid, &mut want);
        assert_eq!(got, want);
    }
}

#[test]
fn default_limits_use_the_default_rtmsg_limit() {
    assert_eq!(
        super::Limits::default().max_rtmsg_len,
        crate::limits::DEFAULT_MAX_RTMSG_LEN
    );
}
