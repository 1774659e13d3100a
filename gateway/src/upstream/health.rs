//! A target's health: active probes (`health_check`) and outlier ejection
//! from live traffic (`passive`). The request path reads two atomics; state
//! changes, rare, take a lock to record when and why.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::config::upstream::{HealthCheck, Passive};

/// What an operator sees for a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Healthy,
    /// Failed `unhealthy_after` probes in a row.
    Unhealthy,
    /// Failed `passive.failures` requests in a row; out until `eject_ms` pass.
    Ejected,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Unhealthy => "unhealthy",
            State::Ejected => "ejected",
        }
    }
}

/// A state change, for the caller to log and count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub to: State,
    pub reason: String,
}

#[derive(Debug)]
pub struct Health {
    /// Monotonic milliseconds (see [`now_ms`]) until which the target is
    /// ejected; 0: not ejected.
    ejected_until: AtomicU64,
    /// Set while active probes say the target is down.
    probed_down: AtomicBool,
    /// Consecutive failed requests.
    failures: AtomicU32,
    detail: Mutex<Detail>,
}

/// What `GET /upstreams` shows of a target's health.
#[derive(Debug, Clone)]
pub struct Detail {
    pub state: State,
    pub since: SystemTime,
    pub reason: String,
    /// The last probe's result, e.g. `200` or `connection refused`.
    pub last_probe: Option<String>,
    probe_successes: u32,
    probe_failures: u32,
    pub ejections: u64,
}

/// A target's health as seen at one moment.
#[derive(Debug)]
pub struct Snapshot {
    pub detail: Detail,
    /// Failed requests in a row.
    pub failures: u32,
    /// How long an ejection still lasts.
    pub ejected_for: Option<Duration>,
    /// The ejection that ran out by then, if this look ended it.
    pub change: Option<Change>,
}

/// Milliseconds on a monotonic clock that starts at 1.
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64 + 1
}

impl Default for Health {
    fn default() -> Self {
        Health {
            ejected_until: AtomicU64::new(0),
            probed_down: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            detail: Mutex::new(Detail {
                state: State::Healthy,
                since: SystemTime::now(),
                reason: "configured".into(),
                last_probe: None,
                probe_successes: 0,
                probe_failures: 0,
                ejections: 0,
            }),
        }
    }
}

impl Health {
    /// Whether the target may take requests at `now` (see [`now_ms`]).
    pub fn available(&self, now: u64) -> bool {
        !self.probed_down.load(Ordering::Relaxed) && self.ejected_until.load(Ordering::Relaxed) <= now
    }

    /// When an unavailable target may be back: the end of its ejection, or
    /// `None` when that is up to the probes.
    pub fn back_at(&self) -> Option<u64> {
        if self.probed_down.load(Ordering::Relaxed) {
            None
        } else {
            Some(self.ejected_until.load(Ordering::Relaxed))
        }
    }

    /// A request's answer or failure: ends an ejection that has run out,
    /// and ejects the target after `failures` in a row (once back, one
    /// more failure ejects it again). Returns the changes, in order.
    pub fn record(&self, passive: Option<&Passive>, ok: bool, why: impl FnOnce() -> String) -> Vec<Change> {
        let mut changes = Vec::new();
        if self.ejected_until.load(Ordering::Relaxed) != 0 {
            changes.extend(self.end_ejection(now_ms()));
        }
        if ok {
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            return changes;
        }
        let Some(passive) = passive else {
            return changes;
        };
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < passive.failures {
            return changes;
        }
        let now = now_ms();
        let end = now + passive.eject.as_millis() as u64;
        // Only one of several failing requests at once ejects it.
        if self
            .ejected_until
            .compare_exchange(0, end, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return changes;
        }
        self.failures.store(passive.failures - 1, Ordering::Relaxed);
        let reason = format!("{failures} failures in a row, the last: {}", why());
        let mut detail = self.lock();
        detail.ejections += 1;
        changes.push(detail.change(State::Ejected, reason));
        changes
    }

    /// Ends an ejection that ran out by `now`, once.
    fn end_ejection(&self, now: u64) -> Option<Change> {
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until == 0
            || until > now
            || self
                .ejected_until
                .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        let mut detail = self.lock();
        if detail.state != State::Ejected {
            return None;
        }
        let state = if self.probed_down.load(Ordering::Relaxed) {
            State::Unhealthy
        } else {
            State::Healthy
        };
        let change = detail.change(state, "ejection over; back on trial".into());
        // It was over when its time ran out, not when someone noticed.
        detail.since = SystemTime::now() - Duration::from_millis(now - until);
        Some(change)
    }

