//! A shard's thread: its runtime (tokio-uring, or tokio's epoll driver),
//! and the tasks that run on it besides the connections' own: the inbox
//! (messages from other threads), the timer tick, the presence batch flush,
//! and the accept loops once the start gate opens.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::driver::Accepts;
use super::mesh::InboxRx;
use super::{
    chatd, conn, dispatch, driver, Shard, ShardHandle, ShardListeners, Shared, StartError,
};
use crate::ids::Service;
use crate::limits;
use crate::net::io::{Backend, Listener};

/// Starts shard `id` on its own thread, pinned to `core` if given. The
/// shard builds its runtime, then waits for `go` before accepting (so
/// relations are in place first). Reports runtime set-up failure on `ready`.
pub fn spawn_shard(
    id: usize,
    shared: Arc<Shared>,
    inbox: InboxRx,
    listeners: ShardListeners,
    backend: Backend,
    core: Option<core_affinity::CoreId>,
    ready: std::sync::mpsc::Sender<Result<usize, StartError>>,
) -> Result<ShardHandle, StartError> {
    let thread = std::thread::Builder::new()
        .name(format!("shard-{id}"))
        .spawn(move || {
            if let Some(core) = core {
                if !core_affinity::set_for_current(core) {
                    tracing::warn!(shard = id, "could not pin to core {}", core.id);
                }
            }
            let shard = Rc::new_cyclic(|this| Shard::new(id, shared, this.clone()));
            let run = run_shard(shard, inbox, listeners, backend);
            match backend {
                Backend::Uring => {
                    let mut builder = tokio_uring::builder();
                    let mut urb = tokio_uring::uring_builder();
                    // COOP_TASKRUN avoids interrupting the thread for every
                    // completion; SINGLE_ISSUER|DEFER_TASKRUN would hang
                    // tokio-uring 0.5. The CQ is twice the SQ so a burst of
                    // completions does not overflow.
                    urb.setup_coop_taskrun()
                        .setup_cqsize(limits::URING_ENTRIES * 2);
                    builder.entries(limits::URING_ENTRIES).uring_builder(&urb);
                    match tokio_uring::Runtime::new(&builder) {
                        Ok(rt) => {
                            let _ = ready.send(Ok(id));
                            rt.block_on(run);
                        }
                        Err(source) => {
                            let _ = ready.send(Err(StartError::Runtime {
                                shard: id,
                                backend: "io_uring",
                                source,
                            }));
                        }
                    }
                }
                Backend::Epoll => {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    match rt {
                        Ok(rt) => {
                            let _ = ready.send(Ok(id));
                            let local = tokio::task::LocalSet::new();
                            local.block_on(&rt, run);
                        }
                        Err(source) => {
                            let _ = ready.send(Err(StartError::Runtime {
                                shard: id,
                                backend: "epoll",
                                source,
                            }));
                        }
                    }
                }
            }
        })
        .map_err(StartError::Thread)?;
    Ok(ShardHandle { thread })
}

/// The shard's life: inbox task, timer task, then (after `go`) accept
/// loops; returns when a drain has finished.
async fn run_shard(shard: Rc<Shard>, inbox: InboxRx, listeners: ShardListeners, backend: Backend) {
    tokio::task::spawn_local(inbox_loop(shard.clone(), inbox));
    tokio::task::spawn_local(timer_loop(shard.clone()));
    let window = shard.shared.config.presence_batch_ms;
    if window > 0 {
        let window = Duration::from_millis(window);
        tokio::task::spawn_local(batch_flush_loop(shard.clone(), window));
    }
    shard.shared.start_gate.wait().await;
    for (accepts, std_listener) in [
        (Accepts::Service(Service::Chatd), listeners.chatd),
        (Accepts::Service(Service::Statusd), listeners.statusd),
        (Accepts::WebSocket, listeners.ws),
    ] {
        match Listener::from_std(backend, std_listener) {
            Ok(l) => {
                tokio::task::spawn_local(driver::accept_loop(shard.clone(), l, accepts));
            }
            Err(e) => tracing::error!(
                shard = shard.id,
                "cannot listen for {}: {e}",
                accepts.name()
            ),
        }
    }
    shard.finished.notified().await;
}

/// Drains the shard's inbox, in batches so connections' I/O interleaves.
async fn inbox_loop(shard: Rc<Shard>, inbox: InboxRx) {
    /// Messages handled before yielding to the connections' tasks.
    const BATCH: usize = 512;
    loop {
        let mut handled = 0;
        let mut bytes = 0;
        while let Some(msg) = inbox.try_recv() {
            bytes += msg.queued_bytes();
            dispatch::handle(&shard, msg);
            handled += 1;
            if handled == BATCH {
                break;
            }
        }
        dispatch::flush(&shard);
        // Once per batch: connections paused on this inbox resume when it
        // is down to its resume mark (see `budget`).
        shard.shared.mesh.budget().release(shard.id, bytes);
        if handled == BATCH {
            tokio::task::yield_now().await;
        } else {
            inbox.wait().await;
        }
    }
}

/// Flushes the batch list `window` after it became non-empty (so a
/// batched frame waits at most `window`); sleeps while it stays empty.
async fn batch_flush_loop(shard: Rc<Shard>, window: Duration) {
    loop {
        // `notify_one` leaves a permit when this task is not waiting yet,
        // so a list that became non-empty meanwhile is not missed.
        shard.batch_due.notified().await;
        tokio::time::sleep(window).await;
        conn::flush_batched(&shard);
    }
}

/// Drives the shard's timer wheels every tick.
async fn timer_loop(shard: Rc<Shard>) {
    let mut tick = tokio::time::interval(Duration::from_millis(limits::TIMER_TICK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fired = Vec::new();
    loop {
        tick.tick().await;
        let now = shard.shared.now_ms();
        conn::poll_timers(&shard, now, &mut fired);
        conn::tick_writers(&shard);
        conn::expire_lingering(&shard, now);
        chatd::poll_call_timeouts(&shard, now);
        dispatch::flush(&shard);
        if conn::drain_finished(&shard, now) {
            shard.finished.notify_one();
            return;
        }
    }
}
