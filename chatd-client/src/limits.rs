//! Every default and limit of the client, in one place, each with why it
//! has its value. The limits of the wire itself are
//! [`chatd_proto::limits`]; the server's are in the server's `limits`.

use std::time::Duration;

/// Default keepalive interval: after this long silent in either
/// direction the client sends `OP_KEEPALIVE`. A third of the server's
/// default idle timeout (90 s), so one lost keepalive does not get it
/// closed.
pub const KEEPALIVE: Duration = Duration::from_secs(30);

/// Default time a keepalive may go unanswered before the connection is
/// taken for dead: a loopback or LAN round trip is well under a second;
/// a phone's network can stall for seconds without being gone.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default time connect and login (and a statusd login dump) may take:
/// the server's own login timeout (10 s by default).
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Default call heartbeat: the protocol asks for one every 2-5 s, and the
/// server's default call timeout is 10 s, so two may be lost.
pub const CALL_HEARTBEAT: Duration = Duration::from_secs(3);

/// Default first reconnect delay (before jitter): quick enough that a
/// dropped connection is barely noticed.
pub const RECONNECT_INITIAL: Duration = Duration::from_millis(200);

/// Default longest reconnect delay (before jitter): a server that is down
/// for long is not asked more than every 5-10 s by each client.
pub const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// Default events buffered for the application before the client stops
/// reading from the server (and so slows its connection instead of
/// growing memory).
pub const EVENT_CAPACITY: usize = 1024;

/// Commands buffered from the handles to the connection task; a handle
/// waits when it is full.
pub const COMMAND_CAPACITY: usize = 1024;

/// Free space a read asks for: a burst of commands in one read.
pub const READ_CHUNK: usize = 8 * 1024;

/// Default time an admin API request may take: relation changes wait for
/// every shard, and a large room replaced at once takes a while.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes of the command stream in one WebSocket message the client
/// sends. A server closes a message longer than its longest command with
/// 1009 (protocol section 8: chatd's is at least 4,099 bytes, an `OP_AUTH`
/// with the longest token), and commands may span messages, so longer
/// writes go out as several messages.
pub const WS_MESSAGE_MAX: usize = 4096;
