//! Sub-millisecond pacing: when loadgen's scheduled sends actually leave.
//!
//! tokio's timer has a resolution of one millisecond and wakes a task at the
//! back of its thread's run queue, behind every receive task that became
//! ready in the same turn. A paced latency measured from the intended send
//! time then carries up to a millisecond or more of loadgen's own lateness
//! (issue 12: paced p50 1.3 ms for chatd and Redis alike, where an
//! independent client saw 160-180 us). This module replaces it for every
//! schedule:
//!
//! - One [`Pacer`] per loadgen thread (a thread-local): a min-heap of due
//!   times ([`Timers`]) and a `timerfd` (CLOCK_MONOTONIC, hrtimer-backed,
//!   no timer slack) armed at the earliest one. A driver task waits on the
//!   timerfd through tokio's reactor, so an idle thread wakes within
//!   microseconds of the due time without spinning.
//! - [`sleep_until`]: a task sleep on that timer (calls, presence: low rates,
//!   the woken task runs in its turn).
//! - [`paced`]: a sender's whole schedule handed to the pacer, which *runs*
//!   its due sends itself: from the driver task when the thread is idle,
//!   and from every receive loop between two reads when it is busy
//!   ([`poll_due`], called by [`crate::client::Reader`]). A send never waits
//!   behind a queue of readers; its lateness is at most one read's
//!   processing.
//!
//! Every paced send's lag (actual minus intended send time) is recorded by
//! the scenario ([`crate::measure::Latency::lag`]) and reported on its own,
//! with a warning when its p99 says the latency figures are loadgen's.
//!
//! The schedule arithmetic ([`Schedule`]), the heap ([`Timers`]) and the
//! re-arming rule ([`rearm`]) are sans-IO and unit-tested; the rest is the
//! thin I/O around them.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::client::{ClientError, Writer};
use crate::measure::{instant_at, now_ns, Window};

/// Events encoded into one write at most when a paced sender catches up
/// (a sender that fell behind writes its backlog in writes of this many).
pub const MAX_BATCH: usize = 256;

/// A sender's fixed schedule: event `k` is due at `start + phase + k x
/// interval` and the schedule ends before `end`. Senders of one run share
/// the interval and are staggered by their phase, so the total rate is
/// spread evenly instead of arriving in bursts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// When the load starts ([`now_ns`]).
    pub start_ns: u64,
    /// This sender's offset from the start.
    pub phase_ns: f64,
    /// Nanoseconds between two of its events.
    pub interval_ns: f64,
    /// No event is due at or after this.
    pub end_ns: u64,
}

impl Schedule {
    /// The schedule of sender `index` of `total` senders with `interval_ns`
    /// between two events of each, over the window `w`: phases spread
    /// evenly over one interval.
    pub fn staggered(w: Window, index: usize, total: usize, interval_ns: f64) -> Schedule {
        Schedule {
            start_ns: w.start_ns,
            phase_ns: index as f64 / total.max(1) as f64 * interval_ns,
            interval_ns,
            end_ns: w.end_ns,
        }
    }

    /// When event `k` is due.
    pub fn at(&self, k: u64) -> u64 {
        self.start_ns + (self.phase_ns + k as f64 * self.interval_ns) as u64
    }

    /// Whether event `k` is part of the schedule (due before its end).
    pub fn has(&self, k: u64) -> bool {
        self.at(k) < self.end_ns
    }

    /// Events `k..` due by `now`, at most `max` of them: how many to send now.
    pub fn due(&self, k: u64, now: u64, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let t = self.at(k + n as u64);
            if t > now || t >= self.end_ns {
                break;
            }
            n += 1;
        }
        n
    }
}

/// A min-heap of due times with a payload each; ties keep insertion order.
pub struct Timers<T> {
    heap: BinaryHeap<Reverse<(u64, u64, Slot<T>)>>,
    seq: u64,
}

