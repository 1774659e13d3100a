//! The CPU clock a guest is charged by: thread CPU time of the segments it
//! runs, paused around host waits and yields.

use super::*;

/// Accounts the CPU time the guest uses, read from the CPU clock of the
/// thread that runs it: time the thread spends descheduled (a busy machine,
/// a container's CPU quota throttled, the process stopped) is not the
/// guest's, and neither are outbound waits or waits for the executor after
/// the guest yielded.
///
/// The guest runs in segments: from the call's start, from each
/// resumption after a yield, and from the end of each host wait. A segment
/// is measured on the thread CPU clock of the thread it ran on; should a
/// segment ever end on another thread than it began on (it cannot, as the
/// guest runs synchronously between its awaits), it is charged wall-clock
/// time instead.
#[derive(Debug)]
pub struct GuestClock {
    /// CPU time of the segments that ended.
    pub(super) charged: Duration,
    /// Where the running segment began; `None` while the guest waits.
    pub(super) segment: Option<Mark>,
    /// The guest yielded to the executor at the last tick.
    pub(super) yielded: bool,
    /// Where it was resumed after that yield; written by the yield future
    /// on the resuming thread. Created at the first yield (most
    /// invocations never yield).
    pub(super) resumed_at: Option<Arc<Mutex<Option<Mark>>>>,
    pub budget: Duration,
}

/// A point in a thread's run: which thread, its CPU clock and the wall clock.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mark {
    pub(super) thread: std::thread::ThreadId,
    pub(super) cpu: Duration,
    pub(super) wall: Instant,
}

impl Mark {
    pub(super) fn now() -> Self {
        let cpu = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        Mark {
            thread: std::thread::current().id(),
            cpu: Duration::new(cpu.tv_sec.max(0) as u64, cpu.tv_nsec.clamp(0, 999_999_999) as u32),
            wall: Instant::now(),
        }
    }

    /// The time run since this mark.
    pub(super) fn elapsed(&self) -> Duration {
        let now = Mark::now();
        if now.thread == self.thread {
            now.cpu.saturating_sub(self.cpu)
        } else {
            now.wall.saturating_duration_since(self.wall)
        }
    }
}

impl GuestClock {
    pub fn new(budget: Duration) -> Self {
        GuestClock {
            charged: Duration::ZERO,
            segment: Some(Mark::now()),
            yielded: false,
            resumed_at: None,
            budget,
        }
    }

    /// CPU time spent running guest code so far.
    pub fn guest_time(&self) -> Duration {
        self.charged + self.running_since().map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// Where the running segment began: after a yield, where the guest was
    /// resumed.
    pub(super) fn running_since(&self) -> Option<Mark> {
        if self.yielded {
            self.resumed_at.as_ref().and_then(|r| *lock(r))
        } else {
            self.segment
        }
    }

    /// After a yield, makes the resumption the running segment's start
    /// (without a resumption mark, which cannot happen: from now on).
    pub(super) fn settle_yield(&mut self) {
        if std::mem::take(&mut self.yielded) {
            let resumed = self.resumed_at.as_ref().and_then(|r| lock(r).take());
            self.segment = Some(resumed.unwrap_or_else(Mark::now));
        }
    }

    /// The guest stops running until [`Self::resume`]: a host wait begins.
    pub fn pause(&mut self) {
        self.settle_yield();
        if let Some(segment) = self.segment.take() {
            self.charged += segment.elapsed();
        }
    }

    /// The guest runs again, on the calling thread.
    pub fn resume(&mut self) {
        self.segment = Some(Mark::now());
    }

    /// Called at each epoch tick while the guest runs: whether it may go on,
    /// and if so whether it should first yield to the executor (then await
    /// the returned future, which notes where the guest runs again).
    ///
    /// The first tick after a resumption never yields: on a busy worker the
    /// epoch moves on while the guest waits, so that tick comes at once, and
    /// yielding again there would leave the guest no time to make progress.
    pub fn tick(&mut self) -> Tick {
        if self.yielded {
            self.settle_yield();
            return if self.guest_time() > self.budget {
                Tick::OverBudget
            } else {
                Tick::Continue
            };
        }
        self.pause();
        if self.charged > self.budget {
            return Tick::OverBudget;
        }
        self.yielded = true;
        let resumed_at = Arc::clone(self.resumed_at.get_or_insert_default());
        Tick::Yield(Box::pin(async move {
            tokio::task::yield_now().await;
            *lock(&resumed_at) = Some(Mark::now());
        }))
    }
}

/// What the epoch callback should do; see [`GuestClock::tick`].
pub enum Tick {
    Continue,
    /// Yield to the executor by awaiting this.
    Yield(Pin<Box<dyn Future<Output = ()> + Send>>),
    OverBudget,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_yield(tick: &Tick) -> bool {
        matches!(tick, Tick::Yield(_))
    }