    /// A probe's result: `Ok(status)` or `Err(why)`; success means a
    /// 2xx or 3xx answer.
    pub fn probed(&self, check: &HealthCheck, result: Result<u16, String>) -> Option<Change> {
        let ok = matches!(result, Ok(200..=399));
        let mut detail = self.lock();
        let text = match &result {
            Ok(status) => status.to_string(),
            Err(why) => why.clone(),
        };
        detail.last_probe = Some(text.clone());
        let down = self.probed_down.load(Ordering::Relaxed);
        if ok {
            detail.probe_failures = 0;
            detail.probe_successes = detail.probe_successes.saturating_add(1);
            if down && detail.probe_successes >= check.healthy_after {
                self.probed_down.store(false, Ordering::Relaxed);
                let reason = format!("{} probes in a row passed", detail.probe_successes);
                return Some(detail.change(State::Healthy, reason));
            }
        } else {
            detail.probe_successes = 0;
            detail.probe_failures = detail.probe_failures.saturating_add(1);
            if !down && detail.probe_failures >= check.unhealthy_after {
                self.probed_down.store(true, Ordering::Relaxed);
                let reason = format!(
                    "{} probes of {} in a row failed, the last: {text}",
                    detail.probe_failures, check.path
                );
                return Some(detail.change(State::Unhealthy, reason));
            }
        }
        None
    }

    /// The state at `now`, ending an ejection that has run out.
    pub fn snapshot(&self, now: u64) -> Snapshot {
        let change = self.end_ejection(now);
        let detail = self.lock().clone();
        let until = self.ejected_until.load(Ordering::Relaxed);
        Snapshot {
            ejected_for: (detail.state == State::Ejected && until > now).then(|| Duration::from_millis(until - now)),
            failures: self.failures.load(Ordering::Relaxed),
            detail,
            change,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Detail> {
        crate::sync::lock(&self.detail)
    }
}

impl Detail {
    fn change(&mut self, to: State, reason: String) -> Change {
        self.state = to;
        self.since = SystemTime::now();
        self.reason.clone_from(&reason);
        Change { to, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passive() -> Passive {
        Passive {
            failures: 3,
            eject: Duration::from_millis(50),
        }
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_count() {
        let health = Health::default();
        let p = passive();
        assert_eq!(health.record(Some(&p), false, || "503".into()), []);
        assert_eq!(health.record(Some(&p), false, || "503".into()), []);
        assert_eq!(health.record(Some(&p), true, String::new), []);
        assert_eq!(health.record(Some(&p), false, || "503".into()), []);
        assert_eq!(health.record(Some(&p), false, || "503".into()), []);
        let changes = health.record(Some(&p), false, || "503".into());
        let [change] = &changes[..] else {
            panic!("one change: {changes:?}")
        };
        assert_eq!(change.to, State::Ejected);
        assert!(
            change.reason.contains("3 failures in a row, the last: 503"),
            "{}",
            change.reason
        );
        let now = now_ms();
        assert!(!health.available(now));
        assert!(health.back_at().is_some_and(|t| t > now));
        // Once the ejection ran out, one failure is enough: the next
        // request ends the ejection, fails and ejects it again.
        assert!(health.available(now + 60));
        std::thread::sleep(Duration::from_millis(60));
        let states: Vec<State> = health
            .record(Some(&p), false, || "refused".into())
            .iter()
            .map(|c| c.to)
            .collect();
        assert_eq!(states, [State::Healthy, State::Ejected]);
        let seen = health.snapshot(now_ms());
        assert_eq!(
            (seen.detail.state, seen.failures, seen.detail.ejections),
            (State::Ejected, 2, 2)
        );
        assert!(seen.ejected_for.is_some_and(|d| d <= Duration::from_millis(50)));
        assert_eq!(seen.change, None);
        // Looking at it after the time ran out ends the ejection, once.
        let later = now_ms() + 60;
        let seen = health.snapshot(later);
        assert_eq!((seen.detail.state, seen.ejected_for), (State::Healthy, None));
        assert!(seen.change.is_some());
        assert_eq!(health.snapshot(later).change, None);
        assert_eq!(health.record(Some(&p), true, String::new), []);
        // Without passive settings, failures never eject.
        let other = Health::default();
        for _ in 0..10 {
            assert_eq!(other.record(None, false, String::new), []);
        }
        assert!(other.available(now_ms()));
    }

    #[test]
    fn probes_take_a_target_out_and_back_after_their_thresholds() {
        let health = Health::default();
        let check = HealthCheck {
            path: "/healthz".into(),
            grpc_service: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            unhealthy_after: 2,
            healthy_after: 2,
        };
        assert_eq!(health.probed(&check, Err("connection refused".into())), None);
        let down = health.probed(&check, Ok(500)).expect("down");
        assert_eq!(down.to, State::Unhealthy);
        assert!(!health.available(now_ms()));
        assert_eq!(health.back_at(), None);
        assert_eq!(health.probed(&check, Ok(204)), None);
        assert_eq!(health.probed(&check, Ok(200)).map(|c| c.to), Some(State::Healthy));
        assert!(health.available(now_ms()));
        let seen = health.snapshot(now_ms());
        assert_eq!(seen.detail.last_probe.as_deref(), Some("200"));
    }
}
