//! Log lines that appear in the gateway's log, attributed to the plugin.
//!
//! Use the macros ([`info!`](crate::info) and friends) like `format!`.

pub use crate::bindings::portcullis::plugin::log::Level;

/// Writes one log line at `level`.
pub fn log(level: Level, message: &str) {
    crate::host::log(level, message);
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
