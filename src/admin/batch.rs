//! The body of `POST /v1/batch` (protocol 6.1): parsed and validated
//! whole, before anything is locked or written, into [`Op`]s.
//!
//! Each operation is parsed on its own (from its raw JSON text), so an
//! error names the first bad operation's index, and the ids are borrowed
//! from the body rather than copied.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::auth::parse_id;
use crate::limits::{MAX_BATCH_OPS, MAX_IDS_PER_LIST};
use crate::store::Op;

/// Why a batch was refused: the message, and the index of the operation
/// at fault (`None` when the body as a whole is bad).
#[derive(Debug, PartialEq, Eq)]
pub struct BatchError {
    pub message: String,
    pub index: Option<usize>,
}

impl BatchError {
    fn whole(message: impl Into<String>) -> Self {
        BatchError {
            message: message.into(),
            index: None,
        }
    }
}

/// `{"ops": [...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body<'a> {
    #[serde(borrow)]
    ops: Vec<&'a RawValue>,
}

/// One operation as written: which fields it needs depends on `op`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOp<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(borrow, default)]
    chatid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    userid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    a: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    b: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    members: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    contacts: Option<Vec<Cow<'a, str>>>,
}

/// Parses and validates a batch body.
pub fn parse(body: &[u8]) -> Result<Vec<Op>, BatchError> {
    let body: Body<'_> =
        serde_json::from_slice(body).map_err(|e| BatchError::whole(format!("bad JSON: {e}")))?;
    if body.ops.len() > MAX_BATCH_OPS {
        return Err(BatchError::whole(format!("more than {MAX_BATCH_OPS} ops")));
    }
    body.ops
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            parse_op(raw.get()).map_err(|message| BatchError {
                message,
                index: Some(index),
            })
        })
        .collect()
}

