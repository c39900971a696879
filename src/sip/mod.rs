//! SIP: the wire layer (`msg`), message builders (`build`), transactions (RFC 3261 §17),
//! dialogs (§12), SDP offer/answer (RFC 3264) and the stateless endpoint that routes
//! datagrams to calls; `source` gives the address a request is trusted as coming from.

pub mod auth;
pub mod build;
pub mod dialog;
pub mod endpoint;
pub mod gate;
pub mod msg;
pub mod sdp;
pub mod source;
pub mod transaction;

pub use crate::config::Transport;
pub use transaction::{Timer, TimerValues};

use bytes::Bytes;
use std::net::SocketAddr;

/// A SIP "flow": the transport, the socket or connection, and the peer address. Responses
/// and our in-dialog requests go back on the flow they belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub transport: Transport,
    /// Index of the UDP socket, or the TCP connection id.
    pub conn: u64,
    pub remote: SocketAddr,
}

impl Flow {
    pub fn reliable(&self) -> bool {
        self.transport.is_reliable()
    }
}

/// SIP bytes to send on a flow (for UDP, to `flow.remote`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipTransmit {
    pub flow: Flow,
    pub data: Bytes,
}

/// The methods we implement, for Allow headers (RFC 3261 §20.5).
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, NOTIFY";
/// Option tags we support (§20.37, RFC 4028 `timer`).
pub const SUPPORTED: &str = "timer";
/// Bodies we accept (§20.1).
pub const ACCEPT: &str = "application/sdp";
