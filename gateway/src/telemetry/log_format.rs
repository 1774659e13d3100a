//! The gateway's own log: text (the default) or JSON lines, chosen with
//! `--log-format` or `PORTCULLIS_LOG_FORMAT` (`json` or `text`). In JSON,
//! every line a request causes carries its span: the request id, the trace
//! id and, once known, the API, endpoint and key id.

use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);

/// The two formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The environment's choice (`PORTCULLIS_LOG_FORMAT`), or text.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("PORTCULLIS_LOG_FORMAT").as_deref() {
            Err(_) | Ok("" | "text") => Ok(LogFormat::Text),
            Ok("json") => Ok(LogFormat::Json),
            Ok(other) => Err(format!(
                "PORTCULLIS_LOG_FORMAT={other:?}: expected \"json\" or \"text\""
            )),
        }
    }

    /// Makes the choice known to the request path (which then builds each
    /// request's span at info level, so JSON lines carry it).
    pub fn install(self) {
        JSON.store(self == LogFormat::Json, Ordering::Relaxed);
    }
}

/// Whether the log is JSON.
#[inline]
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}