/// One operation, or why not.
fn parse_op(text: &str) -> Result<Op, String> {
    let raw: RawOp<'_> = serde_json::from_str(text).map_err(|e| format!("bad op: {e}"))?;
    let name = raw.op.as_ref();
    // Which fields each op takes; any other is refused.
    let allowed: &[&str] = match name {
        "put_member" | "delete_member" => &["chatid", "userid"],
        "put_room" => &["chatid", "members"],
        "delete_room" => &["chatid"],
        "put_contact" | "delete_contact" => &["a", "b"],
        "put_contacts" => &["userid", "contacts"],
        other => return Err(format!("unknown op '{other}'")),
    };
    let present = [
        ("chatid", raw.chatid.is_some()),
        ("userid", raw.userid.is_some()),
        ("a", raw.a.is_some()),
        ("b", raw.b.is_some()),
        ("members", raw.members.is_some()),
        ("contacts", raw.contacts.is_some()),
    ];
    for (field, there) in present {
        if there && !allowed.contains(&field) {
            return Err(format!("{name} takes no '{field}'"));
        }
        if !there && allowed.contains(&field) {
            return Err(format!("{name} needs '{field}'"));
        }
    }
    let id = |what: &str, v: &Option<Cow<'_, str>>| -> Result<u64, String> {
        let s = v.as_deref().unwrap_or_default();
        parse_id(s).ok_or_else(|| format!("bad {what}: '{s}'"))
    };
    let list = |what: &str, v: &Option<Vec<Cow<'_, str>>>| -> Result<Vec<u64>, String> {
        let v = v.as_deref().unwrap_or_default();
        if v.len() > MAX_IDS_PER_LIST {
            return Err(format!("more than {MAX_IDS_PER_LIST} {what}"));
        }
        v.iter()
            .map(|s| parse_id(s).ok_or_else(|| format!("bad userid: '{s}'")))
            .collect()
    };
    Ok(match name {
        "put_member" => Op::PutMember {
            chat: id("chatid", &raw.chatid)?,
            user: id("userid", &raw.userid)?,
        },
        "delete_member" => Op::DeleteMember {
            chat: id("chatid", &raw.chatid)?,
            user: id("userid", &raw.userid)?,
        },
        "put_room" => Op::PutRoom {
            chat: id("chatid", &raw.chatid)?,
            members: list("members", &raw.members)?,
        },
        "delete_room" => Op::DeleteRoom {
            chat: id("chatid", &raw.chatid)?,
        },
        "put_contact" | "delete_contact" => {
            let (a, b) = (id("userid", &raw.a)?, id("userid", &raw.b)?);
            if a == b {
                return Err(format!("user {a} cannot be its own contact"));
            }
            if name == "put_contact" {
                Op::PutContact { a, b }
            } else {
                Op::DeleteContact { a, b }
            }
        }
        _ => {
            let user = id("userid", &raw.userid)?;
            let contacts = list("contacts", &raw.contacts)?;
            if contacts.contains(&user) {
                return Err(format!("user {user} cannot be its own contact"));
            }
            Op::PutContacts { user, contacts }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> BatchError {
        parse(body.as_bytes()).expect_err(body)
    }

    #[test]
    fn every_op_parses() {
        let ops = parse(
            br#"{"ops":[
                {"op":"put_member","chatid":"7","userid":"1"},
                {"op":"delete_member","chatid":"7","userid":"2"},
                {"op":"put_room","chatid":"8","members":["1","2"]},
                {"op":"delete_room","chatid":"9"},
                {"op":"put_contact","a":"1","b":"2"},
                {"op":"delete_contact","b":"3","a":"1"},
                {"op":"put_contacts","userid":"18446744073709551615","contacts":["\u0031"]}
            ]}"#,
        )
        .unwrap();
        assert_eq!(
            ops,
            [
                Op::PutMember { chat: 7, user: 1 },
                Op::DeleteMember { chat: 7, user: 2 },
                Op::PutRoom {
                    chat: 8,
                    members: vec![1, 2]
                },
                Op::DeleteRoom { chat: 9 },
                Op::PutContact { a: 1, b: 2 },
                Op::DeleteContact { a: 1, b: 3 },
                Op::PutContacts {
                    user: u64::MAX,
                    contacts: vec![1]
                },
            ]
        );
        assert_eq!(parse(br#"{"ops":[]}"#).unwrap(), []);
    }

    #[test]
    fn the_first_bad_op_is_named_by_its_index() {
        let ok = r#"{"op":"put_member","chatid":"7","userid":"1"}"#;
        for (bad, msg) in [
            (
                r#"{"op":"put_member","chatid":"7"}"#,
                "put_member needs 'userid'",
            ),
            (
                r#"{"op":"put_member","chatid":"7","userid":"0"}"#,
                "bad userid: '0'",
            ),
            (
                r#"{"op":"put_member","chatid":"x","userid":"1"}"#,
                "bad chatid: 'x'",
            ),
            (
                r#"{"op":"delete_room","chatid":"7","userid":"1"}"#,
                "delete_room takes no 'userid'",
            ),
            (
                r#"{"op":"put_contact","a":"4","b":"4"}"#,
                "user 4 cannot be its own contact",
            ),
            (
                r#"{"op":"put_contacts","userid":"4","contacts":["4"]}"#,
                "user 4 cannot be its own contact",
            ),
            (
                r#"{"op":"put_room","chatid":"7","members":["1","-1"]}"#,
                "bad userid: '-1'",
            ),
            (r#"{"op":"rename","chatid":"7"}"#, "unknown op 'rename'"),
        ] {
            let e = err(&format!(r#"{{"ops":[{ok},{ok},{bad},{bad}]}}"#));
            assert_eq!(e.index, Some(2), "{bad}");
            assert_eq!(e.message, msg, "{bad}");
        }
        for bad in [
            r#"{"chatid":"7"}"#,
            r#"{"op":7}"#,
            r#"{"op":"put_member","chatid":7,"userid":"1"}"#,
            "[]",
            r#"{"op":"delete_room","chatid":"7","x":1}"#,
        ] {
            let e = err(&format!(r#"{{"ops":[{ok},{bad}]}}"#));
            assert_eq!(e.index, Some(1), "{bad}");
            assert!(e.message.starts_with("bad op"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn a_bad_body_has_no_index() {
        for body in ["", "{", "[]", "{}", r#"{"ops":{}}"#, r#"{"ops":[],"x":1}"#] {
            assert_eq!(err(body).index, None, "{body}");
        }
    }
}
