//! The WASI a plugin gets: an empty context built on first use, its stdout
//! and stderr captured into bounded buffers, and clocks of coarse
//! resolution.

use super::*;

/// One of a guest's output streams: a buffer of at most [`MAX_GUEST_OUTPUT`]
/// bytes, drained after each call. Writes beyond it are counted and
/// dropped, never refused, so printing too much cannot fail a plugin.
#[derive(Debug, Clone, Default)]
pub(super) struct GuestOutput(Arc<Mutex<(Vec<u8>, usize)>>);

impl GuestOutput {
    pub(super) fn push(&self, data: &[u8]) {
        let (kept, dropped) = &mut *lock(&self.0);
        let room = MAX_GUEST_OUTPUT.saturating_sub(kept.len()).min(data.len());
        kept.extend_from_slice(&data[..room]);
        *dropped += data.len() - room;
    }

    /// What was written since the last call, and how many bytes were dropped.
    pub(super) fn take(&self) -> (Vec<u8>, usize) {
        std::mem::take(&mut *lock(&self.0))
    }
}

impl wasmtime_wasi::cli::IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }
}

impl wasmtime_wasi::p2::OutputStream for GuestOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(MAX_GUEST_OUTPUT)
    }
}

#[async_trait::async_trait]
impl wasmtime_wasi::p2::Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The WASI context every guest gets: nothing to reach, coarse clocks,
/// stdout and stderr into `output`.
pub(super) fn empty_wasi_ctx(output: &[GuestOutput; 2]) -> WasiCtx {
    let [stdout, stderr] = output.clone();
    WasiCtx::builder()
        .stdout(stdout)
        .stderr(stderr)
        .wall_clock(CoarseWallClock)
        .monotonic_clock(CoarseMonotonicClock)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build()
}

/// Clock resolution offered to guests.
pub(super) const CLOCK_RESOLUTION: Duration = Duration::from_millis(1);

pub(super) fn coarse(d: Duration) -> Duration {
    let step = CLOCK_RESOLUTION.as_nanos();
    Duration::from_nanos(u64::try_from(d.as_nanos() / step * step).unwrap_or(u64::MAX))
}

pub(super) struct CoarseWallClock;

impl HostWallClock for CoarseWallClock {
    fn resolution(&self) -> Duration {
        CLOCK_RESOLUTION
    }
    fn now(&self) -> Duration {
        coarse(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }
}

pub(super) struct CoarseMonotonicClock;

impl HostMonotonicClock for CoarseMonotonicClock {
    fn resolution(&self) -> u64 {
        CLOCK_RESOLUTION.as_nanos() as u64
    }
    fn now(&self) -> u64 {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        coarse(START.get_or_init(Instant::now).elapsed()).as_nanos() as u64
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let output = self.output.get_or_insert_default();
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| empty_wasi_ctx(output)),
            table: &mut self.table,
        }
    }
}