/// A heap payload that takes no part in the ordering.
struct Slot<T>(T);

impl<T> PartialEq for Slot<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<T> Eq for Slot<T> {}
impl<T> PartialOrd for Slot<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Slot<T> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
}

impl<T> Timers<T> {
    /// Adds `item`, due at `due`.
    pub fn insert(&mut self, due: u64, item: T) {
        self.seq += 1;
        self.heap.push(Reverse((due, self.seq, Slot(item))));
    }

    /// The earliest due time (`None`: empty).
    pub fn next_due(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((d, _, _))| *d)
    }

    /// Removes and returns the earliest item if it is due by `now`.
    pub fn pop_due(&mut self, now: u64) -> Option<(u64, T)> {
        if self.next_due()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((d, _, Slot(t)))| (d, t))
    }
}

/// Who serves due entries: decides when the timerfd must be set again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arm {
    /// The driver task, after the timer expired (nothing armed any more).
    Expired,
    /// A receive loop, between two reads: the timer may still be armed for
    /// an entry it has just served; leaving it costs one spurious wake,
    /// re-arming costs a syscall per read, so it re-arms only when nothing
    /// is armed.
    Busy,
    /// A new entry was added.
    Insert,
}

/// The timer setting after a change: `Some(t)` to arm the timerfd for `t`,
/// `None` to leave it. `armed` is what it is set to (0: nothing), `next`
/// the heap's earliest due time.
pub fn rearm(armed: u64, next: Option<u64>, why: Arm) -> Option<u64> {
    let next = next?;
    match why {
        Arm::Expired => Some(next),
        Arm::Busy => (armed == 0).then_some(next),
        Arm::Insert => (armed == 0 || next < armed).then_some(next),
    }
}

/// What a heap entry does when due.
enum Entry {
    /// Wakes a [`sleep_until`].
    Wake(Rc<SleepState>),
    /// Runs a [`paced`] sender's due sends.
    Job(Rc<Job>),
}

/// One loadgen thread's pacer.
pub struct Pacer {
    timers: RefCell<Timers<Entry>>,
    /// What the timerfd is set to (0: not armed).
    armed: Cell<u64>,
    /// The timerfd, registered with this thread's reactor.
    tfd: AsyncFd<OwnedFd>,
    /// Set while [`Pacer::fire`] runs (no re-entry).
    firing: Cell<bool>,
}

thread_local! {
    /// This thread's pacer, made on first use inside its runtime.
    static PACER: RefCell<Option<Rc<Pacer>>> = const { RefCell::new(None) };
    /// The earliest due time of this thread's pacer (u64::MAX: none): one
    /// comparison per read in [`poll_due`].
    static NEXT_DUE: Cell<u64> = const { Cell::new(u64::MAX) };
}

/// Drops this thread's pacer and the senders it still holds; a worker calls
/// it before its runtime goes, so that their sockets and the timerfd leave
/// the reactor while it still exists.
pub fn reset() {
    NEXT_DUE.set(u64::MAX);
    if let Some(p) = PACER.with(|p| p.borrow_mut().take()) {
        *p.timers.borrow_mut() = Timers::default();
    }
}

/// Serves whatever is due on this thread's pacer; receive loops call it
/// after each read with the read's time.
pub fn poll_due(now: u64) {
    if NEXT_DUE.get() > now {
        return;
    }
    if let Some(p) = PACER.with(|p| p.borrow().clone()) {
        p.fire(Arm::Busy);
    }
}

