//! INVITE server transaction (RFC 3261 §17.2.1, RFC 6026 §7.1 Accepted state) together with
//! the UAS core's 2xx retransmission until ACK (§13.3.1.4), which lives here because it
//! has the same shape and the same owner.

use super::{Timer, TimerValues};
use bytes::Bytes;
use std::time::{Duration, Instant};

#[derive(Debug)]
enum State {
    /// 100/18x sent; waiting for the TU's final response.
    Proceeding {
        last: Option<Bytes>,
    },
    /// 2xx sent: retransmit it until the ACK (dialog-level) arrives or 64*T1 passes.
    Accepted {
        resp: Bytes,
        next: Option<Instant>,
        interval: Duration,
        give_up: Instant,
        end: Instant,
    },
    /// Non-2xx final sent: Timer G retransmits, Timer H waits for the ACK.
    Completed {
        resp: Bytes,
        next: Option<Instant>,
        interval: Duration,
        h: Instant,
    },
    /// ACK received for a non-2xx: absorb ACK retransmissions until Timer I.
    Confirmed {
        i: Instant,
    },
    Terminated,
}

/// What a timeout produced.
#[derive(Debug, PartialEq, Eq)]
pub enum IstEvent {
    /// Send these bytes again.
    Retransmit(Bytes),
    /// The 2xx was never ACKed (§13.3.1.4): the call must send BYE.
    AckTimeout2xx,
    /// The non-2xx was never ACKed (Timer H).
    AckTimeoutNon2xx,
}

/// One INVITE server transaction.
#[derive(Debug)]
pub struct InviteServer {
    branch: String,
    reliable: bool,
    timers: TimerValues,
    state: State,
}

impl InviteServer {
    pub fn new(branch: String, reliable: bool, timers: TimerValues) -> Self {
        InviteServer {
            branch,
            reliable,
            timers,
            state: State::Proceeding { last: None },
        }
    }

    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// Records a provisional response; returns it for sending.
    pub fn provisional(&mut self, resp: Bytes) -> Bytes {
        if let State::Proceeding { last } = &mut self.state {
            *last = Some(resp.clone());
        }
        resp
    }

    /// Is a final response still allowed (Proceeding)?
    pub fn is_proceeding(&self) -> bool {
        matches!(self.state, State::Proceeding { .. })
    }

    /// Waiting for the ACK of our 2xx?
    pub fn awaiting_2xx_ack(&self) -> bool {
        matches!(self.state, State::Accepted { next: Some(_), .. })
    }

    /// Records the final response and starts its timers; returns it for sending.
    pub fn final_response(&mut self, now: Instant, code: u16, resp: Bytes) -> Bytes {
        let t = self.timers;
        self.state = if (200..300).contains(&code) {
            // 2xx retransmission is end-to-end (§13.3.1.4), so it runs on TCP too.
            State::Accepted {
                resp: resp.clone(),
                next: Some(now + t.t1),
                interval: t.t1,
                give_up: now + t.t1x64(),
                end: now + t.t1x64(),
            }
        } else {
            State::Completed {
                resp: resp.clone(),
                next: (!self.reliable).then(|| now + t.t1),
                interval: t.t1,
                h: now + t.t1x64(),
            }
        };
        resp
    }

    /// A retransmitted INVITE arrived: the bytes to send again, if any (§17.2.1).
    pub fn on_retransmission(&self) -> Option<Bytes> {
        match &self.state {
            State::Proceeding { last } => last.clone(),
            State::Accepted { resp, next, .. } => next.is_some().then(|| resp.clone()),
            State::Completed { resp, .. } => Some(resp.clone()),
            _ => None,
        }
    }

    /// An ACK for the non-2xx final (same branch) arrived.
    pub fn on_ack_non2xx(&mut self, now: Instant) {
        if let State::Completed { .. } = self.state {
            let i = if self.reliable {
                now
            } else {
                now + self.timers.t4
            };
            self.state = State::Confirmed { i };
        }
    }

    /// The dialog saw the ACK for our 2xx: stop retransmitting (stay Accepted until L).
    pub fn on_ack_2xx(&mut self) {
        if let State::Accepted { next, .. } = &mut self.state {
            *next = None;
        }
    }

    /// Nothing left to retransmit or wait for an ACK on: the owner may go away.
    pub fn is_quiet(&self) -> bool {
        matches!(
            self.state,
            State::Terminated | State::Confirmed { .. } | State::Accepted { next: None, .. }
        )
    }

    pub fn is_terminated(&self) -> bool {
        matches!(self.state, State::Terminated)
    }

    /// The earliest timer and which one it is.
    pub fn poll_timeout(&self) -> Option<(Instant, Timer)> {
        match &self.state {
            State::Proceeding { .. } | State::Terminated => None,
            State::Accepted {
                next, give_up, end, ..
            } => match next {
                Some(n) if n <= give_up => Some((*n, Timer::Retransmit2xx)),
                Some(_) => Some((*give_up, Timer::AckTimeout2xx)),
                None => Some((*end, Timer::L)),
            },
            State::Completed { next, h, .. } => match next {
                Some(n) if n < h => Some((*n, Timer::G)),
                _ => Some((*h, Timer::H)),
            },
            State::Confirmed { i } => Some((*i, Timer::I)),
        }
    }

