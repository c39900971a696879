//! Lockout across calls: after `failures` wrong PINs within `window` for the same caller
//! number — or for the same CRM contact — callers go straight to the failure extension for
//! `cooldown`. Counters expire.
//!
//! Trade-off: a lockout keyed only on the (spoofable) calling number lets an attacker lock
//! a real customer out by failing on purpose from their number; one keyed only on the
//! contact does not slow down guessing across a contact's several numbers. Both keys are
//! kept: the damage of a malicious lockout is bounded (the caller reaches a human at the
//! failure extension, never the success one) and expires after the cool-down.
//!
//! Sans-IO: every call takes `now`; the drivers share one table behind a mutex (touched a
//! few times per call, never per packet).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Lockout settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub failures: usize,
    pub window: Duration,
    pub cooldown: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            failures: 5,
            window: Duration::from_secs(15 * 60),
            cooldown: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Debug, Default)]
struct Entry {
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

/// The lockout table (keys are organization-scoped caller numbers and contact ids).
#[derive(Debug, Default)]
pub struct Lockout {
    policy: LockoutPolicy,
    entries: HashMap<String, Entry>,
}

/// The key of a caller number in an organization.
pub fn number_key(org: &str, e164: &str) -> String {
    format!("{org}/number/{e164}")
}

/// The key of a CRM contact in an organization.
pub fn contact_key(org: &str, id: &str) -> String {
    format!("{org}/contact/{id}")
}

impl Lockout {
    pub fn new(policy: LockoutPolicy) -> Self {
        Lockout {
            policy,
            entries: HashMap::new(),
        }
    }

    /// Is this key locked out now?
    pub fn is_locked(&mut self, now: Instant, key: &str) -> bool {
        let Some(e) = self.entries.get_mut(key) else {
            return false;
        };
        match e.locked_until {
            Some(t) if now < t => true,
            Some(_) => {
                self.entries.remove(key);
                false
            }
            None => false,
        }
    }

    /// A wrong PIN for these keys.
    pub fn record_failure(&mut self, now: Instant, keys: &[String]) {
        for key in keys {
            let e = self.entries.entry(key.clone()).or_default();
            while e
                .failures
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= self.policy.window)
            {
                e.failures.pop_front();
            }
            e.failures.push_back(now);
            if e.failures.len() >= self.policy.failures {
                e.locked_until = Some(now + self.policy.cooldown);
                e.failures.clear();
            }
        }
        self.prune(now);
    }

    /// A verified PIN clears the counters of its keys.
    pub fn record_success(&mut self, keys: &[String]) {
        for key in keys {
            self.entries.remove(key);
        }
    }

    fn prune(&mut self, now: Instant) {
        if self.entries.len() < 10_000 {
            return;
        }
        let window = self.policy.window;
        self.entries.retain(|_, e| {
            e.locked_until.is_some_and(|t| now < t)
                || e.failures
                    .back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < window)
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many keys (numbers and contacts) are locked out at `now`.
    pub fn locked_count(&self, now: Instant) -> usize {
        self.entries
            .values()
            .filter(|e| e.locked_until.is_some_and(|t| now < t))
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_n_failures_in_the_window_and_expires() {
        let t0 = crate::testutil::epoch();
        let p = LockoutPolicy {
            failures: 3,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(300),
        };
        let mut l = Lockout::new(p);
        let k = vec![number_key("o", "+15551234567")];
        l.record_failure(t0, &k);
        l.record_failure(t0 + Duration::from_secs(10), &k);
        assert!(!l.is_locked(t0 + Duration::from_secs(11), &k[0]));
        // The first failure has left the window: still two.
        l.record_failure(t0 + Duration::from_secs(65), &k);
        assert!(!l.is_locked(t0 + Duration::from_secs(66), &k[0]));
        l.record_failure(t0 + Duration::from_secs(66), &k);
        assert!(l.is_locked(t0 + Duration::from_secs(67), &k[0]));
        assert!(l.is_locked(t0 + Duration::from_secs(365), &k[0]));
        assert!(
            !l.is_locked(t0 + Duration::from_secs(367), &k[0]),
            "cool-down over"
        );
        assert!(l.is_empty(), "expired entries go");
    }

    #[test]
    fn success_clears_and_keys_are_independent() {
        let t0 = crate::testutil::epoch();
        let mut l = Lockout::new(LockoutPolicy {
            failures: 2,
            ..Default::default()
        });
        let num = number_key("o", "+15551234567");
        let contact = contact_key("o", "c-1");
        l.record_failure(t0, &[num.clone(), contact.clone()]);
        l.record_success(std::slice::from_ref(&num));
        l.record_failure(t0, std::slice::from_ref(&contact));
        assert!(l.is_locked(t0, &contact));
        assert!(!l.is_locked(t0, &num));
        assert!(!l.is_locked(t0, &number_key("other", "+15551234567")));
    }
}
