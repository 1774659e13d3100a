//! Log lines that appear in the gateway's log, attributed to the plugin.
//!
//! Use the macros ([`info!`](crate::info) and friends) like `format!`.

pub use crate::bindings::portcullis::plugin::log::Level;

/// Writes one log line at `level`.
pub fn log(level: Level, message: &str) {
    crate::host::log(level, message);
}

/// Most bytes one `log-part` call carries.
#[cfg(target_arch = "wasm32")]
const PART_BYTES: usize = 96;

/// Sends one line through the host's `log-part`, 96 bytes at a time. That
/// import takes only integers where `log` takes a string, and a component
/// whose imports take no strings links as one core instance instead of
/// three: what keeps every plugin that makes no outbound calls cheap to
/// instantiate (the WIT says more).
#[cfg(target_arch = "wasm32")]
pub(crate) fn log_in_parts(level: Level, message: &str) {
    use crate::bindings::portcullis::plugin::log::log_part;

    let mut rest = message.as_bytes();
    loop {
        let (part, after) = rest.split_at(rest.len().min(PART_BYTES));
        rest = after;
        let mut w = [0u64; PART_BYTES / 8];
        for (word, chunk) in w.iter_mut().zip(part.chunks(8)) {
            let mut le = [0u8; 8];
            le[..chunk.len()].copy_from_slice(chunk);
            *word = u64::from_le_bytes(le);
        }
        let len = part.len() as u8; // at most PART_BYTES
        log_part(
            level,
            len,
            rest.is_empty(),
            w[0],
            w[1],
            w[2],
            w[3],
            w[4],
            w[5],
            w[6],
            w[7],
            w[8],
            w[9],
            w[10],
            w[11],
        );
        if rest.is_empty() {
            return;
        }
    }
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::log($crate::log::Level::$level, &::std::format!($($arg)+))
    };
}

/// Logs at trace level: `trace!("x = {x}")`.
#[macro_export]
macro_rules! trace { ($($arg:tt)+) => { $crate::__log!(Trace, $($arg)+) }; }
/// Logs at debug level: `debug!("x = {x}")`.
#[macro_export]
macro_rules! debug { ($($arg:tt)+) => { $crate::__log!(Debug, $($arg)+) }; }
/// Logs at info level: `info!("x = {x}")`.
#[macro_export]
macro_rules! info { ($($arg:tt)+) => { $crate::__log!(Info, $($arg)+) }; }
/// Logs at warn level: `warn!("x = {x}")`.
#[macro_export]
macro_rules! warn { ($($arg:tt)+) => { $crate::__log!(Warn, $($arg)+) }; }
/// Logs at error level: `error!("x = {x}")`.
#[macro_export]
macro_rules! error { ($($arg:tt)+) => { $crate::__log!(Error, $($arg)+) }; }
