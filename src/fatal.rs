//! A panic on any thread takes the whole process down, loudly.
//!
//! State is owned per shard (docs/architecture.md): a shard thread that
//! unwound would leave its rooms, users and connections unanswered forever
//! while the other shards, the admin API and the exit status (0 after a
//! SIGTERM) said all was well. So the binary installs [`install_panic_hook`]:
//! it logs the panic with the thread's name (`shard-3`, `admin`, `main`)
//! and ends the process with status [`EXIT_PANIC`], for a supervisor to
//! restart it. (`panic = "abort"` in the build profiles would do the
//! first half, silently; and as test builds ignore it, cargo would build
//! every dependency twice, once per panic strategy.)
//!
//! Debug builds can make a shard panic on purpose, to test this
//! ([`crate::debug_hooks::panic_room`]).

use std::panic::PanicHookInfo;

/// Exit status of a process ended by a panic (Rust's own panic status).
pub const EXIT_PANIC: i32 = 101;

/// Makes every panic, on any thread, log and end the process with
/// [`EXIT_PANIC`]. Call once, after logging is set up.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed thread");
        let backtrace = std::backtrace::Backtrace::capture();
        tracing::error!(
            thread = name,
            "{name} panicked at {}: {}; exiting with status {EXIT_PANIC} for a supervisor to restart chatd{}",
            location(info),
            info.payload_as_str().unwrap_or("(no message)"),
            match backtrace.status() {
                std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
                _ => String::new(),
            }
        );
        // Not `std::process::exit`: other threads keep running during its
        // clean-up (atexit handlers, the allocator's), on state that may be
        // half-changed. Standard error is unbuffered, so the line is out.
        // SAFETY: _exit ends the process at once; it touches no memory.
        unsafe { libc::_exit(EXIT_PANIC) }
    }));
}

/// Where the panic happened, as `file:line:column`.
fn location(info: &PanicHookInfo<'_>) -> String {
    info.location()
        .map_or_else(|| "an unknown place".into(), |l| l.to_string())
}
