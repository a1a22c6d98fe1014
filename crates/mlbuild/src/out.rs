//! Standard output and error of every command: a reader that goes away ends mlbuild
//! quietly, as it ends `ls`.
//!
//! Rust ignores SIGPIPE, so writing to a closed pipe is an `EPIPE` error, and std's
//! `println!` panics on it: `mlbuild graph | head -1` used to exit 101 with a panic
//! message. SIGPIPE stays ignored while mlbuild runs (a reset would let a server or remote
//! cache client die on a socket its peer closed); instead the crate's own `print!` and
//! `println!` (declared in `main.rs`, shadowing std's in every module) write through
//! [`print`], which unwinds to [`run`] in `main` when stdout fails, so temporary
//! directories and the store close as on any other exit, and only then ends the process
//! by SIGPIPE. `eprint!` and `eprintln!` ignore a closed stderr: diagnostics nobody reads
//! are no reason to stop a build. The `--json` build event stream ignores a closed stdout
//! for the same reason (see `report.rs`); actions never inherit any of this, as both
//! sandbox modes start them with default signal handling.

use std::fmt;
use std::io::{self, Write};
use std::panic::AssertUnwindSafe;
use std::process::ExitCode;

use crate::exit::Code;

/// The panic payload that carries a failed write to stdout up to [`run`].
struct StdoutFailed(io::Error);

/// Writes to stdout; when that fails, unwinds to [`run`].
pub fn print(args: fmt::Arguments<'_>) {
    if let Err(e) = io::stdout().lock().write_fmt(args) {
        failed(e)
    }
}

/// Writes raw bytes to stdout; when that fails, unwinds to [`run`].
pub fn write_all(bytes: &[u8]) {
    if let Err(e) = io::stdout().lock().write_all(bytes) {
        failed(e)
    }
}

/// Writes to stderr, ignoring errors.
pub fn eprint(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

fn failed(e: io::Error) -> ! {
    // `resume_unwind` skips the panic hook: no message, no backtrace.
    std::panic::resume_unwind(Box::new(StdoutFailed(e)))
}

/// Runs a command. When its stdout was closed, ends the process by SIGPIPE (status 141
/// in a shell, as `ls | head` leaves it); when writing to stdout failed otherwise (a full
/// disk), reports it and exits with the I/O code. Any other panic goes on as a panic.
pub fn run(command: impl FnOnce() -> ExitCode) -> ExitCode {
    let payload = match std::panic::catch_unwind(AssertUnwindSafe(command)) {
        Ok(code) => return code,
        Err(payload) => payload,
    };
    match payload.downcast::<StdoutFailed>() {
        Ok(failed) if failed.0.kind() == io::ErrorKind::BrokenPipe => {
            // SAFETY: restoring the default action of a signal and raising it on our own
            // process; nothing else runs on this thread in between.
            unsafe {
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::raise(libc::SIGPIPE);
            }
            // Only reached if SIGPIPE is blocked on this thread: the shell's number for it.
            ExitCode::from(128 + libc::SIGPIPE as u8)
        }
        Ok(failed) => {
            eprint(format_args!(
                "error: cannot write to stdout: {}\n",
                failed.0
            ));
            Code::Store.into()
        }
        Err(other) => std::panic::resume_unwind(other),
    }
}
