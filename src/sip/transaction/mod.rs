//! RFC 3261 §17 transactions as small sans-IO state machines, with RFC 6026's "Accepted"
//! state for INVITE 2xx. Each kind lives in its own file; all share the timer table here.
//! None of them reads a clock: every method takes `now`, every timer is an `Instant` the
//! owner asks for with `poll_timeout`.

mod invite_server;
mod non_invite_client;
mod non_invite_server;

pub use invite_server::{InviteServer, IstEvent};
pub use non_invite_client::{NictEvent, NonInviteClient};
pub use non_invite_server::NonInviteServer;

use std::time::Duration;

/// Base timer values (RFC 3261 §17.1.1.1 and Table 4). Configurable so tests and lossy
/// links can tune them; defaults are the RFC's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerValues {
    /// RTT estimate, 500 ms.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, 5 s.
    pub t4: Duration,
}

impl Default for TimerValues {
    fn default() -> Self {
        TimerValues {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerValues {
    /// 64*T1: Timers B, F, H, J and L.
    pub fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
}

/// The named transaction timers. Each names the RFC section that defines it; `poll_timeout`
/// answers say which one is due, so a log can tell why a call woke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// §17.1.2.2: non-INVITE client request retransmit (T1 doubling, capped at T2).
    E,
    /// §17.1.2.2: non-INVITE client transaction timeout (64*T1).
    F,
    /// §17.2.1: INVITE final non-2xx response retransmit (T1 doubling, capped at T2).
    G,
    /// §17.2.1: wait for ACK to a non-2xx final response (64*T1).
    H,
    /// §17.2.1: absorb ACK retransmissions after Confirmed (T4, 0 on TCP).
    I,
    /// §17.2.2: non-INVITE server absorbs request retransmissions (64*T1, 0 on TCP).
    J,
    /// §17.1.2.2: non-INVITE client absorbs response retransmissions (T4, 0 on TCP).
    K,
    /// RFC 6026 §7.1: INVITE server stays Accepted to absorb INVITE retransmissions (64*T1).
    L,
    /// §13.3.1.4: 2xx retransmit until ACK (T1 doubling, capped at T2).
    Retransmit2xx,
    /// §13.3.1.4: no ACK for the 2xx after 64*T1: the UAS sends BYE.
    AckTimeout2xx,
}
