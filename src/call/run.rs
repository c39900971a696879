//! The run loop's drain step, one piece of code for the tokio driver and the simulations.
//!
//! After any input (a SIP message, an RTP or RTCP packet, a CRM reply, a timeout) the loop drains
//! every `poll_*` until all are empty, then sleeps until `poll_timeout`. Draining one output
//! can produce another: the player's end-of-prompt (inside `poll_rtp`) can queue a BYE or a
//! REFER, and an event's handler may feed the call at once (a CRM that answers
//! synchronously). So the step goes round until a whole pass yields nothing; a driver that
//! drained SIP only before `poll_rtp` sent such a BYE one timer later (0.5 s on UDP, up to
//! 32 s on TCP).

use super::{Call, CallEvent, Wake};
use crate::media::rtcp::RtcpPort;
use crate::sip::SipTransmit;
use std::net::SocketAddr;
use std::time::Instant;

/// Where a drained call's output goes.
pub trait CallIo {
    /// A SIP message to send.
    fn sip(&mut self, t: SipTransmit);
    /// An RTP packet to send; `data` is borrowed from the loop's buffer.
    fn rtp(&mut self, data: &[u8], dest: SocketAddr);
    /// An RTCP packet to send from the RTP socket (`RtcpPort::Rtp`, rtcp-mux) or the RTCP
    /// socket (RTP port + 1); `data` is borrowed from the loop's buffer.
    fn rtcp(&mut self, data: &[u8], dest: SocketAddr, port: RtcpPort);
    /// An event. The handler may feed the call (e.g. `handle_crm`) before returning; the
    /// drain then goes round again.
    fn event(&mut self, call: &mut Call, now: Instant, ev: CallEvent);
}

/// How many passes a drain may take before it gives up for this wake-up. Each pass only
/// happens when the previous one produced output, and the call's queues are bounded, so a
/// healthy call needs two or three; the bound turns a livelock bug into a stall of one call
/// that the next wake-up resumes, never a spinning thread.
const MAX_PASSES: usize = 64;

/// Drains every output of `call` at `now` into `io` until all are empty, then returns the
/// next moment the call must be woken (`handle_timeout`). `buf` holds one RTP or RTCP
/// packet.
pub fn drain(
    call: &mut Call,
    now: Instant,
    io: &mut impl CallIo,
    buf: &mut [u8],
) -> Option<(Instant, Wake)> {
    for _ in 0..MAX_PASSES {
        let mut any = false;
        while let Some(t) = call.poll_transmit() {
            io.sip(t);
            any = true;
        }
        // Events before media: a store that answers at once (the in-memory lockout, the
        // file CRM) is heard before the frame due now is filled, so a call's first frame is
        // already its prompt.
        while let Some(ev) = call.poll_event() {
            io.event(call, now, ev);
            any = true;
        }
        while let Some((n, dest)) = call.poll_rtp(now, buf) {
            io.rtp(buf.get(..n).unwrap_or_default(), dest);
            any = true;
        }
        while let Some((n, dest, port)) = call.poll_rtcp(now, buf) {
            io.rtcp(buf.get(..n).unwrap_or_default(), dest, port);
            any = true;
        }
        // `poll_rtp` runs the player even when no frame is due, and that may have queued
        // SIP or events after their loops above ran dry.
        if !any && !call.has_output() {
            break;
        }
    }
    call.poll_timeout()
}