impl Pacer {
    /// This thread's pacer; the first call makes it and spawns its driver
    /// task on the current `LocalSet`.
    pub fn current() -> Result<Rc<Pacer>, ClientError> {
        if let Some(p) = PACER.with(|p| p.borrow().clone()) {
            return Ok(p);
        }
        // SAFETY: timerfd_create has no memory effects; the result is
        // checked before use.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(ClientError::Io(std::io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the OwnedFd is a valid open descriptor that the AsyncFd
        // owns (and so keeps open, unchanged) for its whole life.
        let tfd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| ClientError::Io(e.into()))?;
        let p = Rc::new(Pacer {
            timers: RefCell::new(Timers::default()),
            armed: Cell::new(0),
            tfd,
            firing: Cell::new(false),
        });
        PACER.with(|c| *c.borrow_mut() = Some(p.clone()));
        crate::client::set_between_reads(poll_due);
        NEXT_DUE.set(u64::MAX);
        tokio::task::spawn_local(drive(p.clone()));
        Ok(p)
    }

    fn insert(&self, due: u64, e: Entry) {
        let next = {
            let mut t = self.timers.borrow_mut();
            t.insert(due, e);
            t.next_due()
        };
        NEXT_DUE.set(next.unwrap_or(u64::MAX));
        self.apply(rearm(self.armed.get(), next, Arm::Insert));
    }

    /// Serves every entry due by now: wakes sleeps, runs jobs (re-reading
    /// the clock per job, so each send's lag is its own), re-queues jobs at
    /// their next event. Then re-arms the timer as [`rearm`] says.
    fn fire(&self, why: Arm) {
        if self.firing.replace(true) {
            return;
        }
        let now = now_ns();
        loop {
            // The heap is not borrowed while an entry runs.
            let popped = self.timers.borrow_mut().pop_due(now);
            let Some((_, e)) = popped else { break };
            match e {
                Entry::Wake(s) => s.wake(),
                Entry::Job(j) => {
                    if let Some(next) = j.run() {
                        self.timers.borrow_mut().insert(next, Entry::Job(j));
                    }
                }
            }
        }
        let next = self.timers.borrow().next_due();
        NEXT_DUE.set(next.unwrap_or(u64::MAX));
        self.apply(rearm(self.armed.get(), next, why));
        self.firing.set(false);
    }

    /// Sets the timerfd to expire at `due` ([`now_ns`] time).
    fn apply(&self, due: Option<u64>) {
        let Some(due) = due else { return };
        // Relative: 0 would disarm, so at least 1 ns.
        let d = due.saturating_sub(now_ns()).max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (d / 1_000_000_000) as libc::time_t,
                tv_nsec: (d % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: a valid timerfd we own and a pointer to a live itimerspec;
        // the old value is not asked for (null).
        let rc = unsafe {
            libc::timerfd_settime(
                self.tfd.get_ref().as_raw_fd(),
                0,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc == 0 {
            self.armed.set(due);
        }
    }
}

/// The driver task of a pacer: each timer expiry serves what is due.
async fn drive(p: Rc<Pacer>) {
    loop {
        let Ok(mut guard) = p.tfd.readable().await else {
            return;
        };
        let mut buf = [0u8; 8];
        let read = guard.try_io(|fd| {
            // SAFETY: reads at most 8 bytes into a live 8-byte buffer.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
        match read {
            Ok(Ok(())) => {
                p.armed.set(0);
                p.fire(Arm::Expired);
                // A thread that is behind re-arms for "now" and would loop
                // here; the readers get their turn first.
                tokio::task::yield_now().await;
            }
            Ok(Err(_)) => return,
            // Re-armed since it became readable: nothing expired.
            Err(_would_block) => {}
        }
    }
}

/// A [`sleep_until`]'s state in the heap.
#[derive(Default)]
struct SleepState {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl SleepState {
    fn wake(&self) {
        self.fired.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Sleeps until the [`now_ns`] value `ns`, to the microsecond where the
/// thread is idle (tokio's timer where no timerfd can be made).
pub async fn sleep_until(ns: u64) {
    let Ok(p) = Pacer::current() else {
        tokio::time::sleep_until(instant_at(ns)).await;
        return;
    };
    let s = Rc::new(SleepState::default());
    let mut registered = false;
    std::future::poll_fn(|cx| {
        if s.fired.get() || now_ns() >= ns {
            return Poll::Ready(());
        }
        *s.waker.borrow_mut() = Some(cx.waker().clone());
        if !registered {
            registered = true;
            p.insert(ns, Entry::Wake(s.clone()));
        }
        Poll::Pending
    })
    .await
}

/// What one event of a paced sender does: `encode(k, intended, now, out)`
/// appends event `k`, intended at `intended`, sent at `now`, to `out`.
pub type Encode = Box<dyn FnMut(u64, u64, u64, &mut Vec<u8>)>;

/// A paced sender held by the pacer.
struct Job {
    st: RefCell<JobState>,
    waker: RefCell<Option<Waker>>,
}

struct JobState {
    wr: Writer,
    sched: Schedule,
    /// Next event.
    k: u64,
    encode: Encode,
    /// A write would block: the [`paced`] future finishes it and re-queues
    /// the job; the pacer leaves the job alone meanwhile (so that each
    /// stamp's send time is when its bytes reached the socket).
    blocked: bool,
    /// The schedule is over.
    done: bool,
    err: Option<ClientError>,
}

impl Job {
    /// Sends the events due now in one write. Returns when the next one is
    /// due, or `None` when the job leaves the heap (done, blocked, failed).
    fn run(&self) -> Option<u64> {
        let mut guard = self.st.borrow_mut();
        let s = &mut *guard;
        if s.done || s.blocked || s.err.is_some() {
            return None;
        }
        let now = now_ns();
        let n = s.sched.due(s.k, now, MAX_BATCH);
        for _ in 0..n {
            let t = s.sched.at(s.k);
            (s.encode)(s.k, t, now, &mut s.wr.out);
            s.k += 1;
        }
        let left = match s.wr.try_flush() {
            Ok(all) => !all,
            Err(e) => {
                s.err = Some(e);
                drop(guard);
                self.wake();
                return None;
            }
        };
        if left {
            s.blocked = true;
        } else if !s.sched.has(s.k) {
            s.done = true;
        }
        if s.blocked || s.done {
            drop(guard);
            self.wake();
            return None;
        }
        Some(s.sched.at(s.k))
    }

    fn wake(&self) {
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Sends on a fixed schedule: event k is due at `sched.at(k)`; every event
/// due by the time the pacer serves this sender (at most [`MAX_BATCH`]) is
/// handed to `encode(k, intended, now, out)` and written in one go, so a
/// sender that fell behind catches up in one write while each event keeps
/// its intended time (no coordinated omission). Returns the writer once
/// the schedule is over (or a write failed).
pub async fn paced(
    wr: Writer,
    sched: Schedule,
    encode: impl FnMut(u64, u64, u64, &mut Vec<u8>) + 'static,
) -> (Writer, Result<(), ClientError>) {
    let job = Rc::new(Job {
        st: RefCell::new(JobState {
            wr,
            sched,
            k: 0,
            encode: Box::new(encode),
            blocked: false,
            done: !sched.has(0),
            err: None,
        }),
        waker: RefCell::new(None),
    });
    let res = match Pacer::current() {
        Ok(p) => {
            if !job.st.borrow().done {
                p.insert(sched.at(0), Entry::Job(job.clone()));
            }
            JobFuture {
                job: &job,
                pacer: p,
            }
            .await
        }
        Err(e) => Err(e),
    };
    let st = match Rc::try_unwrap(job) {
        Ok(j) => j.st.into_inner(),
        // The heap let go of the job when it finished (done, blocked or
        // failed), so this is the only reference left.
        Err(_) => unreachable!("a finished job is out of the pacer's heap"),
    };
    (st.wr, res)
}

/// Waits for a job to finish, completing its blocked writes meanwhile.
struct JobFuture<'a> {
    job: &'a Rc<Job>,
    pacer: Rc<Pacer>,
}

impl Future for JobFuture<'_> {
    type Output = Result<(), ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.job.st.borrow_mut();
        if let Some(e) = s.err.take() {
            return Poll::Ready(Err(e));
        }
        if s.blocked {
            match s.wr.poll_flush(cx) {
                Poll::Ready(Ok(())) => s.blocked = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            if s.sched.has(s.k) {
                let next = s.sched.at(s.k);
                drop(s);
                self.pacer.insert(next, Entry::Job(self.job.clone()));
                s = self.job.st.borrow_mut();
            } else {
                s.done = true;
            }
        }
        if s.done {
            return Poll::Ready(Ok(()));
        }
        *self.job.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched() -> Schedule {
        Schedule {
            start_ns: 1_000,
            phase_ns: 250.0,
            interval_ns: 1_000.0,
            end_ns: 5_000,
        }
    }

    #[test]
    fn schedule_places_events_at_phase_plus_k_intervals() {
        let s = sched();
        assert_eq!(s.at(0), 1_250);
        assert_eq!(s.at(3), 4_250);
        assert!(s.has(3));
        assert!(!s.has(4), "5250 is past the end");
    }

    #[test]
    fn staggered_phases_spread_senders_over_one_interval() {
        let w = Window {
            start_ns: 0,
            measure_ns: 0,
            end_ns: 1_000_000,
        };
        let phases: Vec<u64> = (0..4)
            .map(|i| Schedule::staggered(w, i, 4, 100_000.0).at(0))
            .collect();
        assert_eq!(phases, vec![0, 25_000, 50_000, 75_000]);
    }

    #[test]
    fn due_counts_events_up_to_now_and_caps_the_batch() {
        let s = sched();
        assert_eq!(s.due(0, 1_249, 10), 0, "not yet due");
        assert_eq!(s.due(0, 1_250, 10), 1, "due exactly at its time");
        assert_eq!(s.due(0, 3_300, 10), 3, "a late sender catches up");
        assert_eq!(s.due(1, 3_300, 10), 2, "from event 1");
        assert_eq!(s.due(0, 3_300, 2), 2, "at most the batch");
        assert_eq!(s.due(0, 99_999, 10), 4, "never past the end");
    }

    #[test]
    fn timers_pop_in_due_order_and_only_when_due() {
        let mut t = Timers::default();
        t.insert(30, "c");
        t.insert(10, "a");
        t.insert(20, "b");
        t.insert(10, "a2");
        assert_eq!(t.next_due(), Some(10));
        assert_eq!(t.pop_due(9), None);
        assert_eq!(t.pop_due(15), Some((10, "a")));
        assert_eq!(t.pop_due(15), Some((10, "a2")), "ties in insertion order");
        assert_eq!(t.pop_due(15), None);
        assert_eq!(t.pop_due(100), Some((20, "b")));
        assert_eq!(t.pop_due(100), Some((30, "c")));
        assert_eq!(t.next_due(), None);
    }

    #[test]
    fn rearm_after_expiry_always_sets_the_next_due_time() {
        assert_eq!(rearm(0, Some(50), Arm::Expired), Some(50));
        assert_eq!(rearm(0, None, Arm::Expired), None, "nothing left");
    }

    #[test]
    fn a_busy_thread_leaves_an_armed_timer_alone() {
        // Armed for 40, which a receive loop just served: the stale expiry
        // costs one wake; re-arming on every read would cost a syscall each.
        assert_eq!(rearm(40, Some(60), Arm::Busy), None);
        assert_eq!(rearm(0, Some(60), Arm::Busy), Some(60), "nothing armed");
    }

    #[test]
    fn an_insert_rearms_only_for_an_earlier_time() {
        assert_eq!(rearm(100, Some(50), Arm::Insert), Some(50));
        assert_eq!(rearm(100, Some(100), Arm::Insert), None);
        assert_eq!(rearm(0, Some(500), Arm::Insert), Some(500));
    }
}