    #[tokio::test]
    async fn time_queued_after_a_yield_is_not_charged_and_the_guest_runs_a_tick_before_yielding_again() {
        let mut clock = GuestClock::new(Duration::from_millis(50));
        let Tick::Yield(resume) = clock.tick() else {
            panic!("expected a yield at the first tick");
        };
        // Queued behind other requests for longer than the whole budget.
        std::thread::sleep(Duration::from_millis(100));
        resume.await;
        assert!(matches!(clock.tick(), Tick::Continue));
        assert!(
            clock.guest_time() < Duration::from_millis(50),
            "charged {:?}",
            clock.guest_time()
        );
        assert!(is_yield(&clock.tick()));
    }

    /// Uses `cpu` of this thread's CPU time, however long that takes.
    fn burn(cpu: Duration) {
        let start = Mark::now();
        while start.elapsed() < cpu {
            std::hint::black_box(0u64);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn time_run_after_a_quick_resumption_is_charged() {
        let mut clock = GuestClock::new(Duration::from_millis(50));
        let Tick::Yield(resume) = clock.tick() else {
            panic!("expected a yield at the first tick");
        };
        resume.await;
        // Running guest code until the next tick, past the whole budget.
        burn(Duration::from_millis(100));
        assert!(matches!(clock.tick(), Tick::OverBudget));
    }

    #[test]
    fn running_past_the_budget_is_over_budget() {
        let mut clock = GuestClock::new(Duration::from_millis(5));
        // Running guest code (no yield in between).
        burn(Duration::from_millis(20));
        assert!(matches!(clock.tick(), Tick::OverBudget));
    }

    #[test]
    fn time_the_thread_is_not_running_is_not_charged() {
        let mut clock = GuestClock::new(Duration::from_millis(5));
        // Descheduled (here: asleep) for ten times the budget while "running".
        std::thread::sleep(Duration::from_millis(50));
        assert!(is_yield(&clock.tick()), "charged {:?}", clock.guest_time());
        assert!(clock.guest_time() < Duration::from_millis(5));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_host_wait_after_a_yield_is_not_charged() {
        let mut clock = GuestClock::new(Duration::from_millis(50));
        let Tick::Yield(resume) = clock.tick() else {
            panic!("expected a yield at the first tick");
        };
        resume.await;
        // The guest calls out before the next tick; the call takes twice
        // the budget, run on this thread by other work.
        clock.pause();
        burn(Duration::from_millis(100));
        clock.resume();
        assert!(
            matches!(clock.tick(), Tick::Yield(_)),
            "charged {:?}",
            clock.guest_time()
        );
        assert!(clock.guest_time() < Duration::from_millis(50));
    }

    #[test]
    fn host_waits_are_not_charged() {
        let mut clock = GuestClock::new(Duration::from_millis(5));
        burn(Duration::from_millis(2));
        clock.pause();
        burn(Duration::from_millis(20));
        clock.resume();
        let charged = clock.guest_time();
        assert!(
            charged >= Duration::from_millis(2) && charged < Duration::from_millis(5),
            "charged {charged:?}"
        );
    }
}
