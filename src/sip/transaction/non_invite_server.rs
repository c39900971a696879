//! Non-INVITE server transaction (RFC 3261 §17.2.2): absorbs request retransmissions by
//! replaying the last response until Timer J.

use super::{Timer, TimerValues};
use bytes::Bytes;
use std::time::Instant;

/// One non-INVITE server transaction, keyed by (branch, method) by its owner.
#[derive(Debug)]
pub struct NonInviteServer {
    branch: String,
    method: String,
    last: Option<Bytes>,
    /// Timer J: set once a final response was sent.
    j: Option<Instant>,
    done: bool,
}

impl NonInviteServer {
    pub fn new(branch: &str, method: &str) -> Self {
        NonInviteServer {
            branch: branch.to_string(),
            method: method.to_string(),
            last: None,
            j: None,
            done: false,
        }
    }

    /// Does this request belong to this transaction (§17.2.3)?
    pub fn matches(&self, branch: &str, method: &str) -> bool {
        self.branch == branch && self.method == method
    }

    /// Records the final response and starts Timer J (64*T1 on UDP, zero on TCP).
    pub fn respond(
        &mut self,
        now: Instant,
        resp: Bytes,
        reliable: bool,
        timers: &TimerValues,
    ) -> Bytes {
        self.last = Some(resp.clone());
        self.j = Some(if reliable { now } else { now + timers.t1x64() });
        resp
    }

    /// A retransmission arrived: replay the last response.
    pub fn on_retransmission(&self) -> Option<Bytes> {
        self.last.clone()
    }

    pub fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        if self.done {
            return None;
        }
        self.j.map(|j| (j, Timer::J))
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.j.is_some_and(|j| now >= j) {
            self.done = true;
        }
    }

    pub fn is_terminated(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_until_timer_j_then_terminates() {
        let t = TimerValues::default();
        let t0 = crate::testutil::epoch();
        let mut tx = NonInviteServer::new("z9hG4bKb", "BYE");
        assert!(tx.matches("z9hG4bKb", "BYE"));
        assert!(!tx.matches("z9hG4bKb", "INFO"));
        tx.respond(t0, Bytes::from_static(b"200"), false, &t);
        assert_eq!(tx.on_retransmission(), Some(Bytes::from_static(b"200")));
        assert_eq!(tx.poll_timeout(), Some((t0 + t.t1x64(), Timer::J)));
        tx.handle_timeout(t0 + t.t1x64());
        assert!(tx.is_terminated());
        assert_eq!(tx.poll_timeout(), None);
    }

    #[test]
    fn tcp_timer_j_is_zero() {
        let t = TimerValues::default();
        let t0 = crate::testutil::epoch();
        let mut tx = NonInviteServer::new("b", "OPTIONS");
        tx.respond(t0, Bytes::from_static(b"200"), true, &t);
        assert_eq!(tx.poll_timeout(), Some((t0, Timer::J)));
    }
}
