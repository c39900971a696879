//! RFC 4028 session timer for the UAS side: who refreshes, when to refresh, when the
//! session expires without a refresh.
// call/mod.rs allows these until its own sweep (TODO(lint)); this module is already clean.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, Instant};

/// Who sends the refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// We do (refresher=uas): an UPDATE at half the interval (§10).
    Us,
    /// The PBX does (refresher=uac): we only watch for expiry.
    Peer,
}

/// What the timer asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Refresh,
    Expired,
}

/// One negotiated session interval.
#[derive(Debug, Clone)]
pub struct SessionTimer {
    interval: Duration,
    refresher: Refresher,
    deadline: Instant,
}

impl SessionTimer {
    pub fn new(now: Instant, secs: u32, refresher: Refresher) -> Self {
        let interval = Duration::from_secs(secs as u64);
        SessionTimer {
            interval,
            refresher,
            deadline: now + Self::wait(interval, refresher),
        }
    }

    fn wait(interval: Duration, refresher: Refresher) -> Duration {
        match refresher {
            Refresher::Us => interval / 2,
            // §10: BYE at interval - min(32 s, interval / 3) without a refresh.
            Refresher::Peer => interval - Duration::from_secs(32).min(interval / 3),
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Option<Action> {
        if now < self.deadline {
            return None;
        }
        match self.refresher {
            Refresher::Us => {
                self.deadline = now + Self::wait(self.interval, Refresher::Us);
                Some(Action::Refresh)
            }
            Refresher::Peer => Some(Action::Expired),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_refresher_expires_before_the_interval() {
        let t0 = crate::testutil::epoch();
        let mut st = SessionTimer::new(t0, 90, Refresher::Peer);
        assert_eq!(st.deadline(), t0 + Duration::from_secs(60));
        assert_eq!(st.handle_timeout(t0 + Duration::from_secs(59)), None);
        assert_eq!(
            st.handle_timeout(t0 + Duration::from_secs(60)),
            Some(Action::Expired)
        );
        let st = SessionTimer::new(t0, 1800, Refresher::Peer);
        assert_eq!(st.deadline(), t0 + Duration::from_secs(1768));
    }

    #[test]
    fn we_refresh_at_half_interval_repeatedly() {
        let t0 = crate::testutil::epoch();
        let mut st = SessionTimer::new(t0, 600, Refresher::Us);
        assert_eq!(
            st.handle_timeout(t0 + Duration::from_secs(300)),
            Some(Action::Refresh)
        );
        assert_eq!(st.deadline(), t0 + Duration::from_secs(600));
    }
}
