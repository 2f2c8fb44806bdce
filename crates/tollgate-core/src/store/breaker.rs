//! A circuit breaker for a shared store. After `failure_threshold` failures in a row, calls
//! are refused at once for `open_for`, so a dead store costs nothing per request; then one
//! call is let through as a probe. Its success closes the circuit; its failure (or its
//! silence: a probe that never reports) opens it for another `open_for`.
//!
//! Pure and lock-free: the caller passes the time, state lives in two atomics.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::time::{Nanos, SECOND};

/// When a [`CircuitBreaker`] opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long an open circuit refuses calls before it lets a probe through.
    pub open_for: Nanos,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: SECOND / 4,
        }
    }
}

/// What the breaker says about one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The circuit is closed: call.
    Call,
    /// The circuit is open but due for a probe: this call is it.
    Probe,
    /// The circuit is open: do not call.
    Refuse,
}

/// The state reported to operators (`/readyz`, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the next probe.
    Open,
}

/// See the module docs.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
    failures: AtomicU32,
    /// 0 while closed; otherwise the time from which the next probe may go.
    open_until: AtomicU64,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self {
            config,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
        }
    }

    /// Whether a call may go to the store at `now`.
    pub fn admit(&self, now: Nanos) -> Admission {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Admission::Call;
        }
        if now < until {
            return Admission::Refuse;
        }
        // One caller wins the probe; the window it reserves also covers a probe that is
        // dropped before it reports.
        let next = now.saturating_add(self.config.open_for.max(1));
        match self
            .open_until
            .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Admission::Probe,
            Err(_) => Admission::Refuse,
        }
    }

    /// The store answered.
    pub fn on_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.open_until.load(Ordering::Relaxed) != 0 {
            self.open_until.store(0, Ordering::Release);
        }
    }

    /// The store failed or timed out at `now`.
    pub fn on_failure(&self, now: Nanos) {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let open = self.open_until.load(Ordering::Acquire) != 0;
        if open || failures >= self.config.failure_threshold {
            let next = now.saturating_add(self.config.open_for.max(1));
            self.open_until.store(next, Ordering::Release);
        }
    }

    /// Closed or open, for operators.
    pub fn state(&self) -> CircuitState {
        if self.open_until.load(Ordering::Acquire) == 0 {
            CircuitState::Closed
        } else {
            CircuitState::Open
        }
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::new(CircuitBreakerConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(CircuitBreakerConfig {
            failure_threshold: 3,
            open_for: 100,
        })
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker();
        b.on_failure(1);
        b.on_failure(2);
        b.on_success();
        b.on_failure(3);
        b.on_failure(4);
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.admit(5), Admission::Call);
        b.on_failure(5);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.admit(6), Admission::Refuse);
        assert_eq!(b.admit(104), Admission::Refuse);
    }

    #[test]
    fn one_probe_at_a_time_and_its_answer_decides() {
        let b = breaker();
        for t in 0..3 {
            b.on_failure(t);
        }
        assert_eq!(b.admit(102), Admission::Probe);
        assert_eq!(
            b.admit(103),
            Admission::Refuse,
            "a second probe while one is out"
        );
        b.on_failure(110);
        assert_eq!(b.admit(150), Admission::Refuse);
        assert_eq!(b.admit(210), Admission::Probe);
        b.on_success();
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.admit(211), Admission::Call);
        b.on_failure(212);
        assert_eq!(b.state(), CircuitState::Closed, "the count restarted");
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced() {
        let b = breaker();
        for t in 0..3 {
            b.on_failure(t);
        }
        assert_eq!(b.admit(102), Admission::Probe);
        assert_eq!(b.admit(201), Admission::Refuse);
        assert_eq!(b.admit(202), Admission::Probe);
    }
}
