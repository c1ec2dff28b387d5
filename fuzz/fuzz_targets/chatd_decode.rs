//! Decodes arbitrary bytes as a chatd stream in both directions, command by
//! command until "need more" or an error, and checks what every decoded
//! command must satisfy: it used at least one byte and no more than there
//! were, and encoding it again gives back exactly the bytes it used (the
//! layouts have no slack, except the ignored reserved bytes of the C->S
//! `OP_HELLO`).
#![no_main]

use chatd_proto::chatd::{
    decode_event, decode_request, encode_event, encode_request, rewrite_rtmsg_for_delivery, Event,
    Request,
};
use chatd_proto::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A small limit lets complete messages and TOO_LARGE both occur in
    // inputs of fuzzer-friendly size; the first byte varies it.
    let Some((&limit, data)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_rtmsg_len: u32::from(limit) * 4,
    };

    let mut rest = data;
    while let Ok(Some((req, used))) = decode_request(rest, &limits) {
        assert!(used > 0 && used <= rest.len());
        assert_eq!(req.encoded_len(), used);
        let consumed = &rest[..used];
        if !matches!(req, Request::Hello { .. }) {
            let mut again = Vec::with_capacity(used);
            encode_request(&req, &mut again);
            assert_eq!(again, consumed);
        }
        if let Request::RtMsg {
            chatid,
            msgtype,
            data,
            ..
        } = req
        {
            // Fan-out rewrites the received frame in place; the result must
            // be the event recipients expect.
            let mut frame = consumed.to_vec();
            rewrite_rtmsg_for_delivery(&mut frame, 11, 12);
            let want = Event::RtMsg {
                chatid,
                sender_userid: 11,
                sender_clientid: 12,
                msgtype,
                data,
            };
            assert_eq!(decode_event(&frame, &limits), Ok(Some((want, used))));
        }
        rest = &rest[used..];
    }

    let mut rest = data;
    while let Ok(Some((ev, used))) = decode_event(rest, &limits) {
        assert!(used > 0 && used <= rest.len());
        assert_eq!(ev.encoded_len(), used);
        let mut again = Vec::with_capacity(used);
        encode_event(&ev, &mut again);
        assert_eq!(again, &rest[..used]);
        rest = &rest[used..];
    }
});
