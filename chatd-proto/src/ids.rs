//! Identifiers on the wire. Plain integers; `0` is never a real user, room
//! or client (`INVALID_USERID`, `INVALID_HANDLE`, `INVALID_CLIENTID` in the
//! protocol).

/// A user id (8 bytes on the wire). `0` is `INVALID_USERID`.
pub type UserId = u64;
/// A room id (8 bytes on the wire). `0` is `INVALID_HANDLE`.
pub type ChatId = u64;
/// A chatd client id (4 bytes on the wire), unique among connected clients.
/// `0` is `INVALID_CLIENTID`.
pub type ClientId = u32;
