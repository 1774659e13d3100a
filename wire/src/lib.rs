//! The input buffer of the Portcullis plugin contract 0.2, defined once for
//! both of its sides: the gateway writes it, and the plugin SDK reads it
//! (and writes it too, for plugins' unit tests). Everything a function reads
//! travels in this one `list<u8>`, so a call lowers one value into the guest
//! instead of one per string. The layout is specified in
//! `plugin-sdk/wit/plugin.wit` (the package documentation); this crate is
//! its only implementation.
//!
//! All integers are little-endian. A length or count is a `u32`; a string
//! or byte string is its length and its bytes; a list of fields is a count
//! and that many name and value strings; an option is a byte, 0 (absent)
//! or 1 (present, followed by the value). The buffer is six sections, each
//! its length and its content, in this order: request, session, response,
//! API, config, fan-out. A reader skips what a section holds past the
//! fields it knows, so a later gateway may append fields.
//!
//! Reading checks every length against the buffer and every string's
//! UTF-8: a malformed buffer is an error ([`Malformed`]), never a panic or
//! an out-of-bounds read, and a lying count cannot make the reader
//! allocate.

/// The buffer is not what the layout says; `0` names what was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed input from the gateway: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

pub type Result<T> = std::result::Result<T, Malformed>;

/// The index of each `http-error` case of the WIT variant, as the fan-out
/// section writes it (`other` and any case a later gateway adds read as
/// `other`).
pub mod http_error {
    pub const NOT_ALLOWED: u8 = 0;
    pub const INVALID_REQUEST: u8 = 1;
    pub const CONNECT: u8 = 2;
    pub const TIMEOUT: u8 = 3;
    pub const TOO_LARGE: u8 = 4;
    pub const CALL_LIMIT: u8 = 5;
    pub const OTHER: u8 = 6;
    pub const CANCELLED: u8 = 7;
}

mod read;
mod write;

pub use read::*;
pub use write::*;

#[cfg(test)]
mod tests;