    /// Fires whatever timers are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<IstEvent> {
        let t2 = self.timers.t2;
        match &mut self.state {
            State::Accepted {
                resp,
                next,
                interval,
                give_up,
                end,
            } => {
                if let Some(n) = *next {
                    if now >= *give_up {
                        *next = None;
                        *end = now;
                        self.state = State::Terminated;
                        return Some(IstEvent::AckTimeout2xx);
                    }
                    if now >= n {
                        *interval = (*interval * 2).min(t2);
                        *next = Some(now + *interval);
                        return Some(IstEvent::Retransmit(resp.clone()));
                    }
                } else if now >= *end {
                    self.state = State::Terminated;
                }
                None
            }
            State::Completed {
                resp,
                next,
                interval,
                h,
            } => {
                if now >= *h {
                    self.state = State::Terminated;
                    return Some(IstEvent::AckTimeoutNon2xx);
                }
                match *next {
                    Some(n) if now >= n => {
                        *interval = (*interval * 2).min(t2);
                        *next = Some(now + *interval);
                        Some(IstEvent::Retransmit(resp.clone()))
                    }
                    _ => None,
                }
            }
            State::Confirmed { i } => {
                if now >= *i {
                    self.state = State::Terminated;
                }
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ist(reliable: bool) -> (InviteServer, Instant, TimerValues) {
        let t = TimerValues::default();
        (
            InviteServer::new("z9hG4bK1".into(), reliable, t),
            crate::testutil::epoch(),
            t,
        )
    }

    #[test]
    fn lost_ack_retransmits_2xx_doubling_to_t2_then_gives_up() {
        let (mut tx, t0, t) = ist(false);
        let ok = Bytes::from_static(b"200");
        tx.final_response(t0, 200, ok.clone());
        let mut sends = vec![];
        let now = loop {
            let (at, _) = tx.poll_timeout().unwrap();
            let now = at;
            match tx.handle_timeout(now) {
                Some(IstEvent::Retransmit(b)) => {
                    assert_eq!(b, ok);
                    sends.push(now - t0);
                }
                Some(IstEvent::AckTimeout2xx) => break now,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(now - t0, t.t1x64(), "Timer H-equivalent at 64*T1");
        let ms: Vec<u128> = sends.iter().map(|d| d.as_millis()).collect();
        assert_eq!(&ms[..5], &[500, 1500, 3500, 7500, 11500]);
        assert!(ms.windows(2).all(|w| w[1] - w[0] <= 4000));
        assert!(tx.is_terminated());
    }

    #[test]
    fn ack_stops_2xx_retransmission_and_timer_l_ends() {
        let (mut tx, t0, t) = ist(false);
        tx.final_response(t0, 200, Bytes::from_static(b"200"));
        assert!(tx.awaiting_2xx_ack());
        tx.on_ack_2xx();
        assert!(!tx.awaiting_2xx_ack());
        assert_eq!(tx.poll_timeout(), Some((t0 + t.t1x64(), Timer::L)));
        assert_eq!(tx.on_retransmission(), None, "absorbed after ACK");
        assert_eq!(tx.handle_timeout(t0 + t.t1x64()), None);
        assert!(tx.is_terminated());
    }

    #[test]
    fn retransmitted_invite_gets_last_response() {
        let (mut tx, t0, _) = ist(false);
        assert_eq!(tx.on_retransmission(), None);
        tx.provisional(Bytes::from_static(b"100"));
        assert_eq!(tx.on_retransmission(), Some(Bytes::from_static(b"100")));
        tx.final_response(t0, 487, Bytes::from_static(b"487"));
        assert_eq!(tx.on_retransmission(), Some(Bytes::from_static(b"487")));
    }

    #[test]
    fn non2xx_timer_g_then_h_without_ack() {
        let (mut tx, t0, t) = ist(false);
        tx.final_response(t0, 487, Bytes::from_static(b"487"));
        assert_eq!(tx.poll_timeout(), Some((t0 + t.t1, Timer::G)));
        let mut g = 0;
        loop {
            let (at, which) = tx.poll_timeout().unwrap();
            match tx.handle_timeout(at) {
                Some(IstEvent::Retransmit(_)) => {
                    assert_eq!(which, Timer::G);
                    g += 1
                }
                Some(IstEvent::AckTimeoutNon2xx) => {
                    assert_eq!(which, Timer::H);
                    assert_eq!(at, t0 + t.t1x64());
                    break;
                }
                e => panic!("{e:?}"),
            }
        }
        assert!(g >= 8);
    }

    #[test]
    fn non2xx_ack_confirms_then_timer_i() {
        let (mut tx, t0, t) = ist(false);
        tx.final_response(t0, 488, Bytes::from_static(b"488"));
        tx.on_ack_non2xx(t0 + Duration::from_millis(10));
        assert_eq!(
            tx.poll_timeout(),
            Some((t0 + Duration::from_millis(10) + t.t4, Timer::I))
        );
        tx.handle_timeout(t0 + Duration::from_secs(6));
        assert!(tx.is_terminated());
    }

    #[test]
    fn tcp_has_no_timer_g() {
        let (mut tx, t0, t) = ist(true);
        tx.final_response(t0, 486, Bytes::from_static(b"486"));
        assert_eq!(tx.poll_timeout(), Some((t0 + t.t1x64(), Timer::H)));
    }
}
