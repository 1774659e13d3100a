//! When a request may go to another target: idempotent methods, a copy of
//! the head for the next attempt, and the retry budget.

use super::*;

/// Methods a client may repeat without changing the outcome (RFC 9110 9.2.2).
pub(super) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

pub(super) fn empty_head() -> http::request::Parts {
    http::Request::new(()).into_parts().0
}

/// A copy of a request head for another attempt, without its extensions
/// (the client connection's, of no use upstream, and each a boxed clone).
pub(super) fn clone_head(parts: &http::request::Parts) -> http::request::Parts {
    let mut request = http::Request::new(());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request.into_parts().0
}

/// Retries allowed as a share of requests (`budget_percent`), plus
/// `min_per_second` whatever the traffic: a token bucket in thousandths,
/// filled by each request and by time, emptied by each retry.
#[derive(Debug)]
pub(super) struct RetryBudget {
    pub(super) per_request: u64,
    pub(super) per_second: u64,
    pub(super) cap: u64,
    pub(super) state: Mutex<(u64, std::time::Instant)>,
}

impl RetryBudget {
    pub(super) fn new(percent: u32, min_per_second: u32) -> Self {
        let per_second = u64::from(min_per_second) * 1000;
        RetryBudget {
            per_request: u64::from(percent) * 10,
            per_second,
            cap: per_second.max(10_000),
            state: Mutex::new((per_second, std::time::Instant::now())),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, (u64, std::time::Instant)> {
        crate::sync::lock(&self.state)
    }

    pub(super) fn deposit(&self) {
        let mut state = self.lock();
        state.0 = (state.0 + self.per_request).min(self.cap);
    }

    pub(super) fn withdraw(&self) -> bool {
        let mut state = self.lock();
        let now = std::time::Instant::now();
        let earned = (now - state.1).as_millis() as u64 * self.per_second / 1000;
        if earned > 0 {
            state.0 = (state.0 + earned).min(self.cap);
            state.1 = now;
        }
        if state.0 >= 1000 {
            state.0 -= 1000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_budget_is_a_share_of_requests() {
        let budget = RetryBudget::new(20, 0);
        let mut allowed = 0;
        for _ in 0..100 {
            budget.deposit();
            if budget.withdraw() {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 20);
        let floor = RetryBudget::new(0, 5);
        let first: usize = (0..10).filter(|_| floor.withdraw()).count();
        assert_eq!(first, 5, "a second's worth to start with");
    }
}
