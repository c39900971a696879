//! Non-INVITE client transaction (RFC 3261 §17.1.2): our BYE (and later REFER, UPDATE).
//! Timer E retransmits over UDP only, Timer F gives up, Timer K absorbs late responses.

use super::{Timer, TimerValues};
use bytes::Bytes;
use std::time::{Duration, Instant};

#[derive(Debug)]
enum State {
    /// Trying/Proceeding: retransmit (UDP) until a final response or Timer F.
    Calling {
        next_e: Option<Instant>,
        interval: Duration,
        f: Instant,
        provisional: bool,
    },
    Completed {
        k: Instant,
    },
    Terminated,
}

/// What the transaction reports to its owner.
#[derive(Debug, PartialEq, Eq)]
pub enum NictEvent {
    /// Send the request again.
    Retransmit(Bytes),
    /// Timer F fired: no final response (treated as 408, §8.1.3.1).
    Timeout,
}

/// One non-INVITE client transaction.
#[derive(Debug)]
pub struct NonInviteClient {
    branch: String,
    request: Bytes,
    reliable: bool,
    timers: TimerValues,
    state: State,
}

impl NonInviteClient {
    /// Starts the transaction; the caller sends `request` now.
    pub fn new(
        now: Instant,
        branch: String,
        request: Bytes,
        reliable: bool,
        timers: TimerValues,
    ) -> Self {
        NonInviteClient {
            branch,
            request,
            reliable,
            state: State::Calling {
                next_e: (!reliable).then(|| now + timers.t1),
                interval: timers.t1,
                f: now + timers.t1x64(),
                provisional: false,
            },
            timers,
        }
    }

    pub fn branch(&self) -> &str {
        &self.branch
    }

    pub fn request(&self) -> &Bytes {
        &self.request
    }

    /// A response with our branch arrived. Returns the status code the first time a final
    /// response is seen (retransmitted finals are absorbed).
    pub fn on_response(&mut self, now: Instant, code: u16) -> Option<u16> {
        match &mut self.state {
            State::Calling {
                provisional,
                next_e,
                ..
            } => {
                if code < 200 {
                    // Proceeding: E continues at T2 (§17.1.2.2).
                    if !*provisional {
                        *provisional = true;
                        if next_e.is_some() {
                            *next_e = Some(now + self.timers.t2);
                        }
                    }
                    return None;
                }
                let k = if self.reliable {
                    now
                } else {
                    now + self.timers.t4
                };
                self.state = State::Completed { k };
                Some(code)
            }
            _ => None,
        }
    }

    pub fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        match &self.state {
            State::Calling { next_e, f, .. } => match next_e {
                Some(e) if e < f => Some((*e, Timer::E)),
                _ => Some((*f, Timer::F)),
            },
            State::Completed { k } => Some((*k, Timer::K)),
            State::Terminated => None,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Option<NictEvent> {
        let t2 = self.timers.t2;
        match &mut self.state {
            State::Calling {
                next_e,
                interval,
                f,
                provisional,
            } => {
                if now >= *f {
                    self.state = State::Terminated;
                    return Some(NictEvent::Timeout);
                }
                match *next_e {
                    Some(e) if now >= e => {
                        *interval = if *provisional {
                            t2
                        } else {
                            (*interval * 2).min(t2)
                        };
                        *next_e = Some(now + *interval);
                        Some(NictEvent::Retransmit(self.request.clone()))
                    }
                    _ => None,
                }
            }
            State::Completed { k } => {
                if now >= *k {
                    self.state = State::Terminated;
                }
                None
            }
            State::Terminated => None,
        }
    }

    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_to_end(tx: &mut NonInviteClient) -> (Vec<(Duration, Timer)>, Instant) {
        let mut fired = vec![];
        let start = match tx.poll_timeout() {
            Some((at, _)) => at - tx.timers.t1,
            None => unreachable!(),
        };
        while let Some((at, which)) = tx.poll_timeout() {
            fired.push((at - start, which));
            if tx.handle_timeout(at) == Some(NictEvent::Timeout) {
                return (fired, at);
            }
        }
        (fired, start)
    }

    #[test]
    fn udp_timer_e_doubles_to_t2_and_f_times_out() {
        let t = TimerValues::default();
        let t0 = crate::testutil::epoch();
        let mut tx = NonInviteClient::new(t0, "b".into(), Bytes::from_static(b"BYE"), false, t);
        let (fired, end) = run_to_end(&mut tx);
        assert_eq!(end - t0, t.t1x64());
        let e: Vec<u128> = fired
            .iter()
            .filter(|(_, w)| *w == Timer::E)
            .map(|(d, _)| d.as_millis())
            .collect();
        assert_eq!(&e[..5], &[500, 1500, 3500, 7500, 11500]);
        assert!(tx.is_terminated());
    }

    #[test]
    fn tcp_never_retransmits() {
        let t = TimerValues::default();
        let t0 = crate::testutil::epoch();
        let mut tx = NonInviteClient::new(t0, "b".into(), Bytes::from_static(b"BYE"), true, t);
        assert_eq!(tx.poll_timeout(), Some((t0 + t.t1x64(), Timer::F)));
        assert_eq!(tx.handle_timeout(t0 + t.t1x64()), Some(NictEvent::Timeout));
    }

    #[test]
    fn final_response_completes_then_k_absorbs_duplicates() {
        let t = TimerValues::default();
        let t0 = crate::testutil::epoch();
        let mut tx = NonInviteClient::new(t0, "b".into(), Bytes::from_static(b"BYE"), false, t);
        assert_eq!(tx.on_response(t0, 100), None);
        assert_eq!(tx.on_response(t0, 200), Some(200));
        assert_eq!(tx.on_response(t0, 200), None, "retransmitted 200 absorbed");
        assert_eq!(tx.poll_timeout(), Some((t0 + t.t4, Timer::K)));
        tx.handle_timeout(t0 + t.t4);
        assert!(tx.is_terminated());
    }

    #[test]
    fn provisional_moves_timer_e_to_t2() {
        let t = TimerValues::default();
        let t0 = crate::testutil::epoch();
        let mut tx = NonInviteClient::new(t0, "b".into(), Bytes::from_static(b"BYE"), false, t);
        tx.on_response(t0 + Duration::from_millis(100), 180);
        assert_eq!(
            tx.poll_timeout(),
            Some((t0 + Duration::from_millis(100) + t.t2, Timer::E))
        );
    }
}
