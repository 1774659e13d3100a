//! The `log` interface: plugin lines under the reference's line and byte
//! budget, escaped, and lines sent in parts (0.2's `log-part`).

use super::*;

impl types::Host for State {}

impl log::Host for State {
    fn log(&mut self, level: Level, message: String) {
        self.write_log(level, &message, 0);
    }
}

impl State {
    /// Writes one of the plugin's log lines, of which the guest's side
    /// already cut `cut` bytes, if the log filter and the budget let it.
    pub(super) fn write_log(&mut self, level: Level, message: &str, cut: usize) {
        // Lines the log filter drops cost nothing and count for nothing.
        let enabled = match level {
            Level::Trace => tracing::enabled!(target: "plugin", tracing::Level::TRACE),
            Level::Debug => tracing::enabled!(target: "plugin", tracing::Level::DEBUG),
            Level::Info => tracing::enabled!(target: "plugin", tracing::Level::INFO),
            Level::Warn => tracing::enabled!(target: "plugin", tracing::Level::WARN),
            Level::Error => tracing::enabled!(target: "plugin", tracing::Level::ERROR),
        };
        if !enabled || !self.log.take((message.len() + cut).min(MAX_LOG_LINE)) {
            return;
        }
        let message = untrusted::escape_cut(message, MAX_LOG_LINE, cut);
        let (plugin, api, request_id) = (&*self.call.plugin, &*self.call.api_id, self.call.request_id.as_str());
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, api, request_id, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, api, request_id, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, api, request_id, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, api, request_id, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, api, request_id, "{message}"),
        }
    }

    /// Adds a `log-part` to the open line, ending it if it is the last.
    pub(super) fn log_part(&mut self, level: Level, len: u8, last: bool, words: [u64; LOG_PART_BYTES / 8]) {
        let len = usize::from(len).min(LOG_PART_BYTES);
        let line = &mut self.partial_line;
        let room = MAX_LOG_LINE.saturating_sub(line.bytes.len()).min(len);
        line.bytes.extend(words.iter().flat_map(|w| w.to_le_bytes()).take(room));
        line.beyond += len - room;
        line.level = Some(level);
        if last {
            self.end_partial_line();
        }
    }

    /// Writes the line open in `log-part`, if there is one.
    pub(super) fn end_partial_line(&mut self) {
        let line = std::mem::take(&mut self.partial_line);
        if let Some(level) = line.level {
            self.write_log(level, &String::from_utf8_lossy(&line.bytes), line.beyond);
        }
    }
}

impl v02::types::Host for State {}

impl v02::log::Host for State {
    fn log(&mut self, level: v02::log::Level, message: String) {
        self.write_log(level.into(), &message, 0);
    }

    fn log_part(
        &mut self,
        level: v02::log::Level,
        len: u8,
        last: bool,
        w0: u64,
        w1: u64,
        w2: u64,
        w3: u64,
        w4: u64,
        w5: u64,
        w6: u64,
        w7: u64,
        w8: u64,
        w9: u64,
        w10: u64,
        w11: u64,
    ) {
        let words = [w0, w1, w2, w3, w4, w5, w6, w7, w8, w9, w10, w11];
        State::log_part(self, level.into(), len, last, words);
    }
}

impl From<v02::log::Level> for Level {
    fn from(level: v02::log::Level) -> Self {
        use v02::log::Level as L;
        match level {
            L::Trace => Level::Trace,
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        }
    }
}
