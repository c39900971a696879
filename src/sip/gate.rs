//! Who may talk to us, and how fast: the trunk allow list (`[sip] allow`, and per
//! organization), per-source token buckets on requests and on new calls, and concurrent
//! calls per source. Sans-IO: the driver holds one `Gate` and hands in `now`; the policy is
//! part of the configuration, so a reload changes it at once.
//!
//! Checked before a byte is parsed (allow list, request rate) so a flood from a stranger
//! costs a hash lookup; new calls are checked after routing (call rate, calls per source).

use crate::config::org::Cidr;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What a denied or rate-limited source gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Nothing at all (what a scanner should see: no sign of a SIP stack).
    Drop,
    /// An answer: 403 for a denied source, 503 with Retry-After for a rate limit.
    Reply,
}

/// A token bucket's shape: `per_sec` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: f64,
}

/// The access policy (from `[sip]`).
#[derive(Debug, Clone, PartialEq)]
pub struct AccessPolicy {
    /// Sources that may send SIP at all. Empty: anyone.
    pub allow: Vec<Cidr>,
    /// What a source outside `allow` (or an organization's `allow`) gets.
    pub denied: Action,
    /// Requests per source (every request, in a dialog or not). `None`: unlimited.
    pub requests: Option<Rate>,
    /// New calls (INVITEs that passed routing) per source. `None`: unlimited.
    pub calls: Option<Rate>,
    /// Concurrent calls per source; 0: only `max_calls` applies.
    pub max_calls_per_source: usize,
    /// What a source over a rate or call limit gets.
    pub limited: Action,
}

impl Default for AccessPolicy {
    fn default() -> Self {
        AccessPolicy {
            allow: Vec::new(),
            denied: Action::Drop,
            requests: None,
            calls: None,
            max_calls_per_source: 0,
            limited: Action::Reply,
        }
    }
}

impl AccessPolicy {
    /// May this source send SIP at all?
    pub fn allows(&self, src: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|c| c.contains(src))
    }
}

