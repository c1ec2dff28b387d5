//! Where a message to this shard is handled: [`handle`] sends each
//! [`ShardMsg`] to the module that owns its state, and [`flush`] runs the
//! messages a shard queued for itself, then sends the ones it addressed to
//! other shards, then the answers to the admin thread that waited for them
//! ([`Shard::ack_after_flush`]).

use super::msg::ShardMsg;
use super::{chatd, cluster, conn, control, flips, statusd, Shard};

/// Handles everything queued for this shard by itself, then sends what
/// handlers addressed to other shards, then the answers to the admin
/// thread queued by [`Shard::ack_after_flush`] (so that what the admin
/// sends next is behind them). Call after every entry point (a read
/// handled, an inbox batch, a timer tick, a connection gone).
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
        let bytes = msg.queued_bytes();
        if !msg.counts_when_queued() {
            // A fan-out counts from when it leaves (see
            // `ShardMsg::counts_when_queued`).
            shard.shared.mesh.budget().charge(to, bytes);
        }
        if !shard.shared.mesh.send(to, msg) {
            // Never to be handled: not queued either.
            shard.shared.mesh.budget().release(to, bytes);
        }
    }
    let acks = std::mem::take(&mut *shard.acks.borrow_mut());
    for (done, value) in acks {
        // An error means the admin side stopped waiting (shutdown).
        let _ = done.send(value);
    }
}

/// Handles one message addressed to this shard.
pub fn handle(shard: &Shard, msg: ShardMsg) {
    #[cfg(debug_assertions)]
    if let ShardMsg::Join { chat, .. } = msg {
        if crate::debug_hooks::panic_room() == Some(chat) {
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
        ShardMsg::Echo { conn } => {
            // Behind everything this shard sent `conn` so far; a login dump
            // in progress for it answers when it ends.
            if !statusd::echo_after_dump(shard, conn) {
                shard.send(conn.shard(), ShardMsg::Echoed { conn });
            }
        }
        ShardMsg::Echoed { conn } => conn::echoed(shard, conn),
        ShardMsg::Refused { conn, notice } => {
            if let Some(notice) = statusd::hold_for_dump(shard, conn, notice) {
                conn::notify(shard, conn, notice);
            }
        }
        ShardMsg::PresHello { .. }
        | ShardMsg::PresSet { .. }
        | ShardMsg::PresGone { .. }
        | ShardMsg::PresFanout { .. }
        | ShardMsg::DumpQuery { .. }
        | ShardMsg::DumpPart { .. }
        | ShardMsg::Active { .. }
        | ShardMsg::Gather { .. }
        | ShardMsg::Gathered { .. } => statusd::handle_user_msg(shard, msg),
        ShardMsg::FlipGather { .. } | ShardMsg::FlipPart { .. } | ShardMsg::Emit { .. } => {
            flips::handle(shard, msg)
        }
        ShardMsg::Install { .. }
        | ShardMsg::Apply { .. }
        | ShardMsg::Flips { .. }
        | ShardMsg::RoundDone
        | ShardMsg::QueryRooms { .. }
        | ShardMsg::QueryRoom { .. }
        | ShardMsg::QueryUser { .. } => control::handle_admin_msg(shard, msg),
        ShardMsg::Cluster(msg) => cluster::handle(shard, msg),
        ShardMsg::Shutdown { deadline_ms } => conn::start_drain(shard, deadline_ms),
    }
}
