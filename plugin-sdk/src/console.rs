//! What a plugin writes to stdout and stderr, kept in the guest and logged
//! when the call ends; and the other C library calls Rust's std makes on
//! every plugin's behalf, answered here so that a plugin imports no WASI.
//!
//! Rust's std on `wasm32-wasip2` reaches the C library in two places every
//! plugin links, whether or not it prints anything: its default panic hook
//! reads `RUST_BACKTRACE` (`getenv`) and writes to stderr (`write`), and an
//! abort calls `abort`. Left to wasi-libc, those pull in about twenty WASI
//! imports, with their resource types, trampolines and indirect lowerings
//! for every fresh instance to set up: about 12 % more instructions per
//! call than without them (docs/benchmarks.md). The gateway
//! gives plugins no environment and nothing to write to but their log, so
//! the answers here are the same the gateway's WASI would give:
//!
//! - `getenv`: no variable is set.
//! - `write` and `writev` to stdout or stderr: kept, up to [`MAX_OUTPUT`]
//!   bytes of each per call, and logged line by line when the call ends
//!   (stdout at `info`, stderr at `warn`), as the gateway does for a
//!   component that writes through WASI. No other descriptor exists.
//! - `abort`: a trap, which fails the call.
//!
//! The symbols are defined in the SDK, which the linker reads before
//! wasi-libc, so wasi-libc's own are never linked. A plugin that uses other
//! parts of the C library (files, `std::env::vars`, `std::process::exit`)
//! still links them from wasi-libc and imports WASI for them; it works the
//! same, it is just not as cheap to instantiate.

use std::cell::RefCell;

use crate::log::Level;

/// Most bytes of stdout (and as many of stderr) kept from one call: the
/// gateway's limit for what a component writes through WASI.
pub const MAX_OUTPUT: usize = 16 << 10;

/// One output stream of the current call: the bytes kept, and how many more
/// were dropped.
#[derive(Default)]
struct Kept {
    bytes: Vec<u8>,
    dropped: usize,
}

impl Kept {
    const EMPTY: Kept = Kept {
        bytes: Vec::new(),
        dropped: 0,
    };
}

thread_local! {
    /// stdout, then stderr.
    static OUTPUT: RefCell<[Kept; 2]> = const { RefCell::new([Kept::EMPTY, Kept::EMPTY]) };
}

fn keep(stream: usize, data: &[u8]) {
    OUTPUT.with(|output| {
        // Already borrowed only by a write from inside a write (a panic
        // while keeping bytes); those bytes are dropped.
        if let Ok(mut output) = output.try_borrow_mut() {
            let kept = &mut output[stream];
            let room = MAX_OUTPUT.saturating_sub(kept.bytes.len()).min(data.len());
            kept.bytes.extend_from_slice(&data[..room]);
            kept.dropped += data.len() - room;
        }
    });
}

/// Logs what the call wrote to stdout and stderr, and forgets it.
pub(crate) fn flush() {
    let Ok(taken) = OUTPUT.with(|output| output.try_borrow_mut().map(|mut o| std::mem::take(&mut *o))) else {
        return;
    };
    for (kept, (level, name)) in taken
        .into_iter()
        .zip([(Level::Info, "stdout"), (Level::Warn, "stderr")])
    {
        for line in String::from_utf8_lossy(&kept.bytes).lines() {
            crate::log::log(level, line);
        }
        if kept.dropped > 0 {
            let note = format!(
                "({} more bytes of {name} dropped: the limit is {MAX_OUTPUT} per call)",
                kept.dropped
            );
            crate::log::log(level, &note);
        }
    }
}

/// The stream a descriptor writes to: 0 for stdout, 1 for stderr.
fn stream(fd: i32) -> Option<usize> {
    match fd {
        1 => Some(0),
        2 => Some(1),
        _ => None,
    }
}

#[unsafe(no_mangle)]
extern "C" fn write(fd: i32, buf: *const u8, len: usize) -> isize {
    let Some(stream) = stream(fd) else { return -1 };
    if len > 0 {
        // SAFETY: the caller (std or C code in this plugin) passes a buffer
        // of `len` readable bytes, as `write(2)` requires.
        keep(stream, unsafe { std::slice::from_raw_parts(buf, len) });
    }
    isize::try_from(len).unwrap_or(isize::MAX)
}

/// `struct iovec` of wasi-libc.
#[repr(C)]
struct IoVec {
    base: *const u8,
    len: usize,
}

#[unsafe(no_mangle)]
extern "C" fn writev(fd: i32, iov: *const IoVec, count: i32) -> isize {
    let Some(stream) = stream(fd) else { return -1 };
    let Ok(count) = usize::try_from(count) else { return -1 };
    let mut total = 0usize;
    if count > 0 {
        // SAFETY: the caller passes `count` iovecs, each of `len` readable
        // bytes, as `writev(2)` requires.
        for v in unsafe { std::slice::from_raw_parts(iov, count) } {
            if v.len > 0 {
                keep(stream, unsafe { std::slice::from_raw_parts(v.base, v.len) });
            }
            total = total.saturating_add(v.len);
        }
    }
    isize::try_from(total).unwrap_or(isize::MAX)
}

#[unsafe(no_mangle)]
extern "C" fn getenv(_name: *const u8) -> *mut u8 {
    std::ptr::null_mut()
}

#[unsafe(no_mangle)]
extern "C" fn abort() -> ! {
    core::arch::wasm32::unreachable()
}
