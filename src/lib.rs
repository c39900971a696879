//! # pincoderouting
//!
//! A SIP endpoint that answers calls from a PBX trunk, collects a caller's security PIN and
//! transfers the call to the organization's success or failure extension.
//!
//! ## Shape: sans-IO core, thin drivers
//! Everything protocol-shaped is a plain state machine that never touches a socket, a clock
//! or an RNG. It is fed with `handle_*(now, ...)` and drained with `poll_*()`:
//!
//! - [`sip::endpoint::Endpoint`] routes each inbound message: to a call, to a new call
//!   (after admission), or to a stateless reply;
//! - [`call::Call`] is one call: INVITE server transaction, dialog, in-dialog transactions,
//!   session timer, RTP session.
//!
//! Only [`driver`] (tokio tasks, sockets, timers) and `main.rs` read the clock.
//!
//! ## The run-loop contract
//! Mutate once, then drain every `poll_*` until all are empty, then sleep until
//! `poll_timeout`. The drain is one function, [`call::run::drain`], that the tokio driver
//! and the simulations both run, so they cannot drain in different orders. A whole call in
//! virtual time:
//!
//! ```
//! use pincoderouting::call::{Call, CallEvent, CallSetup, run::{drain, CallIo}};
//! use pincoderouting::media::rtcp::{RtcpPort, WallClock};
//! use pincoderouting::sip::{msg::{Limits, Message}, sdp::{LocalMedia, Sdp}, Flow, SipTransmit, Transport};
//! use std::{net::SocketAddr, sync::Arc, time::{Duration, Instant}};
//!
//! let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
//! m=audio 4000 RTP/AVP 0\r\n";
//! let invite = format!("INVITE sip:pin@192.0.2.10 SIP/2.0\r\n\
//! Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;rport\r\n\
//! From: <sip:+15551234567@192.0.2.1>;tag=a\r\nTo: <sip:pin@192.0.2.10>\r\n\
//! Call-ID: doc-1\r\nCSeq: 1 INVITE\r\nContact: <sip:pbx@192.0.2.1>\r\n\
//! Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len());
//! let invite = Message::parse(invite.as_bytes(), &Limits::default(), true).unwrap();
//! let offer = Some(Sdp::parse(&invite.body).unwrap());
//! let flow = Flow { transport: Transport::Udp, conn: 0, remote: "192.0.2.1:5060".parse().unwrap() };
//! let media = LocalMedia { ip: "192.0.2.10".parse().unwrap(), port: 10000, session_id: 1 };
//! let config = pincoderouting::config::parse("[[organization]]\nname = \"acme\"\n\
//!     enabled = true\nmatch_user = [\"pin\"]\npbx_host = \"pbx.acme.example\"\n\
//!     pin_success_ext = \"2001\"\npin_failed_ext = \"2002\"\n", "doc").unwrap();
//! let org = config.organizations[0].clone();
//! // Trust (PAI, address blocks) goes by the effective source: a trusted proxy may name it.
//! let source = pincoderouting::sip::source::effective_source(&invite, flow.remote.ip(), &config.sip);
//! let caller = pincoderouting::call::identity::caller(&invite, source, &org);
//! let mut now = Instant::now(); // a driver reads the clock; a test just advances `now`
//! // RTCP's NTP timestamps come from one wall-clock reading the driver takes at set-up.
//! let wall_clock = WallClock { at: now, since_unix: Duration::from_secs(1_700_000_000) };
//! let mut call = Call::new(now, Arc::new(config), CallSetup {
//!     invite, offer, flow, local_sip: "192.0.2.10:5060".parse().unwrap(), media, seed: 7,
//!     org, caller, lockout: false, wall_clock,
//! }).unwrap();
//! // The driver's side of the drain: where SIP, RTP, RTCP and events go.
//! struct Io { sip: usize, rtp: usize, rtcp: Vec<SocketAddr> }
//! impl CallIo for Io {
//!     fn sip(&mut self, _t: SipTransmit) { self.sip += 1 }
//!     fn rtp(&mut self, _data: &[u8], _dest: SocketAddr) { self.rtp += 1 }
//!     fn rtcp(&mut self, _data: &[u8], dest: SocketAddr, port: RtcpPort) {
//!         assert_eq!(port, RtcpPort::Rtcp); // no a=rtcp-mux: the RTCP socket, port + 1
//!         self.rtcp.push(dest);
//!     }
//!     fn event(&mut self, _call: &mut Call, _now: Instant, _ev: CallEvent) {}
//! }
//! let mut io = Io { sip: 0, rtp: 0, rtcp: vec![] };
//! let mut rtp_buf = [0u8; 1500];
//! // The loop: drain everything (`drain` goes round until every poll_* is empty), then
//! // jump to the next deadline.
//! for _ in 0..100 {
//!     let Some((at, _why)) = drain(&mut call, now, &mut io, &mut rtp_buf) else { break };
//!     now = at;
//!     call.handle_timeout(now);
//! }
//! let (sip_sent, rtp_sent) = (io.sip, io.rtp);
//! assert_eq!(sip_sent >= 2, true);   // 100 Trying, 200 OK (and its retransmissions)
//! assert!(rtp_sent > 10);            // 20 ms frames of silence toward 192.0.2.1:4000
//! assert!(io.rtcp.iter().all(|d| *d == "192.0.2.1:4001".parse().unwrap()));
//! ```
//!
//! ## Module map
//! - [`config`]: parse and validate `sip-config/*.toml` (errors carry file and line);
//! - [`sip`]: wire layer, builders, transactions, dialog, SDP, stateless endpoint;
//! - [`media`]: RTP session and its RTCP, G.711, DTMF, prompts;
//! - [`call`]: the call composer;
//! - [`driver`]: tokio sockets, call loops (one thread per core, many calls each), the RTP port pool;
//! - [`cli`]: the command line.

// Panic policy: a peer's bytes (SIP, SDP, RTP, INFO bodies, WAV/pcap files, config) must never
// be able to panic the process. Non-test code may not unwrap, expect, index or slice unchecked,
// or panic; use `get`, iterators, `split_at_checked`, `?`, `let ... else`. Where an invariant
// truly holds (a fixed-size array indexed by a constant or a const-bounded loop), put a narrow
// `#[allow(clippy::indexing_slicing)]` on the smallest item with a `// Invariant:` comment.
// Tests are exempt through clippy.toml (`allow-*-in-tests`) and the `cfg_attr(test, ...)` below.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unreachable,
    clippy::todo,
    clippy::unimplemented
)]
// No clippy.toml switch exists for these three; tests may use them (e.g. `unreachable!()` in
// a match over a test fixture). Non-test code is still checked by the plain library build.
#![cfg_attr(test, allow(clippy::unreachable, clippy::todo, clippy::unimplemented))]

pub mod call;
pub mod cli;
pub mod config;
pub mod crm;
pub mod driver;
#[cfg(test)]
mod fuzz_smoke;
#[doc(hidden)]
pub mod fuzzing;
pub mod media;
pub mod sip;
#[cfg(test)]
pub(crate) mod testutil;
pub mod tools;
