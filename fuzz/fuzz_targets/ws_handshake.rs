//! The WebSocket handshake parser never panics, and an answer it gives on
//! a prefix of the request (accept or refuse) is the answer it gives once
//! more bytes arrive: what a client sees does not depend on how TCP cut
//! its request.
#![no_main]

use chatd::ws::handshake::{parse, OriginPolicy, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[cut, only], request)) = data.split_first_chunk::<2>() else {
        return;
    };
    let policy = if only & 1 == 1 {
        OriginPolicy::parse("https://a.example, http://localhost:8080")
    } else {
        OriginPolicy::Any
    };
    let whole = parse(request, &policy);
    if let Parsed::Upgrade { used, .. } = &whole {
        assert!(*used <= request.len());
    }
    let prefix = parse(&request[..usize::from(cut) * request.len() / 255], &policy);
    if prefix != Parsed::Incomplete {
        assert_eq!(prefix, whole);
    }
});
