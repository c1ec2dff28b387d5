//! Where a message to this shard is handled: [`handle`] sends each
//! [`ShardMsg`] to the module that owns its state, and [`flush`] runs the
//! messages a shard queued for itself, then sends the ones it addressed to
//! other shards.

use super::msg::ShardMsg;
use super::{chatd, conn, control, statusd, Shard};

/// Handles everything queued for this shard by itself, then sends what
/// handlers addressed to other shards. Call after every entry point (a
/// read handled, an inbox batch, a timer tick, a connection gone).
pub fn flush(shard: &Shard) {
    if shard.draining_local.replace(true) {
        return;
    }
    loop {
        let next = shard.local.borrow_mut().pop_front();
        match next {
            Some(msg) => handle(shard, msg),
            None => break,
        }
    }
    shard.draining_local.set(false);
    let out = std::mem::take(&mut *shard.outbox.borrow_mut());
    for (to, msg) in out {
        shard.shared.mesh.send(to, msg);
    }
}

/// Handles one message addressed to this shard.
pub fn handle(shard: &Shard, msg: ShardMsg) {
    #[cfg(debug_assertions)]
    if let ShardMsg::Join { chat, .. } = msg {
        if crate::fatal::debug_panic_room() == Some(chat) {
            panic!("CHATD_DEBUG_PANIC_ROOM: OP_JOIN {chat} on its home shard");
        }
    }
    match msg {
        ShardMsg::Nop => {}
        ShardMsg::Join { .. }
        | ShardMsg::Leave { .. }
        | ShardMsg::RtMsg { .. }
        | ShardMsg::InCall { .. }
        | ShardMsg::ConnGone { .. } => chatd::handle_room_msg(shard, msg),
        ShardMsg::Deliver {
            frame,
            conns,
            from,
            flush,
        } => {
            shard.deliver_local(&frame, &conns, flush);
            // The list goes back to the shard that built it.
            if let Some(pool) = shard.shared.list_pools.get(from as usize) {
                pool.give(conns);
            }
        }
        ShardMsg::Notice { conn, notice } => conn::apply_notice(shard, conn, notice),
        ShardMsg::PresHello { .. }
        | ShardMsg::PresSet { .. }
        | ShardMsg::PresGone { .. }
        | ShardMsg::PresFanout { .. }
        | ShardMsg::DumpQuery { .. }
        | ShardMsg::PresPull { .. }
        | ShardMsg::DumpPart { .. } => statusd::handle_user_msg(shard, msg),
        ShardMsg::Effects { .. } | ShardMsg::QueryRoom { .. } | ShardMsg::QueryUser { .. } => {
            control::handle_admin_msg(shard, msg)
        }
        ShardMsg::Shutdown { deadline_ms } => conn::start_drain(shard, deadline_ms),
    }
}