/// Why a message was turned away (the `reason` label of the rejections metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// The source is not in `[sip] allow`.
    NotAllowed,
    /// The source is not in the organization's `allow`.
    OrgNotAllowed,
    /// The source's request bucket is empty.
    RequestRate,
    /// The source's new-call bucket is empty.
    CallRate,
    /// The source has `max_calls_per_source` calls up.
    SourceCalls,
    /// Digest authentication failed or was missing (answered 401).
    Auth,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::NotAllowed => "not_allowed",
            Rejection::OrgNotAllowed => "org_not_allowed",
            Rejection::RequestRate => "request_rate",
            Rejection::CallRate => "call_rate",
            Rejection::SourceCalls => "source_calls",
            Rejection::Auth => "auth",
        }
    }

    /// The status a reply carries, when the policy says to reply.
    pub fn status(self) -> u16 {
        match self {
            Rejection::NotAllowed | Rejection::OrgNotAllowed => 403,
            Rejection::RequestRate | Rejection::CallRate | Rejection::SourceCalls => 503,
            Rejection::Auth => 401,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes one token if there is one (refilled for the time since the last look).
    fn take(&mut self, rate: Rate, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate.per_sec).min(rate.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Sources tracked at most; past this, buckets idle long enough to be full again are
/// forgotten (they would allow a burst anyway), so spoofed sources cannot grow memory.
const MAX_SOURCES: usize = 65_536;

/// The per-source state behind the policy.
#[derive(Debug, Default)]
pub struct Gate {
    requests: HashMap<IpAddr, Bucket>,
    calls: HashMap<IpAddr, Bucket>,
    active: HashMap<IpAddr, usize>,
}

fn take(map: &mut HashMap<IpAddr, Bucket>, rate: Rate, now: Instant, src: IpAddr) -> bool {
    if map.len() >= MAX_SOURCES && !map.contains_key(&src) {
        let full = Duration::from_secs_f64(rate.burst / rate.per_sec.max(f64::MIN_POSITIVE));
        map.retain(|_, b| now.saturating_duration_since(b.at) < full);
        if map.len() >= MAX_SOURCES {
            // Every source is busy: a new one waits (fail closed on the limit, not open).
            return false;
        }
    }
    map.entry(src)
        .or_insert(Bucket {
            tokens: rate.burst,
            at: now,
        })
        .take(rate, now)
}

impl Gate {
    /// Any SIP message from `src`, before it is parsed: the allow list, then the request
    /// rate.
    pub fn request(
        &mut self,
        policy: &AccessPolicy,
        now: Instant,
        src: IpAddr,
    ) -> Result<(), Rejection> {
        if !policy.allows(src) {
            return Err(Rejection::NotAllowed);
        }
        match policy.requests {
            Some(rate) if !take(&mut self.requests, rate, now, src) => Err(Rejection::RequestRate),
            _ => Ok(()),
        }
    }

    /// A routed INVITE that would become a call: calls up from this source, then the call
    /// rate. Admitting it is `call_started`'s job (so a refusal further on costs nothing).
    pub fn new_call(
        &mut self,
        policy: &AccessPolicy,
        now: Instant,
        src: IpAddr,
    ) -> Result<(), Rejection> {
        let up = self.active.get(&src).copied().unwrap_or(0);
        if policy.max_calls_per_source > 0 && up >= policy.max_calls_per_source {
            return Err(Rejection::SourceCalls);
        }
        match policy.calls {
            Some(rate) if !take(&mut self.calls, rate, now, src) => Err(Rejection::CallRate),
            _ => Ok(()),
        }
    }

    /// A call from `src` was admitted.
    pub fn call_started(&mut self, src: IpAddr) {
        *self.active.entry(src).or_insert(0) += 1;
    }

    /// A call from `src` ended.
    pub fn call_ended(&mut self, src: IpAddr) {
        if let Some(n) = self.active.get_mut(&src) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.active.remove(&src);
            }
        }
    }

    /// Calls up from `src`.
    pub fn calls_from(&self, src: IpAddr) -> usize {
        self.active.get(&src).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy() -> AccessPolicy {
        AccessPolicy {
            allow: vec!["127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()],
            requests: Some(Rate {
                per_sec: 10.0,
                burst: 5.0,
            }),
            calls: Some(Rate {
                per_sec: 1.0,
                burst: 2.0,
            }),
            max_calls_per_source: 3,
            ..AccessPolicy::default()
        }
    }

    #[test]
    fn strangers_are_refused_before_anything_else() {
        let mut g = Gate::default();
        let t0 = crate::testutil::epoch();
        let p = policy();
        assert_eq!(g.request(&p, t0, ip("127.0.0.1")), Ok(()));
        assert_eq!(g.request(&p, t0, ip("::1")), Ok(()));
        // An IPv4-mapped IPv6 source is its IPv4 address.
        assert_eq!(g.request(&p, t0, ip("::ffff:127.0.0.2")), Ok(()));
        for s in ["192.0.2.1", "10.0.0.1", "::2", "::ffff:192.0.2.1"] {
            assert_eq!(g.request(&p, t0, ip(s)), Err(Rejection::NotAllowed), "{s}");
        }
        // An empty list allows anyone.
        let open = AccessPolicy::default();
        assert_eq!(g.request(&open, t0, ip("192.0.2.1")), Ok(()));
    }

    #[test]
    fn request_bucket_refills_at_its_rate() {
        let mut g = Gate::default();
        let t0 = crate::testutil::epoch();
        let p = policy();
        let a = ip("127.0.0.1");
        for _ in 0..5 {
            assert_eq!(g.request(&p, t0, a), Ok(()));
        }
        assert_eq!(g.request(&p, t0, a), Err(Rejection::RequestRate));
        // Another source has its own bucket.
        assert_eq!(g.request(&p, t0, ip("127.0.0.2")), Ok(()));
        // 10/s: one token back after 100 ms, not before.
        let t = t0 + Duration::from_millis(90);
        assert_eq!(g.request(&p, t, a), Err(Rejection::RequestRate));
        let t = t0 + Duration::from_millis(200);
        assert_eq!(g.request(&p, t, a), Ok(()));
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(3600);
        let ok = (0..20).filter(|_| g.request(&p, later, a).is_ok()).count();
        assert_eq!(ok, 5);
    }

    #[test]
    fn new_calls_are_limited_by_rate_and_by_calls_up() {
        let mut g = Gate::default();
        let t0 = crate::testutil::epoch();
        let p = policy();
        let a = ip("127.0.0.1");
        assert_eq!(g.new_call(&p, t0, a), Ok(()));
        g.call_started(a);
        assert_eq!(g.new_call(&p, t0, a), Ok(()));
        g.call_started(a);
        assert_eq!(g.new_call(&p, t0, a), Err(Rejection::CallRate));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(g.new_call(&p, t1, a), Ok(()));
        g.call_started(a);
        assert_eq!(g.calls_from(a), 3);
        let t2 = t0 + Duration::from_secs(10);
        assert_eq!(g.new_call(&p, t2, a), Err(Rejection::SourceCalls));
        g.call_ended(a);
        assert_eq!(g.new_call(&p, t2, a), Ok(()));
        for _ in 0..5 {
            g.call_ended(a);
        }
        assert_eq!(g.calls_from(a), 0);
    }

    #[test]
    fn spoofed_sources_do_not_grow_memory_without_bound() {
        let mut g = Gate::default();
        let t0 = crate::testutil::epoch();
        let p = AccessPolicy {
            requests: Some(Rate {
                per_sec: 1.0,
                burst: 1.0,
            }),
            ..AccessPolicy::default()
        };
        for i in 0..(MAX_SOURCES as u32 + 10) {
            let _ = g.request(&p, t0, IpAddr::from(i.to_be_bytes()));
        }
        assert!(g.requests.len() <= MAX_SOURCES);
        // Once they have been idle long enough to be full again, room is made.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(g.request(&p, later, ip("198.51.100.7")), Ok(()));
        assert!(g.requests.len() < 10);
    }
}
