//! Decodes arbitrary bytes as a statusd stream in both directions, command
//! by command until "need more" or an error, checking `used` and that
//! re-encoding reproduces the consumed bytes (except the C->S `OP_HELLO`,
//! whose reserved byte is ignored).
#![no_main]

use chatd_proto::statusd::{
    decode_event, decode_request, encode_event, encode_request, Request,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((req, used))) = decode_request(rest) {
        assert!(used > 0 && used <= rest.len());
        assert_eq!(req.encoded_len(), used);
        if !matches!(req, Request::Hello { .. }) {
            let mut again = Vec::with_capacity(used);
            encode_request(&req, &mut again);
            assert_eq!(again, &rest[..used]);
        }
        rest = &rest[used..];
    }

    let mut rest = data;
    while let Ok(Some((ev, used))) = decode_event(rest) {
        assert!(used > 0 && used <= rest.len());
        assert_eq!(ev.encoded_len(), used);
        let mut again = Vec::with_capacity(used);
        encode_event(&ev, &mut again);
        assert_eq!(again, &rest[..used]);
        rest = &rest[used..];
    }
});
